// Runs a pipeline's models through the calibration cache: valid profiles are reused, the rest are
// calibrated, several models at a time within the machine's cores and a memory budget. The addon
// already spreads each tensor over all cores, so running models side by side mainly fills the
// gaps (reading, hashing, writing, small tensors); a couple at a time is enough for that.
import os from 'node:os';
import { profileBackend, type NativeBackend } from '../calibration/backend.js';
import type { ModelProgress } from '../calibration/calibrator.js';
import { openCheckpoint, type Checkpoint } from '../checkpoints/checkpoint.js';
import { calibrateCached, type CachePhase } from '../profiles/cache.js';
import { CalibscopeError, asCalibscopeError } from '../util/errors.js';
import type { ResolvedModel } from './manifest.js';

export interface PipelineProfile {
  model_id: string;
  model_path: string;
  format: string;
  /** The calibration mode (docs/modes.md). */
  mode: string;
  profile_path: string;
  cached: boolean;
  /** The profile's state before this run and why. */
  state_before: string;
  reason_before: string;
  overall_mse: number;
  overall_mse_before: number;
  tensors: number;
  seconds: number;
  /** The backend that calibrated the profile (for a reused one, when it was made). */
  backend: NativeBackend;
}

export interface PipelineFailure {
  model_id: string;
  /** The model's place in the manifest. */
  index: number;
  error: CalibscopeError;
}

export type PipelineEvent =
  | { type: 'queued'; index: number; bytes: number }
  | { type: 'phase'; index: number; phase: CachePhase }
  | { type: 'progress'; index: number; progress: ModelProgress }
  | { type: 'done'; index: number; profile: PipelineProfile }
  | { type: 'failed'; index: number; error: CalibscopeError };

export interface RunPipelineOptions {
  cacheDir: string;
  /** The cache cannot be written (openCacheMode): valid profiles are reused, the others fail with E_IO. */
  readOnly?: { errno: string } | null;
  force?: boolean;
  /** Threads per tensor search on the CPU backend (default: all cores). */
  threads?: number;
  /** Models calibrated at the same time (default: see defaultConcurrency). */
  concurrency?: number;
  /** Bytes the running models may use together, estimated (default: a quarter of RAM, at least 1 GiB). */
  memoryBudget?: number;
  diagnostics?: boolean;
  /** Weighted modes: the calibration query set (default: the shipped one; see calibrateCached). */
  queries?: readonly string[];
  signal?: AbortSignal;
  onEvent?: (e: PipelineEvent) => void;
}

export interface PipelineRun {
  /** In manifest order; null where the model failed or was not reached. */
  profiles: (PipelineProfile | null)[];
  failures: PipelineFailure[];
}

export function defaultConcurrency(models: number, cores = os.availableParallelism()): number {
  return Math.max(1, Math.min(models, 2 + Math.floor(cores / 8), 4));
}

/** Estimated peak memory of one model's calibration: the largest tensor, read ahead, widened to F32 in the addon, plus per-block arrays. */
export function estimateModelBytes(ckpt: Checkpoint): number {
  let largest = 0;
  for (const t of ckpt.tensors) largest = Math.max(largest, t.numel);
  return largest * 12 + (32 << 20);
}

/** Weights bytes of a checkpoint: the order in which to start (largest first) and the overall progress weight. */
function checkpointBytes(ckpt: Checkpoint): number {
  return ckpt.tensors.reduce((a, t) => a + t.byteLength, 0);
}

/**
 * Calibrates (or reuses) every model's profile. Failures of single models are collected and the
 * others carry on; cancellation (`signal`) stops everything: running calibrations are aborted,
 * their temporary folders removed, and E_CANCELLED is thrown once all have stopped.
 */
export async function runPipeline(models: readonly ResolvedModel[], opts: RunPipelineOptions): Promise<PipelineRun> {
  const profiles: (PipelineProfile | null)[] = models.map(() => null);
  const failures: PipelineFailure[] = [];
  const emit = (e: PipelineEvent) => opts.onEvent?.(e);
  const fail = (index: number, err: unknown) => {
    const error = asCalibscopeError(err);
    if (error.code === 'E_CANCELLED') return;
    failures.push({ model_id: models[index].entry.id, index, error });
    emit({ type: 'failed', index, error });
  };

  // Open every checkpoint first: a broken one fails here, before any work starts on the others.
  const ckpts: (Checkpoint | null)[] = await Promise.all(
    models.map((m, i) =>
      openCheckpoint(m.entry.path).catch((err) => {
        fail(i, err);
        return null;
      }),
    ),
  );
  try {
    const order = models
      .map((_, i) => i)
      .filter((i) => ckpts[i] !== null)
      .sort((a, b) => checkpointBytes(ckpts[b]!) - checkpointBytes(ckpts[a]!) || a - b);
    for (const i of order) emit({ type: 'queued', index: i, bytes: checkpointBytes(ckpts[i]!) });
    const limit = Math.max(1, opts.concurrency ?? defaultConcurrency(order.length));
    const budget = opts.memoryBudget ?? Math.max(1 << 30, os.totalmem() / 4);

    let used = 0;
    const running = new Set<Promise<void>>();
    const start = (i: number) => {
      const est = estimateModelBytes(ckpts[i]!);
      used += est;
      const t0 = process.hrtime.bigint();
      const m = models[i];
      const p = calibrateCached({
        cacheDir: opts.cacheDir,
        readOnly: opts.readOnly,
        model: ckpts[i]!,
        modelId: m.entry.id,
        config: m.config,
        force: opts.force,
        threads: opts.threads,
        diagnostics: opts.diagnostics,
        queries: opts.queries,
        modelDir: m.entry.path,
        signal: opts.signal,
        onPhase: (phase) => emit({ type: 'phase', index: i, phase }),
        onProgress: (progress) => emit({ type: 'progress', index: i, progress }),
      })
        .then((r) => {
          const profile: PipelineProfile = {
            model_id: m.entry.id,
            model_path: m.entry.path,
            format: m.config.format,
            mode: m.config.mode ?? 'static',
            profile_path: r.profilePath,
            cached: r.cached,
            state_before: r.before.state,
            reason_before: r.before.reason,
            overall_mse: r.profile.overall_mse,
            overall_mse_before: r.profile.overall_mse_before,
            tensors: Object.keys(r.profile.tensor_calibrations).length,
            seconds: Number(process.hrtime.bigint() - t0) / 1e9,
            backend: profileBackend(r.profile),
          };
          profiles[i] = profile;
          emit({ type: 'done', index: i, profile });
        }, (err) => fail(i, err))
        .finally(() => {
          used -= est;
          running.delete(p);
        });
      running.add(p);
    };

    const queue = [...order];
    while (queue.length > 0 && !opts.signal?.aborted) {
      // The largest model that fits next to the running ones; one model always runs, whatever its size.
      const pick = queue.findIndex((i) => running.size === 0 || used + estimateModelBytes(ckpts[i]!) <= budget);
      if (running.size < limit && pick >= 0) {
        start(queue.splice(pick, 1)[0]);
        continue;
      }
      await Promise.race(running);
    }
    await Promise.all(running);
    if (opts.signal?.aborted) throw new CalibscopeError('E_CANCELLED', 'pipeline cancelled');
    // Manifest order, as the profiles: the first failure's code is the run's error code (and exit
    // status), which must not depend on which model happened to fail first.
    failures.sort((a, b) => a.index - b.index);
    return { profiles, failures };
  } finally {
    await Promise.all(ckpts.map((c) => c?.close().catch(() => undefined)));
  }
}
