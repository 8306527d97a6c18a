/** The engine's data model, as the REST API and the event socket carry it (see docs/openapi.yaml). */

export type TaskState = 'pending' | 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

export const TASK_STATES: TaskState[] = ['pending', 'queued', 'running', 'completed', 'failed', 'cancelled'];

export const FINAL_STATES: ReadonlySet<TaskState> = new Set(['completed', 'failed', 'cancelled']);

export interface TaskError {
  type: string;
  message: string;
  traceback?: string;
}

export interface Task {
  id: string;
  name: string;
  state: TaskState;
  executor: string;
  options: Record<string, unknown>;
  code: string;
  inputs: Record<string, string>;
  outputs: string[];
  notebook: string | null;
  cell_id: string | null;
  retries: number;
  timeout: number | null;
  deps: string[];
  refs: Record<string, [string | string[], string]>;
  bound: Record<string, string>;
  group_id: string | null;
  element: number | null;
  attempts: number;
  restarts: number;
  cache_key: string | null;
  payload_hash: string | null;
  result_hash: string | null;
  error: TaskError | null;
  handle: Record<string, unknown> | null;
  created: number;
  started: number | null;
  finished: number | null;
}

export interface HistoryRow {
  seq: number;
  task_id: string;
  time: number;
  state: TaskState;
  message: string | null;
}

export interface TaskStateEvent {
  type: 'task';
  task: string;
  state: TaskState;
  message: string | null;
  data: Task;
}

export interface LogEvent {
  type: 'log';
  task: string;
  stream: 'stdout' | 'stderr';
  text: string;
  offset: number;
}

/** A question a remote system asks at login (an MFA one-time code); the answers go back once, never shown again. */
export interface LoginPrompt {
  id: string;
  executor: string;
  host: string;
  title: string;
  instructions: string;
  fields: { text: string; echo: boolean }[];
  asked: number;
}

export interface PromptEvent {
  type: 'prompt';
  task: null;
  tasks: string[];
  state: 'open' | 'closed';
  browsers: number;
  prompt: LoginPrompt;
}

export type EngineEvent = TaskStateEvent | LogEvent | PromptEvent;

/** A launch of the slurm or ssh kind, while it runs tasks or, warm, waits for more. */
export interface Allocation {
  id: string;
  nodes: string[];
  running: number;
  tasks: number;
  idle_for: number;
  keep_alive: number;
}

export interface ExecutorInfo {
  kind: string;
  healthy: boolean;
  error?: string;
  allocations?: Allocation[];
  blob_store?: string | null;
  [detail: string]: unknown;
}

export interface Credential {
  name: string;
  kind: string;
  fields: string[];
  public: Record<string, string>;
  updated: number;
}

export const CREDENTIAL_KINDS: Record<string, { required: string[]; optional: string[] }> = {
  'ssh-key': { required: ['private_key'], optional: ['passphrase', 'certificate', 'username'] },
  password: { required: ['password'], optional: ['username'] },
  aws: { required: ['access_key_id', 'secret_access_key'], optional: ['session_token', 'region'] },
  token: { required: ['token'], optional: [] }
};
