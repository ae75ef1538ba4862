// The Electron main process through its handlers, with a stand-in for the `electron` module only
// (its binary cannot run here). Everything below it is real: the IPC handler forwards to the
// service running in a child process (as Electron's utility process would), the app:// protocol
// serves the built renderer, and the navigation / window-open rules are the ones main.ts installs.
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import Module from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type {} from '../electron/main.js'; // compiled with the tests; loaded below, after the stand-in

const ROOT = path.resolve(__dirname, '..', '..');
const MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-electron-main-'));

type Handler = (...args: any[]) => any;

/** Records what main.ts asks of Electron; utilityProcess.fork runs a real Node child process. */
function standIn() {
  const rec = {
    appHandlers: new Map<string, Handler>(),
    ipc: new Map<string, Handler>(),
    protocols: new Map<string, Handler>(),
    privileged: [] as unknown[],
    windows: [] as any[],
    menu: null as any,
    sent: [] as [string, unknown][],
    opened: [] as string[],
    errors: [] as string[],
    children: [] as ChildProcess[],
    dialogPaths: [MODEL],
  };
  let ready!: () => void;
  const whenReady = new Promise<void>((r) => (ready = r));
  class BrowserWindow {
    webContents: any;
    constructor(readonly options: any) {
      const mainFrame = { url: 'app://calibscope/index.html', parent: null };
      this.webContents = { id: 7, mainFrame, send: (ch: string, ev: unknown) => rec.sent.push([ch, ev]) };
      rec.windows.push(this);
    }
    url = '';
    loadURL(u: string) {
      this.url = u;
      return Promise.resolve();
    }
    on() {
      return this;
    }
  }
  const electron = {
    app: {
      isPackaged: false,
      getPath: () => path.join(scratch, 'userData'),
      whenReady: () => whenReady,
      on: (ev: string, cb: Handler) => rec.appHandlers.set(ev, cb),
      quit: () => undefined,
    },
    protocol: {
      registerSchemesAsPrivileged: (s: unknown[]) => rec.privileged.push(...s),
      handle: (scheme: string, fn: Handler) => rec.protocols.set(scheme, fn),
    },
    ipcMain: { handle: (ch: string, fn: Handler) => rec.ipc.set(ch, fn) },
    BrowserWindow,
    Menu: { buildFromTemplate: (t: unknown) => t, setApplicationMenu: (m: unknown) => (rec.menu = m) },
    dialog: {
      showOpenDialog: async () => ({ canceled: false, filePaths: rec.dialogPaths }),
      showErrorBox: (_t: string, m: string) => rec.errors.push(m),
    },
    shell: { openExternal: async (u: string) => void rec.opened.push(u) },
    utilityProcess: {
      fork: (modulePath: string, args: string[]) => {
        const child = fork(modulePath, args, { stdio: 'pipe' });
        rec.children.push(child);
        return {
          postMessage: (m: unknown) => child.connected && child.send(m as object),
          on: (ev: string, cb: Handler) => (ev === 'message' ? child.on('message', cb) : child.on('exit', (code) => cb(code))),
        };
      },
    },
  };
  return { rec, electron, ready };
}

async function until<T>(f: () => T | undefined, what: string, ms = 20_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('electron main process (stand-in electron module)', () => {
  const { rec, electron, ready } = standIn();
  const trusted = () => ({ sender: rec.windows[0].webContents, senderFrame: rec.windows[0].webContents.mainFrame });
  let invoke: Handler;

  before(async () => {
    const M = Module as unknown as { _resolveFilename: Handler };
    const resolve = M._resolveFilename;
    M._resolveFilename = function (request: string, ...rest: unknown[]) {
      return request === 'electron' ? 'electron-stand-in' : resolve.call(this, request, ...rest);
    };
    require.cache['electron-stand-in'] = { id: 'electron-stand-in', filename: 'electron-stand-in', loaded: true, exports: electron } as never;
    // The service process gets its arguments from the command line, as with `electron . --model DIR`.
    process.argv.push('--model', MODEL, '--cache', path.join(scratch, 'cache'));
    require(path.join(ROOT, 'dist', 'electron', 'main.js'));
    ready();
    invoke = await until(() => rec.ipc.get('calibscope:request'), 'the IPC handler');
  });

  after(async () => {
    rec.appHandlers.get('window-all-closed')?.();
    await Promise.all(rec.children.map((c) => (c.exitCode !== null ? null : new Promise((r) => c.once('exit', r)))));
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  test('the window is isolated: context isolation, sandbox, no Node, the preload, the app:// page', () => {
    assert.equal(rec.windows.length, 1);
    const wp = rec.windows[0].options.webPreferences;
    assert.equal(wp.contextIsolation, true);
    assert.equal(wp.sandbox, true);
    assert.equal(wp.nodeIntegration, false);
    assert.equal(wp.webviewTag, false);
    assert.equal(wp.preload, path.join(ROOT, 'dist', 'electron', 'preload.js'));
    assert.equal(rec.windows[0].url, 'app://calibscope/index.html');
    assert.deepEqual(rec.privileged, [{ scheme: 'app', privileges: { standard: true, secure: true, supportFetchAPI: true } }]);
  });

  test('app:// serves the built renderer with a strict CSP, and nothing outside it', async () => {
    const handle = rec.protocols.get('app')!;
    const ok = await handle(new Request('app://calibscope/index.html'));
    if (fs.existsSync(path.join(ROOT, 'dist', 'ui', 'index.html'))) {
      assert.equal(ok.status, 200);
      assert.match(ok.headers.get('content-security-policy'), /default-src 'none'; script-src 'self'/);
    }
    for (const u of ['app://calibscope/../../package.json', 'app://calibscope/%2e%2e/%2e%2e/package.json', 'app://other/index.html']) {
      assert.equal((await handle(new Request(u))).status, 404, u);
    }
  });

  test('IPC: untrusted senders are refused, arguments validated, the rest forwarded to the service', async () => {
    const evil = { sender: { id: 99 }, senderFrame: { url: 'https://evil.example/', parent: null } };
    const refused = await invoke(evil, 'workspace.get', {});
    assert.equal(refused.ok, false);
    assert.match(refused.error.message, /not from the calibscope window/);
    const subframe = { sender: rec.windows[0].webContents, senderFrame: { url: 'app://calibscope/index.html', parent: rec.windows[0].webContents.mainFrame } };
    assert.equal((await invoke(subframe, 'workspace.get', {})).ok, false);
    const bad = await invoke(trusted(), 'tensor.grid', { modelId: 'm', tensor: 't', metric: 'scale', maxRows: -1, maxCols: 1 });
    assert.equal(bad.ok, false);
    assert.equal(bad.error.code, 'E_BAD_ARGUMENT');
    const unknown = await invoke(trusted(), 'fs.readFile', { path: '/etc/passwd' });
    assert.equal(unknown.ok, false);
    let w = await invoke(trusted(), 'workspace.get', {});
    for (let i = 0; i < 200 && !(w.ok && w.result.models.length === 1); i++) {
      await new Promise((r) => setTimeout(r, 25));
      w = await invoke(trusted(), 'workspace.get', {});
    }
    assert.equal(w.result.kind, 'model');
    // A job's events reach the window over the event channel.
    const job = await invoke(trusted(), 'calibrate.model', { modelId: w.result.models[0].id });
    assert.equal(job.ok, true);
    await until(() => rec.sent.find(([ch, ev]: [string, any]) => ch === 'calibscope:event' && ev.type === 'job.finished' && ev.job.id === job.result.id), 'the job.finished event');
    const v = await invoke(trusted(), 'profile.get', { modelId: w.result.models[0].id });
    assert.equal(v.result.summary.state, 'valid');
  });

  test('navigation away and new windows are denied; only http(s) links open outside', () => {
    const created = rec.appHandlers.get('web-contents-created')!;
    const handlers = new Map<string, Handler>();
    let openHandler: Handler = () => undefined;
    created({}, { on: (ev: string, cb: Handler) => handlers.set(ev, cb), setWindowOpenHandler: (h: Handler) => (openHandler = h) });
    const navigate = (url: string) => {
      let prevented = false;
      handlers.get('will-navigate')!({ preventDefault: () => (prevented = true) }, url);
      return prevented;
    };
    assert.equal(navigate('https://evil.example/'), true);
    assert.equal(navigate('file:///etc/passwd'), true);
    assert.equal(navigate('app://calibscope/index.html'), false);
    assert.deepEqual(openHandler({ url: 'https://huggingface.co/' }), { action: 'deny' });
    assert.deepEqual(openHandler({ url: 'file:///etc/passwd' }), { action: 'deny' });
    assert.deepEqual(openHandler({ url: 'javascript:alert(1)' }), { action: 'deny' });
    assert.deepEqual(rec.opened, ['https://huggingface.co/']);
  });

  test('the menu opens a model folder and remembers it under recent items', async () => {
    const file = rec.menu.find((m: any) => m.label === 'File').submenu;
    file.find((m: any) => m.label === 'Open Model Folder…').click();
    const recentFile = path.join(scratch, 'userData', 'recent.json');
    await until(() => fs.existsSync(recentFile), 'recent.json');
    assert.deepEqual(JSON.parse(fs.readFileSync(recentFile, 'utf8')), [{ kind: 'model', path: MODEL }]);
    const again = rec.menu.find((m: any) => m.label === 'File').submenu.find((m: any) => m.label === 'Open Recent').submenu;
    assert.equal(again[0].label, `Model: ${MODEL}`);
    // A path that is not a model: a readable error box, and nothing added to the recent list.
    rec.dialogPaths = [path.join(scratch, 'nothing-here')];
    file.find((m: any) => m.label === 'Open Model Folder…').click();
    await until(() => rec.errors.length > 0, 'the error box');
    assert.match(rec.errors[0], /nothing-here/);
    assert.equal(JSON.parse(fs.readFileSync(recentFile, 'utf8')).length, 1);
  });
});
