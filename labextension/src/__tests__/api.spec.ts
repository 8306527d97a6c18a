import { ServerConnection } from '@jupyterlab/services';

import { APIError, EventStream, HetflowAPI } from '../api';
import type { EngineEvent } from '../types';

class FakeSocket {
  static made: FakeSocket[] = [];
  readyState = 0;
  onopen: (() => void) | null = null;
  onmessage: ((message: { data: string }) => void) | null = null;
  onclose: (() => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.made.push(this);
  }
  open(): void {
    this.readyState = 1;
    this.onopen?.();
  }
  send(event: EngineEvent): void {
    this.onmessage?.({ data: JSON.stringify(event) });
  }
  close(): void {
    this.readyState = 3;
    this.onclose?.();
  }
}

const settings = ServerConnection.makeSettings({ baseUrl: 'http://127.0.0.1:8888/user/alice/', wsUrl: 'ws://127.0.0.1:8888/user/alice/', token: 'tok' });

describe('HetflowAPI', () => {
  it('builds its URLs under the server base_url', () => {
    const api = new HetflowAPI(settings);
    expect(api.url('tasks')).toBe('http://127.0.0.1:8888/user/alice/hetflow/api/tasks');
    expect(api.eventsUrl()).toBe('ws://127.0.0.1:8888/user/alice/hetflow/api/events?token=tok');
  });

  it('turns an error answer into an APIError with the engine message', async () => {
    const fetchMock = jest.fn(async () => new Response(JSON.stringify({ message: "no task has the id or name 'x'" }), { status: 404 }));
    const api = new HetflowAPI({ ...settings, fetch: fetchMock as unknown as typeof fetch });
    await expect(api.task('x')).rejects.toEqual(new APIError(404, "no task has the id or name 'x'"));
    expect(fetchMock).toHaveBeenCalled();
  });

  it('reads log byte offsets from the response header', async () => {
    const fetchMock = jest.fn(async () => new Response('line\n', { status: 200, headers: { 'X-Hetflow-Next-Offset': '42' } }));
    const api = new HetflowAPI({ ...settings, fetch: fetchMock as unknown as typeof fetch });
    expect(await api.logs('t1', 37)).toEqual({ text: 'line\n', next: 42 });
    expect(((fetchMock.mock.calls[0] as unknown[])[0] as Request).url).toContain('tasks/t1/logs?offset=37');
  });
});

describe('EventStream', () => {
  beforeEach(() => {
    jest.useFakeTimers();
    FakeSocket.made = [];
  });
  afterEach(() => jest.useRealTimers());

  it('delivers events and reconnects with growing delays after a drop', () => {
    const events: EngineEvent[] = [];
    let opened = 0;
    const stream = new EventStream(
      new HetflowAPI(settings),
      { onEvent: e => events.push(e), onOpen: () => opened++ },
      url => new FakeSocket(url) as unknown as WebSocket
    );
    FakeSocket.made[0].open();
    FakeSocket.made[0].send({ type: 'log', task: 't', stream: 'stdout', text: 'hi', offset: 0 });
    expect(events).toHaveLength(1);
    FakeSocket.made[0].close();
    jest.advanceTimersByTime(499);
    expect(FakeSocket.made).toHaveLength(1);
    jest.advanceTimersByTime(1);
    expect(FakeSocket.made).toHaveLength(2);
    FakeSocket.made[1].close(); // never opened: the next wait doubles
    jest.advanceTimersByTime(999);
    expect(FakeSocket.made).toHaveLength(2);
    jest.advanceTimersByTime(1);
    expect(FakeSocket.made).toHaveLength(3);
    FakeSocket.made[2].open();
    expect(opened).toBe(2);
    stream.dispose();
    jest.advanceTimersByTime(60000);
    expect(FakeSocket.made).toHaveLength(3);
  });
});
