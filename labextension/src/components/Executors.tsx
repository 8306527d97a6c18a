import React, { useEffect, useState } from 'react';

import type { HetflowAPI } from '../api';
import type { ExecutorInfo } from '../types';
import { Allocations } from './Allocations';

/** How often the panel asks again (allocations come and go, health changes). */
export const REFRESH_MS = 2000;

export function Executors({
  api,
  onError,
  onNote = onError
}: {
  api: HetflowAPI;
  onError: (message: string) => void;
  onNote?: (message: string) => void;
}): JSX.Element {
  const [executors, setExecutors] = useState<Record<string, ExecutorInfo>>({});
  const [checking, setChecking] = useState<string | null>(null);
  useEffect(() => {
    const load = () => api.executors().then(setExecutors, (err: Error) => onError(err.message));
    load();
    const timer = window.setInterval(load, REFRESH_MS);
    return () => window.clearInterval(timer);
  }, []);
  const cancelAllocation = (name: string, id: string) =>
    api
      .cancelAllocation(name, id)
      .then(info => setExecutors(all => ({ ...all, [name]: info })), (err: Error) => onError(err.message));
  const clean = (name: string) =>
    api
      .cleanExecutor(name)
      .then(
        ({ removed, bytes }) => onNote(`${name}: ${removed} blobs removed (${bytes} bytes)`),
        (err: Error) => onError(err.message)
      );
  const check = (name: string) => {
    setChecking(name);
    api
      .checkExecutor(name)
      .then(info => setExecutors(all => ({ ...all, [name]: info })), (err: Error) => onError(err.message))
      .finally(() => setChecking(null));
  };
  return (
    <section className="hetflow-executors" aria-label="executors">
      <table>
        <thead>
          <tr>
            <th>name</th>
            <th>kind</th>
            <th>health</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {Object.entries(executors).map(([name, info]) => (
            <React.Fragment key={name}>
              <tr data-executor={name}>
                <td>{name}</td>
                <td>
                  {info.kind}
                  {where(info) ? <div className="hetflow-muted hetflow-where">{where(info)}</div> : null}
                </td>
                <td className={info.healthy ? 'hetflow-healthy' : 'hetflow-unhealthy'} title={info.error ?? ''}>
                  {info.healthy ? 'healthy' : `unhealthy${info.error ? `: ${info.error}` : ''}`}
                </td>
                <td>
                  <button
                    className="jp-Button jp-mod-styled"
                    onClick={() => check(name)}
                    disabled={checking === name}
                    aria-label={`check executor ${name}`}
                  >
                    {checking === name ? 'Checking…' : 'Check'}
                  </button>
                  {info.blob_store ? (
                    <button
                      className="jp-Button jp-mod-styled"
                      onClick={() => clean(name)}
                      title={`empty ${info.blob_store} (but what running tasks read)`}
                      aria-label={`clean executor ${name}`}
                    >
                      Clean
                    </button>
                  ) : null}
                </td>
              </tr>
              {info.allocations?.length ? (
                <tr className="hetflow-allocations-row">
                  <td colSpan={4}>
                    <Allocations
                      executor={name}
                      allocations={info.allocations}
                      onCancel={id => cancelAllocation(name, id)}
                    />
                  </td>
                </tr>
              ) : null}
            </React.Fragment>
          ))}
        </tbody>
      </table>
    </section>
  );
}

/** Where an executor reaches, for its row's tooltip: a host, or a namespace and context. */
function where(info: ExecutorInfo): string {
  if (typeof info.namespace === 'string') {
    return `namespace ${info.namespace}, context ${String(info.context ?? '(current)')}`;
  }
  return typeof info.host === 'string' ? info.host : '';
}
