// The renderer's one way to the service: Electron IPC (window.calibscope from the preload) or the
// browser mode's WebSocket. Both carry the protocol's requests and events; the rest of the
// renderer never knows which one it has.
import type { Method, Outcome, Params, Result, ServerMessage, ServiceEvent } from '../../src/service/protocol';

export type ConnectionState = 'connecting' | 'open' | 'closed';

export interface Transport {
  request<M extends Method>(method: M, params: Params<M>): Promise<Outcome<Result<M>>>;
  onEvent(cb: (e: ServiceEvent) => void): () => void;
  onConnection(cb: (s: ConnectionState) => void): () => void;
}

/** What the Electron preload exposes through contextBridge. */
export interface PreloadBridge {
  request(method: string, params: unknown): Promise<Outcome<unknown>>;
  onEvent(cb: (e: ServiceEvent) => void): () => void;
}

export function electronTransport(bridge: PreloadBridge): Transport {
  return {
    request: (method, params) => bridge.request(method, params) as Promise<Outcome<never>>,
    onEvent: (cb) => bridge.onEvent(cb),
    onConnection: (cb) => {
      cb('open');
      return () => undefined;
    },
  };
}

const disconnected = { code: 'E_IO' as const, message: 'lost the connection to calibscope serve; reconnecting…', details: {} };

/**
 * A WebSocket to /ws on the page's own origin (the cookie carries the token); reconnects on loss.
 * Requests made before the first connection wait for it. Once a connection was lost, the state
 * stays 'closed' through the reconnect attempts, and a request made meanwhile fails at once with
 * `disconnected` rather than waiting, unanswered, for a server that may never come back.
 */
export function webSocketTransport(url: string): Transport {
  let ws: WebSocket | null = null;
  let nextId = 1;
  let retry = 250;
  const pending = new Map<number, (o: Outcome<unknown>) => void>();
  const queue: string[] = [];
  const eventCbs = new Set<(e: ServiceEvent) => void>();
  const connCbs = new Set<(s: ConnectionState) => void>();
  let state: ConnectionState = 'connecting';
  const setState = (s: ConnectionState) => {
    state = s;
    for (const cb of connCbs) cb(s);
  };

  const connect = () => {
    if (state !== 'closed') setState('connecting');
    const sock = new WebSocket(url);
    ws = sock;
    sock.onopen = () => {
      retry = 250;
      setState('open');
      for (const m of queue.splice(0)) sock.send(m);
    };
    sock.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data)) as ServerMessage;
      if (msg.type === 'event') {
        for (const cb of eventCbs) cb(msg.event);
        return;
      }
      const resolve = pending.get(msg.id);
      pending.delete(msg.id);
      resolve?.(msg.ok ? { ok: true, result: msg.result } : { ok: false, error: msg.error });
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      queue.length = 0;
      for (const [id, resolve] of pending) {
        pending.delete(id);
        resolve({ ok: false, error: disconnected });
      }
      setState('closed');
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 5000);
    };
  };
  connect();

  return {
    request: (method, params) =>
      new Promise((resolve) => {
        const id = nextId++;
        pending.set(id, resolve as (o: Outcome<unknown>) => void);
        const text = JSON.stringify({ type: 'request', id, method, params });
        if (ws && ws.readyState === WebSocket.OPEN) ws.send(text);
        else if (state === 'closed') {
          pending.delete(id);
          resolve({ ok: false, error: disconnected });
        } else queue.push(text);
      }),
    onEvent: (cb) => {
      eventCbs.add(cb);
      return () => eventCbs.delete(cb);
    },
    onConnection: (cb) => {
      connCbs.add(cb);
      cb(state);
      return () => connCbs.delete(cb);
    },
  };
}
