import React, { useState } from 'react';

import type { Allocation } from '../types';

/** An executor's live allocations (job, nodes, tasks, idle for), each with a button that stops it. */
export function Allocations({
  executor,
  allocations,
  onCancel
}: {
  executor: string;
  allocations: Allocation[];
  onCancel: (id: string) => Promise<void>;
}): JSX.Element {
  const [stopping, setStopping] = useState<string | null>(null);
  const cancel = (id: string) => {
    setStopping(id);
    onCancel(id).finally(() => setStopping(null));
  };
  return (
    <table className="hetflow-allocations" aria-label={`allocations of ${executor}`}>
      <thead>
        <tr>
          <th>job</th>
          <th>nodes</th>
          <th>tasks</th>
          <th>idle for</th>
          <th />
        </tr>
      </thead>
      <tbody>
        {allocations.map(a => (
          <tr key={a.id} data-allocation={a.id}>
            <td>{a.id}</td>
            <td>{a.nodes.join(', ') || '…'}</td>
            <td title={`${a.running} running, ${a.tasks} handed to it`}>
              {a.running}/{a.tasks}
            </td>
            <td title={a.keep_alive ? `exits once idle for ${a.keep_alive} s` : 'exits when its tasks end'}>
              {a.running ? 'busy' : `${a.idle_for.toFixed(0)} s`}
            </td>
            <td>
              <button
                className="jp-Button jp-mod-styled jp-mod-warn"
                onClick={() => cancel(a.id)}
                disabled={stopping === a.id}
                aria-label={`cancel allocation ${a.id}`}
              >
                {stopping === a.id ? 'Stopping…' : 'Cancel'}
              </button>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
