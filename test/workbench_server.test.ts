// Browser mode's HTTP + WebSocket server: the token (401 without it, the cookie after the first
// tokened request), loopback by default, port 0, the Origin check on the WebSocket, static files
// without path escapes, and the protocol over the socket.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { cookieName } from '../src/server/auth.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import type { ServerMessage } from '../src/service/protocol.js';
import { WorkbenchService } from '../src/service/service.js';
import { readOnlyRunner } from './helpers/read_only.js';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-server-'));
const ui = path.join(scratch, 'ui');
fs.mkdirSync(path.join(ui, 'assets'), { recursive: true });
fs.writeFileSync(path.join(ui, 'index.html'), '<!doctype html><title>calibscope</title>');
fs.writeFileSync(path.join(ui, 'assets', 'app.js'), 'console.log(1)');
fs.writeFileSync(path.join(scratch, 'secret.txt'), 'secret');

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function get(url: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      })
      .on('error', reject);
  });
}

function openSocket(url: string, headers: Record<string, string>): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

describe('calibscope serve: HTTP and WebSocket', () => {
  let server: RunningServer;
  let service: WorkbenchService;
  before(async () => {
    service = new WorkbenchService({ cacheDir: path.join(scratch, 'cache'), mode: 'browser' });
    server = await startServer({ service, port: 0, rendererDir: ui });
  });
  after(async () => {
    await server.close();
    await service.shutdown();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  test('listens on loopback on a free port and prints a tokened URL', () => {
    assert.equal(server.host, '127.0.0.1');
    assert.ok(server.port > 0);
    assert.equal(server.openUrl, `http://127.0.0.1:${server.port}/?token=${server.token}`);
    assert.ok(server.token.length >= 32);
  });

  test('every request without the token gets 401', async () => {
    for (const p of ['/', '/index.html', '/assets/app.js', '/nothing', `/?token=${server.token.slice(1)}x`]) {
      const r = await get(`${server.url.slice(0, -1)}${p}`);
      assert.equal(r.status, 401, p);
      assert.doesNotMatch(r.body, /calibscope<\/title>/);
    }
    const r = await get(server.url, { cookie: `${cookieName(server.port)}=wrong` });
    assert.equal(r.status, 401);
    await assert.rejects(openSocket(`ws://127.0.0.1:${server.port}/ws`, {}), /401/);
  });

  test('the tokened request sets an HttpOnly cookie that then suffices', async () => {
    const first = await get(server.openUrl);
    assert.equal(first.status, 200);
    assert.match(first.body, /<title>calibscope<\/title>/);
    const cookie = String(first.headers['set-cookie']);
    assert.match(cookie, new RegExp(`^${cookieName(server.port)}=[^;]+; Path=/; HttpOnly; SameSite=Strict`));
    assert.match(String(first.headers['content-security-policy']), /script-src 'self'/);
    const pair = cookie.split(';')[0];
    const asset = await get(`${server.url}assets/app.js`, { cookie: pair });
    assert.equal(asset.status, 200);
    assert.match(String(asset.headers['content-type']), /javascript/);
    assert.equal(asset.headers['set-cookie'], undefined);
  });

  test("a second server on another port keeps its own cookie: neither overwrites the other's token", async () => {
    const other = await startServer({ service, port: 0, rendererDir: ui });
    try {
      // What a browser holds after opening both printed URLs: one cookie per server.
      const jar = [server, other].map((s) => `${cookieName(s.port)}=${s.token}`).join('; ');
      for (const s of [server, other]) assert.equal((await get(s.url, { cookie: jar })).status, 200);
      assert.equal((await get(other.url, { cookie: `${cookieName(server.port)}=${server.token}` })).status, 401, "one server's token is not the other's");
    } finally {
      await other.close();
    }
  });

  test('paths cannot leave the renderer folder', async () => {
    const cookie = `${cookieName(server.port)}=${server.token}`;
    for (const p of ['/../secret.txt', '/%2e%2e/secret.txt', '/assets/..%2f..%2fsecret.txt', '/%00.js']) {
      const r = await get(`${server.url.slice(0, -1)}${p}`, { cookie });
      assert.notEqual(r.body, 'secret', p);
      assert.ok(r.status === 404 || r.status === 200, `${p}: ${r.status}`);
    }
  });

  test('the WebSocket carries the protocol and refuses foreign origins', async () => {
    const cookie = `${cookieName(server.port)}=${server.token}`;
    await assert.rejects(openSocket(`ws://127.0.0.1:${server.port}/ws`, { cookie, origin: 'http://evil.example' }), /403/);
    const ws = await openSocket(`ws://127.0.0.1:${server.port}/ws`, { cookie, origin: `http://127.0.0.1:${server.port}` });
    const replies = new Map<number, ServerMessage>();
    const waiters = new Map<number, () => void>();
    ws.on('message', (d) => {
      const m = JSON.parse(String(d)) as ServerMessage;
      if (m.type === 'response') {
        replies.set(m.id, m);
        waiters.get(m.id)?.();
      }
    });
    const ask = (id: number, method: string, params: unknown) =>
      new Promise<ServerMessage>((resolve) => {
        waiters.set(id, () => resolve(replies.get(id)!));
        ws.send(JSON.stringify({ type: 'request', id, method, params }));
      });
    const info = await ask(1, 'app.info', {});
    assert.ok(info.type === 'response' && info.ok);
    assert.equal((info as { result: { mode: string } }).result.mode, 'browser');
    const bad = await ask(2, 'profile.get', { modelId: 'x', junk: true });
    assert.ok(bad.type === 'response' && !bad.ok && bad.error.code === 'E_BAD_ARGUMENT');
    // A token in the query works for the socket too.
    const ws2 = await openSocket(`ws://127.0.0.1:${server.port}/ws?token=${server.token}`, {});
    ws2.close();
    ws.close();
  });
});

describe('calibscope serve: bad arguments', () => {
  const ROOT = path.resolve(__dirname, '..', '..');
  const cases: [string[], RegExp][] = [
    [['--port', 'http'], /--port must be an integer in 0\.\.65535/],
    [['--port', '70000'], /--port must be an integer/],
    [['--pipeline', 'a.json', '--model', 'm'], /give --pipeline or --model, not both/],
    [['--format', 'fp3'], /unknown format "fp3"/],
    [['--mode', 'dynamic'], /unknown calibration mode "dynamic": expected static, activation-aware, entropy-aware/],
    [['--colour', 'x'], /unknown option --colour/],
    [['--pipeline', path.join(os.tmpdir(), 'calibscope-no-such', 'pipeline.json')], /no such pipeline manifest/],
  ];
  for (const [args, re] of cases) {
    test(`serve ${args.join(' ')} fails with a clear message`, () => {
      const r = spawnSync(process.execPath, ['bin/calibscope.js', 'serve', '--no-open', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, re);
      assert.equal(r.stdout, '', 'no URL printed');
    });
  }
});

describe('calibscope serve: listening errors and a read-only cache', () => {
  const ROOT = path.resolve(__dirname, '..', '..');

  test('a port in use is E_IO saying so, and the CLI exits non-zero without a URL', async () => {
    const holder = http.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
    const port = (holder.address() as { port: number }).port;
    try {
      const service = new WorkbenchService({ cacheDir: path.join(scratch, 'cache-inuse'), mode: 'browser' });
      await assert.rejects(startServer({ service, port, rendererDir: ui }), (e: any) => {
        assert.equal(e.code, 'E_IO');
        assert.match(e.message, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use`));
        return true;
      });
      await service.shutdown();
      const r = spawnSync(process.execPath, ['bin/calibscope.js', 'serve', '--no-open', '--json', '--port', String(port), '--cache', path.join(scratch, 'cache-inuse')], {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 20_000,
      });
      assert.equal(r.status, 1);
      assert.equal(JSON.parse(r.stdout).error.details.errno, 'EADDRINUSE');
    } finally {
      await new Promise<void>((r) => holder.close(() => r()));
    }
  });

  for (const host of ['999.1.1.1', 'no such host', '192.0.2.1']) {
    test(`--host ${JSON.stringify(host)} is a bad argument (exit 2) naming --host`, () => {
      const r = spawnSync(process.execPath, ['bin/calibscope.js', 'serve', '--no-open', '--host', host, '--cache', path.join(scratch, 'cache-host')], {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 20_000,
      });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /E_BAD_ARGUMENT: --host ".*" is not an address/);
      assert.equal(r.stdout, '');
    });
  }

  test('with nothing opened on a read-only cache, the demo job fails saying why and what to do', (t) => {
    const own = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-ro-demo-'));
    t.after(() => fs.rmSync(own, { recursive: true, force: true }));
    const ro = readOnlyRunner({ cwd: ROOT, scratch: own });
    if (ro.skip) return t.skip(ro.skip);
    const cache = path.join(own, 'cache');
    fs.mkdirSync(cache);
    const script =
      `require('./dist/src/service/default_workspace.js').ensureDemo(${JSON.stringify(cache)})` +
      `.then(() => console.log('{}'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message, details: e.details })))`;
    const r = ro.run(['-e', script], cache);
    assert.equal(r.status, 0, r.stderr);
    const e = JSON.parse(r.stdout);
    assert.equal(e.code, 'E_IO');
    assert.match(e.message, /is read-only \((EACCES|EPERM|EROFS)\), so the demo pipeline cannot be written there: open a model or a pipeline, or use a writable --cache/);
    assert.equal(e.details.path, cache);
    assert.deepEqual(fs.readdirSync(cache), [], 'nothing written');
  });

  test('a read-only cache still opens, and its valid profiles show as valid', async () => {
    const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
    if (asRoot || process.platform === 'win32') {
      // Root ignores write bits; the CLI's read-only cases run as user nobody in cli_robustness.
      const has = spawnSync('sh', ['-c', 'command -v setpriv'], { encoding: 'utf8' }).status === 0;
      if (!has || !asRoot) return;
    }
    const model = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-ro-cache-'));
    const dir = path.join(cache, 'c');
    const writer = new WorkbenchService({ cacheDir: dir, mode: 'browser' });
    const opened: any = await writer.openModel(model, 'fp8_e4m3');
    const job = await writer.request('calibrate.model', { modelId: opened.models[0].id });
    if ((job as any).ok) await writer.waitForJob((job as any).result.id);
    await writer.shutdown();
    try {
      if (asRoot) {
        fs.chmodSync(cache, 0o755);
        // As user nobody the root-owned cache is read-only; serve must start (a URL on stdout).
        const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--', process.execPath, 'bin/calibscope.js', 'serve', '--no-open', '--model', model, '--format', 'fp8_e4m3', '--cache', dir], {
          cwd: ROOT,
          encoding: 'utf8',
          timeout: 8_000,
        });
        if (/EACCES|Permission denied/.test(r.stderr) && !/cache folder/.test(r.stderr) && r.stdout === '') return; // nobody cannot run node here
        assert.match(r.stdout, /^http:\/\/127\.0\.0\.1:\d+\/\?token=/, r.stderr);
        assert.doesNotMatch(r.stderr, /not writable/);
      } else {
        const walk = (d: string, on: boolean) => {
          const st = fs.statSync(d);
          if (st.isDirectory()) for (const x of fs.readdirSync(d)) walk(path.join(d, x), on);
          fs.chmodSync(d, on ? st.mode | 0o200 : st.mode & ~0o222);
        };
        walk(dir, false);
        try {
          const service = new WorkbenchService({ cacheDir: dir, mode: 'browser' });
          const view: any = await service.openModel(model, 'fp8_e4m3');
          assert.equal(view.models[0].state ?? view.models[0].profile?.state, 'valid');
          await service.shutdown();
        } finally {
          walk(dir, true);
        }
      }
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });
});
