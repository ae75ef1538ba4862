// What a reviewer ran into, at the level of the store and the display helpers: a lost connection
// to `calibscope serve` (requests fail at once and the view stays as it was, instead of a blank
// view waiting for an answer that never comes), and a stale profile's pass mark.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { passMark } from '../renderer/src/format';
import type { WorkbenchStore } from '../renderer/src/store';
import { webSocketTransport, type ConnectionState } from '../renderer/src/transport';
import type { WorkbenchService } from '../src/service/service.js';
import { storeOnService, until } from './helpers/store_harness.js';

const ROOT = path.resolve(__dirname, '..', '..');
const MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-review-'));

/** A stand-in for the browser's WebSocket: the test opens and closes it, and sees what was sent. */
class FakeSocket {
  static readonly OPEN = 1;
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: string[] = [];
  onopen: (() => void) | null = null;
  onclose: (() => void) | null = null;
  onmessage: ((ev: { data: string }) => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(text: string) {
    this.sent.push(text);
  }
  open() {
    this.readyState = FakeSocket.OPEN;
    this.onopen?.();
  }
  drop() {
    this.readyState = 3;
    this.onclose?.();
  }
  answer(result: unknown) {
    const req = JSON.parse(this.sent[this.sent.length - 1]!) as { id: number };
    this.onmessage?.({ data: JSON.stringify({ type: 'response', id: req.id, ok: true, result }) });
  }
}

describe('the WebSocket transport after a lost connection', () => {
  const saved = (globalThis as { WebSocket?: unknown }).WebSocket;
  before(() => {
    (globalThis as { WebSocket?: unknown }).WebSocket = FakeSocket;
  });
  after(() => {
    (globalThis as { WebSocket?: unknown }).WebSocket = saved;
  });

  test('requests wait for the first connection, then fail at once while it is lost, and work again after reconnecting', async () => {
    FakeSocket.all = [];
    const t = webSocketTransport('ws://127.0.0.1:1/ws');
    const states: ConnectionState[] = [];
    t.onConnection((s) => states.push(s));
    // Before the first connection: queued, answered once it opens.
    const first = t.request('jobs.list', {});
    FakeSocket.all[0]!.open();
    assert.equal(FakeSocket.all[0]!.sent.length, 1, 'the queued request is sent on open');
    FakeSocket.all[0]!.answer([]);
    assert.deepEqual(await first, { ok: true, result: [] });

    // The server goes away: a request made now is answered at once, not left waiting.
    FakeSocket.all[0]!.drop();
    assert.equal(states[states.length - 1], 'closed');
    const t0 = Date.now();
    const lost = await Promise.race([t.request('workspace.get', {}), new Promise((r) => setTimeout(() => r('no answer'), 1000))]);
    assert.notEqual(lost, 'no answer', 'a request while disconnected must not hang');
    assert.ok(Date.now() - t0 < 500);
    assert.equal((lost as { ok: boolean }).ok, false);
    assert.equal((lost as { error: { code: string } }).error.code, 'E_IO');
    assert.match((lost as { error: { message: string } }).error.message, /lost the connection/);

    // A reconnect attempt does not make it look as if the page were just connecting for the first time.
    await until({ getState: () => ({ toasts: [] }) } as unknown as WorkbenchStore, () => FakeSocket.all.length === 2, 'a reconnect attempt', 3000);
    assert.equal(states[states.length - 1], 'closed', 'still closed while retrying');
    const during = await Promise.race([t.request('workspace.get', {}), new Promise((r) => setTimeout(() => r('no answer'), 1000))]);
    assert.equal((during as { ok: boolean }).ok, false, 'fails at once during a retry too');
    assert.equal(FakeSocket.all[1]!.sent.length, 0, 'nothing queued for a later connection');

    // Back: requests go through again.
    FakeSocket.all[1]!.open();
    assert.equal(states[states.length - 1], 'open');
    const again = t.request('jobs.list', {});
    FakeSocket.all[1]!.answer([]);
    assert.deepEqual(await again, { ok: true, result: [] });
    FakeSocket.all[1]!.onclose = null; // no further reconnect timers
  });
});

describe('the store while disconnected', () => {
  let service: WorkbenchService;
  let store: WorkbenchStore;
  before(async () => {
    ({ service, store } = await storeOnService(path.join(scratch, 'cache'), MODEL));
  });
  after(async () => {
    await service.shutdown();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  test('selecting a model or a tensor while the connection is lost keeps the view and says why', async () => {
    const s = store.getState();
    const id = s.workspace!.models[0]!.id;
    await s.calibrateModel(id);
    await until(store, () => store.getState().workspace?.models[0]?.state === 'valid', 'calibration');
    await s.selectModel(id);
    await until(store, () => store.getState().grid !== null, 'the worst tensor\'s grid');
    const before = store.getState();
    const other = before.profile!.tensors.find((t) => t.tensor_name !== before.selectedTensor)!.tensor_name;

    // The store learns of the connection through its transport; here the state is set as the
    // WebSocket transport would set it on a loss.
    store.setState({ connection: 'closed' });
    await store.getState().selectTensor(other);
    await store.getState().selectModel(id);
    const now = store.getState();
    assert.equal(now.selectedTensor, before.selectedTensor, 'the tensor shown stays');
    assert.ok(now.profile, 'the profile shown stays');
    assert.ok(now.grid, 'the heatmap shown stays');
    assert.ok(now.toasts.some((t) => t.kind === 'error' && /not connected/.test(t.text)), JSON.stringify(now.toasts));

    // Closing the tensor (Esc) still works: it needs no service.
    await store.getState().selectTensor(null);
    assert.equal(store.getState().selectedTensor, null);
    store.setState({ connection: 'open' });
    await store.getState().selectTensor(other);
    assert.equal(store.getState().selectedTensor, other);
    assert.ok(store.getState().grid);
  });
});

describe('the model list\'s pass mark', () => {
  test('a stale or damaged profile is not shown as passing or failing', () => {
    assert.equal(passMark({ state: 'valid', passed: true }).text, '✓');
    assert.equal(passMark({ state: 'valid', passed: false }).text, '✗');
    for (const state of ['stale', 'corrupt']) {
      for (const passed of [true, false]) {
        const m = passMark({ state, passed });
        assert.equal(m.cls, 'pass-none', `${state}, passed ${passed}`);
        assert.match(m.title, /not judged/);
      }
    }
  });
});
