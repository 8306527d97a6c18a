/** The one client of hetflow's REST API and event socket, under the Jupyter server's own auth (and XSRF). */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import type { IDisposable } from '@lumino/disposable';

import type {
  Credential,
  EngineEvent,
  ExecutorInfo,
  HistoryRow,
  LoginPrompt,
  Task,
  TaskState
} from './types';

export class APIError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

export interface TaskFilter {
  notebook?: string | null;
  states?: TaskState[];
  limit?: number;
  before?: string | null; // a page's `next`: the tasks older than that one
}

/** Newest first; `next` is the `before` of the following page, null when there are no older tasks. */
export interface TaskPage {
  tasks: Task[];
  next: string | null;
}

export class HetflowAPI {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  url(path: string): string {
    return URLExt.join(this.settings.baseUrl, 'hetflow/api', path);
  }

  private async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const response = await ServerConnection.makeRequest(this.url(path), init, this.settings);
    if (!response.ok) {
      const text = await response.text();
      let message = text || response.statusText;
      try {
        message = JSON.parse(text).message ?? message;
      } catch {
        // not JSON: keep the text
      }
      throw new APIError(response.status, message);
    }
    return response;
  }

  private async json<T>(path: string, init: RequestInit = {}): Promise<T> {
    const response = await this.fetch(path, init);
    const text = await response.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  async tasks(filter: TaskFilter = {}): Promise<TaskPage> {
    const query = new URLSearchParams();
    if (filter.notebook) {
      query.set('notebook', filter.notebook);
    }
    if (filter.states?.length) {
      query.set('state', filter.states.join(','));
    }
    if (filter.limit) {
      query.set('limit', String(filter.limit));
    }
    if (filter.before) {
      query.set('before', filter.before);
    }
    const suffix = query.toString() ? `?${query}` : '';
    return this.json<TaskPage>(`tasks${suffix}`);
  }

  task(ref: string): Promise<{ task: Task; events: HistoryRow[] }> {
    return this.json(`tasks/${encodeURIComponent(ref)}`);
  }

  async act(ref: string, action: 'cancel' | 'retry' | 'rerun'): Promise<Task> {
    return (await this.json<{ task: Task }>(`tasks/${encodeURIComponent(ref)}/${action}`, { method: 'POST' })).task;
  }

  async logs(ref: string, offset = 0): Promise<{ text: string; next: number }> {
    const response = await this.fetch(`tasks/${encodeURIComponent(ref)}/logs?offset=${offset}`);
    const text = await response.text();
    const next = Number(response.headers.get('X-Hetflow-Next-Offset') ?? offset + text.length);
    return { text, next };
  }

  async executors(): Promise<Record<string, ExecutorInfo>> {
    return (await this.json<{ executors: Record<string, ExecutorInfo> }>('executors')).executors;
  }

  checkExecutor(name: string): Promise<ExecutorInfo> {
    return this.json(`executors/${encodeURIComponent(name)}/check`, { method: 'POST' });
  }

  /** Empties the executor's blob store (slurm, ssh), but for what running tasks read. */
  cleanExecutor(name: string): Promise<{ removed: number; bytes: number }> {
    return this.json(`executors/${encodeURIComponent(name)}/clean`, { method: 'POST' });
  }

  /** Stops a live allocation (a warm Slurm job, a pack's process); answers the executor as it is now. */
  cancelAllocation(name: string, allocation: string): Promise<ExecutorInfo> {
    return this.json(`executors/${encodeURIComponent(name)}/allocations/${encodeURIComponent(allocation)}`, {
      method: 'DELETE'
    });
  }

  async credentials(): Promise<Credential[]> {
    return (await this.json<{ credentials: Credential[] }>('credentials')).credentials;
  }

  async putCredential(name: string, kind: string, fields: Record<string, string>): Promise<Credential> {
    const body = JSON.stringify({ kind, fields });
    return (await this.json<{ credential: Credential }>(`credentials/${encodeURIComponent(name)}`, { method: 'PUT', body }))
      .credential;
  }

  async deleteCredential(name: string): Promise<void> {
    await this.fetch(`credentials/${encodeURIComponent(name)}`, { method: 'DELETE' });
  }

  async prompts(): Promise<LoginPrompt[]> {
    return (await this.json<{ prompts: LoginPrompt[] }>('prompts')).prompts;
  }

  async answerPrompt(id: string, answers: string[]): Promise<void> {
    await this.fetch(`prompts/${encodeURIComponent(id)}`, { method: 'POST', body: JSON.stringify({ answers }) });
  }

  async dismissPrompt(id: string): Promise<void> {
    await this.fetch(`prompts/${encodeURIComponent(id)}`, { method: 'DELETE' });
  }

  eventsUrl(): string {
    const url = URLExt.join(this.settings.wsUrl, 'hetflow/api/events');
    return this.settings.token ? `${url}?token=${encodeURIComponent(this.settings.token)}` : url;
  }
}

/** The event socket, opened again with backoff when it drops; `onOpen` lets the caller catch up on what it missed. */
export class EventStream implements IDisposable {
  private socket: WebSocket | null = null;
  private delay = 500;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private disposed = false;

  constructor(
    private readonly api: HetflowAPI,
    private readonly handlers: {
      onEvent: (event: EngineEvent) => void;
      onOpen?: () => void;
      onClose?: () => void;
    },
    private readonly makeSocket: (url: string) => WebSocket = url => new WebSocket(url)
  ) {
    this.connect();
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  get connected(): boolean {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  private connect(): void {
    if (this.disposed) {
      return;
    }
    const socket = this.makeSocket(this.api.eventsUrl());
    this.socket = socket;
    socket.onopen = () => {
      this.delay = 500;
      this.handlers.onOpen?.();
    };
    socket.onmessage = message => {
      this.handlers.onEvent(JSON.parse(String(message.data)) as EngineEvent);
    };
    socket.onclose = () => {
      this.handlers.onClose?.();
      if (!this.disposed) {
        this.timer = setTimeout(() => this.connect(), this.delay);
        this.delay = Math.min(this.delay * 2, 10000);
      }
    };
  }

  dispose(): void {
    this.disposed = true;
    if (this.timer) {
      clearTimeout(this.timer);
    }
    this.socket?.close();
  }
}
