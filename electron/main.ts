// The Electron main process: one window showing the built renderer from app://calibscope, a
// menu, and IPC that forwards protocol requests to the service, which runs in a utility process.
// Thin by design: no calibration logic here; the rules it enforces live in policy.ts.
import path from 'node:path';
import { app, BrowserWindow, dialog, ipcMain, Menu, protocol, shell, utilityProcess, type UtilityProcess } from 'electron';
import { RENDERER_DIR, CONTENT_SECURITY_POLICY, readStatic } from '../src/server/static_files.js';
import type { Method, Outcome, ServerMessage } from '../src/service/protocol.js';
import { validateRequest } from '../src/service/validate.js';
import { asCalibscopeError } from '../src/util/errors.js';
import {
  APP_HOST,
  APP_ORIGIN,
  APP_SCHEME,
  EVENT_CHANNEL,
  isAppUrl,
  isExternalAllowed,
  isTrustedSender,
  menuTemplate,
  RecentList,
  REQUEST_CHANNEL,
  type RecentItem,
} from './policy.js';

protocol.registerSchemesAsPrivileged([{ scheme: APP_SCHEME, privileges: { standard: true, secure: true, supportFetchAPI: true } }]);

let win: BrowserWindow | null = null;
let service: UtilityProcess | null = null;
let nextId = 1;
const pending = new Map<number, (o: Outcome<unknown>) => void>();
const recent = () => new RecentList(path.join(app.getPath('userData'), 'recent.json'));

function startService(): UtilityProcess {
  // The service's own arguments (--pipeline, --model, --format, --cache) pass through.
  const args = process.argv.slice(app.isPackaged ? 1 : 2).filter((a) => a !== '.');
  const child = utilityProcess.fork(path.join(__dirname, '..', 'src', 'service', 'host_main.js'), args, { serviceName: 'calibscope service' });
  child.on('message', (msg: ServerMessage | { type: 'fatal'; error: { message: string } }) => {
    if (msg.type === 'response') {
      const resolve = pending.get(msg.id);
      pending.delete(msg.id);
      resolve?.(msg.ok ? { ok: true, result: msg.result } : { ok: false, error: msg.error });
    } else if (msg.type === 'event') {
      win?.webContents.send(EVENT_CHANNEL, msg.event);
    } else if (msg.type === 'fatal') {
      dialog.showErrorBox('calibscope', msg.error.message);
    }
  });
  child.on('exit', (code) => {
    for (const [id, resolve] of pending) {
      pending.delete(id);
      resolve({ ok: false, error: { code: 'E_INTERNAL', message: `the calibscope service stopped (exit code ${code})`, details: {} } });
    }
    service = null;
  });
  return child;
}

function ask(method: Method, params: unknown): Promise<Outcome<unknown>> {
  if (!service) return Promise.resolve({ ok: false, error: { code: 'E_INTERNAL', message: 'the calibscope service is not running', details: {} } });
  const id = nextId++;
  return new Promise((resolve) => {
    pending.set(id, resolve);
    service!.postMessage({ type: 'request', id, method, params });
  });
}

async function open(item: RecentItem): Promise<void> {
  const out = await ask(item.kind === 'model' ? 'workspace.openModel' : 'workspace.openPipeline', { path: item.path });
  if (out.ok) {
    recent().add(item);
    buildMenu();
  } else {
    dialog.showErrorBox('calibscope: cannot open', out.error.message);
  }
}

async function chooseAndOpen(kind: RecentItem['kind']): Promise<void> {
  if (!win) return;
  const r =
    kind === 'model'
      ? await dialog.showOpenDialog(win, { title: 'Open model folder', properties: ['openDirectory'] })
      : await dialog.showOpenDialog(win, { title: 'Open pipeline', properties: ['openFile'], filters: [{ name: 'Pipeline manifest', extensions: ['json'] }] });
  if (!r.canceled && r.filePaths[0]) await open({ kind, path: r.filePaths[0] });
}

function buildMenu(): void {
  const template = menuTemplate(recent().load(), {
    openModel: () => void chooseAndOpen('model'),
    openPipeline: () => void chooseAndOpen('pipeline'),
    openRecent: (item) => void open(item),
    openDemo: () => void ask('workspace.openDemo', {}),
  });
  Menu.setApplicationMenu(Menu.buildFromTemplate(template as Electron.MenuItemConstructorOptions[]));
}

function createWindow(): void {
  win = new BrowserWindow({
    width: 1440,
    height: 900,
    title: 'calibscope',
    webPreferences: {
      preload: path.join(__dirname, 'preload.js'),
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      nodeIntegrationInSubFrames: false,
      webviewTag: false,
      spellcheck: false,
    },
  });
  win.on('closed', () => (win = null));
  void win.loadURL(`${APP_ORIGIN}/index.html`);
}

app.on('web-contents-created', (_e, contents) => {
  // Nothing navigates away from the app, and no new windows open: http(s) links go to the browser.
  contents.on('will-navigate', (e, url) => {
    if (!isAppUrl(url)) e.preventDefault();
  });
  contents.on('will-redirect', (e, url) => {
    if (!isAppUrl(url)) e.preventDefault();
  });
  contents.setWindowOpenHandler(({ url }) => {
    if (isExternalAllowed(url)) void shell.openExternal(url);
    return { action: 'deny' };
  });
  contents.on('will-attach-webview', (e) => e.preventDefault());
});

// The workbench needs no camera, microphone, location, notifications or the like; Electron grants
// such requests by default, so every session denies them all, asked or checked.
app.on('session-created', (session) => {
  session.setPermissionRequestHandler((_contents, _permission, callback) => callback(false));
  session.setPermissionCheckHandler(() => false);
});

app.whenReady().then(() => {
  protocol.handle(APP_SCHEME, async (req) => {
    const url = new URL(req.url);
    if (url.host !== APP_HOST) return new Response('not found', { status: 404 });
    const file = await readStatic(RENDERER_DIR, url.pathname);
    if (!file) return new Response('not found', { status: 404 });
    return new Response(new Uint8Array(file.body), { headers: { 'content-type': file.type, 'content-security-policy': CONTENT_SECURITY_POLICY } });
  });
  ipcMain.handle(REQUEST_CHANNEL, async (event, method: unknown, params: unknown) => {
    const trusted = isTrustedSender({
      frameUrl: event.senderFrame?.url,
      isMainFrame: event.senderFrame !== null && event.senderFrame.parent === null,
      webContentsId: event.sender.id,
      windowWebContentsId: win ? win.webContents.id : null,
    });
    if (!trusted) return { ok: false, error: { code: 'E_BAD_ARGUMENT', message: 'request refused: not from the calibscope window', details: {} } };
    try {
      const v = validateRequest(method, params);
      return await ask(v.method, v.params);
    } catch (err) {
      return { ok: false, error: asCalibscopeError(err).toJSON() };
    }
  });
  service = startService();
  buildMenu();
  createWindow();
});

app.on('window-all-closed', () => {
  service?.postMessage({ type: 'shutdown' });
  app.quit();
});
