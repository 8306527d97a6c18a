/** What can be done to a task, and when: one table for the commands, the sidebar's buttons and the graph's toolbar. */

import { FINAL_STATES, type TaskState } from './types';

export type TaskAction = 'cancel' | 'retry' | 'rerun';

export const TASK_ACTIONS: TaskAction[] = ['cancel', 'retry', 'rerun'];

/** Each action's JupyterLab command (`execute` acts on `args.task`, else on the selected task) and button text. */
export const ACTIONS: Record<TaskAction, { command: string; text: string; warn?: boolean }> = {
  cancel: { command: 'hetflow:cancel-task', text: 'Cancel', warn: true },
  retry: { command: 'hetflow:retry-task', text: 'Retry' },
  rerun: { command: 'hetflow:rerun-task', text: 'Re-run' }
};

/** Cancel what has not ended; retry what failed or was cancelled; re-run anything that ended. */
export function canAct(action: TaskAction, state: TaskState | undefined): boolean {
  if (state === undefined) {
    return false;
  }
  switch (action) {
    case 'cancel':
      return !FINAL_STATES.has(state);
    case 'retry':
      return state === 'failed' || state === 'cancelled';
    case 'rerun':
      return FINAL_STATES.has(state);
  }
}
