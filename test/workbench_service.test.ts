// The workbench service for real: the bert-tiny fixture calibrated into a private cache, then
// every request the UI makes — profile, per-block grid (checked against the profile folder's
// files read independently), exact blocks, the |x·s| histogram, re-run with keep/discard,
// sign-off, jobs with progress and cancellation, and errors as protocol errors. Then the
// calibration modes: a weighted profile's re-runs against the CLI's calibration of the same tensor.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SafetensorsFile } from '../src/checkpoints/safetensors.js';
import type { GridView, JobInfo, ServiceEvent } from '../src/service/protocol.js';
import { WorkbenchService } from '../src/service/service.js';

const ROOT = path.resolve(__dirname, '..', '..');
const MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-service-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

async function f32(file: string, name: string): Promise<Float32Array> {
  const f = await SafetensorsFile.open(file);
  try {
    const t = f.tensor(name);
    assert.ok(t, `${name} in ${file}`);
    return new Float32Array(new Uint8Array(await f.readTensor(t)).buffer);
  } finally {
    await f.close();
  }
}

async function run(service: WorkbenchService, job: JobInfo): Promise<JobInfo> {
  const done = await service.waitForJob(job.id);
  assert.ok(done);
  return done;
}

describe('workbench service on bert-tiny-a (fp4)', () => {
  let service: WorkbenchService;
  let modelId: string;
  let profileDir: string;
  const events: ServiceEvent[] = [];

  before(async () => {
    service = new WorkbenchService({ cacheDir: path.join(scratch, 'cache'), mode: 'browser' });
    service.onEvent((e) => events.push(e));
    const ws = await service.call('workspace.openModel', { path: MODEL });
    assert.equal(ws.kind, 'model');
    assert.equal(ws.models.length, 1);
    assert.equal(ws.models[0].state, 'missing');
    modelId = ws.models[0].id;
    const job = await service.call('calibrate.model', { modelId });
    assert.equal(job.status, 'running');
    const done = await run(service, job);
    assert.equal(done.status, 'done', JSON.stringify(done.error));
    const v = await service.call('workspace.get', {});
    assert.equal(v.models[0].state, 'valid');
    profileDir = v.models[0].profilePath!;
  });
  after(() => service.shutdown());

  test('a calibration job reports progress and its end as events', () => {
    const progress = events.filter((e) => e.type === 'job.progress');
    const finished = events.filter((e) => e.type === 'job.finished');
    assert.ok(progress.length > 0);
    assert.ok(finished.some((e) => e.type === 'job.finished' && e.job.kind === 'calibrate-model' && e.job.status === 'done' && e.job.progress === 1));
    assert.ok(events.some((e) => e.type === 'profile.changed' && e.modelId === modelId));
  });

  test('the profile view carries exactly the numbers of profile.json', async () => {
    const json = JSON.parse(fs.readFileSync(path.join(profileDir, 'profile.json'), 'utf8'));
    const v = await service.call('profile.get', { modelId });
    assert.equal(v.summary.overallMse, json.overall_mse);
    assert.equal(v.tensors.length, Object.keys(json.tensor_calibrations).length);
    assert.ok(v.hasDiagnostics);
    for (const t of v.tensors) {
      const r = json.tensor_calibrations[t.tensor_name];
      assert.equal(t.mse_before, r.mse_before);
      assert.equal(t.mse_after, r.mse_after);
      assert.equal(t.outlier_count, r.outlier_count);
      assert.equal(t.block_size, r.block_size);
      assert.equal(t.rows * Math.ceil(t.shape[t.shape.length - 1] / t.block_size), t.rows * t.blocks);
    }
  });

  test('the grid is exact at full resolution and a min/max/mean downsample otherwise', async () => {
    const name = 'embeddings.word_embeddings.weight';
    const v = await service.call('profile.get', { modelId });
    const t = v.tensors.find((x) => x.tensor_name === name)!;
    const before = await f32(path.join(profileDir, 'diagnostics.safetensors'), `${name}:mse_before`);
    const scales = await f32(path.join(profileDir, 'scales.safetensors'), name);
    const full = await service.call('tensor.grid', { modelId, tensor: name, metric: 'scale', maxRows: 4096, maxCols: 4096 });
    assert.equal(full.exact, true);
    assert.equal(full.nRows, t.rows);
    assert.equal(full.nCols, t.blocks);
    for (let i = 0; i < scales.length; i += 97) assert.equal(full.mean[i], Number(scales[i].toPrecision(9)));
    assert.equal(full.fullMax, Number(Math.max(...scales).toPrecision(9)));

    const g: GridView = await service.call('tensor.grid', { modelId, tensor: name, metric: 'mse_before', maxRows: 100, maxCols: 1 });
    assert.equal(g.exact, false);
    assert.equal(g.cellRows, Math.ceil(t.rows / 100));
    assert.equal(g.cellBlocks, t.blocks);
    assert.equal(g.nRows, Math.ceil(t.rows / g.cellRows));
    // Cell 3 by hand from the diagnostics file.
    const rows = [3 * g.cellRows, Math.min(t.rows, 4 * g.cellRows)];
    const vals: number[] = [];
    for (let r = rows[0]; r < rows[1]; r++) for (let b = 0; b < t.blocks; b++) vals.push(before[r * t.blocks + b]);
    const mean = vals.reduce((x, y) => x + y, 0) / vals.length;
    assert.ok(Math.abs(g.mean[3]! - mean) <= 1e-7 * mean);
    assert.equal(g.min[3], Number(Math.min(...vals).toPrecision(9)));
    assert.equal(g.max[3], Number(Math.max(...vals).toPrecision(9)));

    // A zoomed window is exact again.
    const z = await service.call('tensor.grid', { modelId, tensor: name, metric: 'scale', rowStart: 100, rowEnd: 140, blockStart: 1, blockEnd: 2, maxRows: 400, maxCols: 400 });
    assert.deepEqual([z.rowStart, z.rowEnd, z.blockStart, z.blockEnd, z.nRows, z.nCols, z.exact], [100, 140, 1, 2, 40, 1, true]);
    assert.equal(z.mean[5], Number(scales[105 * t.blocks + 1].toPrecision(9)));
  });

  test('one block carries every stored metric exactly', async () => {
    const name = 'encoder.layer.0.output.dense.weight';
    const d = await service.call('tensor.block', { modelId, tensor: name, row: 7, block: 3 });
    const v = await service.call('profile.get', { modelId });
    const t = v.tensors.find((x) => x.tensor_name === name)!;
    const i = 7 * t.blocks + 3;
    assert.equal(d.scale, (await f32(path.join(profileDir, 'scales.safetensors'), name))[i]);
    assert.equal(d.mseAfter, (await f32(path.join(profileDir, 'diagnostics.safetensors'), `${name}:mse_after`))[i]);
    assert.equal(d.colStart, 3 * t.block_size);
    assert.equal(d.colEnd, Math.min(t.shape[1], 4 * t.block_size));
    const out = await service.request('tensor.block', { modelId, tensor: name, row: t.rows, block: 0 });
    assert.equal(out.ok, false);
    assert.equal(!out.ok && out.error.code, 'E_BAD_ARGUMENT');
  });

  test('the |x·s| histogram counts exactly the profile\'s outliers above the format maximum', async () => {
    const v = await service.call('profile.get', { modelId });
    for (const t of v.tensors.slice(0, 6)) {
      const h = await service.call('tensor.histogram', { modelId, tensor: t.tensor_name, bins: 32 });
      assert.equal(h.formatMax, 6);
      assert.equal(h.total, t.numel);
      assert.equal(h.clipped, t.outlier_count, t.tensor_name);
      assert.equal(h.counts.reduce((a, b) => a + b, 0), t.numel);
      assert.equal(h.edges.length, 33);
    }
  });

  test('semantic validation and drift attribution run as a job and fill the correlation view', async (t) => {
    const info = await service.call('app.info', {});
    if (!info.semanticAvailable) return t.skip(`semantic validation unavailable: ${info.semanticReason}`);
    const job = await run(service, await service.call('validation.run', { modelId, attribution: true }));
    assert.equal(job.status, 'done', JSON.stringify(job.error));
    assert.equal(job.kind, 'attribute');
    const v = await service.call('validation.get', { modelId });
    const json = JSON.parse(fs.readFileSync(path.join(profileDir, 'profile.json'), 'utf8'));
    assert.equal(v.available, true);
    assert.equal(v.meanCorrelation, json.semantic_correlation);
    assert.ok(v.perQuery.length >= 200, `${v.perQuery.length} queries`);
    const mean = v.perQuery.reduce((a, q) => a + q.correlation, 0) / v.perQuery.length;
    assert.ok(Math.abs(mean - v.meanCorrelation!) < 1e-9);
    assert.equal(v.minCorrelation, Math.min(...v.perQuery.map((q) => q.correlation)));
    assert.ok(v.retrievalAgreement! > 0 && v.retrievalAgreement! <= 1);
    assert.ok(v.attribution && v.attribution.length > 0);
    for (let i = 1; i < v.attribution.length; i++) assert.ok(v.attribution[i - 1].correlation <= v.attribution[i].correlation, 'worst first');
    assert.ok(v.suggestion);
    const summary = (await service.call('workspace.get', {})).models[0];
    assert.equal(summary.meanCorrelation, json.semantic_correlation);
    assert.equal(summary.passed, json.semantic_correlation >= 0.99);
  });

  test('a re-run with another block size, discarded, changes nothing; kept, makes a new draft', async () => {
    const name = 'encoder.layer.1.attention.self.query.weight';
    const before = await service.call('profile.get', { modelId });
    const t = before.tensors.find((x) => x.tensor_name === name)!;
    const other = t.block_size === 128 ? 64 : 128;
    const job = await run(service, await service.call('calibrate.tensor', { modelId, tensor: name, blockSizes: [other] }));
    assert.equal(job.status, 'done', JSON.stringify(job.error));
    assert.ok(job.rerun);
    assert.equal(job.rerun.before.block_size, t.block_size);
    assert.equal(job.rerun.after.block_size, other);
    assert.deepEqual((await service.call('rerun.discard', { rerunId: job.rerun.rerunId })).discarded, true);
    assert.equal((await service.call('profile.get', { modelId })).timestamp, before.timestamp);
    await assert.rejects(service.call('rerun.keep', { rerunId: job.rerun.rerunId }), { code: 'E_NOT_FOUND' });

    const again = await run(service, await service.call('calibrate.tensor', { modelId, tensor: name, blockSizes: [other] }));
    const kept = await service.call('rerun.keep', { rerunId: again.rerun!.rerunId });
    const nt = kept.tensors.find((x) => x.tensor_name === name)!;
    assert.equal(nt.block_size, other);
    assert.equal(nt.mse_after, again.rerun!.after.mse_after);
    assert.equal(kept.summary.draft, true);
    assert.equal(kept.summary.state, 'valid');
    assert.equal(kept.summary.meanCorrelation, null, 'a validation of the old scales is dropped');
    assert.equal(JSON.parse(fs.readFileSync(path.join(profileDir, 'profile.json'), 'utf8')).semantic_validation, undefined);
    // overall MSE is the element-weighted mean over tensors again
    const n = kept.tensors.reduce((a, x) => a + x.numel, 0);
    const want = kept.tensors.reduce((a, x) => a + x.mse_after * x.numel, 0) / n;
    assert.ok(Math.abs(kept.summary.overallMse! - want) <= 1e-12 * want);
    // the per-block files hold the new block size's arrays; other tensors are untouched
    const g = await service.call('tensor.grid', { modelId, tensor: name, metric: 'scale', maxRows: 4096, maxCols: 4096 });
    assert.equal(g.totalBlocks, Math.ceil(t.shape[1] / other));
    const scalesAfter = await f32(path.join(profileDir, 'scales.safetensors'), 'pooler.dense.weight');
    const grid = await service.call('tensor.grid', { modelId, tensor: 'pooler.dense.weight', metric: 'scale', maxRows: 4096, maxCols: 4096 });
    assert.equal(grid.mean[0], Number(scalesAfter[0].toPrecision(9)));
  });

  test('sign-off is stored with time and content hash, then the profile is read-only', async () => {
    const v = await service.call('signoff.submit', { modelId, reviewer: 'Ada', decision: 'approved', note: 'checked heatmaps' });
    assert.equal(v.summary.state, 'signed-off');
    const json = JSON.parse(fs.readFileSync(path.join(profileDir, 'profile.json'), 'utf8'));
    assert.equal(json.review.reviewer, 'Ada');
    assert.equal(json.review.decision, 'approved');
    assert.match(json.review.content_hash, /^sha256:[0-9a-f]{64}$/);
    assert.ok(Date.now() - Date.parse(json.review.time) < 60_000);
    const second = await service.request('signoff.submit', { modelId, reviewer: 'Bob', decision: 'rejected', note: '' });
    assert.equal(second.ok, false);
    assert.equal(!second.ok && second.error.code, 'E_BAD_PROFILE');
    // A kept re-run on a signed-off profile starts a new draft and remembers the old review.
    const name = 'pooler.dense.weight';
    const job = await run(service, await service.call('calibrate.tensor', { modelId, tensor: name, search: 'naive' }));
    const kept = await service.call('rerun.keep', { rerunId: job.rerun!.rerunId });
    assert.equal(kept.summary.state, 'valid');
    assert.equal(kept.summary.review, null);
    const json2 = JSON.parse(fs.readFileSync(path.join(profileDir, 'profile.json'), 'utf8'));
    assert.equal(json2.draft.previous_review.reviewer, 'Ada');
    // The validation of the old scales does not carry over to the draft.
    assert.equal(json2.semantic_correlation, null);
    assert.equal(json2.semantic_validation, undefined);
    const val = await service.call('validation.get', { modelId });
    assert.equal(val.meanCorrelation, null);
    assert.deepEqual(val.perQuery, []);
    assert.ok(json2.draft.changed_tensors.includes(name));
  });

  test('cancelling a calibration leaves the previous profile as it was', async () => {
    const before = fs.readFileSync(path.join(profileDir, 'profile.json'), 'utf8');
    // Cancelled from its first progress event, i.e. in the middle of the work.
    let cancelled: Promise<{ cancelled: boolean }> | null = null;
    const off = service.onEvent((e) => {
      if (e.type === 'job.progress' && e.job.kind === 'calibrate-model' && e.job.detail.includes('/') && !cancelled) {
        cancelled = service.call('job.cancel', { jobId: e.job.id });
      }
    });
    const job = await service.call('calibrate.model', { modelId, force: true });
    const done = await run(service, job);
    off();
    assert.deepEqual(await cancelled, { cancelled: true });
    assert.equal(done.status, 'cancelled');
    assert.equal(done.error?.code, 'E_CANCELLED');
    assert.equal(fs.readFileSync(path.join(profileDir, 'profile.json'), 'utf8'), before);
    assert.deepEqual(fs.readdirSync(path.dirname(profileDir)).filter((n) => n.startsWith('.')), []);
  });

  test('bad requests come back as protocol errors naming what is wrong', async () => {
    const cases: [string, unknown, string][] = [
      ['profile.get', { modelId: 'nope' }, 'E_NOT_FOUND'],
      ['tensor.grid', { modelId, tensor: 'no.such.weight', metric: 'scale', maxRows: 10, maxCols: 10 }, 'E_NOT_FOUND'],
      ['tensor.grid', { modelId, tensor: 'x', metric: 'colour', maxRows: 10, maxCols: 10 }, 'E_BAD_ARGUMENT'],
      ['workspace.openModel', { path: path.join(scratch, 'missing-model') }, 'E_NOT_FOUND'],
      ['calibrate.tensor', { modelId, tensor: 'pooler.dense.weight', blockSizes: [16] }, 'E_BAD_BLOCK_SIZE'],
      ['no.such.method', {}, 'E_BAD_ARGUMENT'],
    ];
    for (const [method, params, code] of cases) {
      const out = await service.request(method, params);
      if (out.ok) {
        // calibrate.tensor starts a job: its failure arrives with the job
        const job = await run(service, out.result as JobInfo);
        assert.equal(job.status, 'failed', method);
        assert.equal(job.error?.code, code, `${method}: ${job.error?.message}`);
        continue;
      }
      assert.equal(out.error.code, code, `${method}: ${out.error.message}`);
      assert.ok(out.error.message.length > 10);
    }
  });
});

describe('workbench service: a pipeline with a broken model', () => {
  test('calibrates the good model, reports the broken one by name, per-model progress throughout', async () => {
    const dir = path.join(scratch, 'pipeline');
    fs.mkdirSync(path.join(dir, 'broken'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'broken', 'model.safetensors'), Buffer.from('this is not a safetensors file at all'));
    fs.writeFileSync(
      path.join(dir, 'pipeline.json'),
      JSON.stringify({ models: [{ id: 'good', path: MODEL, format: 'nvfp4' }, { id: 'broken', path: 'broken' }] }),
    );
    const service = new WorkbenchService({ cacheDir: path.join(scratch, 'pipeline-cache'), mode: 'browser' });
    const parts: string[][] = [];
    service.onEvent((e) => {
      if (e.type === 'job.progress' && e.job.parts) parts.push(e.job.parts.map((p) => p.state));
    });
    try {
      const ws = await service.call('workspace.openPipeline', { path: path.join(dir, 'pipeline.json') });
      assert.deepEqual(ws.models.map((m) => [m.id, m.format, m.state]), [['good', 'nvfp4', 'missing'], ['broken', 'fp4', 'missing']]);
      const job = await run(service, await service.call('calibrate.pipeline', {}));
      assert.equal(job.status, 'failed');
      assert.equal(job.error?.code, 'E_BAD_CHECKPOINT');
      assert.match(job.error!.message, /1 of 2 models failed: broken: .*model\.safetensors/);
      assert.deepEqual(job.parts?.map((p) => p.state), ['done', 'failed']);
      assert.ok(parts.length > 0);
      const after = await service.call('workspace.get', {});
      assert.equal(after.models[0].state, 'valid');
      assert.equal(after.models[0].tensorCount, 16);
      // A second run skips the valid profile.
      const again = await run(service, await service.call('calibrate.pipeline', {}));
      assert.deepEqual(again.parts?.map((p) => p.state), ['cached', 'failed']);
      assert.equal(again.detail, '0 calibrated, 1 up to date, 1 failed');
    } finally {
      await service.shutdown();
    }
  });
});

/** `calibscope calibrate MODEL --include TENSOR --mode MODE --out DIR`: the CLI's calibration of one tensor. */
function cliCalibrate(tensor: string, mode: string, cache: string, out: string): any {
  const r = spawnSync(
    process.execPath,
    ['bin/calibscope.js', 'calibrate', MODEL, '--format', 'fp4', '--mode', mode, '--include', tensor, '--cache', cache, '--out', out, '--json'],
    { cwd: ROOT, encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20 },
  );
  assert.equal(r.status, 0, `status ${r.status}: ${r.stderr.slice(0, 1500)}`);
  return JSON.parse(r.stdout).profile.tensor_calibrations[tensor];
}

describe('workbench service: calibration modes (bert-tiny-a, fp4, serve --mode activation-aware)', () => {
  const cache = path.join(scratch, 'modes-cache');
  let service: WorkbenchService;
  let modelId: string;
  let profileDir: string;
  const profile = () => JSON.parse(fs.readFileSync(path.join(profileDir, 'profile.json'), 'utf8'));

  before(async () => {
    service = new WorkbenchService({ cacheDir: cache, mode: 'browser', calibrationMode: 'activation-aware' });
    const ws = await service.call('workspace.openModel', { path: MODEL });
    assert.equal(ws.calibrationMode, 'activation-aware');
    assert.equal(ws.models[0].mode, 'activation-aware', 'the mode a calibration will use');
    modelId = ws.models[0].id;
    const done = await run(service, await service.call('calibrate.model', { modelId }));
    assert.equal(done.status, 'done', JSON.stringify(done.error));
    assert.match(done.label, /activation-aware/);
    profileDir = (await service.call('workspace.get', {})).models[0].profilePath!;
  });
  after(() => service.shutdown());

  test('the workspace and profile views carry the mode, the objective and the statistics', async () => {
    const json = profile();
    assert.equal(json.mode, 'activation-aware');
    const v = await service.call('profile.get', { modelId });
    assert.equal(v.summary.mode, 'activation-aware');
    assert.equal(v.summary.overallObjective, json.overall_objective);
    assert.equal(v.summary.overallObjectiveBefore, json.overall_objective_before);
    assert.deepEqual(v.statistics, json.statistics);
    assert.deepEqual(v.modeDetails, json.mode_details);
    assert.match(v.statistics!.hash, /^sha256:[0-9a-f]{64}$/);
    for (const t of v.tensors) {
      assert.equal(t.mode, 'activation-aware');
      assert.equal(t.objective_after, json.tensor_calibrations[t.tensor_name].objective_after);
      assert.equal(t.weighting, t.tensor_name.startsWith('embeddings.') ? 'none' : 'activation', t.tensor_name);
    }
    const info = await service.call('app.info', {});
    assert.deepEqual(info.calibrationModes, ['static', 'activation-aware', 'entropy-aware']);
  });

  test('validation with dynamic activations shows both correlations and the activation scales', async (t) => {
    const info = await service.call('app.info', {});
    if (!info.semanticAvailable) return t.skip(`semantic validation unavailable: ${info.semanticReason}`);
    const job = await run(service, await service.call('validation.run', { modelId, dynamicActivations: true }));
    assert.equal(job.status, 'done', JSON.stringify(job.error));
    const v = await service.call('validation.get', { modelId });
    const stored = profile().semantic_validation;
    assert.ok(v.dynamicActivations && stored.dynamic_activations);
    assert.equal(v.dynamicActivations.meanCorrelation, stored.dynamic_activations.mean_correlation);
    assert.equal(v.dynamicActivations.minCorrelation, stored.dynamic_activations.min_correlation);
    assert.equal(v.dynamicActivations.weightOnlyMeanCorrelation, v.meanCorrelation);
    assert.ok(v.dynamicActivations.scaleMin! > 0 && v.dynamicActivations.scaleMin! <= v.dynamicActivations.scaleMax!);
    assert.ok(v.dynamicActivations.linearsQuantized! > 0);
    // A plain validation afterwards replaces it: the view no longer claims dynamic figures.
    assert.equal((await run(service, await service.call('validation.run', { modelId }))).status, 'done');
    assert.equal((await service.call('validation.get', { modelId })).dynamicActivations, null);
  });

  test('a re-run in the profile\'s weighted mode gives the CLI\'s scales for that tensor; keeping it keeps them', async () => {
    const name = 'encoder.layer.0.intermediate.dense.weight';
    const cli = path.join(scratch, 'cli-activation');
    const want = cliCalibrate(name, 'activation-aware', cache, cli);
    const wantScales = await f32(path.join(cli, 'scales.safetensors'), name);
    const job = await run(service, await service.call('calibrate.tensor', { modelId, tensor: name }));
    assert.equal(job.status, 'done', JSON.stringify(job.error));
    const r = job.rerun!;
    assert.equal(r.mode, 'activation-aware');
    assert.equal(r.beforeMode, 'activation-aware');
    assert.equal(r.after.weighting, 'activation');
    for (const k of ['block_size', 'mse_before', 'mse_after', 'objective_before', 'objective_after', 'outlier_count'] as const) assert.equal(r.after[k], want[k], k);
    const kept = await service.call('rerun.keep', { rerunId: r.rerunId });
    assert.deepEqual(await f32(path.join(profileDir, 'scales.safetensors'), name), wantScales);
    assert.equal(kept.tensors.find((x) => x.tensor_name === name)!.objective_after, want.objective_after);

    // The same tensor in static mode: plain-MSE scales (other than the weighted ones), no objective.
    const st = await run(service, await service.call('calibrate.tensor', { modelId, tensor: name, mode: 'static' }));
    assert.equal(st.rerun!.mode, 'static');
    assert.equal(st.rerun!.after.objective_after, undefined);
    assert.equal(st.rerun!.after.weighting, undefined);
    assert.ok(st.rerun!.after.mse_after < want.mse_after, `static ${st.rerun!.after.mse_after} vs weighted ${want.mse_after}`);
    await service.call('rerun.discard', { rerunId: st.rerun!.rerunId });
  });

  test('a re-run in another mode (entropy-aware) is weighted like the CLI\'s; keeping it recomputes the overall objective', async () => {
    const name = 'encoder.layer.1.attention.output.dense.weight';
    const cli = path.join(scratch, 'cli-entropy');
    const want = cliCalibrate(name, 'entropy-aware', cache, cli);
    const before = profile();
    const job = await run(service, await service.call('calibrate.tensor', { modelId, tensor: name, mode: 'entropy-aware' }));
    assert.equal(job.status, 'done', JSON.stringify(job.error));
    assert.match(job.label, /entropy-aware/);
    const r = job.rerun!;
    assert.equal(r.after.weighting, 'activation+head_columns');
    assert.equal(r.after.objective_after, want.objective_after);
    assert.notEqual(r.after.objective_after, before.tensor_calibrations[name].objective_after);
    const kept = await service.call('rerun.keep', { rerunId: r.rerunId });
    assert.deepEqual(await f32(path.join(profileDir, 'scales.safetensors'), name), await f32(path.join(cli, 'scales.safetensors'), name));
    const json = profile();
    assert.equal(json.mode, 'activation-aware', 'the profile keeps its mode');
    assert.deepEqual(json.draft.tensor_modes[name], { mode: 'entropy-aware', statistics_hash: json.statistics.hash });
    assert.equal(kept.tensors.find((x) => x.tensor_name === name)!.mode, 'entropy-aware');
    // overall MSE and objective: element-weighted means over the tensors, as the calibrator's.
    const list = Object.values<any>(json.tensor_calibrations);
    const n = list.reduce((a, x) => a + x.numel, 0);
    const mean = (f: (x: any) => number) => list.reduce((a, x) => a + f(x) * x.numel, 0) / n;
    const close = (a: number, b: number) => assert.ok(Math.abs(a - b) <= 1e-12 * Math.abs(b), `${a} vs ${b}`);
    close(json.overall_objective, mean((x) => x.objective_after));
    close(json.overall_objective_before, mean((x) => x.objective_before));
    close(json.overall_mse, mean((x) => x.mse_after));
    assert.notEqual(json.overall_objective, before.overall_objective);
    assert.equal(kept.summary.overallObjective, json.overall_objective);
  });

  test('the re-run mode is checked like the other arguments', async () => {
    const out = await service.request('calibrate.tensor', { modelId, tensor: 'pooler.dense.weight', mode: 'dynamic' });
    assert.equal(out.ok, false);
    assert.equal(!out.ok && out.error.code, 'E_BAD_ARGUMENT');
    assert.match(!out.ok ? out.error.message : '', /"mode" must be one of static, activation-aware, entropy-aware/);
  });
});

describe('workbench service: the |x·s| histogram cache (bert-tiny-a copied, fp4)', () => {
  // The module object itself, so that mock.method counts the service's calls of the real function.
  const histogramModule = require('../src/service/histogram.js') as typeof import('../src/service/histogram.js');
  const { mock } = require('node:test') as typeof import('node:test');
  const dir = path.join(scratch, 'histogram-cache');
  const model = path.join(dir, 'model');
  let service: WorkbenchService;
  let modelId: string;
  let computed: { mock: { callCount(): number } };
  const tensor = 'encoder.layer.0.attention.self.query.weight';

  before(async () => {
    fs.mkdirSync(dir, { recursive: true });
    fs.cpSync(MODEL, model, { recursive: true });
    service = new WorkbenchService({ cacheDir: path.join(dir, 'cache'), mode: 'browser' });
    modelId = (await service.call('workspace.openModel', { path: model })).models[0].id;
    const done = await run(service, await service.call('calibrate.model', { modelId }));
    assert.equal(done.status, 'done', JSON.stringify(done.error));
    computed = mock.method(histogramModule, 'scaledHistogram');
  });
  after(async () => {
    mock.restoreAll();
    await service.shutdown();
  });

  const histogram = (bins = 32) => service.call('tensor.histogram', { modelId, tensor, bins });

  test('re-selecting a tensor is served from the cache; concurrent requests share one computation', async () => {
    const n0 = computed.mock.callCount();
    const [a, b] = await Promise.all([histogram(), histogram()]);
    assert.equal(computed.mock.callCount(), n0 + 1);
    const c = await histogram();
    assert.equal(computed.mock.callCount(), n0 + 1, 'the second selection computes nothing');
    assert.deepEqual(c, a);
    assert.deepEqual(b, a);
    await histogram(48);
    assert.equal(computed.mock.callCount(), n0 + 2, 'another bin count is another histogram');
  });

  test('a kept re-run, a sign-off and a recalibration elsewhere never serve the old histogram', async () => {
    const old = await histogram();
    const t = (await service.call('profile.get', { modelId })).tensors.find((x) => x.tensor_name === tensor)!;
    const other = t.block_size === 128 ? 64 : 128;
    const job = await run(service, await service.call('calibrate.tensor', { modelId, tensor, blockSizes: [other] }));
    await service.call('rerun.keep', { rerunId: job.rerun!.rerunId });
    let n = computed.mock.callCount();
    const kept = await histogram();
    assert.equal(computed.mock.callCount(), n + 1);
    const now = (await service.call('profile.get', { modelId })).tensors.find((x) => x.tensor_name === tensor)!;
    assert.equal(now.block_size, other);
    assert.equal(kept.clipped, now.outlier_count, 'the histogram follows the kept scales');
    assert.notDeepEqual(kept.counts, old.counts);

    n = computed.mock.callCount();
    await service.call('signoff.submit', { modelId, reviewer: 'Ada', decision: 'approved', note: '' });
    assert.deepEqual(await histogram(), kept);
    assert.equal(computed.mock.callCount(), n + 1, 'profile.json was rewritten: computed again');

    // Recalibrated behind this service's back (as `calibscope calibrate` on the same cache does):
    // no event tells it, so only the key can.
    const elsewhere = new WorkbenchService({ cacheDir: path.join(dir, 'cache'), mode: 'browser' });
    await elsewhere.call('workspace.openModel', { path: model });
    const recal = await run(elsewhere, await elsewhere.call('calibrate.model', { modelId, force: true }));
    await elsewhere.shutdown();
    assert.equal(recal.status, 'done', JSON.stringify(recal.error));
    n = computed.mock.callCount();
    const fresh = await histogram();
    assert.equal(computed.mock.callCount(), n + 1);
    const back = (await service.call('profile.get', { modelId })).tensors.find((x) => x.tensor_name === tensor)!;
    assert.equal(fresh.clipped, back.outlier_count);
  });

  test('a checkpoint rewritten in place (same size, mtime put back) is read again', async () => {
    const before = await histogram();
    assert.ok(before.counts.slice(1).some((c) => c > 0));
    const file = path.join(model, 'model.safetensors');
    const f = await SafetensorsFile.open(file);
    const info = f.tensor(tensor)!;
    await f.close();
    const st = fs.statSync(file);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.alloc(info.byteLength), 0, info.byteLength, info.byteOffset);
    fs.closeSync(fd);
    fs.utimesSync(file, st.atime, st.mtime);
    const n = computed.mock.callCount();
    const zeroed = await histogram();
    assert.equal(computed.mock.callCount(), n + 1);
    assert.equal(zeroed.counts[0], zeroed.total, 'every |x·s| of a zeroed tensor is 0');
    assert.equal(zeroed.clipped, 0);
  });

  test('the histogram is computed off the JS thread and counts what the plain float32 definition gives', async () => {
    const { loadProfile } = await import('../src/profiles/store.js');
    const { readBlockArrays } = await import('../src/service/block_data.js');
    const profileDir = (await service.call('workspace.get', {})).models[0].profilePath!;
    const profile = await loadProfile(profileDir, { verifyScales: false });
    const f = await SafetensorsFile.open(path.join(MODEL, 'model.safetensors'));
    const t = f.tensor('embeddings.word_embeddings.weight')!;
    const bytes = await f.readTensor(t);
    await f.close();
    const blocks = await readBlockArrays(profileDir, profile, t.name);
    const result = profile.tensor_calibrations[t.name];
    let turns = 0;
    let done = false;
    const tick = () => {
      turns++;
      if (!done) setImmediate(tick);
    };
    setImmediate(tick);
    const h = await histogramModule.scaledHistogram(bytes, t.dtype, blocks, result, 64);
    done = true;
    assert.ok(turns > 0, 'the event loop turned while the histogram was computed');
    assert.deepEqual(h, referenceHistogram(bytes, t.dtype, blocks, result.format, 64));
    assert.equal(h.clipped, result.outlier_count);
    assert.equal(h.total, result.numel);
  });

  for (const [format, blockSize, dtype] of [
    ['fp4', 16, 'F32'],
    ['fp8_e4m3', 32, 'BF16'],
    ['nvfp4', 16, 'F16'],
    ['mxfp4', 32, 'F32'],
    ['mxfp8', 32, 'BF16'],
  ] as const) {
    test(`${format} / ${blockSize}, ${dtype}, a partial last block and non-finite weights: the same counts as the definition`, async () => {
      const rows = 7;
      const cols = 2 * blockSize + 5;
      const x = new Float32Array(rows * cols).map((_, i) => Math.sin(i * 12.9898) * 3 * (i % 11 === 0 ? 40 : 1));
      x[3] = NaN;
      x[cols + 1] = -Infinity;
      x[2 * cols] = 0;
      const bytes = encodeAs(x, dtype);
      const perRow = Math.ceil(cols / blockSize);
      const n = rows * perRow;
      const scheme = (await import('../src/calibration/schemes.js')).schemeFor(format);
      const encoded = scheme.scaleEncoding !== 'fp32';
      const blocks = {
        rows,
        blocks: perRow,
        blockSize,
        cols,
        scale: new Float32Array(n).map((_, k) => 0.5 + ((k * 37) % 13) / 4),
        mseBefore: null,
        mseAfter: null,
        outliers: null,
        codes: encoded ? new Uint8Array(n).map((_, k) => (format === 'nvfp4' ? 1 + ((k * 29) % 126) : 120 + ((k * 5) % 14))) : null,
        global: format === 'nvfp4' ? 0.0123 : null,
      };
      const result = { tensor_name: 't', format } as never;
      const h = await histogramModule.scaledHistogram(bytes, dtype, blocks, result, 48);
      assert.deepEqual(h, referenceHistogram(bytes, dtype, blocks, format, 48));
      assert.equal(h.total, rows * cols - 2, 'NaN and -Inf are not counted');
      assert.ok(h.clipped > 0 && h.counts.reduce((a, b) => a + b, 0) === h.total);
    });
  }
});

describe('the addon\'s scaledHistogram: bad arguments are named', () => {
  test('bins outside 1..65536, a scale array of the wrong length, an NVFP4 call without its global scale', async () => {
    const { native } = require('../src/native/index.js') as typeof import('../src/native/index.js');
    const bytes = new Uint8Array(4 * 4 * 32);
    const base = { dtype: 'F32' as const, rows: 4, cols: 32, blockSize: 16 };
    // Argument errors are thrown when the call is made, as by the addon's other calls.
    const expectCode = async (call: () => Promise<unknown>, code: string, re: RegExp) =>
      assert.rejects(async () => call(), (e: any) => {
        assert.equal(e.code, code);
        assert.match(e.message, re);
        return true;
      });
    await expectCode(() => native().scaledHistogram(bytes, { ...base, scheme: 'fp4', scales: new Float32Array(8).fill(1), bins: 0 }), 'E_BAD_ARGUMENT', /bins must be an integer in 1\.\.65536/);
    await expectCode(() => native().scaledHistogram(bytes, { ...base, scheme: 'fp4', scales: new Float32Array(7).fill(1), bins: 8 }), 'E_BAD_PROFILE', /scales hold 7 entries/);
    await expectCode(() => native().scaledHistogram(bytes, { ...base, scheme: 'nvfp4', codes: new Uint8Array(8).fill(1), bins: 8 }), 'E_BAD_PROFILE', /globalScale/);
  });
});

/** Raw little-endian bytes for x: F32 as is; F16 and BF16 from pseudo-random finite bit patterns of
 *  either sign (any F16 value, BF16 values of magnitude 2^-8 … 2^8), with x's NaN / ±Inf / zero kept. */
function encodeAs(x: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(x.buffer.slice(0));
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const special = Number.isNaN(x[i]) ? 'nan' : x[i] === 0 ? 'zero' : !Number.isFinite(x[i]) ? 'inf' : null;
    const sign = x[i] < 0 ? 0x8000 : 0;
    const r = (i * 2654435761) >>> 16;
    if (dtype === 'F16') out[i] = special === 'nan' ? 0x7e00 : special === 'inf' ? sign | 0x7c00 : special === 'zero' ? 0 : sign | (r % 0x7c00);
    else out[i] = special === 'nan' ? 0x7fc0 : special === 'inf' ? sign | 0x7f80 : special === 'zero' ? 0 : sign | ((119 + (r % 16)) << 7) | (r & 0x7f);
  }
  return new Uint8Array(out.buffer);
}

/** The histogram's definition, element by element in float32 (Math.fround), as the search scales each weight. */
function referenceHistogram(bytes: Uint8Array, dtype: string, blocks: import('../src/service/block_data.js').BlockArrays, format: string, bins: number) {
  const { schemeFor } = require('../src/calibration/schemes.js') as typeof import('../src/calibration/schemes.js');
  const { native } = require('../src/native/index.js') as typeof import('../src/native/index.js');
  const { halfTable } = require('../src/util/f16.js') as typeof import('../src/util/f16.js');
  const scheme = schemeFor(format);
  const b = new Uint8Array(bytes);
  const x =
    dtype === 'F32'
      ? new Float32Array(b.buffer)
      : dtype === 'F16'
        ? Float32Array.from(new Uint16Array(b.buffer), (h) => halfTable()[h])
        : new Float32Array(Uint32Array.from(new Uint16Array(b.buffer), (h) => h << 16).buffer);
  const decode = (k: number) =>
    scheme.scaleEncoding === 'e4m3_x_fp32'
      ? Math.fround(native().e4m3Decode(blocks.codes!.subarray(k, k + 1))[0] * Math.fround(blocks.global!))
      : 2 ** (blocks.codes![k] - 127);
  const y: number[] = [];
  for (let r = 0; r < blocks.rows; r++) {
    for (let c = 0; c < blocks.cols; c++) {
      const k = r * blocks.blocks + Math.floor(c / blocks.blockSize);
      const ax = Math.abs(x[r * blocks.cols + c]);
      const v = scheme.scaleEncoding === 'fp32' ? Math.fround(ax * blocks.scale[k]) : Math.fround(ax / decode(k));
      if (Number.isFinite(v)) y.push(v);
    }
  }
  const max = scheme.elementMax;
  const top = Math.max(max, y.reduce((m, v) => Math.max(m, v), 0)) * 1.05;
  const w = top / bins;
  const counts = new Array<number>(bins).fill(0);
  for (const v of y) counts[Math.min(bins - 1, Math.floor(v / w))]++;
  return { edges: Array.from({ length: bins + 1 }, (_, k) => k * w), counts, formatMax: max, clipped: y.filter((v) => v > max).length, total: y.length };
}
