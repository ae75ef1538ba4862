// Browser mode: an HTTP server for the built renderer and a WebSocket at /ws that carries the
// service protocol. Loopback by default; every request needs the per-start token (query or cookie),
// otherwise 401. The WebSocket also checks that its Origin is this server. On loopback, a Host
// header that is not a loopback name is refused (DNS rebinding). Slow or idle clients are cut off
// and connections are capped, so a peer cannot exhaust the process's sockets.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { CalibscopeError } from '../util/errors.js';
import type { WorkbenchService } from '../service/service.js';
import type { RequestMessage, ServerMessage } from '../service/protocol.js';
import { authenticate, newToken, setCookieHeader } from './auth.js';
import { CONTENT_SECURITY_POLICY, RENDERER_DIR, readStatic } from './static_files.js';

export interface ServerOptions {
  service: WorkbenchService;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  token?: string;
  rendererDir?: string;
  /** Overrides of DEFAULT_LIMITS (tests use short timeouts). */
  limits?: Partial<ServerLimits>;
}

export interface ServerLimits {
  /** Time a client has to send its request's headers, and the whole request (Node's defaults are
   *  60 s and 300 s: a slow-loris client could hold a socket that long). */
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  /** How often those timeouts are checked (Node's default, 30 s, adds up to 30 s to each). */
  timeoutCheckMs: number;
  /** Open connections at most, HTTP and WebSocket together; further ones are closed at once
   *  rather than running the process out of file descriptors. A browser uses a handful. */
  maxConnections: number;
}

export const DEFAULT_LIMITS: ServerLimits = { headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, timeoutCheckMs: 2_000, maxConnections: 256 };

export interface RunningServer {
  url: string;
  /** The URL with the token, to open in a browser. */
  openUrl: string;
  port: number;
  host: string;
  token: string;
  close(): Promise<void>;
}

const MAX_MESSAGE = 1 << 20;

function deny(res: http.ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`${text}\n`);
}

export function isLoopback(host: string): boolean {
  return host === '127.0.0.1' || host === '::1' || host === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Host headers a loopback server answers: a page whose own name was rebound to 127.0.0.1
 *  (DNS rebinding) sends its name, not one of these. Strict on purpose: no user@, no paths. */
const LOOPBACK_HOST_HEADER = /^(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\])(:\d{1,5})?$/i;

/** Whether a request's Host header is acceptable for a server listening on `listenHost`: on
 *  loopback only loopback names; elsewhere any (the machine's names are not known; the token guards). */
export function hostHeaderAllowed(header: string | undefined, listenHost: string): boolean {
  if (!isLoopback(listenHost)) return true;
  return header !== undefined && LOOPBACK_HOST_HEADER.test(header);
}

function hostForUrl(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** Node's listen errors, said in terms of --host and --port. */
function listenError(err: Error, host: string, port: number): CalibscopeError {
  const code = (err as NodeJS.ErrnoException).code;
  const at = `${hostForUrl(host)}:${port}`;
  if (code === 'EADDRINUSE') {
    return new CalibscopeError('E_IO', `port ${port} on ${host} is already in use; choose another with --port N, or --port 0 for a free one`, { host, port, errno: code });
  }
  if (code === 'EACCES') return new CalibscopeError('E_IO', `not allowed to listen on ${at} (ports below 1024 need privileges); choose another --port`, { host, port, errno: code });
  // A name that does not resolve, or an address that is not this machine's: the --host value is wrong.
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EADDRNOTAVAIL' || code === 'EAI_NONAME' || code === 'EINVAL') {
    const why = code === 'EADDRNOTAVAIL' ? 'is not an address of this machine' : 'is not an address or a host name that resolves';
    return new CalibscopeError('E_BAD_ARGUMENT', `--host ${JSON.stringify(host)} ${why} (${code}); use 127.0.0.1, ::1, 0.0.0.0 or one of this machine's addresses`, { option: 'host', value: host, errno: code });
  }
  return new CalibscopeError('E_IO', `cannot listen on ${at}: ${err.message}`, { host, port, errno: code ?? null });
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const host = opts.host ?? '127.0.0.1';
  const token = opts.token ?? newToken();
  const root = opts.rendererDir ?? RENDERER_DIR;
  const service = opts.service;
  const limits: ServerLimits = { ...DEFAULT_LIMITS, ...opts.limits };

  const server = http.createServer({ headersTimeout: limits.headersTimeoutMs, requestTimeout: limits.requestTimeoutMs, connectionsCheckingInterval: limits.timeoutCheckMs }, (req, res) => {
    void (async () => {
      if (!hostHeaderAllowed(req.headers.host, host)) return deny(res, 403, `calibscope: Host ${JSON.stringify(String(req.headers.host ?? '').slice(0, 100))} not allowed; open http://127.0.0.1 or http://localhost`);
      let url: URL;
      try {
        url = new URL(req.url ?? '/', 'http://local');
      } catch {
        return deny(res, 400, 'bad request');
      }
      const auth = authenticate(req, url, token, req.socket.localPort ?? 0);
      if (!auth.ok) return deny(res, 401, 'calibscope: unauthorized (open the URL with ?token=… that `calibscope serve` printed)');
      if (req.method !== 'GET' && req.method !== 'HEAD') return deny(res, 405, 'method not allowed');
      const file = await readStatic(root, url.pathname);
      if (!file) {
        if (url.pathname === '/' || url.pathname === '/index.html') return deny(res, 500, `calibscope: the renderer is not built (no ${root}/index.html); run npm run build:ui`);
        return deny(res, 404, 'not found');
      }
      const headers: Record<string, string> = {
        'content-type': file.type,
        'content-security-policy': CONTENT_SECURITY_POLICY,
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
        // Vite's assets carry a content hash in their names: cacheable; the page itself is not.
        'cache-control': url.pathname.startsWith('/assets/') ? 'private, max-age=31536000, immutable' : 'no-store',
      };
      if (auth.fromQuery) headers['set-cookie'] = setCookieHeader(token, req.socket.localPort ?? 0);
      res.writeHead(200, headers);
      res.end(req.method === 'HEAD' ? undefined : file.body);
    })().catch((err) => {
      if (!res.headersSent) deny(res, 500, `calibscope: ${(err as Error).message}`);
      else res.destroy();
    });
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE });
  const sockets = new Set<WebSocket>();
  const send = (ws: WebSocket, msg: ServerMessage) => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
  };
  const unsubscribe = service.onEvent((event) => {
    for (const ws of sockets) send(ws, { type: 'event', event });
  });

  server.maxConnections = limits.maxConnections;

  server.on('upgrade', (req, socket, head) => {
    // The upgrade handler runs outside any promise: nothing here may throw, and a client that
    // resets the connection must not become an unhandled 'error' event (either ends the process).
    socket.on('error', () => socket.destroy());
    const refuse = (status: number, text: string) => {
      // http.Server sockets are half-open capable: end() alone leaves the socket open for as long
      // as the client keeps its side open. Destroy it once the refusal is written.
      socket.once('finish', () => socket.destroy());
      socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://local');
    } catch {
      return refuse(400, 'Bad Request');
    }
    if (!hostHeaderAllowed(req.headers.host, host)) return refuse(403, 'Forbidden');
    const origin = req.headers.origin;
    const expected = `http://${req.headers.host}`;
    if (url.pathname !== '/ws') return refuse(404, 'Not Found');
    if (!authenticate(req, url, token, req.socket.localPort ?? 0).ok) return refuse(401, 'Unauthorized');
    if (origin !== undefined && origin !== expected) return refuse(403, 'Forbidden');
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws);
      ws.on('close', () => sockets.delete(ws));
      // An oversized message (> MAX_MESSAGE) or a malformed frame: ws closes the connection itself
      // (1009, 1002); without a listener its 'error' event would end the process.
      ws.on('error', () => undefined);
      ws.on('message', (data, isBinary) => {
        if (isBinary) return ws.close(1003, 'text frames only');
        let msg: Partial<RequestMessage>;
        try {
          msg = JSON.parse(data.toString());
        } catch {
          return ws.close(1007, 'not JSON');
        }
        if (msg?.type !== 'request' || typeof msg.id !== 'number') return ws.close(1008, 'not a request');
        const id = msg.id;
        void service.request(msg.method, msg.params).then((outcome) => send(ws, { type: 'response', id, ...outcome }));
      });
    });
  });

  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error) => {
      unsubscribe();
      reject(listenError(err, host, opts.port ?? 0));
    };
    server.once('error', fail);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', fail);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${hostForUrl(host)}:${port}/`;
  return {
    url,
    openUrl: `${url}?token=${token}`,
    port,
    host,
    token,
    close: async () => {
      unsubscribe();
      for (const ws of sockets) ws.terminate();
      wss.close();
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
    },
  };
}
