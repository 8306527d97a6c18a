import type { CommandRegistry } from '@lumino/commands';
import type { ISignal } from '@lumino/signaling';
import React, { useState } from 'react';

import type { HetflowAPI } from '../api';
import { useSignal } from '../hooks';
import type { WorkflowModel } from '../model';
import { TASK_STATES, type Task, type TaskState } from '../types';
import { Credentials } from './Credentials';
import { Executors } from './Executors';
import { Graph } from './Graph';
import { LoadOlder } from './LoadOlder';
import { TaskDetails } from './TaskDetails';

export interface SidebarProps {
  api: HetflowAPI;
  model: WorkflowModel;
  commands: CommandRegistry; // the task actions (commands.ts)
  connection: ISignal<unknown, boolean>;
  currentNotebook: () => string | null;
  notebookChanged: ISignal<unknown, unknown>;
  goToCell: (task: Task) => void;
}

type Tab = 'graph' | 'executors' | 'credentials';

export function Sidebar(props: SidebarProps): JSX.Element {
  const { api, model } = props;
  const [tab, setTab] = useState<Tab>('graph');
  const [scope, setScope] = useState<'current' | 'all'>('all');
  const [states, setStates] = useState<Set<TaskState>>(new Set());
  const [error, setError] = useState<string | null>(null);
  const [connected, setConnected] = useState(true);
  useSignal(props.notebookChanged);
  useSignal(props.connection, up => {
    setConnected(up);
    return true;
  });
  const notebook = scope === 'current' ? (props.currentNotebook() ?? '') : null;
  const filter = { notebook, states };
  useSignal(model.changed, change => model.redraws(change, filter));
  useSignal(model.selectionChanged);
  const view = model.view(filter);
  const task = model.selectedTask;
  const toggle = (state: TaskState) => {
    const next = new Set(states);
    if (next.has(state)) {
      next.delete(state);
    } else {
      next.add(state);
    }
    setStates(next);
  };
  return (
    <div className="hetflow-sidebar">
      <div className="hetflow-tabs" role="tablist">
        {(['graph', 'executors', 'credentials'] as Tab[]).map(name => (
          <button
            key={name}
            role="tab"
            aria-selected={tab === name}
            className={`hetflow-tab${tab === name ? ' hetflow-tab-active' : ''}`}
            onClick={() => setTab(name)}
          >
            {name}
          </button>
        ))}
        <span className={`hetflow-connection ${connected ? 'hetflow-up' : 'hetflow-down'}`} title={connected ? 'live' : 'reconnecting'}>
          {connected ? '● live' : '○ reconnecting'}
        </span>
      </div>
      {error ? (
        <div className="hetflow-message" role="alert" onClick={() => setError(null)}>
          {error}
        </div>
      ) : null}
      {tab === 'graph' ? (
        <>
          <div className="hetflow-filters">
            <select value={scope} onChange={e => setScope(e.target.value as 'current' | 'all')} aria-label="notebook filter">
              <option value="all">all notebooks</option>
              <option value="current">current notebook</option>
            </select>
            {TASK_STATES.map(state => (
              <label key={state} className={`hetflow-filter hetflow-state-${state}`}>
                <input type="checkbox" checked={states.has(state)} onChange={() => toggle(state)} aria-label={`show ${state}`} />
                {state}
              </label>
            ))}
            <span className="hetflow-muted" data-testid="hetflow-count">
              {view.tasks.length} task{view.tasks.length === 1 ? '' : 's'}
            </span>
            {model.older ? <LoadOlder api={api} model={model} onError={setError} /> : null}
          </div>
          <Graph model={model} view={view} selected={model.selected} onSelect={id => model.select(id)} />
          {task ? <TaskDetails api={api} model={model} commands={props.commands} task={task} onGoToCell={props.goToCell} /> : null}
        </>
      ) : null}
      {tab === 'executors' ? <Executors api={api} onError={setError} onNote={setError} /> : null}
      {tab === 'credentials' ? <Credentials api={api} onError={setError} /> : null}
    </div>
  );
}
