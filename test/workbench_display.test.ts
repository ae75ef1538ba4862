// The workbench's display helpers (number formats, state badges, colour-bar and axis ticks), the
// heatmap's cell aggregates (a planted outlier block stays visible zoomed out), toast expiry, and
// the store's view state on the real service: zoom reset, re-run keep and opening a bad path.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, mock, test } from 'node:test';
import { cellAt, heatmapTrace, logAxis, logTicks, METRIC_AGGREGATES } from '../renderer/src/components/heatmap_data';
import { count, eng, exactSci, ratio, stateBadge } from '../renderer/src/format';
import { createWorkbenchStore, RERUN_FORM_DEFAULTS, rerunSettings, TOAST_MS, type WorkbenchStore } from '../renderer/src/store';
import type { Transport } from '../renderer/src/transport';
import { writeSafetensors } from '../src/checkpoints/safetensors_writer.js';
import { DEFAULT_AGGREGATE, downsampleGrid, type BlockArrays } from '../src/service/block_data.js';
import type { GridRequest, GridView } from '../src/service/protocol.js';
import { WorkbenchService } from '../src/service/service.js';
import { storeOnService, until } from './helpers/store_harness.js';

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

  test('improvement ratios read as plain decimals, below 1× too', () => {
    assert.equal(ratio(0.97468), '0.9747×');
    assert.equal(ratio(1.063), '1.063×');
    assert.equal(ratio(2011.4), '2011×');
    assert.equal(ratio(null), '∞');
    assert.equal(ratio(25000), '25.00e3×');
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
    cellRows: 1, cellBlocks: 1, nRows: 1, nCols: values.length, mean: values, min: values, max: values,
    aggregate: 'mean', value: values, valueAt: values.map((_, i) => i), center: null, exact: true, fullMin, fullMax,
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
});

describe('workbench store view state and re-run form', () => {
  let service: WorkbenchService;
  let store: WorkbenchStore;
  before(async () => {
    ({ service, store } = await storeOnService(path.join(scratch, 'cache'), MODEL));
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

  test('the cell aggregate is per metric and asked of the service', async () => {
    const s = store.getState();
    assert.equal(store.getState().grid?.aggregate, DEFAULT_AGGREGATE[store.getState().metric]);
    await s.setMetric('mse_after');
    assert.equal(store.getState().grid?.aggregate, 'max');
    await s.setAggregate('mean');
    assert.equal(store.getState().grid?.aggregate, 'mean');
    assert.deepEqual(store.getState().grid?.value, store.getState().grid?.mean);
    await s.setMetric('improvement');
    assert.equal(store.getState().grid?.aggregate, 'extreme');
    await s.setMetric('mse_after');
    assert.equal(store.getState().grid?.aggregate, 'mean', 'the choice for a metric is kept');
    await s.setAggregate('max');
    await s.setMetric('scale');
  });

  test('opening a bad path reports failure, so the form can stay open', async () => {
    assert.equal(await store.getState().openModel(path.join(scratch, 'no-such-model')), false);
    assert.equal(store.getState().toasts.at(-1)?.code, 'E_NOT_FOUND');
    assert.equal(await store.getState().openPipeline(path.join(scratch, 'no-such.json')), false);
    assert.equal(await store.getState().openModel(MODEL), true);
  });

  test('every field goes back to "as profile" when another tensor is selected', async () => {
    const s = store.getState();
    const [first, second] = s.profile!.tensors.map((t) => t.tensor_name).filter((n) => n !== s.selectedTensor);
    await s.selectTensor(first);
    assert.deepEqual(store.getState().rerunForm, RERUN_FORM_DEFAULTS);
    s.setRerunForm({ format: 'fp8_e4m3' });
    s.setRerunForm({ blockSize: '32', policy: 'bits', search: 'naive', mode: 'activation-aware' });
    const chosen = { format: 'fp8_e4m3', blockSize: '32', policy: 'bits', search: 'naive', mode: 'activation-aware' };
    assert.deepEqual(store.getState().rerunForm, chosen);
    assert.deepEqual(rerunSettings(store.getState().rerunForm), { format: 'fp8_e4m3', blockSizes: [32], policy: 'bits', search: 'naive', mode: 'activation-aware' });
    // The same tensor again (its profile reloaded) keeps the choices.
    await s.selectTensor(first);
    assert.deepEqual(store.getState().rerunForm, chosen);
    await s.selectTensor(second);
    assert.deepEqual(store.getState().rerunForm, RERUN_FORM_DEFAULTS);
    assert.deepEqual(rerunSettings(store.getState().rerunForm), {});
  });

  test('a new format drops the block size (the sizes differ per format); other fields stay', () => {
    const s = store.getState();
    s.setRerunForm({ format: 'fp8_e4m3', blockSize: '64', policy: 'bits' });
    s.setRerunForm({ format: 'fp8_e5m2' });
    assert.deepEqual(store.getState().rerunForm, { ...RERUN_FORM_DEFAULTS, format: 'fp8_e5m2', policy: 'bits' });
  });

  test('selecting another model resets the form too', async () => {
    store.getState().setRerunForm({ search: 'ternary', mode: 'entropy-aware' });
    await store.getState().selectModel(store.getState().selectedModel);
    assert.deepEqual(store.getState().rerunForm, RERUN_FORM_DEFAULTS);
  });
});

/** A rows × blocks set of per-block arrays: every block alike but a few given ones. */
function arrays(rows: number, blocks: number, fill: { scale: number; before: number; after: number }, planted: Record<number, Partial<{ scale: number; before: number; after: number; outliers: number }>>): BlockArrays {
  const n = rows * blocks;
  const a: BlockArrays = {
    rows, blocks, blockSize: 16, cols: blocks * 16, scale: new Float32Array(n).fill(fill.scale), mseBefore: new Float32Array(n).fill(fill.before),
    mseAfter: new Float32Array(n).fill(fill.after), outliers: new Uint16Array(n), codes: null, global: null,
  };
  for (const [i, p] of Object.entries(planted)) {
    const k = Number(i);
    if (p.scale !== undefined) a.scale[k] = p.scale;
    if (p.before !== undefined) a.mseBefore![k] = p.before;
    if (p.after !== undefined) a.mseAfter![k] = p.after;
    if (p.outliers !== undefined) a.outliers![k] = p.outliers;
  }
  return a;
}

describe('heatmap cell aggregates (service side)', () => {
  const req = (metric: GridRequest['metric'], aggregate?: GridRequest['aggregate']): GridRequest => ({ modelId: 'm', tensor: 't', metric, aggregate, maxRows: 10, maxCols: 4 });
  // 1000 rows × 4 blocks in 10 × 4 cells of 100 blocks each.
  const a = arrays(1000, 4, { scale: 100, before: 2e-5, after: 1e-5 }, {
    [417 * 4 + 2]: { scale: 3000, after: 4e-3, outliers: 9 }, // a near-dead block: far larger scale, huge error after
    [802 * 4 + 1]: { scale: 0.5, before: 1e-5, after: 4e-5 }, // calibration made this one worse: improvement 0.25×
    [805 * 4 + 1]: { before: 2.4e-5 }, // improvement 2.4×: nearer 1× (on a log scale) than 0.25×
  });

  test('each metric defaults to the aggregate that shows the worst block', () => {
    // The toolbar lists each metric's default first.
    for (const [m, agg] of Object.entries(DEFAULT_AGGREGATE)) assert.equal(METRIC_AGGREGATES[m as keyof typeof DEFAULT_AGGREGATE][0], agg, m);
    assert.equal(downsampleGrid(a, req('mse_after')).aggregate, 'max');
    assert.equal(downsampleGrid(a, req('scale')).aggregate, 'extreme');
  });

  test('max keeps a single bad block in view and says where it is; mean averages it away', () => {
    const g = downsampleGrid(a, req('mse_after', 'max'));
    assert.equal(g.cellRows, 100);
    const k = 4 * 4 + 2;
    // Grid values carry float32 precision (9 digits).
    assert.equal(Math.fround(g.value[k]!), Math.fround(4e-3));
    assert.equal(g.valueAt[k], 417 * 4 + 2);
    const m = downsampleGrid(a, req('mse_after', 'mean'));
    assert.ok(m.value[k]! < 6e-5, `mean ${m.value[k]}`);
    assert.deepEqual(m.valueAt.filter((x) => x !== null), []);
    // min, mean and max are always there for the hover, whatever colours the cells.
    assert.deepEqual([m.min[k], m.max[k]], [g.min[k], g.max[k]]);
    assert.equal(downsampleGrid(a, req('outliers')).value[k], 9);
  });

  test('extreme: the improvement furthest from 1× on a log scale; the scale furthest from the median', () => {
    const g = downsampleGrid(a, req('improvement', 'extreme'));
    assert.equal(g.center, 1);
    const k = 8 * 4 + 1;
    assert.ok(Math.abs(g.value[k]! - 0.25) < 1e-6, String(g.value[k]));
    assert.equal(g.valueAt[k], 802 * 4 + 1);
    assert.ok(Math.abs(downsampleGrid(a, req('improvement', 'max')).value[k]! - 2.4) < 1e-6);
    const s = downsampleGrid(a, req('scale'));
    assert.equal(s.center, 100);
    assert.equal(s.value[4 * 4 + 2], 3000);
    assert.equal(s.value[8 * 4 + 1], 0.5);
    assert.equal(s.value[0], 100);
    // Error metrics have no centre: their extreme is the largest.
    assert.deepEqual(downsampleGrid(a, req('mse_after', 'extreme')).value, downsampleGrid(a, req('mse_after', 'max')).value);
  });

  test('a zoom to one block per cell is exact under any aggregate', () => {
    for (const agg of ['mean', 'min', 'max', 'extreme'] as const) {
      const g = downsampleGrid(a, { ...req('mse_after', agg), rowStart: 415, rowEnd: 420, maxRows: 100 });
      assert.ok(g.exact);
      assert.deepEqual(g.value, g.mean);
    }
  });

  test('the renderer colours by the aggregate and the hover names the block behind it', () => {
    const g = downsampleGrid(a, req('mse_after', 'max'));
    const t = heatmapTrace(g) as any;
    assert.ok(Math.abs(t.z[4][2] - Math.log10(4e-3)) < 1e-6);
    const c = cellAt(g, 4, 2)!;
    assert.deepEqual([c.blocks, c.valueRow, c.valueBlock, c.rowStart, c.rowEnd], [100, 417, 2, 400, 500]);
  });
});

describe('heatmap aggregates on the real service: a planted outlier block', () => {
  const dir = path.join(scratch, 'outlier-model');
  const ROWS = 4096;
  const COLS = 64;
  const SPIKE_ROW = 1234;
  const SPIKE_BLOCK = 2;
  let service: WorkbenchService;
  let modelId = '';
  const tensor = 'embeddings.word_embeddings.weight';

  before(async () => {
    // Gaussian-like weights (σ 0.02, a fixed LCG); one block holds a spike 100× its neighbours, so
    // its other 15 values lose their resolution and its error dwarfs every other block's.
    const w = new Float32Array(ROWS * COLS);
    let x = 12345;
    const u = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) + 0.5) / 2 ** 32;
    for (let i = 0; i < w.length; i++) w[i] = 0.02 * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
    w[SPIKE_ROW * COLS + SPIKE_BLOCK * 16 + 5] = 2;
    fs.mkdirSync(dir, { recursive: true });
    await writeSafetensors(path.join(dir, 'model.safetensors'), [{ name: tensor, dtype: 'F32', shape: [ROWS, COLS], data: new Uint8Array(w.buffer) }]);
    service = new WorkbenchService({ cacheDir: path.join(scratch, 'outlier-cache'), mode: 'browser' });
    const ws = await service.call('workspace.openModel', { path: dir, format: 'nvfp4' });
    modelId = ws.models[0].id;
    const job = await service.call('calibrate.model', { modelId });
    const done = await service.waitForJob(job.id);
    assert.equal(done?.status, 'done', JSON.stringify(done?.error));
  });
  after(() => service.shutdown());

  const median = (v: (number | null)[]) => {
    const s = v.filter((x): x is number => x !== null).sort((p, q) => p - q);
    return s[s.length >> 1];
  };

  for (const metric of ['mse_before', 'mse_after'] as const) {
    test(`${metric}: visible zoomed out under max, averaged away under mean`, async () => {
      const ask = (aggregate: 'max' | 'mean') => service.call('tensor.grid', { modelId, tensor, metric, aggregate, maxRows: 16, maxCols: 8 });
      const g = await ask('max');
      assert.equal(g.cellRows, ROWS / 16);
      assert.ok(!g.exact);
      const k = Math.floor(SPIKE_ROW / g.cellRows) * g.nCols + SPIKE_BLOCK;
      const block = await service.call('tensor.block', { modelId, tensor, row: SPIKE_ROW, block: SPIKE_BLOCK });
      const exactValue = metric === 'mse_before' ? block.mseBefore! : block.mseAfter!;
      assert.equal(Math.fround(g.value[k]!), exactValue);
      assert.equal(g.valueAt[k], SPIKE_ROW * g.totalBlocks + SPIKE_BLOCK);
      assert.ok(g.value[k]! > 20 * median(g.value), `max: the outlier cell ${g.value[k]} against the typical cell ${median(g.value)}`);
      const m = await ask('mean');
      assert.ok(m.value[k]! < 3 * median(m.value), `mean: the outlier cell ${m.value[k]} against the typical cell ${median(m.value)}`);
      // The default is max.
      const d = await service.call('tensor.grid', { modelId, tensor, metric, maxRows: 16, maxCols: 8 });
      assert.deepEqual(d.value, g.value);
    });
  }

  test('an unknown aggregate is refused', async () => {
    const out = await service.request('tensor.grid', { modelId, tensor, metric: 'mse_after', aggregate: 'median', maxRows: 16, maxCols: 8 });
    assert.equal(out.ok, false);
    assert.equal(!out.ok && out.error.code, 'E_BAD_ARGUMENT');
  });
});

describe('toasts', () => {
  const idle: Transport = {
    request: async () => ({ ok: false, error: { code: 'E_TEST', message: 'no service', details: {} } }) as never,
    onEvent: () => () => undefined,
    onConnection: () => () => undefined,
  };
  before(() => mock.timers.enable({ apis: ['setTimeout'] }));
  after(() => mock.timers.reset());

  test('info goes after a few seconds, an error later, not while held; repeats do not stack', () => {
    const store = createWorkbenchStore(idle);
    const s = store.getState();
    s.toast('info', 'calibrate: cancelled');
    s.toast('error', 'no such file', 'E_NOT_FOUND');
    s.toast('error', 'no such file', 'E_NOT_FOUND');
    assert.deepEqual(store.getState().toasts.map((t) => t.kind), ['info', 'error']);
    mock.timers.tick(TOAST_MS.info);
    assert.deepEqual(store.getState().toasts.map((t) => t.kind), ['error']);
    assert.ok(TOAST_MS.error > TOAST_MS.info);
    s.holdToasts(true);
    mock.timers.tick(TOAST_MS.error + 5000);
    assert.equal(store.getState().toasts.length, 1, 'a toast under the pointer stays');
    s.holdToasts(false);
    mock.timers.tick(1000);
    assert.equal(store.getState().toasts.length, 0);
    // × dismisses at once.
    s.toast('error', 'boom', 'E_X');
    s.dismissToast(store.getState().toasts[0].id);
    assert.equal(store.getState().toasts.length, 0);
  });
});

describe('MSE-by-tensor log axis', () => {
  const encloses = (ax: NonNullable<ReturnType<typeof logAxis>>, values: number[]) => {
    const pos = values.filter((v) => v > 0);
    const lo = Math.min(...pos);
    const hi = Math.max(...pos);
    assert.ok(ax.tickvals[0] <= lo, `first tick ${ax.tickvals[0]} above the smallest value ${lo}`);
    assert.ok(ax.tickvals.at(-1)! >= hi, `last tick ${ax.tickvals.at(-1)} below the largest value ${hi}`);
    assert.ok(Math.abs(ax.range[0] - Math.log10(ax.tickvals[0])) < 1e-12);
    assert.ok(Math.abs(ax.range[1] - Math.log10(ax.tickvals.at(-1)!)) < 1e-12);
    assert.equal(ax.ticktext.length, ax.tickvals.length);
    assert.ok(ax.tickvals.length >= 3 && ax.tickvals.length <= 9, JSON.stringify(ax.ticktext));
    for (let i = 1; i < ax.tickvals.length; i++) assert.ok(ax.tickvals[i] > ax.tickvals[i - 1]);
  };

  test('a value below the old lowest label (3.9e-6 beside 10e-6 … 53e-6) gets a label under it', () => {
    const values = [53.73e-6, 51.01e-6, 42.87e-6, 40.6e-6, 29.9e-6, 27.8e-6, 6.6e-6, 3.9e-6];
    const ax = logAxis(values)!;
    encloses(ax, values);
    assert.deepEqual(ax.ticktext, ['2e-6', '5e-6', '10e-6', '20e-6', '50e-6', '100e-6']);
  });

  test('a narrow range gets linear steps enclosing it, labelled with the exponent', () => {
    const values = [40.41e-6, 38.31e-6, 26.82e-6, 25.03e-6, 0];
    const ax = logAxis(values)!;
    encloses(ax, values);
    assert.deepEqual(ax.ticktext, ['25e-6', '30e-6', '35e-6', '40e-6', '45e-6']);
    const tight = [38.1e-6, 39.9e-6];
    encloses(logAxis(tight)!, tight);
    const one = [12.5e-6];
    encloses(logAxis(one)!, one);
  });

  test('many decades get powers of ten; nothing positive gives no axis', () => {
    const values = [3e-12, 4e-9, 2e-5, 7e-3];
    const ax = logAxis(values)!;
    encloses(ax, values);
    for (const v of ax.tickvals) assert.ok(Number.isInteger(Math.round(Math.log10(v) * 1e9) / 1e9));
    assert.equal(logAxis([0, NaN, -1]), null);
  });
});
