/** The sidebar's state: every task the engine told us of, kept current from the event socket, and the selected task
 * (shared by the sidebar, the main-area graph and the task commands). No React here. */

import { Signal } from '@lumino/signaling';

import type { TaskPage } from './api';
import type { LogEvent, Task, TaskState, TaskStateEvent } from './types';

export interface ViewFilter {
  notebook: string | null; // null: all notebooks
  states: ReadonlySet<TaskState>; // empty: every state
}

export interface GraphView {
  tasks: Task[];
  edges: Array<[string, string]>;
}

/** What changed, so that views redo only what they must: a new node moves the layout, a state change does not. */
export interface Change {
  structure: boolean;
  tasks: string[];
}

export class WorkflowModel {
  readonly changed = new Signal<WorkflowModel, Change>(this);
  readonly logged = new Signal<WorkflowModel, { task: string; text: string }>(this);
  readonly selectionChanged = new Signal<WorkflowModel, string | null>(this);
  private readonly tasks = new Map<string, Task>();
  private chosen: string | null = null;
  private olderFrom: string | null = null;
  private readonly watchers = new Map<string, Set<() => void>>();

  get size(): number {
    return this.tasks.size;
  }

  get(id: string): Task | undefined {
    return this.tasks.get(id);
  }

  /** The selected task's id; it may name a task not loaded yet (a selection restored before the first load). */
  get selected(): string | null {
    return this.chosen;
  }

  get selectedTask(): Task | undefined {
    return this.chosen === null ? undefined : this.tasks.get(this.chosen);
  }

  select(id: string | null): void {
    if (id !== this.chosen) {
      this.chosen = id;
      this.selectionChanged.emit(id);
    }
  }

  /** Call `listener` whenever this task changes, until the returned function is called: a graph node follows its
   * own task without the whole graph being drawn again. */
  watch(id: string, listener: () => void): () => void {
    let listeners = this.watchers.get(id);
    if (!listeners) {
      listeners = new Set();
      this.watchers.set(id, listeners);
    }
    listeners.add(listener);
    return () => {
      listeners!.delete(listener);
      if (!listeners!.size) {
        this.watchers.delete(id);
      }
    };
  }

  /** Whether a view with this filter must be drawn again for this change, beyond the changed nodes themselves
   * (which follow their tasks through `watch`): its tasks came or went, a state filter may now show or hide them,
   * a changed task is selected (its details), or it has dependencies (the edges into it show it running). */
  redraws(change: Change, filter: ViewFilter): boolean {
    return (
      change.structure ||
      filter.states.size > 0 ||
      (this.chosen !== null && change.tasks.includes(this.chosen)) ||
      change.tasks.some(id => (this.tasks.get(id)?.deps.length ?? 0) > 0)
    );
  }

  /** Where the older tasks, not loaded, begin (the `before` of the page that holds them); null: all are loaded. */
  get older(): string | null {
    return this.olderFrom;
  }

  /** Replace everything with the newest page (first load, or catching up after the socket was down). */
  load(page: TaskPage): void {
    const before = new Set(this.tasks.keys());
    this.tasks.clear();
    this.add(page);
    const structure = before.size !== this.tasks.size || page.tasks.some(t => !before.has(t.id));
    this.tell([...this.watchers.keys()]);
    this.changed.emit({ structure, tasks: page.tasks.map(t => t.id) });
  }

  /** Add the page that `older` pointed at. */
  loadOlder(page: TaskPage): void {
    this.add(page);
    this.changed.emit({ structure: true, tasks: page.tasks.map(t => t.id) });
  }

  private tell(ids: string[]): void {
    for (const id of ids) {
      this.watchers.get(id)?.forEach(listener => listener());
    }
  }

  private add(page: TaskPage): void {
    for (const task of page.tasks) {
      if (!this.tasks.has(task.id)) {
        this.tasks.set(task.id, task);
      }
    }
    this.olderFrom = page.next;
  }

  apply(event: TaskStateEvent | LogEvent): void {
    if (event.type === 'log') {
      this.logged.emit({ task: event.task, text: event.text });
      return;
    }
    const known = this.tasks.get(event.task);
    this.tasks.set(event.task, event.data);
    this.tell([event.task]);
    const structure = !known || known.deps.join() !== event.data.deps.join() || known.notebook !== event.data.notebook;
    this.changed.emit({ structure, tasks: [event.task] });
  }

  view(filter: ViewFilter): GraphView {
    const tasks = [...this.tasks.values()]
      .filter(t => filter.notebook === null || t.notebook === filter.notebook)
      .filter(t => filter.states.size === 0 || filter.states.has(t.state))
      .sort((a, b) => a.created - b.created);
    const shown = new Set(tasks.map(t => t.id));
    const edges: Array<[string, string]> = [];
    for (const task of tasks) {
      for (const dep of task.deps) {
        if (shown.has(dep)) {
          edges.push([dep, task.id]);
        }
      }
    }
    return { tasks, edges };
  }

  notebooks(): string[] {
    return [...new Set([...this.tasks.values()].map(t => t.notebook).filter((n): n is string => !!n))].sort();
  }
}
