// The workbench's display helpers (number formats, state badges, colour-bar and axis ticks) and
// the store's view state on the real service: zoom reset, re-run keep and opening a bad path.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { heatmapTrace, logTicks, mseAxisTicks } from '../renderer/src/components/heatmap_data';
import { count, eng, exactSci, stateBadge } from '../renderer/src/format';
import { createWorkbenchStore, type WorkbenchStore } from '../renderer/src/store';
import type { Transport } from '../renderer/src/transport';
import type { GridView, ServiceEvent } from '../src/service/protocol.js';
import { WorkbenchService } from '../src/service/service.js';

const ROOT = path.resolve(__dirname, '..', '..');
const MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-display-'));

describe('number formats', () => {
  test('eng keeps 4 significant digits, trailing zeros included', () => {
    assert.equal(eng(34.3e-6), '34.30e-6');
    assert.equal(eng(34.33e-6), '34.33e-6');
    assert.equal(eng(1.34e-6), '1.340e-6');
    assert.equal(eng(999.96), '1.000e3');
    assert.equal(eng(0), '0');
    assert.equal(eng(null), '—');
    // Axis ticks are compact.
    assert.equal(eng(100, true), '100');
    assert.equal(eng(1e-5, true), '10e-6');
  });

  test('exactSci is exact and readable for small values', () => {
    const f32 = Math.fround(1.8125687e-5);
    const s = exactSci(f32);
    assert.match(s, /^\d\.\d+e-5$/);
    assert.equal(Number(s), f32);
    assert.equal(exactSci(55.05329513549805), '55.05329513549805');
    assert.equal(exactSci(0), '0');
    assert.equal(exactSci(null), '');
  });

  test('counts are shown in full', () => {
    assert.equal(count(11722368), '11,722,368');
    assert.equal(count(9216), '9,216');
  });
});

describe('model state badge', () => {
  const review = (decision: 'approved' | 'rejected') => ({ decision });
  test('a rejected review does not look like an approval', () => {
    assert.deepEqual(stateBadge({ state: 'signed-off', draft: false, review: review('rejected') }), { text: 'rejected', cls: 'state-rejected' });
    assert.deepEqual(stateBadge({ state: 'signed-off', draft: false, review: review('approved') }), { text: 'signed-off', cls: 'state-signed-off' });
    assert.deepEqual(stateBadge({ state: 'valid', draft: true, review: null }), { text: 'draft', cls: 'state-draft' });
    assert.deepEqual(stateBadge({ state: 'stale', draft: false, review: null }), { text: 'stale', cls: 'state-stale' });
  });
});

function grid(metric: GridView['metric'], values: number[], fullMin: number, fullMax: number): GridView {
  return {
    modelId: 'm', tensor: 't', metric, totalRows: 1, totalBlocks: values.length, rowStart: 0, rowEnd: 1, blockStart: 0, blockEnd: values.length,
    cellRows: 1, cellBlocks: 1, nRows: 1, nCols: values.length, mean: values, min: values, max: values, exact: true, fullMin, fullMax,
  };
}

describe('colour-bar and axis ticks', () => {
  const visible = (t: { tickvals: number[] }, lo: number, hi: number) => t.tickvals.filter((v) => v >= lo - 1e-12 && v <= hi + 1e-12);

  test('an improvement around 1× gets several labelled ticks, not 1× alone', () => {
    const values = [1.05, 1.1, 1.2, 0.95, 1.12, 1.3, 1.08, 1.15];
    const t = heatmapTrace(grid('improvement', values, 0.95, 1.3)) as any;
    const cb = t.colorbar;
    const ticks = visible(cb, t.zmin, t.zmax);
    assert.ok(ticks.length >= 3, `ticks ${JSON.stringify(cb.ticktext)} over [${t.zmin}, ${t.zmax}]`);
    assert.ok(cb.ticktext.includes('1×'));
    for (const s of cb.ticktext) assert.match(s, /^\d+(\.\d+)?×$/);
  });

  test('a scale range inside one decade still has labels inside it', () => {
    const t = logTicks(Math.log10(30), Math.log10(90), 10);
    const inside = visible(t, Math.log10(30), Math.log10(90));
    assert.ok(inside.length >= 3, JSON.stringify(t));
    assert.deepEqual(t.ticktext.slice(0, 2), ['30', '40']);
    // Over decades the ticks stay powers.
    assert.deepEqual(logTicks(-7, -3, 10).ticktext, ['100e-9', '1e-6', '10e-6', '100e-6', '1e-3']);
    assert.deepEqual(logTicks(-3, 3, 2).ticktext, ['0.125×', '0.25×', '0.5×', '1×', '2×', '4×', '8×']);
  });

  test('the MSE axis labels every tick with its exponent', () => {
    const t = mseAxisTicks([40.41e-6, 38.31e-6, 26.82e-6, 25.03e-6, 0])!;
    assert.ok(t.tickvals.length >= 3);
    for (const v of t.tickvals) assert.ok(v >= 25e-6 && v <= 40.5e-6, String(v));
    for (const s of t.ticktext) assert.match(s, /e-6$/);
    assert.equal(mseAxisTicks([0, NaN]), null);
  });
});

function inProcess(service: WorkbenchService): Transport {
  const wire = <T>(x: T): T => JSON.parse(JSON.stringify(x));
  return {
    request: async (method, params) => wire(await service.request(method, wire(params))) as never,
    onEvent: (cb) => service.onEvent((e: ServiceEvent) => cb(wire(e))),
    onConnection: (cb) => {
      cb('open');
      return () => undefined;
    },
  };
}

async function until(store: WorkbenchStore, ok: () => boolean, what: string, ms = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}; toasts: ${JSON.stringify(store.getState().toasts)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('workbench store view state', () => {
  let service: WorkbenchService;
  let store: WorkbenchStore;
  before(async () => {
    service = new WorkbenchService({ cacheDir: path.join(scratch, 'cache'), mode: 'browser' });
    await service.openModel(MODEL);
    store = createWorkbenchStore(inProcess(service));
    await store.getState().init();
    await store.getState().calibrateModel(store.getState().selectedModel!);
    await until(store, () => store.getState().profile?.summary.state === 'valid' && store.getState().grid !== null, 'the profile and grid');
  });
  after(async () => {
    await service.shutdown();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  test('Reset zoom gives the heatmap a new view revision; zooming in keeps it', async () => {
    const s = store.getState();
    const rev0 = store.getState().viewRev;
    await s.zoom({ rowStart: 1, rowEnd: 5, blockStart: 0, blockEnd: 1 });
    assert.equal(store.getState().viewRev, rev0, 'a zoom from the plot keeps the plot\'s own axis ranges');
    assert.equal(store.getState().grid?.rowStart, 1);
    await s.zoom({});
    assert.equal(store.getState().viewRev, rev0 + 1);
    assert.deepEqual(store.getState().gridWindow, {});
    const g = store.getState().grid!;
    assert.deepEqual([g.rowStart, g.rowEnd, g.blockStart, g.blockEnd], [0, g.totalRows, 0, g.totalBlocks]);
  });

  test('keeping a re-run that changes the block layout resets the zoomed view', async () => {
    const s = store.getState();
    const name = s.selectedTensor!;
    const t = s.profile!.tensors.find((x) => x.tensor_name === name)!;
    await s.zoom({ rowStart: 0, rowEnd: 3, blockStart: 0, blockEnd: 1 });
    const rev = store.getState().viewRev;
    const other = t.block_size === 128 ? 64 : 128;
    await s.rerun({ blockSizes: [other] });
    await until(store, () => Object.values(store.getState().reruns).some((r) => r.tensor === name), 'the re-run');
    await store.getState().keepRerun(Object.values(store.getState().reruns).find((r) => r.tensor === name)!.rerunId);
    await until(store, () => store.getState().grid?.totalBlocks === Math.ceil(t.shape[1] / other), 'the new grid');
    assert.ok(store.getState().viewRev > rev);
    assert.deepEqual(store.getState().gridWindow, {});
    assert.equal(store.getState().grid?.rowEnd, store.getState().grid?.totalRows);
  });

  test('opening a bad path reports failure, so the form can stay open', async () => {
    assert.equal(await store.getState().openModel(path.join(scratch, 'no-such-model')), false);
    assert.equal(store.getState().toasts.at(-1)?.code, 'E_NOT_FOUND');
    assert.equal(await store.getState().openPipeline(path.join(scratch, 'no-such.json')), false);
    assert.equal(await store.getState().openModel(MODEL), true);
  });
});
