// What the Electron main process relies on, without Electron: its policy (URLs, external links,
// IPC senders, menu, recent items) and the service process it forwards to, run here as a Node
// child process speaking the same messages as Electron's utility process.
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { isAppUrl, isExternalAllowed, isTrustedSender, menuTemplate, RecentList, type MenuItem } from '../electron/policy.js';
import { parseHostArgs } from '../src/service/process_host.js';
import type { ServerMessage } from '../src/service/protocol.js';

const ROOT = path.resolve(__dirname, '..', '..');
const MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-electron-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe('electron policy', () => {
  test('only app://calibscope pages are the app', () => {
    assert.ok(isAppUrl('app://calibscope/index.html'));
    for (const u of ['app://other/index.html', 'file:///etc/passwd', 'http://calibscope/', 'https://example.com', 'javascript:alert(1)', 'not a url']) assert.ok(!isAppUrl(u), u);
  });

  test('only http(s) links go to the system browser', () => {
    assert.ok(isExternalAllowed('https://huggingface.co/BAAI/bge-small-en-v1.5'));
    assert.ok(isExternalAllowed('http://example.com/x'));
    for (const u of ['file:///etc/passwd', 'javascript:alert(1)', 'smb://host/share', 'app://calibscope/', 'vscode://x', 'http://', '']) assert.ok(!isExternalAllowed(u), u);
  });

  test('IPC is trusted only from the app window\'s top frame on an app page', () => {
    const ok = { frameUrl: 'app://calibscope/index.html', isMainFrame: true, webContentsId: 3, windowWebContentsId: 3 };
    assert.ok(isTrustedSender(ok));
    assert.ok(!isTrustedSender({ ...ok, isMainFrame: false }));
    assert.ok(!isTrustedSender({ ...ok, webContentsId: 4 }));
    assert.ok(!isTrustedSender({ ...ok, windowWebContentsId: null }));
    assert.ok(!isTrustedSender({ ...ok, frameUrl: 'https://evil.example/' }));
    assert.ok(!isTrustedSender({ ...ok, frameUrl: undefined }));
  });

  test('the menu opens model folders, pipelines and recent items', () => {
    const calls: string[] = [];
    const recent = new RecentList(path.join(scratch, 'user', 'recent.json'));
    assert.deepEqual(recent.load(), []);
    for (let i = 0; i < 12; i++) recent.add({ kind: i % 2 ? 'model' : 'pipeline', path: `/p/${i}` });
    recent.add({ kind: 'pipeline', path: '/p/4' });
    const list = recent.load();
    assert.equal(list.length, 10);
    assert.deepEqual(list[0], { kind: 'pipeline', path: '/p/4' });
    assert.equal(list.filter((r) => r.path === '/p/4').length, 1);
    fs.writeFileSync(path.join(scratch, 'user', 'recent.json'), '{broken');
    assert.deepEqual(recent.load(), []);

    const t = menuTemplate(list, {
      openModel: () => calls.push('model'),
      openPipeline: () => calls.push('pipeline'),
      openRecent: (r) => calls.push(`recent ${r.path}`),
      openDemo: () => calls.push('demo'),
    });
    const file = t.find((m) => m.label === 'File')!.submenu!;
    const byLabel = (items: MenuItem[], l: string) => items.find((m) => m.label === l)!;
    byLabel(file, 'Open Model Folder…').click!();
    byLabel(file, 'Open Pipeline…').click!();
    byLabel(file, 'Open Recent').submenu![0].click!();
    byLabel(file, 'Open the Demo Pipeline').click!();
    assert.deepEqual(calls, ['model', 'pipeline', 'recent /p/4', 'demo']);
    const empty = menuTemplate([], { openModel() {}, openPipeline() {}, openRecent() {}, openDemo() {} });
    assert.equal(empty[0].submenu!.find((m) => m.label === 'Open Recent')!.submenu![0].enabled, false);
  });
});

describe('service process', () => {
  test('parses its arguments, ignoring the ones Electron adds', () => {
    const a = parseHostArgs(['--no-sandbox', '--model', 'm', '--format', 'nvfp4', '--cache', 'c', '--mode', 'entropy-aware']);
    assert.equal(a.model, path.resolve('m'));
    assert.equal(a.cacheDir, path.resolve('c'));
    assert.equal(a.format, 'nvfp4');
    assert.equal(a.pipeline, null);
    assert.equal(a.mode, 'entropy-aware');
    assert.equal(parseHostArgs([]).mode, undefined);
  });

  test('answers protocol requests and pushes events over process messages', async () => {
    const child = fork(path.join(ROOT, 'dist', 'src', 'service', 'host_main.js'), ['--model', MODEL, '--cache', path.join(scratch, 'cache')], { stdio: 'pipe' });
    const messages: (ServerMessage | { type: string })[] = [];
    const waiters: (() => void)[] = [];
    child.on('message', (m) => {
      messages.push(m as ServerMessage);
      for (const w of waiters.splice(0)) w();
    });
    const waitFor = async (pred: (m: ServerMessage | { type: string }) => boolean) => {
      for (;;) {
        const hit = messages.find(pred);
        if (hit) return hit;
        await new Promise<void>((r) => waiters.push(r));
      }
    };
    try {
      await waitFor((m) => m.type === 'ready');
      child.send({ type: 'request', id: 1, method: 'workspace.get', params: {} });
      const ws = (await waitFor((m) => m.type === 'response' && (m as { id: number }).id === 1)) as ServerMessage & { ok: true; result: { models: { id: string }[] } };
      assert.equal(ws.result.models.length, 1);
      child.send({ type: 'request', id: 2, method: 'calibrate.model', params: { modelId: ws.result.models[0].id } });
      await waitFor((m) => m.type === 'event' && (m as { event: { type: string; job?: { status: string } } }).event.type === 'job.finished');
      child.send({ type: 'request', id: 3, method: 'workspace.get', params: { bogus: 1 } });
      const bad = (await waitFor((m) => m.type === 'response' && (m as { id: number }).id === 3)) as { ok: boolean; error: { code: string } };
      assert.equal(bad.ok, false);
      assert.equal(bad.error.code, 'E_BAD_ARGUMENT');
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      child.send({ type: 'shutdown' });
      assert.equal(await exited, 0);
    } finally {
      child.kill();
    }
  });
});
