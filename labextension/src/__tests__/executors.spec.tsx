import React, { act } from 'react';
import { createRoot } from 'react-dom/client';

import type { HetflowAPI } from '../api';
import { Executors } from '../components/Executors';
import type { ExecutorInfo } from '../types';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const warm: ExecutorInfo = {
  kind: 'slurm',
  healthy: true,
  allocations: [{ id: '4242', nodes: ['nid001'], running: 0, tasks: 3, idle_for: 7.4, keep_alive: 120 }]
};

async function rendered(api: Partial<HetflowAPI>): Promise<HTMLElement> {
  const where = document.createElement('div');
  document.body.appendChild(where);
  await act(async () => {
    createRoot(where).render(<Executors api={api as HetflowAPI} onError={message => { throw new Error(message); }} />);
  });
  return where;
}

describe('the executor panel', () => {
  it('lists each live allocation with its job, nodes, tasks and idle time', async () => {
    const where = await rendered({ executors: async () => ({ cluster: warm }) });
    const row = where.querySelector('[data-allocation="4242"]');
    expect(row?.textContent).toContain('nid001');
    expect(row?.textContent).toContain('0/3');
    expect(row?.textContent).toContain('7 s');
  });

  it('cancels an allocation through the API and shows what the engine answers', async () => {
    const cancelAllocation = jest.fn(async () => ({ ...warm, allocations: [] }));
    const where = await rendered({ executors: async () => ({ cluster: warm }), cancelAllocation });
    const button = where.querySelector('button[aria-label="cancel allocation 4242"]') as HTMLButtonElement;
    await act(async () => button.click());
    expect(cancelAllocation).toHaveBeenCalledWith('cluster', '4242');
    expect(where.querySelector('[data-allocation="4242"]')).toBeNull();
  });

  it('cleans the blob store of an executor that keeps one, and says what went', async () => {
    const cleanExecutor = jest.fn(async () => ({ removed: 2, bytes: 2048 }));
    const notes: string[] = [];
    const where = document.createElement('div');
    document.body.appendChild(where);
    const api = { executors: async () => ({ cluster: { ...warm, blob_store: '/scratch/hetflow/blobs' }, local: { kind: 'local', healthy: true } }), cleanExecutor };
    await act(async () => {
      createRoot(where).render(<Executors api={api as unknown as HetflowAPI} onError={m => notes.push(m)} />);
    });
    expect(where.querySelector('button[aria-label="clean executor local"]')).toBeNull();
    const button = where.querySelector('button[aria-label="clean executor cluster"]') as HTMLButtonElement;
    await act(async () => button.click());
    expect(cleanExecutor).toHaveBeenCalledWith('cluster');
    expect(notes).toEqual(['cluster: 2 blobs removed (2048 bytes)']);
  });

  it('shows where each executor reaches: a host, or a namespace and context', async () => {
    const k8s = { kind: 'kubernetes', healthy: true, namespace: 'research', context: 'gpu-cluster' };
    const ssh = { kind: 'slurm', healthy: true, host: 'alice@perlmutter:22' };
    const where = await rendered({ executors: async () => ({ k8s, hpc: ssh }) });
    expect(where.querySelector('[data-executor="k8s"]')?.textContent).toContain('namespace research, context gpu-cluster');
    expect(where.querySelector('[data-executor="hpc"]')?.textContent).toContain('alice@perlmutter:22');
  });
});
