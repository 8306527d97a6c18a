import React, { useEffect, useState } from 'react';

import type { HetflowAPI } from '../api';
import { CREDENTIAL_KINDS, type Credential } from '../types';

const PUBLIC_FIELDS = new Set(['username', 'region', 'access_key_id', 'certificate']);

/** Add, replace or delete a secret. Values go to the engine and never come back: the list shows names only. */
export function Credentials({ api, onError }: { api: HetflowAPI; onError: (message: string) => void }): JSX.Element {
  const [credentials, setCredentials] = useState<Credential[]>([]);
  const [name, setName] = useState('');
  const [kind, setKind] = useState('password');
  const [fields, setFields] = useState<Record<string, string>>({});
  const reload = () => api.credentials().then(setCredentials, (err: Error) => onError(err.message));
  useEffect(() => {
    void reload();
  }, []);
  const spec = CREDENTIAL_KINDS[kind];
  const save = (event: React.FormEvent) => {
    event.preventDefault();
    const given = Object.fromEntries(Object.entries(fields).filter(([key, value]) => value && spec.required.concat(spec.optional).includes(key)));
    api.putCredential(name, kind, given).then(
      () => {
        setFields({});
        setName('');
        void reload();
      },
      (err: Error) => onError(err.message)
    );
  };
  const remove = (credential: string) => {
    api.deleteCredential(credential).then(reload, (err: Error) => onError(err.message));
  };
  return (
    <section className="hetflow-credentials" aria-label="credentials">
      <ul className="hetflow-credential-list">
        {credentials.map(c => (
          <li key={c.name} data-credential={c.name}>
            <span className="hetflow-credential-name">{c.name}</span> <span className="hetflow-muted">{c.kind}</span>{' '}
            <span className="hetflow-muted">({c.fields.join(', ')})</span>
            <button className="jp-Button jp-mod-styled jp-mod-warn" onClick={() => remove(c.name)} aria-label={`delete credential ${c.name}`}>
              Delete
            </button>
          </li>
        ))}
        {credentials.length === 0 ? <li className="hetflow-muted">no credentials yet</li> : null}
      </ul>
      <form onSubmit={save} aria-label="add or replace a credential">
        <label>
          name <input value={name} onChange={e => setName(e.target.value)} required aria-label="credential name" />
        </label>
        <label>
          kind{' '}
          <select value={kind} onChange={e => setKind(e.target.value)} aria-label="credential kind">
            {Object.keys(CREDENTIAL_KINDS).map(k => (
              <option key={k}>{k}</option>
            ))}
          </select>
        </label>
        {spec.required.concat(spec.optional).map(field => (
          <label key={field}>
            {field}
            {spec.required.includes(field) ? ' *' : ''}
            {field === 'private_key' || field === 'certificate' ? (
              <textarea value={fields[field] ?? ''} onChange={e => setFields({ ...fields, [field]: e.target.value })} aria-label={field} />
            ) : (
              <input
                type={PUBLIC_FIELDS.has(field) ? 'text' : 'password'}
                autoComplete="off"
                value={fields[field] ?? ''}
                onChange={e => setFields({ ...fields, [field]: e.target.value })}
                aria-label={field}
              />
            )}
          </label>
        ))}
        <button type="submit" className="jp-Button jp-mod-styled jp-mod-accept" aria-label="save credential">
          Save
        </button>
      </form>
    </section>
  );
}
