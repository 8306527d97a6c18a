import { Notification } from '@jupyterlab/apputils';
import { CommandRegistry } from '@lumino/commands';

import { ACTIONS, canAct, TASK_ACTIONS, type TaskAction } from '../actions';
import type { HetflowAPI } from '../api';
import { addTaskCommands } from '../commands';
import { WorkflowModel } from '../model';
import { TASK_STATES, type Task, type TaskState } from '../types';
import { task } from './tasks';

describe('canAct', () => {
  it('cancels what has not ended, retries what failed or was cancelled, re-runs what ended', () => {
    const table = Object.fromEntries(TASK_STATES.map(state => [state, TASK_ACTIONS.filter(a => canAct(a, state))]));
    expect(table).toEqual({
      pending: ['cancel'],
      queued: ['cancel'],
      running: ['cancel'],
      completed: ['rerun'],
      failed: ['retry', 'rerun'],
      cancelled: ['retry', 'rerun']
    });
    expect(TASK_ACTIONS.filter(a => canAct(a, undefined))).toEqual([]); // no task, or one not loaded
  });
});

describe('the task commands', () => {
  const after: Record<TaskAction, TaskState> = { cancel: 'cancelled', retry: 'queued', rerun: 'queued' };
  let commands: CommandRegistry;
  let model: WorkflowModel;
  let act: jest.Mock<Promise<Task>, [string, TaskAction]>;

  beforeEach(() => {
    commands = new CommandRegistry();
    model = new WorkflowModel();
    act = jest.fn(async (id: string, action: TaskAction) => task(id, after[action]));
    addTaskCommands(commands, { act } as unknown as HetflowAPI, model);
    model.load({ tasks: [task('t1', 'running'), task('t2', 'failed')], next: null });
  });

  const enabled = (args = {}) => TASK_ACTIONS.filter(a => commands.isEnabled(ACTIONS[a].command, args));

  it('are enabled by the selected task state, or by the task named in args', () => {
    expect(enabled()).toEqual([]);
    model.select('t1');
    expect(enabled()).toEqual(['cancel']);
    expect(enabled({ task: 't2' })).toEqual(['retry', 'rerun']);
    expect(enabled({ task: 'unknown' })).toEqual([]);
  });

  it('announce a change when the selection or the selected task state changes, not for other tasks', () => {
    const changed: string[] = [];
    commands.commandChanged.connect((_, change) => changed.push(change.id ?? '*'));
    model.select('t1');
    expect(changed).toEqual(TASK_ACTIONS.map(a => ACTIONS[a].command));
    changed.length = 0;
    model.apply({ type: 'task', task: 't2', state: 'queued', message: null, data: task('t2', 'queued') });
    expect(changed).toEqual([]);
    model.apply({ type: 'task', task: 't1', state: 'completed', message: null, data: task('t1', 'completed') });
    expect(changed).toHaveLength(3);
    expect(enabled()).toEqual(['rerun']);
  });

  it('act on the selected task through the API and show the answer at once', async () => {
    model.select('t1');
    await commands.execute(ACTIONS.cancel.command);
    expect(act).toHaveBeenCalledWith('t1', 'cancel');
    expect(model.get('t1')?.state).toBe('cancelled');
    expect(enabled()).toEqual(['retry', 'rerun']);
    await commands.execute(ACTIONS.retry.command, { task: 't2' });
    expect(act).toHaveBeenLastCalledWith('t2', 'retry');
  });

  it('do nothing when disabled, or with nothing selected', async () => {
    await commands.execute(ACTIONS.cancel.command);
    model.select('t2');
    await commands.execute(ACTIONS.cancel.command);
    expect(act).not.toHaveBeenCalled();
  });

  it('say so in a notification when the engine refuses', async () => {
    const notify = jest.spyOn(Notification, 'error').mockReturnValue('n1');
    act.mockRejectedValueOnce(new Error('task t1 has ended'));
    model.select('t1');
    await commands.execute(ACTIONS.cancel.command);
    expect(notify).toHaveBeenCalledWith(expect.stringContaining('task t1 has ended'));
    expect(model.get('t1')?.state).toBe('running');
  });
});
