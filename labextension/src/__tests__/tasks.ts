/** Test helper (not a spec): a task as the engine sends it, with a short id whose digits give its creation order. */

import type { Task, TaskState } from '../types';

export function task(id: string, state: TaskState = 'queued', extra: Partial<Task> = {}): Task {
  return {
    id,
    name: `cell-${id}`,
    state,
    executor: 'local',
    options: {},
    code: 'x = 1',
    inputs: {},
    outputs: ['x'],
    notebook: 'a.ipynb',
    cell_id: `c-${id}`,
    retries: 0,
    timeout: null,
    deps: [],
    refs: {},
    bound: {},
    group_id: null,
    element: null,
    attempts: 1,
    restarts: 0,
    cache_key: null,
    payload_hash: null,
    result_hash: null,
    error: null,
    handle: null,
    created: Number(id.replace(/\D/g, '')) || 0,
    started: null,
    finished: null,
    ...extra
  };
}
