import React, { useState } from 'react';

import type { HetflowAPI } from '../api';
import type { WorkflowModel } from '../model';

/** The server answers with the newest tasks only (a page): older ones come a page at a time, when asked for. */
export function LoadOlder(props: { api: HetflowAPI; model: WorkflowModel; onError: (text: string) => void }): JSX.Element {
  const [busy, setBusy] = useState(false);
  const load = () => {
    setBusy(true);
    props.api
      .tasks({ before: props.model.older })
      .then(page => props.model.loadOlder(page))
      .catch((error: Error) => props.onError(`could not load older tasks: ${error.message}`))
      .finally(() => setBusy(false));
  };
  return (
    <button className="jp-Button jp-mod-styled" disabled={busy} onClick={load} title="the sidebar holds the newest tasks; load the page before them">
      load older
    </button>
  );
}
