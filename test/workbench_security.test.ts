// The workbench's attack surface: what a malicious page in the same browser, a peer on the network
// (`serve --host 0.0.0.0`), a client sending arbitrary protocol messages, or a compromised renderer
// in Electron can do. The crash cases run against a real `calibscope serve` child process, so a
// crash shows as that process exiting; the limits run against startServer in this process.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import Module from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { cookieName } from '../src/server/auth.js';
import { hostHeaderAllowed, startServer, type RunningServer, type ServerLimits } from '../src/server/server.js';
import type { ServerMessage } from '../src/service/protocol.js';
import { WorkbenchService } from '../src/service/service.js';
import { ROOT, scratchSpace } from './helpers/cli_runner.js';
import { httpStatus, serve, type Serve } from './helpers/workbench_browser.js';

const MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const TENSOR = 'encoder.layer.0.attention.self.query.weight';
const scratch = scratchSpace('calibscope-security-');
const ui = scratch.tmpDir('ui');
fs.writeFileSync(path.join(ui, 'index.html'), '<!doctype html><title>calibscope</title>');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends raw bytes and collects what comes back until the server closes (or `ms` pass). */
function rawExchange(port: number, bytes: string, ms = 3000): Promise<{ reply: string; closedByServer: boolean }> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1', () => c.write(bytes));
    let reply = '';
    const timer = setTimeout(() => {
      c.destroy();
      resolve({ reply, closedByServer: false });
    }, ms);
    c.on('data', (d) => (reply += d));
    c.on('error', () => undefined);
    c.on('close', () => {
      clearTimeout(timer);
      resolve({ reply, closedByServer: true });
    });
  });
}

function upgradeRequest(target: string, headers: string[]): string {
  return [`GET ${target} HTTP/1.1`, 'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', ...headers, '', ''].join('\r\n');
}

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

function openSocket(url: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

/** One request over a socket, answered by its response. */
function ask(ws: WebSocket, id: number, method: string, params: unknown): Promise<ServerMessage> {
  return new Promise((resolve) => {
    const on = (d: WebSocket.RawData) => {
      const m = JSON.parse(String(d)) as ServerMessage;
      if (m.type === 'response' && m.id === id) {
        ws.off('message', on);
        resolve(m);
      }
    };
    ws.on('message', on);
    ws.send(JSON.stringify({ type: 'request', id, method, params }));
  });
}

describe('calibscope serve survives hostile clients (a real serve process)', () => {
  let srv: Serve;
  let port: number;
  let token: string;
  const alive = async () => {
    assert.equal(srv.child.exitCode, null, 'calibscope serve is still running');
    assert.equal(srv.child.signalCode, null, 'calibscope serve is still running');
    assert.equal(await httpStatus(srv.url), 200);
  };
  before(async () => {
    srv = await serve(['--model', MODEL, '--cache', scratch.tmpDir('cache-serve')]);
    const u = new URL(srv.url);
    port = Number(u.port);
    token = u.searchParams.get('token')!;
  });
  after(async () => {
    if (srv.child.exitCode === null && srv.child.signalCode === null) await srv.stop();
  });

  test('a malformed cookie or URL in a WebSocket upgrade is refused, not an uncaught exception', async () => {
    // A page on a rebound name, or any peer of --host 0.0.0.0, can send these before any token.
    const badCookie = await rawExchange(port, upgradeRequest('/ws', ['Host: 127.0.0.1', `Cookie: ${cookieName(port)}=%E0%A4%A`]));
    assert.match(badCookie.reply, /^HTTP\/1\.1 401 /);
    const badUrl = await rawExchange(port, upgradeRequest('//', ['Host: 127.0.0.1']));
    assert.match(badUrl.reply, /^HTTP\/1\.1 400 /);
    const plainBadCookie = await rawExchange(port, `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: ${cookieName(port)}=%E0%A4%A\r\nConnection: close\r\n\r\n`);
    assert.match(plainBadCookie.reply, /^HTTP\/1\.1 401 /);
    await alive();
  });

  test('clients that reset the connection while an upgrade is refused do not end the server', async () => {
    for (let i = 0; i < 100; i++) {
      await new Promise<void>((resolve) => {
        const c = net.connect(port, '127.0.0.1', () => {
          c.write(upgradeRequest('/ws', ['Host: 127.0.0.1']));
          setImmediate(() => {
            c.resetAndDestroy();
            resolve();
          });
        });
        c.on('error', () => resolve());
      });
    }
    await sleep(200);
    await alive();
  });

  test('an oversized message or a malformed frame closes that connection only', async () => {
    const big = await openSocket(`ws://127.0.0.1:${port}/ws?token=${token}`);
    const code = await new Promise<number>((resolve) => {
      big.on('close', (c) => resolve(c));
      big.on('error', () => undefined);
      big.send(JSON.stringify({ type: 'request', id: 1, method: 'app.info', params: { pad: 'x'.repeat(2 << 20) } }));
    });
    assert.equal(code, 1009, 'message too big');
    // A frame with a reserved opcode (0xF) after a valid handshake.
    const frame = await new Promise<string>((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => c.write(upgradeRequest(`/ws?token=${token}`, ['Host: 127.0.0.1'])));
      let got = '';
      c.on('data', (d) => {
        if (!got) c.write(Buffer.from([0x8f, 0x80, 0, 0, 0, 0]));
        got += d.toString('latin1');
      });
      c.on('error', () => undefined);
      c.on('close', () => resolve(got));
    });
    assert.match(frame, /^HTTP\/1\.1 101 /);
    await alive();
    const ws = await openSocket(`ws://127.0.0.1:${port}/ws?token=${token}`);
    const info = await ask(ws, 2, 'app.info', {});
    assert.ok(info.type === 'response' && info.ok);
    ws.close();
  });

  test('prototype keys, unknown methods and deep nesting are protocol errors', async () => {
    const ws = await openSocket(`ws://127.0.0.1:${port}/ws?token=${token}`);
    const cases: [string, string][] = [
      ['profile.get', '{"modelId":"m","__proto__":{"polluted":true}}'],
      ['profile.get', '{"modelId":"m","constructor":{"prototype":{"polluted":true}}}'],
      ['__proto__', '{}'],
      ['toString', '{}'],
      ['app.info', `${'['.repeat(100_000)}${']'.repeat(100_000)}`],
    ];
    let id = 10;
    for (const [method, params] of cases) {
      const r = await new Promise<ServerMessage>((resolve) => {
        const at = ++id;
        ws.on('message', (d) => {
          const m = JSON.parse(String(d)) as ServerMessage;
          if (m.type === 'response' && m.id === at) resolve(m);
        });
        ws.send(`{"type":"request","id":${at},"method":${JSON.stringify(method)},"params":${params}}`);
      });
      assert.ok(r.type === 'response' && !r.ok && r.error.code === 'E_BAD_ARGUMENT', `${method} ${params.slice(0, 40)}`);
    }
    ws.close();
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    await alive();
  });
});

describe('calibscope serve: DNS rebinding and connection limits (startServer)', () => {
  let service: WorkbenchService;
  const servers: RunningServer[] = [];
  const start = async (limits?: Partial<ServerLimits>) => {
    const s = await startServer({ service, port: 0, rendererDir: ui, limits });
    servers.push(s);
    return s;
  };
  before(() => {
    service = new WorkbenchService({ cacheDir: scratch.tmpDir('cache-limits'), mode: 'browser' });
  });
  after(async () => {
    for (const s of servers) await s.close();
    await service.shutdown();
  });

  test('on loopback, a Host that is not a loopback name is refused, even with the token', async () => {
    const s = await start();
    // A page on evil.example rebound to 127.0.0.1 sends Host: evil.example:PORT and the same Origin.
    const evil = `evil.example:${s.port}`;
    const page = await get(`${s.url}?token=${s.token}`, { host: evil });
    assert.equal(page.status, 403);
    assert.doesNotMatch(page.body, /<title>calibscope/);
    await assert.rejects(openSocket(`ws://127.0.0.1:${s.port}/ws?token=${s.token}`, { host: evil, origin: `http://${evil}` }), /403/);
    for (const host of [`127.0.0.1:${s.port}`, `localhost:${s.port}`, 'LOCALHOST', `127.0.0.2:${s.port}`, `[::1]:${s.port}`]) {
      assert.equal((await get(`${s.url}?token=${s.token}`, { host })).status, 200, host);
    }
    const ws = await openSocket(`ws://127.0.0.1:${s.port}/ws?token=${s.token}`, { host: `localhost:${s.port}`, origin: `http://localhost:${s.port}` });
    ws.close();
    for (const h of [undefined, '', 'evil.example', 'localhost.evil.example', 'user@127.0.0.1', '127.0.0.1.nip.io', '[::1]x', '0.0.0.0']) {
      assert.equal(hostHeaderAllowed(h, '127.0.0.1'), false, String(h));
    }
    // Listening on another address, the machine's names are not known: the token is the guard.
    assert.equal(hostHeaderAllowed('gpu-box.lan:8765', '0.0.0.0'), true);
  });

  test('a refused upgrade closes the socket even when the client keeps its side open', async () => {
    const s = await start();
    const closed = await new Promise<boolean>((resolve) => {
      const c = net.connect({ port: s.port, host: '127.0.0.1', allowHalfOpen: true }, () => c.write(upgradeRequest('/ws', ['Host: 127.0.0.1'])));
      c.resume();
      c.on('error', () => undefined);
      c.on('close', () => resolve(true));
      // The client never ends its side; it keeps writing. A server that only half-closed keeps
      // the socket (and its descriptor) for as long as the client likes.
      c.on('end', () => {
        const poke = setInterval(() => c.writable && c.write('x'), 50);
        setTimeout(() => {
          clearInterval(poke);
          const open = !c.destroyed;
          c.destroy();
          resolve(!open);
        }, 1000);
      });
    });
    assert.equal(closed, true, 'the server destroyed the refused socket');
  });

  test('a slow-loris client that never finishes its headers is cut off', async () => {
    const s = await start({ headersTimeoutMs: 300, requestTimeoutMs: 600, timeoutCheckMs: 100 });
    const t0 = Date.now();
    const r = await rawExchange(s.port, 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ', 4000);
    assert.equal(r.closedByServer, true, 'closed by the server');
    assert.ok(Date.now() - t0 < 3000);
    assert.equal(await httpStatus(`${s.url}?token=${s.token}`), 200);
    // The timeouts are for requests: an open WebSocket outlives them.
    const ws = await openSocket(`ws://127.0.0.1:${s.port}/ws?token=${s.token}`);
    await sleep(1000);
    const info = await ask(ws, 1, 'app.info', {});
    assert.ok(info.type === 'response' && info.ok);
    ws.close();
  });

  test('connections beyond the cap are closed at once, and the server serves again after', async () => {
    const s = await start({ maxConnections: 4 });
    const idle: net.Socket[] = [];
    for (let i = 0; i < 4; i++) {
      const c = net.connect(s.port, '127.0.0.1');
      c.on('error', () => undefined);
      await new Promise((r) => c.once('connect', r));
      idle.push(c);
    }
    await sleep(50);
    const extra = await rawExchange(s.port, `GET /?token=${s.token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`, 2000);
    assert.equal(extra.closedByServer, true);
    assert.equal(extra.reply, '', 'nothing served past the cap');
    for (const c of idle) c.destroy();
    await sleep(50);
    assert.equal(await httpStatus(`${s.url}?token=${s.token}`), 200);
  });
});

describe('the service caps the jobs that requests start', () => {
  let service: WorkbenchService;
  let modelId: string;
  before(async () => {
    service = new WorkbenchService({ cacheDir: scratch.tmpDir('cache-jobs'), mode: 'browser', maxRunningJobs: 2, maxPendingReruns: 1 });
    const view = await service.openModel(MODEL, 'fp4');
    modelId = view.models[0].id;
    const job = await service.request('calibrate.model', { modelId });
    assert.ok(job.ok);
    assert.equal((await service.waitForJob((job.result as { id: string }).id))?.status, 'done');
  });
  after(() => service.shutdown());

  test('a flood of job requests: past the cap each is refused as a protocol error', async () => {
    // All ten arrive before any job has finished (as from one burst of WebSocket frames).
    const outs = await Promise.all(Array.from({ length: 10 }, () => service.request('calibrate.tensor', { modelId, tensor: TENSOR, search: 'naive' })));
    const started = outs.filter((o) => o.ok);
    const refused = outs.filter((o) => !o.ok);
    assert.equal(started.length, 2);
    assert.equal(refused.length, 8);
    for (const o of refused) {
      assert.ok(!o.ok);
      assert.equal(o.error.code, 'E_BAD_ARGUMENT');
      assert.match(o.error.message, /2 jobs are running, the most at once/);
      assert.deepEqual(o.error.details, { running: 2, limit: 2 });
    }
    assert.equal((await service.request('validation.run', { modelId })).ok, false);
    const done = await Promise.all(started.map((o) => service.waitForJob((o as { result: { id: string } }).result.id)));
    assert.deepEqual(
      done.map((j) => j?.status),
      ['done', 'done'],
    );
    // Once they finished, requests are admitted again.
    const again = await service.request('calibrate.tensor', { modelId, tensor: TENSOR, search: 'naive' });
    assert.ok(again.ok);
    const last = await service.waitForJob((again.result as { id: string }).id);
    assert.equal(last?.status, 'done');

    // Only the newest finished re-run is kept waiting (maxPendingReruns: 1); the older are dropped.
    const oldest = done[0]!.rerun!.rerunId;
    const kept = await service.request('rerun.keep', { rerunId: oldest });
    assert.ok(!kept.ok && kept.error.code === 'E_NOT_FOUND');
    assert.match(kept.error.message, /dropped as the oldest of more than 1 waiting/);
    assert.ok((await service.request('rerun.discard', { rerunId: last!.rerun!.rerunId })).ok);
  });
});

describe('electron main: permissions', () => {
  test('every session denies permission requests and permission checks', () => {
    // A stand-in for the `electron` module with what main.ts touches when it loads; the app never
    // becomes ready here, so no window or service process starts.
    const appHandlers = new Map<string, (...a: any[]) => void>();
    const electron = {
      app: { isPackaged: false, getPath: () => scratch.dir, whenReady: () => new Promise(() => undefined), on: (ev: string, cb: (...a: any[]) => void) => appHandlers.set(ev, cb), quit: () => undefined },
      protocol: { registerSchemesAsPrivileged: () => undefined, handle: () => undefined },
      ipcMain: { handle: () => undefined },
      BrowserWindow: class {},
      Menu: { buildFromTemplate: (t: unknown) => t, setApplicationMenu: () => undefined },
      dialog: {},
      shell: {},
      utilityProcess: {},
    };
    const M = Module as unknown as { _resolveFilename: (...a: any[]) => string };
    const resolve = M._resolveFilename;
    M._resolveFilename = function (request: string, ...rest: unknown[]) {
      return request === 'electron' ? 'electron-stand-in' : resolve.call(this, request, ...rest);
    };
    require.cache['electron-stand-in'] = { id: 'electron-stand-in', filename: 'electron-stand-in', loaded: true, exports: electron } as never;
    try {
      require(path.join(ROOT, 'dist', 'electron', 'main.js'));
    } finally {
      M._resolveFilename = resolve;
    }
    const created = appHandlers.get('session-created');
    assert.ok(created, 'main.ts sets up every session it gets');
    let requestHandler: ((wc: unknown, permission: string, cb: (granted: boolean) => void) => void) | null = null;
    let checkHandler: ((...a: unknown[]) => boolean) | null = null;
    created({ setPermissionRequestHandler: (h: typeof requestHandler) => (requestHandler = h), setPermissionCheckHandler: (h: typeof checkHandler) => (checkHandler = h) });
    for (const permission of ['media', 'geolocation', 'notifications', 'clipboard-read', 'openExternal']) {
      let granted: boolean | null = null;
      requestHandler!({}, permission, (g) => (granted = g));
      assert.equal(granted, false, permission);
      assert.equal(checkHandler!({}, permission, 'app://calibscope', {}), false, permission);
    }
  });
});
