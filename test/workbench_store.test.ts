// The renderer's store (zustand, DOM-free) against the real service through an in-process
// transport that round-trips every message through JSON, as the WebSocket does.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { visibleTensors, type WorkbenchStore } from '../renderer/src/store';
import type { TensorRow } from '../src/service/protocol.js';
import type { WorkbenchService } from '../src/service/service.js';
import { storeOnService, until } from './helpers/store_harness.js';

const ROOT = path.resolve(__dirname, '..', '..');
const MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-store-'));

function row(name: string, over: Partial<TensorRow>): TensorRow {
  return {
    tensor_name: name, format: 'fp4', block_size: 64, mse_before: 1, mse_after: 1, improvement_ratio: 1, outlier_count: 0, shape: [4, 64], numel: 256,
    scale_encoding: 'fp32', bits_per_weight: 4.5, dtype: 'F16', search: 'exact', block_sizes_tried: [], block_sizes_dominated: [], nonfinite_excluded: 0, rows: 4, blocks: 1, mode: 'static', ...over,
  };
}

describe('visibleTensors', () => {
  const rows = [row('b.weight', { mse_after: 2, improvement_ratio: null }), row('a.weight', { mse_after: 3 }), row('c.bias_like', { mse_after: 1, improvement_ratio: 0.5 })];
  test('sorts worst first by default and filters by name', () => {
    assert.deepEqual(visibleTensors(rows, '', { key: 'mse_after', dir: 'desc' }).map((t) => t.tensor_name), ['a.weight', 'b.weight', 'c.bias_like']);
    assert.deepEqual(visibleTensors(rows, 'WEIGHT', { key: 'tensor_name', dir: 'asc' }).map((t) => t.tensor_name), ['a.weight', 'b.weight']);
    // an infinite improvement (null) sorts as the largest
    assert.deepEqual(visibleTensors(rows, '', { key: 'improvement_ratio', dir: 'desc' }).map((t) => t.tensor_name)[0], 'b.weight');
  });
});

describe('workbench store on the real service', () => {
  let service: WorkbenchService;
  let store: WorkbenchStore;
  before(async () => {
    ({ service, store } = await storeOnService(path.join(scratch, 'cache'), MODEL));
  });
  after(async () => {
    await service.shutdown();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  test('init loads the workspace and selects the first model', () => {
    const s = store.getState();
    assert.equal(s.connection, 'open');
    assert.equal(s.info?.mode, 'browser');
    assert.equal(s.workspace?.models.length, 1);
    assert.equal(s.selectedModel, s.workspace?.models[0].id);
    assert.equal(s.profile?.summary.state, 'missing');
    assert.equal(s.selectedTensor, null);
  });

  test('calibrating through the store fills the table and opens the worst tensor', async () => {
    const id = store.getState().selectedModel!;
    await store.getState().calibrateModel(id);
    await until(store, () => store.getState().profile?.summary.state === 'valid' && store.getState().grid !== null, 'the profile and grid');
    await until(store, () => store.getState().workspace?.models[0].state === 'valid', 'the model list');
    const s = store.getState();
    const worst = [...s.profile!.tensors].sort((a, b) => b.mse_after - a.mse_after)[0];
    assert.equal(s.selectedTensor, worst.tensor_name);
    assert.equal(s.grid?.tensor, worst.tensor_name);
    await until(store, () => store.getState().histogram !== null, 'the histogram');
    assert.equal(store.getState().histogram?.clipped, worst.outlier_count);
    const job = Object.values(s.jobs).find((j) => j.kind === 'calibrate-model');
    assert.equal(job?.status, 'done');
  });

  test('keyboard cursor moves through the sorted rows; Enter opens, Esc closes', async () => {
    const s = store.getState();
    const rows = visibleTensors(s.profile!.tensors, s.filter, s.sort);
    s.moveCursor(1);
    assert.equal(store.getState().cursor, rows[1].tensor_name);
    s.moveCursor(-5);
    assert.equal(store.getState().cursor, rows[0].tensor_name);
    s.moveCursor(2);
    await s.openCursor();
    assert.equal(store.getState().selectedTensor, rows[2].tensor_name);
    assert.equal(store.getState().grid?.tensor, rows[2].tensor_name);
    await s.selectTensor(null);
    assert.equal(store.getState().selectedTensor, null);
    await s.selectTensor(rows[0].tensor_name);
  });

  test('metric switch, zoom and hover fetch the matching data', async () => {
    const s = store.getState();
    await s.setMetric('outliers');
    assert.equal(store.getState().grid?.metric, 'outliers');
    await s.zoom({ rowStart: 2, rowEnd: 6, blockStart: 0, blockEnd: 1 });
    const g = store.getState().grid!;
    assert.deepEqual([g.rowStart, g.rowEnd, g.nRows, g.exact], [2, 6, 4, true]);
    await s.hoverBlock(3, 0);
    assert.equal(store.getState().hover?.row, 3);
    assert.equal(store.getState().hover?.outliers, g.mean[1]);
    await s.zoom({});
    await s.setMetric('scale');
  });

  test('a re-run arrives as a finished job, and keeping it updates the table', async () => {
    const s = store.getState();
    const name = s.selectedTensor!;
    const before = s.profile!.tensors.find((t) => t.tensor_name === name)!;
    const other = before.block_size === 128 ? 64 : 128;
    const job = await s.rerun({ blockSizes: [other] });
    assert.ok(job);
    await until(store, () => Object.values(store.getState().reruns).some((r) => r.tensor === name), 'the re-run result');
    const r = Object.values(store.getState().reruns).find((x) => x.tensor === name)!;
    assert.equal(r.after.block_size, other);
    await store.getState().keepRerun(r.rerunId);
    assert.equal(store.getState().profile?.tensors.find((t) => t.tensor_name === name)?.block_size, other);
    assert.equal(store.getState().profile?.summary.draft, true);
    assert.equal(store.getState().selectedTensor, name);
    assert.equal(store.getState().grid?.totalBlocks, Math.ceil(before.shape[1] / other));
  });

  test('sign-off through the store, and errors become readable toasts', async () => {
    assert.equal(await store.getState().signOff({ reviewer: 'Ada', decision: 'approved', note: '' }), true);
    assert.equal(store.getState().profile?.summary.state, 'signed-off');
    assert.equal(store.getState().profile?.summary.review?.reviewer, 'Ada');
    assert.equal(await store.getState().signOff({ reviewer: 'Bob', decision: 'approved', note: '' }), false);
    await store.getState().openModel(path.join(scratch, 'no-such-model'));
    const toasts = store.getState().toasts;
    assert.equal(toasts.at(-1)?.kind, 'error');
    assert.equal(toasts.at(-1)?.code, 'E_NOT_FOUND');
    assert.match(toasts.at(-1)!.text, /no-such-model/);
    store.getState().dismissToast(toasts.at(-1)!.id);
    assert.equal(store.getState().toasts.length, toasts.length - 1);
  });
});
