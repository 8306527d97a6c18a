import React from 'react';

import { useSignal } from '../hooks';
import type { ViewFilter, WorkflowModel } from '../model';
import { Graph } from './Graph';

const EVERY_TASK: ViewFilter = { notebook: null, states: new Set() };

/** The graph of every task on a main-area canvas; a click selects the task for the sidebar and the commands. */
export function WorkflowGraph({ model }: { model: WorkflowModel }): JSX.Element {
  useSignal(model.changed, change => model.redraws(change, EVERY_TASK));
  useSignal(model.selectionChanged);
  const task = model.selectedTask;
  return (
    <div className="hetflow-graph-main">
      <div className="hetflow-muted hetflow-graph-caption" data-testid="hetflow-graph-selection">
        {task ? `selected: ${task.name} (${task.state})` : 'click a task to select it'}
      </div>
      <Graph model={model} view={model.view(EVERY_TASK)} selected={model.selected} onSelect={id => model.select(id)} />
    </div>
  );
}
