// The protocol's request checking (what every transport runs before the service sees a request)
// and the job manager's lifecycle.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { JobManager } from '../src/service/jobs.js';
import type { JobInfo, Method, Requests } from '../src/service/protocol.js';
import { METHODS, validateRequest } from '../src/service/validate.js';

describe('validateRequest', () => {
  test('every method of the protocol has a schema, and only those', () => {
    // A method added to Requests without a schema fails to compile in validate.ts; this guards the other way.
    const all: Record<Method, true> = {
      'app.info': true,
      'workspace.get': true,
      'workspace.openModel': true,
      'workspace.openPipeline': true,
      'workspace.openDemo': true,
      'profile.get': true,
      'tensor.grid': true,
      'tensor.block': true,
      'tensor.histogram': true,
      'calibrate.model': true,
      'calibrate.pipeline': true,
      'calibrate.tensor': true,
      'rerun.keep': true,
      'rerun.discard': true,
      'job.cancel': true,
      'jobs.list': true,
      'validation.get': true,
      'validation.run': true,
      'signoff.submit': true,
    } satisfies Record<keyof Requests, true>;
    assert.deepEqual([...METHODS].sort(), Object.keys(all).sort());
  });

  test('accepts well-formed requests, with or without optional fields', () => {
    assert.equal(validateRequest('app.info', undefined).method, 'app.info');
    const grid = { modelId: 'm', tensor: 't', metric: 'improvement', maxRows: 400, maxCols: 800, rowStart: 0, rowEnd: 10 };
    assert.deepEqual(validateRequest('tensor.grid', grid).params, grid);
    validateRequest('calibrate.tensor', { modelId: 'm', tensor: 't', format: 'nvfp4', blockSizes: [16], policy: 'bits', search: 'ternary' });
    for (const mode of ['static', 'activation-aware', 'entropy-aware']) assert.deepEqual(validateRequest('calibrate.tensor', { modelId: 'm', tensor: 't', mode }).params, { modelId: 'm', tensor: 't', mode });
    validateRequest('validation.run', { modelId: 'm', attribution: false, dynamicActivations: true });
    validateRequest('signoff.submit', { modelId: 'm', reviewer: 'Ada', decision: 'rejected', note: '' });
  });

  const bad: [string, unknown, RegExp][] = [
    ['no.such', {}, /unknown request/],
    ['profile.get', null, /must be an object/],
    ['profile.get', [], /must be an object/],
    ['profile.get', {}, /"modelId" is required/],
    ['profile.get', { modelId: '' }, /must not be empty/],
    ['profile.get', { modelId: 5 }, /must be a string/],
    ['profile.get', { modelId: 'm', extra: 1 }, /unknown parameter "extra"/],
    ['tensor.grid', { modelId: 'm', tensor: 't', metric: 'scale', maxRows: 0, maxCols: 5 }, /maxRows.*integer in 1\.\.4096/],
    ['tensor.grid', { modelId: 'm', tensor: 't', metric: 'scale', maxRows: 1.5, maxCols: 5 }, /maxRows/],
    ['tensor.grid', { modelId: 'm', tensor: 't', metric: 'heat', maxRows: 1, maxCols: 5 }, /metric.*one of scale/],
    ['tensor.block', { modelId: 'm', tensor: 't', row: -1, block: 0 }, /row/],
    ['calibrate.tensor', { modelId: 'm', tensor: 't', format: 'fp3' }, /format/],
    ['calibrate.tensor', { modelId: 'm', tensor: 't', blockSizes: [] }, /blockSizes/],
    ['calibrate.tensor', { modelId: 'm', tensor: 't', blockSizes: [64, 'x'] }, /blockSizes/],
    ['calibrate.tensor', { modelId: 'm', tensor: 't', mode: 'dynamic' }, /"mode" must be one of static, activation-aware, entropy-aware, got "dynamic"/],
    ['calibrate.tensor', { modelId: 'm', tensor: 't', mode: 1 }, /"mode" must be a string/],
    ['calibrate.tensor', { modelId: 'm', tensor: 't', mode: 'Static' }, /"mode" must be one of/],
    ['validation.run', { modelId: 'm', dynamicActivations: 'yes' }, /dynamicActivations.*true or false/],
    ['calibrate.model', { modelId: 'm', force: 'yes' }, /force.*true or false/],
    ['signoff.submit', { modelId: 'm', reviewer: ' ', decision: 'approved', note: '' }, /reviewer.*empty/],
    ['signoff.submit', { modelId: 'm', reviewer: 'A', decision: 'maybe', note: '' }, /decision/],
    ['signoff.submit', { modelId: 'm', reviewer: 'A', decision: 'approved', note: 'x'.repeat(5000) }, /note.*longer/],
  ];
  for (const [method, params, re] of bad) {
    test(`refuses ${method} ${JSON.stringify(params)?.slice(0, 60)}`, () => {
      assert.throws(() => validateRequest(method, params), (e: { code: string; message: string }) => e.code === 'E_BAD_ARGUMENT' && re.test(e.message));
    });
  }
});

describe('JobManager', () => {
  test('runs a job to the end with throttled progress and a finished event', async () => {
    const seen: [string, JobInfo][] = [];
    const jm = new JobManager((type, job) => seen.push([type, job]));
    const job = jm.start({
      kind: 'calibrate-model',
      label: 'test',
      modelId: 'm',
      run: async (ctx) => {
        for (let i = 0; i <= 100; i++) ctx.progress(i / 100, `step ${i}`);
      },
    });
    assert.equal(job.status, 'running');
    assert.equal(seen.length, 0, 'no event before the caller has the job');
    assert.equal(jm.findRunning('calibrate-model', 'm')?.id, job.id);
    const done = await jm.wait(job.id);
    assert.equal(done?.status, 'done');
    assert.equal(done?.progress, 1);
    const progress = seen.filter(([t]) => t === 'job.progress');
    assert.ok(progress.length >= 1 && progress.length < 10, `throttled: ${progress.length} events`);
    assert.equal(seen.at(-1)?.[0], 'job.finished');
    assert.equal(jm.findRunning('calibrate-model', 'm'), undefined);
  });

  test('cancel aborts the signal and the job ends cancelled; failures carry the error', async () => {
    const jm = new JobManager(() => undefined);
    const job = jm.start({
      kind: 'calibrate-pipeline',
      label: 'slow',
      run: (ctx) =>
        new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(Object.assign(new Error('stop'), { code: 'E_CANCELLED' })))),
    });
    assert.equal(jm.cancel(job.id), true);
    assert.equal((await jm.wait(job.id))?.status, 'cancelled');
    assert.equal(jm.cancel(job.id), false);
    const bad = jm.start({ kind: 'validate', label: 'bad', run: async () => { throw Object.assign(new Error('drift'), { code: 'E_SEMANTIC_DRIFT' }); } });
    const out = await jm.wait(bad.id);
    assert.equal(out?.status, 'failed');
    assert.equal(out?.error?.code, 'E_SEMANTIC_DRIFT');
    assert.equal(out?.error?.message, 'drift');
  });
});
