import { layout, NODE_HEIGHT, NODE_WIDTH } from '../layout';
import { WorkflowModel } from '../model';
import type { TaskState } from '../types';
import { task } from './tasks';

describe('WorkflowModel', () => {
  it('applies state events incrementally and says when the graph shape changed', () => {
    const model = new WorkflowModel();
    const changes: boolean[] = [];
    model.changed.connect((_, change) => changes.push(change.structure));
    model.apply({ type: 'task', task: 't1', state: 'queued', message: null, data: task('t1') });
    model.apply({ type: 'task', task: 't1', state: 'running', message: null, data: task('t1', 'running') });
    model.apply({ type: 'task', task: 't2', state: 'queued', message: null, data: task('t2', 'queued', { deps: ['t1'] }) });
    expect(model.get('t1')?.state).toBe('running');
    expect(changes).toEqual([true, false, true]);
  });

  it('filters by notebook and state and keeps only edges between shown tasks', () => {
    const model = new WorkflowModel();
    model.load({
      tasks: [
        task('t1', 'completed'),
        task('t2', 'failed', { deps: ['t1'] }),
        task('t3', 'running', { notebook: 'b.ipynb', deps: ['t1'] })
      ],
      next: null
    });
    const all = model.view({ notebook: null, states: new Set() });
    expect(all.tasks.map(t => t.id)).toEqual(['t1', 't2', 't3']);
    expect(all.edges).toEqual([
      ['t1', 't2'],
      ['t1', 't3']
    ]);
    const a = model.view({ notebook: 'a.ipynb', states: new Set() });
    expect(a.tasks.map(t => t.id)).toEqual(['t1', 't2']);
    const failed = model.view({ notebook: null, states: new Set<TaskState>(['failed']) });
    expect(failed.tasks.map(t => t.id)).toEqual(['t2']);
    expect(failed.edges).toEqual([]);
    expect(model.notebooks()).toEqual(['a.ipynb', 'b.ipynb']);
  });

  it('holds the newest page and adds older pages without undoing newer news', () => {
    const model = new WorkflowModel();
    model.load({ tasks: [task('t3', 'running'), task('t2', 'completed')], next: 't2' });
    expect(model.older).toBe('t2');
    model.apply({ type: 'task', task: 't3', state: 'completed', message: null, data: task('t3', 'completed') });
    // the older page was read before t3 completed: what the socket said since stands
    model.loadOlder({ tasks: [task('t3', 'running'), task('t1', 'failed')], next: null });
    expect(model.older).toBeNull();
    expect(model.view({ notebook: null, states: new Set() }).tasks.map(t => `${t.id}:${t.state}`)).toEqual([
      't1:failed',
      't2:completed',
      't3:completed'
    ]);
  });

  it('tells a task\'s watchers of its changes alone, and says when a view must be drawn again', () => {
    const model = new WorkflowModel();
    model.load({ tasks: [task('t1', 'running'), task('t2', 'queued', { deps: ['t1'] })], next: null });
    const seen: string[] = [];
    const stop = model.watch('t1', () => seen.push(`t1:${model.get('t1')?.state}`));
    model.watch('t2', () => seen.push('t2'));
    model.apply({ type: 'task', task: 't1', state: 'completed', message: null, data: task('t1', 'completed') });
    expect(seen).toEqual(['t1:completed']);
    const all = { notebook: null, states: new Set<TaskState>() };
    const lone = { structure: false, tasks: ['t1'] };
    expect(model.redraws(lone, all)).toBe(false); // its node follows it by itself
    expect(model.redraws({ structure: false, tasks: ['t2'] }, all)).toBe(true); // the edge into it
    expect(model.redraws(lone, { notebook: null, states: new Set<TaskState>(['failed']) })).toBe(true);
    expect(model.redraws({ structure: true, tasks: ['t1'] }, all)).toBe(true);
    model.select('t1');
    expect(model.redraws(lone, all)).toBe(true); // its details
    stop();
    model.apply({ type: 'task', task: 't1', state: 'queued', message: null, data: task('t1', 'queued') });
    expect(seen).toEqual(['t1:completed']);
  });

  it('passes log lines on without storing them', () => {
    const model = new WorkflowModel();
    const lines: string[] = [];
    model.logged.connect((_, log) => lines.push(`${log.task}:${log.text}`));
    model.apply({ type: 'log', task: 't9', stream: 'stdout', text: 'hello\n', offset: 0 });
    expect(lines).toEqual(['t9:hello\n']);
    expect(model.size).toBe(0);
  });
});

describe('WorkflowModel selection', () => {
  it('announces a new selection once, and may name a task not loaded yet', () => {
    const model = new WorkflowModel();
    const seen: Array<string | null> = [];
    model.selectionChanged.connect((_, id) => seen.push(id));
    model.select('t1'); // restored from the state database before the first load
    model.select('t1');
    expect(model.selected).toBe('t1');
    expect(model.selectedTask).toBeUndefined();
    model.load({ tasks: [task('t1', 'running')], next: null });
    expect(model.selectedTask?.state).toBe('running');
    model.select(null);
    expect(seen).toEqual(['t1', null]);
    expect(model.selectedTask).toBeUndefined();
  });
});

describe('layout', () => {
  it('puts a dependency above its dependents and lone tasks in a grid beside them', () => {
    const positions = layout(['a', 'b', 'c', 'd', 'e'], [['a', 'b'], ['a', 'c']], 2);
    expect(positions.get('a')!.y).toBeLessThan(positions.get('b')!.y);
    expect(positions.get('b')!.y).toBe(positions.get('c')!.y);
    const dagRight = Math.max(...['a', 'b', 'c'].map(id => positions.get(id)!.x)) + NODE_WIDTH;
    expect(positions.get('d')!.x).toBeGreaterThanOrEqual(dagRight);
    expect(positions.get('e')!.x).toBeGreaterThan(positions.get('d')!.x);
  });

  it('lays out a thousand independent tasks quickly and without overlap', () => {
    const ids = Array.from({ length: 1000 }, (_, i) => `t${i}`);
    const start = Date.now();
    const positions = layout(ids, [], 25);
    expect(Date.now() - start).toBeLessThan(200);
    const seen = new Set([...positions.values()].map(p => `${p.x},${p.y}`));
    expect(seen.size).toBe(1000);
    const last = positions.get('t999')!;
    expect(last.y).toBe(39 * (NODE_HEIGHT + 16));
  });
});
