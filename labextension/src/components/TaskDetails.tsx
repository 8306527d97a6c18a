import type { CommandRegistry } from '@lumino/commands';
import React, { useEffect, useRef, useState } from 'react';

import { ACTIONS, TASK_ACTIONS } from '../actions';
import type { HetflowAPI } from '../api';
import type { WorkflowModel } from '../model';
import type { Task } from '../types';

function time(seconds: number | null): string {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : '—';
}

function elapsed(task: Task): string {
  if (!task.started) {
    return '—';
  }
  const end = task.finished ?? Date.now() / 1000;
  return `${(end - task.started).toFixed(1)} s`;
}

/** The task's log: what the store has, then every new line from the event socket. */
function LiveLog({ api, model, task }: { api: HetflowAPI; model: WorkflowModel; task: Task }): JSX.Element {
  const [text, setText] = useState('');
  const box = useRef<HTMLPreElement>(null);
  useEffect(() => {
    let pending = '';
    let loaded = false;
    setText('');
    const slot = (_: WorkflowModel, log: { task: string; text: string }) => {
      if (log.task !== task.id) {
        return;
      }
      if (loaded) {
        setText(t => t + log.text);
      } else {
        pending += log.text;
      }
    };
    model.logged.connect(slot);
    void api.logs(task.id).then(
      ({ text: stored }) => {
        loaded = true;
        // lines that came on the socket while the request ran are in the stored text already, or follow it
        setText(pending && !stored.endsWith(pending) ? stored + pending : stored);
      },
      () => {
        loaded = true;
      }
    );
    return () => {
      model.logged.disconnect(slot);
    };
  }, [task.id]);
  useEffect(() => {
    box.current?.scrollTo({ top: box.current.scrollHeight });
  }, [text]);
  return (
    <pre className="hetflow-log" ref={box} aria-label="task log" data-testid="hetflow-log">
      {text || '(no output yet)'}
    </pre>
  );
}

export interface TaskDetailsProps {
  api: HetflowAPI;
  model: WorkflowModel;
  commands: CommandRegistry;
  task: Task;
  onGoToCell: (task: Task) => void;
}

/** Cancel, Retry and Re-run execute the task commands on this task: enabled as the commands are. */
function TaskActions({ commands, task }: { commands: CommandRegistry; task: Task }): JSX.Element {
  const args = { task: task.id };
  return (
    <>
      {TASK_ACTIONS.map(action => {
        const { command, text, warn } = ACTIONS[action];
        return (
          <button
            key={action}
            className={`jp-Button jp-mod-styled${warn ? ' jp-mod-warn' : ''}`}
            disabled={!commands.isEnabled(command, args)}
            onClick={() => void commands.execute(command, args)}
            aria-label={`${text.toLowerCase()} task`}
          >
            {text}
          </button>
        );
      })}
    </>
  );
}

export function TaskDetails({ api, model, commands, task, onGoToCell }: TaskDetailsProps): JSX.Element {
  const job = task.handle?.element ?? task.handle?.job_id ?? task.handle?.pid;
  const node = task.handle?.node;
  const pack = task.handle?.pack;
  const label = task.element === null || task.element === undefined ? task.name : `${task.name}[${task.element}]`;
  const upstream = (task.deps ?? []).map(id => model.get(id)?.name ?? id);
  return (
    <section className="hetflow-details" aria-label={`details of task ${task.name}`} data-testid="hetflow-details">
      <h3>
        {label} <span className={`hetflow-badge hetflow-state-${task.state}`}>{task.state}</span>
      </h3>
      <dl>
        <dt>executor</dt>
        <dd>{task.executor}</dd>
        <dt>job</dt>
        <dd data-testid="hetflow-job">{job ? `${String(job)}${node ? ` on ${String(node)}` : ''}` : '—'}</dd>
        {pack ? (
          <>
            <dt>packed</dt>
            <dd data-testid="hetflow-pack">{String(pack)}</dd>
          </>
        ) : null}
        {upstream.length ? (
          <>
            <dt>after</dt>
            <dd>{upstream.join(', ')}</dd>
          </>
        ) : null}
        <dt>notebook</dt>
        <dd>{task.notebook ?? '—'}</dd>
        <dt>started</dt>
        <dd>{time(task.started)}</dd>
        <dt>elapsed</dt>
        <dd>{elapsed(task)}</dd>
        <dt>attempts</dt>
        <dd>
          {task.attempts}
          {task.retries ? ` of ${task.retries + 1}` : ''}
        </dd>
        <dt>id</dt>
        <dd>{task.id}</dd>
      </dl>
      <div className="hetflow-actions">
        <TaskActions commands={commands} task={task} />
        <button
          className="jp-Button jp-mod-styled jp-mod-accept"
          disabled={!task.notebook || !task.cell_id}
          onClick={() => onGoToCell(task)}
          aria-label="go to cell"
        >
          Go to cell
        </button>
      </div>
      {task.error ? (
        <pre className="hetflow-error" aria-label="task error" data-testid="hetflow-error">
          {task.error.traceback || `${task.error.type}: ${task.error.message}`}
        </pre>
      ) : null}
      <LiveLog api={api} model={model} task={task} />
    </section>
  );
}
