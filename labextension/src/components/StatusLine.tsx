import type { CommandRegistry } from '@lumino/commands';
import React, { useEffect, useState } from 'react';

import { ACTIONS } from '../actions';
import { useSignal } from '../hooks';
import type { WorkflowModel } from '../model';
import { FINAL_STATES, type Task } from '../types';

/** The cell's status line, live from the sidebar's event stream; Cancel (the cancel-task command) goes through the
 * REST API, so it works while the kernel is busy waiting for the very task (a widget's comm message would wait
 * behind it). */
export function StatusLine(props: { commands: CommandRegistry; model: WorkflowModel; initial: Task }): JSX.Element {
  const { commands, model, initial } = props;
  useSignal(model.changed, change => change.tasks.includes(initial.id));
  const [, tick] = useState(0);
  const task = model.get(initial.id) ?? initial;
  const final = FINAL_STATES.has(task.state);
  useEffect(() => {
    if (final) {
      return;
    }
    const timer = setInterval(() => tick(n => n + 1), 1000);
    return () => clearInterval(timer);
  }, [final]);
  const job = task.handle?.job_id ?? task.handle?.pid;
  const elapsed = task.started ? ((task.finished ?? Date.now() / 1000) - task.started).toFixed(1) + ' s' : '';
  return (
    <div className={`hetflow-status hetflow-state-${task.state}`} data-testid="hetflow-status" data-state={task.state}>
      <span className="hetflow-status-name">{task.name}</span>
      <span>{task.executor}</span>
      {job ? <span>job {String(job)}</span> : null}
      <span className="hetflow-badge">{task.state}</span>
      {elapsed ? <span>{elapsed}</span> : null}
      {final ? null : (
        <button
          className="jp-Button jp-mod-styled jp-mod-warn"
          onClick={() => void commands.execute(ACTIONS.cancel.command, { task: task.id })}
          aria-label={`cancel task ${task.name}`}
        >
          Cancel
        </button>
      )}
    </div>
  );
}
