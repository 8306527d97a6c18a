/** The hetflow sidebar: the live workflow graph, task details and logs, executors and credentials. */

import { ILayoutRestorer, type JupyterFrontEnd, type JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, ReactWidget } from '@jupyterlab/apputils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { INotebookTracker, type NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry, type IRenderMime } from '@jupyterlab/rendermime';
import { IStateDB } from '@jupyterlab/statedb';
import type { CommandRegistry } from '@lumino/commands';
import { Signal } from '@lumino/signaling';
import React from 'react';

import { EventStream, HetflowAPI } from './api';
import { addTaskCommands, addToPalette, addViewCommands } from './commands';
import { Sidebar } from './components/Sidebar';
import { StatusLine } from './components/StatusLine';
import { hetflowIcon } from './icon';
import { WorkflowModel } from './model';
import { LoginQuestions } from './prompts';
import type { Task } from './types';

/** What the kernel shows while a cell waits on its task (text/plain beside it for other front ends). */
export const STATUS_MIME = 'application/vnd.hetflow.task+json';

import '@xyflow/react/dist/style.css';
import './sidebar.css';

export const SIDEBAR_ID = 'hetflow-sidebar';
const SELECTION_KEY = 'hetflow:selection'; // the selected task's id in the state database, kept across reloads

/** Bring the task's cell into view. Cell ids are unique, so an open notebook holding the cell is found even after a
 * rename (the kernel knows the notebook by the path it had when the kernel started); else the notebook is opened. */
async function goToCell(
  app: JupyterFrontEnd,
  notebooks: INotebookTracker | null,
  docManager: IDocumentManager | null,
  task: Task
): Promise<void> {
  if (!task.cell_id) {
    return;
  }
  const holds = (panel: NotebookPanel) => panel.content.widgets.some(cell => cell.model.id === task.cell_id);
  let panel: NotebookPanel | undefined = notebooks?.find(holds);
  if (!panel && task.notebook && docManager) {
    panel = docManager.openOrReveal(task.notebook) as NotebookPanel | undefined;
    await panel?.context.ready;
  }
  if (!panel?.content) {
    return;
  }
  app.shell.activateById(panel.id);
  const notebook = panel.content;
  const index = notebook.widgets.findIndex(cell => cell.model.id === task.cell_id);
  if (index >= 0) {
    notebook.activeCellIndex = index;
    await notebook.scrollToCell(notebook.widgets[index], 'center');
  }
}

class StatusRenderer extends ReactWidget implements IRenderMime.IRenderer {
  private task: Task | null = null;

  constructor(
    private readonly commands: CommandRegistry,
    private readonly model: WorkflowModel
  ) {
    super();
    this.addClass('hetflow-status-output');
  }

  async renderModel(mime: IRenderMime.IMimeModel): Promise<void> {
    this.task = mime.data[STATUS_MIME] as unknown as Task;
    this.update();
  }

  protected render(): JSX.Element | null {
    return this.task ? React.createElement(StatusLine, { commands: this.commands, model: this.model, initial: this.task }) : null;
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'hetflow:sidebar',
  description: 'The live hetflow workflow graph, task details, executors and credentials.',
  autoStart: true,
  optional: [INotebookTracker, IDocumentManager, IRenderMimeRegistry, ILayoutRestorer, ICommandPalette, IStateDB],
  activate: (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker | null,
    docManager: IDocumentManager | null,
    rendermime: IRenderMimeRegistry | null,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    state: IStateDB | null
  ) => {
    const api = new HetflowAPI();
    const model = new WorkflowModel();
    const connection = new Signal<WorkflowModel, boolean>(model);
    const catchUp = () => api.tasks().then(page => model.load(page), console.warn);
    const questions = new LoginQuestions(api);
    const stream = new EventStream(api, {
      onEvent: event => (event.type === 'prompt' ? questions.handle(event) : model.apply(event)),
      onOpen: () => {
        connection.emit(true);
        void catchUp();
        questions.catchUp().catch(console.warn);
      },
      onClose: () => connection.emit(false)
    });
    const widget = ReactWidget.create(
      React.createElement(Sidebar, {
        api,
        model,
        commands: app.commands,
        connection,
        currentNotebook: () => notebooks?.currentWidget?.context.path ?? null,
        notebookChanged: notebooks?.currentChanged ?? new Signal(model),
        goToCell: task => void goToCell(app, notebooks, docManager, task)
      })
    );
    widget.id = SIDEBAR_ID;
    widget.title.icon = hetflowIcon;
    widget.title.caption = 'hetflow workflow';
    widget.addClass('hetflow-panel');
    widget.disposed.connect(() => stream.dispose());
    app.shell.add(widget, 'left', { rank: 650 });
    addTaskCommands(app.commands, api, model);
    addViewCommands(app, model, widget, restorer);
    if (palette) {
      addToPalette(palette);
    }
    if (state) {
      void state.fetch(SELECTION_KEY).then(id => {
        if (typeof id === 'string' && model.selected === null) {
          model.select(id);
        }
        model.selectionChanged.connect((_, selected) => void state.save(SELECTION_KEY, selected));
      }, console.warn);
    }
    rendermime?.addFactory(
      {
        safe: true,
        mimeTypes: [STATUS_MIME],
        defaultRank: 0,
        createRenderer: () => new StatusRenderer(app.commands, model)
      },
      0
    );
  }
};

export default plugin;
