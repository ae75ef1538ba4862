// The "calibrate the pipeline" job: every model through the calibration cache (valid profiles are
// reused), with a progress bar per model and overall; then, when asked and available, semantic
// validation of each model that has no result yet, so the list fills with correlations and
// pass/fail marks. Failures of single models are collected; the others carry on.
import { runPipeline } from '../pipeline/run.js';
import { loadProfile } from '../profiles/store.js';
import { CalibscopeError, asCalibscopeError } from '../util/errors.js';
import type { JobContext } from './jobs.js';
import type { JobPart } from './protocol.js';
import type { SemanticSupport } from './semantic.js';
import type { Workspace, WorkspaceModel } from './workspace.js';

export interface PipelineJobOptions {
  cacheDir: string;
  /** The cache is read-only: valid profiles are used, the rest fail with E_IO. */
  readOnly?: { errno: string } | null;
  force: boolean;
  /** Validate after calibrating (null: do not). */
  semantic: SemanticSupport | null;
  onModelChanged: (m: WorkspaceModel) => void;
}

/** Share of the bar that calibration takes when validation follows. */
const CALIBRATION_SHARE = 0.7;

export async function runPipelineJob(ws: Workspace, ctx: JobContext, opts: PipelineJobOptions): Promise<void> {
  const parts: JobPart[] = ws.models.map((m) => ({ id: m.id, progress: 0, state: 'queued' }));
  const weight = ws.models.map(() => 1);
  const share = opts.semantic ? CALIBRATION_SHARE : 1;
  const report = (extra = 0, what = '') => {
    const total = weight.reduce((a, b) => a + b, 0);
    const done = parts.reduce((a, p, i) => a + Math.min(1, p.progress) * weight[i], 0);
    const finished = parts.filter((p) => p.state === 'done' || p.state === 'cached' || p.state === 'failed' || p.state === 'validated').length;
    const active = parts.filter((p) => p.state === 'calibrating' || p.state === 'validating').map((p) => p.id);
    const detail = what || `${finished}/${parts.length} models${active.length ? ` · ${active.join(', ')}` : ''}`;
    ctx.progress(share * (total > 0 ? done / total : 1) + extra, detail, parts);
  };

  const run = await runPipeline(ws.resolved, {
    cacheDir: opts.cacheDir,
    readOnly: opts.readOnly,
    force: opts.force,
    signal: ctx.signal,
    onEvent: (e) => {
      const part = parts[e.index];
      switch (e.type) {
        case 'queued':
          part.state = 'queued';
          weight[e.index] = Math.max(1, e.bytes);
          break;
        case 'phase':
          part.state = e.phase;
          break;
        case 'progress':
          part.progress = e.progress.elementsTotal > 0 ? e.progress.elementsDone / e.progress.elementsTotal : 1;
          break;
        case 'done':
          part.state = e.profile.cached ? 'cached' : 'done';
          part.progress = 1;
          opts.onModelChanged(ws.models[e.index]);
          break;
        case 'failed':
          part.state = 'failed';
          part.progress = 1;
          opts.onModelChanged(ws.models[e.index]);
          break;
        default:
          return; // an event kind this view does not show
      }
      report();
    },
  });

  // In manifest order (runPipeline sorts them), then validation failures as they come.
  const failures: { model: string; error: CalibscopeError }[] = run.failures.map((f) => ({ model: ws.models[f.index].id, error: f.error }));
  if (opts.semantic) {
    const todo: number[] = [];
    for (let i = 0; i < ws.models.length; i++) {
      if (!run.profiles[i]) continue;
      const p = await loadProfile(ws.models[i].profileDir, { verifyScales: false }).catch(() => null);
      if (p && p.semantic_correlation === null && p.review === null) todo.push(i);
    }
    for (let k = 0; k < todo.length; k++) {
      if (ctx.signal.aborted) throw new CalibscopeError('E_CANCELLED', 'pipeline cancelled');
      const i = todo[k];
      const m = ws.models[i];
      parts[i].state = 'validating';
      const base = (1 - share) * (k / todo.length);
      report(base, `validating ${m.id} (${k + 1}/${todo.length})`);
      try {
        await opts.semantic.run(m, {
          attribution: false,
          signal: ctx.signal,
          cacheDir: opts.cacheDir,
          onProgress: (f, d) => report(base + ((1 - share) * f) / todo.length, `validating ${m.id}: ${d}`),
        });
        parts[i].state = 'validated';
      } catch (err) {
        const e = asCalibscopeError(err);
        if (e.code === 'E_CANCELLED') throw e;
        parts[i].state = 'failed';
        failures.push({ model: m.id, error: e });
      } finally {
        opts.onModelChanged(m);
      }
    }
  }

  const cached = run.profiles.filter((p) => p?.cached).length;
  const validated = parts.filter((p) => p.state === 'validated').length;
  ctx.progress(
    1,
    `${run.profiles.filter((p) => p && !p.cached).length} calibrated, ${cached} up to date` +
      (opts.semantic ? `, ${validated} validated` : '') +
      (failures.length ? `, ${failures.length} failed` : ''),
  );
  if (failures.length > 0) {
    throw new CalibscopeError(
      failures[0].error.code,
      `${failures.length} of ${ws.models.length} models failed: ${failures.map((f) => `${f.model}: ${f.error.message}`).join('; ')}`,
      { failures: failures.map((f) => ({ model: f.model, ...f.error.toJSON() })) },
    );
  }
}
