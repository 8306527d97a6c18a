import React, { act } from 'react';
import { createRoot } from 'react-dom/client';

import type { HetflowAPI, TaskFilter, TaskPage } from '../api';
import { LoadOlder } from '../components/LoadOlder';
import { WorkflowModel } from '../model';
import { task } from './tasks';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

async function rendered(api: Partial<HetflowAPI>, model: WorkflowModel, errors: string[] = []): Promise<HTMLButtonElement> {
  const where = document.createElement('div');
  document.body.appendChild(where);
  await act(async () => {
    createRoot(where).render(<LoadOlder api={api as HetflowAPI} model={model} onError={m => errors.push(m)} />);
  });
  return where.querySelector('button') as HTMLButtonElement;
}

describe('load older', () => {
  it('fetches the page before the newest and adds it to the model', async () => {
    const model = new WorkflowModel();
    model.load({ tasks: [task('t4'), task('t3')], next: 't3' });
    const pages: Record<string, TaskPage> = { t3: { tasks: [task('t2'), task('t1')], next: null } };
    const tasks = jest.fn(async (filter: TaskFilter) => pages[filter.before!]);
    const button = await rendered({ tasks }, model);
    await act(async () => button.click());
    expect(tasks).toHaveBeenCalledWith({ before: 't3' });
    expect(model.view({ notebook: null, states: new Set() }).tasks.map(t => t.id)).toEqual(['t1', 't2', 't3', 't4']);
    expect(model.older).toBeNull();
  });

  it('says what went wrong and keeps what was loaded', async () => {
    const model = new WorkflowModel();
    model.load({ tasks: [task('t4')], next: 't4' });
    const errors: string[] = [];
    const button = await rendered({ tasks: async () => Promise.reject(new Error('503 Service Unavailable')) }, model, errors);
    await act(async () => button.click());
    expect(errors).toEqual(['could not load older tasks: 503 Service Unavailable']);
    expect(model.size).toBe(1);
    expect(model.older).toBe('t4');
    expect(button.disabled).toBe(false);
  });
});
