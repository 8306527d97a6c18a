/** hetflow's JupyterLab commands, one path for every way to act: the palette, the graph tab's toolbar, the sidebar's
 * buttons and the cell's status line all execute them. The task actions act on `args.task` when given, else on the
 * selected task, and are enabled by its state (`canAct`). */

import type { ILayoutRestorer, JupyterFrontEnd } from '@jupyterlab/application';
import { type ICommandPalette, MainAreaWidget, Notification, ReactWidget, WidgetTracker } from '@jupyterlab/apputils';
import { CommandToolbarButton } from '@jupyterlab/ui-components';
import type { CommandRegistry } from '@lumino/commands';
import type { ReadonlyPartialJSONObject } from '@lumino/coreutils';
import type { Widget } from '@lumino/widgets';
import React from 'react';

import { ACTIONS, canAct, TASK_ACTIONS } from './actions';
import type { HetflowAPI } from './api';
import { WorkflowGraph } from './components/WorkflowGraph';
import { hetflowIcon } from './icon';
import type { WorkflowModel } from './model';

export const OPEN_SIDEBAR = 'hetflow:open-sidebar';
export const OPEN_GRAPH = 'hetflow:open-graph';
export const CATEGORY = 'hetflow';
export const GRAPH_ID = 'hetflow-graph';

export const COMMANDS = [OPEN_SIDEBAR, OPEN_GRAPH, ...TASK_ACTIONS.map(action => ACTIONS[action].command)];

/** cancel, retry and re-run; their enabled state is announced again when the selection or its task's state changes. */
export function addTaskCommands(commands: CommandRegistry, api: HetflowAPI, model: WorkflowModel): void {
  const target = (args: ReadonlyPartialJSONObject) => (typeof args.task === 'string' ? args.task : model.selected);
  for (const action of TASK_ACTIONS) {
    const { command, text } = ACTIONS[action];
    commands.addCommand(command, {
      label: `${text} Task`,
      caption: `${text} the selected hetflow task`,
      isEnabled: args => canAct(action, model.get(target(args) ?? '')?.state),
      execute: async args => {
        const id = target(args);
        const known = id === null ? undefined : model.get(id);
        if (id === null || (known && !canAct(action, known.state))) {
          return;
        }
        try {
          const task = await api.act(id, action);
          model.apply({ type: 'task', task: task.id, state: task.state, message: null, data: task });
        } catch (err) {
          Notification.error(`hetflow: ${text.toLowerCase()} ${known?.name ?? id} failed: ${(err as Error).message}`);
        }
      }
    });
  }
  const announce = () => TASK_ACTIONS.forEach(action => commands.notifyCommandChanged(ACTIONS[action].command));
  model.selectionChanged.connect(announce);
  model.changed.connect((_, change) => {
    if (model.selected !== null && change.tasks.includes(model.selected)) {
      announce();
    }
  });
}

/** The workflow graph as a main-area tab, its toolbar the task commands on the selected task. */
function graphWidget(model: WorkflowModel, commands: CommandRegistry): MainAreaWidget {
  const widget = new MainAreaWidget({ content: ReactWidget.create(React.createElement(WorkflowGraph, { model })) });
  widget.id = GRAPH_ID;
  widget.title.label = 'hetflow graph';
  widget.title.icon = hetflowIcon;
  widget.title.closable = true;
  widget.content.addClass('hetflow-panel');
  for (const action of TASK_ACTIONS) {
    const { command, text } = ACTIONS[action];
    widget.toolbar.addItem(action, new CommandToolbarButton({ commands, id: command, label: text }));
  }
  return widget;
}

/** open-sidebar and open-graph; with a layout restorer the sidebar's open/closed state and the graph tab come back
 * on reload (the tracker's restore executes open-graph). */
export function addViewCommands(
  app: JupyterFrontEnd,
  model: WorkflowModel,
  sidebar: Widget,
  restorer: ILayoutRestorer | null
): void {
  const tracker = new WidgetTracker<MainAreaWidget>({ namespace: GRAPH_ID });
  app.commands.addCommand(OPEN_SIDEBAR, {
    label: 'Open the hetflow Sidebar',
    icon: hetflowIcon,
    execute: () => app.shell.activateById(sidebar.id)
  });
  app.commands.addCommand(OPEN_GRAPH, {
    label: 'Open the hetflow Graph',
    caption: 'The workflow graph in a main-area tab',
    icon: hetflowIcon,
    execute: async () => {
      let widget = tracker.find(() => true);
      if (!widget) {
        widget = graphWidget(model, app.commands);
        await tracker.add(widget);
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(widget.id);
      return widget;
    }
  });
  if (restorer) {
    restorer.add(sidebar, sidebar.id);
    void restorer.restore(tracker, { command: OPEN_GRAPH, name: () => GRAPH_ID });
  }
}

export function addToPalette(palette: ICommandPalette): void {
  for (const command of COMMANDS) {
    palette.addItem({ command, category: CATEGORY });
  }
}
