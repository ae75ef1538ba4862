// The specification's QuantizationCalibrator: calibrate one tensor or a whole checkpoint,
// streaming tensors one at a time (the next one is read while the current one is searched).
import path from 'node:path';
import fs from 'node:fs';
import { checkpointHash } from '../checkpoints/hash.js';
import { checkpointLocation, openCheckpoint, type Checkpoint, type TensorInfo } from '../checkpoints/checkpoint.js';
import { ProfileWriter } from '../profiles/profile_writer.js';
import { CalibscopeError } from '../util/errors.js';
import { CALIBSCOPE_VERSION, PROFILE_FORMAT_VERSION } from '../version.js';
import type { CalibrationStats } from '../semantic/calibration_stats.js';
import type { NativeBackend } from '../native/index.js';
import { resolveBackend } from './backend.js';
import { makeConfig, type ConfigInput } from './config.js';
import { modeDetails, modeNeedsStats, tensorWeighting } from './modes.js';
import { calibrateTensorData, chooseBlockSize, type RunOptions, type TensorCalibration, type TensorData } from './tensor_calibration.js';
import { TensorFilter } from './tensor_filter.js';
import type { CalibrationConfig, CalibrationResult, ModelCalibrationProfile, SkippedTensor } from './types.js';

export interface ModelProgress {
  /** Tensors finished / to calibrate. */
  tensorsDone: number;
  tensorsTotal: number;
  /** Elements finished / to calibrate: the fraction to show. */
  elementsDone: number;
  elementsTotal: number;
  tensor: string | null;
}

export interface CalibrateModelOptions {
  /** CPU backend: worker threads per tensor (default: all cores). */
  threads?: number;
  diagnostics?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: ModelProgress) => void;
  /** Called once per calibrated tensor, in checkpoint order. */
  onTensor?: (tc: TensorCalibration) => void;
  /** Where to write the profile folder; nothing is written when omitted. */
  outDir?: string;
  /** The calibration statistics a weighted mode needs (semantic/calibration_stats.ts), collected
   *  from this checkpoint with the config's calibration query set. */
  statistics?: CalibrationStats | null;
  /** How to learn the checkpoint's hash (profiles/hash_cache.ts answers from its stat cache when the
   *  files are unchanged); by default the files are hashed while the search runs. */
  checkpointHash?: (ckpt: Checkpoint) => Promise<string>;
}

export interface CalibratedModel {
  profile: ModelCalibrationProfile;
  /** The profile folder, when one was written. */
  profilePath: string | null;
}

/** Size, times and inode of every file the hash covers, as one comparable string. */
async function fileStats(ckpt: Checkpoint): Promise<string> {
  const files = [ckpt.configPath, ...ckpt.files, ckpt.indexPath].filter((f): f is string => f !== null);
  const parts = await Promise.all(
    files.map(async (f) => {
      const st = await fs.promises.stat(f, { bigint: true });
      return `${f}:${st.size}:${st.mtimeNs}:${st.ctimeNs}:${st.ino}`;
    }),
  );
  return parts.join('|');
}

function checkCancelled(signal?: AbortSignal): void {
  if (signal?.aborted) throw new CalibscopeError('E_CANCELLED', 'calibration cancelled');
}

export class QuantizationCalibrator {
  readonly config: CalibrationConfig;
  private readonly filter: TensorFilter;

  constructor(config: CalibrationConfig | ConfigInput) {
    this.config = makeConfig(config as ConfigInput);
    this.filter = new TensorFilter(this.config.include, this.config.exclude);
  }

  /** Calibrates one tensor with the block-size grid search. */
  calibrateTensor(tensor: TensorData, opts: RunOptions = {}): Promise<TensorCalibration> {
    return calibrateTensorData(tensor, this.config, opts);
  }

  /** The block size the config's policy picks for this tensor. */
  async findOptimalBlockSize(tensor: TensorData, opts: RunOptions = {}): Promise<number> {
    const tc = await calibrateTensorData(tensor, this.config, { ...opts, diagnostics: false });
    return chooseBlockSize(tc.result.block_sizes_tried, this.config.block_policy, this.config.bits_tolerance);
  }

  /** Mean squared error between an original and a dequantized tensor, accumulated in float64. */
  computeMse(original: ArrayLike<number>, dequantized: ArrayLike<number>): number {
    if (original.length !== dequantized.length) {
      throw new CalibscopeError('E_BAD_ARGUMENT', `length mismatch: ${original.length} vs ${dequantized.length}`);
    }
    if (original.length === 0) return 0;
    let sum = 0;
    for (let i = 0; i < original.length; i++) {
      const d = original[i] - dequantized[i];
      sum += d * d;
    }
    return sum / original.length;
  }

  /** Calibrates every quantizable tensor of a checkpoint (a path or an opened one). */
  async calibrateModel(model: string | Checkpoint, opts: CalibrateModelOptions = {}): Promise<CalibratedModel> {
    const mode = this.config.mode ?? 'static';
    const stats = modeNeedsStats(mode) ? (opts.statistics ?? null) : null;
    if (modeNeedsStats(mode) && !stats) {
      throw new CalibscopeError('E_BAD_ARGUMENT', `--mode ${mode} needs calibration statistics (collectCalibrationStats) for the checkpoint`, { mode });
    }
    const qh = this.config.calibration_queries_hash ?? null;
    if (stats && qh !== null && stats.queries_hash !== qh) {
      throw new CalibscopeError('E_BAD_ARGUMENT', `the calibration statistics are for query set ${stats.queries_hash}, but the config names ${qh}`, {
        statistics_queries_hash: stats.queries_hash,
        calibration_queries_hash: qh,
      });
    }
    // Before anything is opened or written: `cuda` without a usable GPU is refused here (E_CUDA).
    const backend = resolveBackend(this.config.backend);
    const ckpt = typeof model === 'string' ? await openCheckpoint(model) : model;
    const writer = opts.outDir ? await ProfileWriter.create(opts.outDir, ckpt.tensors.map((t) => t.name)) : null;
    try {
      // The hash (a worker thread, or the stat cache) runs while the search runs on the addon's threads.
      const statsBefore = await fileStats(ckpt);
      const hashing = (opts.checkpointHash ?? checkpointHash)(ckpt);
      hashing.catch(() => undefined); // surfaced when awaited
      const { todo, skipped } = this.plan(ckpt);
      const source = (t: TensorInfo) => t.file;
      const progress: ModelProgress = {
        tensorsDone: 0,
        tensorsTotal: todo.length,
        elementsDone: 0,
        elementsTotal: todo.reduce((a, t) => a + t.numel, 0),
        tensor: null,
      };
      opts.onProgress?.(progress);

      const results: Record<string, CalibrationResult> = {};
      let sumBefore = 0;
      let sumAfter = 0;
      let objBefore = 0;
      let objAfter = 0;
      let counted = 0;
      let ran: NativeBackend = backend;
      // Read-ahead of one tensor: I/O for tensor i+1 overlaps the search of tensor i. Two buffers
      // of ours take turns (a finished tensor's buffer takes the read after next), so reads land
      // in memory already mapped instead of fresh pages.
      let spare: Buffer | undefined;
      const read = (t: TensorInfo) => {
        const buffer = spare && spare.byteLength >= t.byteLength ? spare : Buffer.allocUnsafeSlow(t.byteLength);
        spare = undefined;
        const data = ckpt.readTensor(t, buffer);
        data.catch(() => undefined); // surfaced when awaited
        return { buffer, data };
      };
      let next = todo.length > 0 ? read(todo[0]) : null;
      for (let i = 0; i < todo.length; i++) {
        checkCancelled(opts.signal);
        const info = todo[i];
        const current = next!;
        const data = await current.data;
        next = i + 1 < todo.length ? read(todo[i + 1]) : null;
        progress.tensor = info.name;
        const base = progress.elementsDone;
        const tc = await calibrateTensorData(
          { name: info.name, dtype: info.dtype, shape: info.shape, data },
          this.config,
          {
            threads: opts.threads,
            backend,
            diagnostics: opts.diagnostics,
            signal: opts.signal,
            onProgress: (f) => {
              progress.elementsDone = base + f * info.numel;
              opts.onProgress?.(progress);
            },
            weighting: stats ? tensorWeighting(mode, info.name, info.shape, stats) : undefined,
          },
          source(info),
        );
        spare = current.buffer; // nothing refers to the weights once the tensor is calibrated
        // An own property even for a name like "__proto__", which plain assignment would not store.
        Object.defineProperty(results, info.name, { value: tc.result, enumerable: true, writable: true, configurable: true });
        ran = tc.backend ?? backend;
        const n = tc.result.numel - tc.result.nonfinite_excluded;
        sumBefore += tc.result.mse_before * n;
        sumAfter += tc.result.mse_after * n;
        objBefore += (tc.result.objective_before ?? tc.result.mse_before) * n;
        objAfter += (tc.result.objective_after ?? tc.result.mse_after) * n;
        counted += n;
        await writer?.add(tc);
        opts.onTensor?.(tc);
        progress.tensorsDone = i + 1;
        progress.elementsDone = base + info.numel;
        opts.onProgress?.(progress);
      }
      checkCancelled(opts.signal);
      if (todo.length === 0) {
        throw new CalibscopeError(
          'E_NOTHING_TO_CALIBRATE',
          `${ckpt.files.join(', ')}: no tensor to calibrate` +
            (skipped.length ? ` (${skipped.length} skipped: ${[...new Set(skipped.map((s) => s.reason))].join('; ')})` : ''),
          { skipped },
        );
      }
      const hashBefore = await hashing;
      if (stats && stats.checkpoint_hash !== hashBefore) {
        throw new CalibscopeError(
          'E_BAD_ARGUMENT',
          `${ckpt.root}: the calibration statistics were collected from another checkpoint (${stats.checkpoint_hash}, this one is ${hashBefore})`,
          { statistics_checkpoint_hash: stats.checkpoint_hash, checkpoint_hash: hashBefore },
        );
      }
      // A checkpoint that changed while it was read must not get a profile under either hash:
      // any write changes a file's ctime (which no tool can set back), so compare the stats.
      const statsAfter = await fileStats(ckpt);
      if (statsAfter !== statsBefore) {
        throw new CalibscopeError('E_BAD_CHECKPOINT', `${ckpt.root}: the checkpoint changed during calibration; run again`, {
          files: [ckpt.configPath, ...ckpt.files, ckpt.indexPath].filter(Boolean),
        });
      }
      const profile: ModelCalibrationProfile = {
        model_id: ckpt.modelId,
        format: this.config.format,
        timestamp: new Date().toISOString(),
        tensor_calibrations: results,
        overall_mse: counted > 0 ? sumAfter / counted : 0,
        overall_mse_before: counted > 0 ? sumBefore / counted : 0,
        semantic_correlation: null,
        golden_checkpoint_hash: hashBefore,
        checkpoint_path: checkpointLocation(ckpt),
        config: this.config,
        calibscope_version: CALIBSCOPE_VERSION,
        profile_format_version: PROFILE_FORMAT_VERSION,
        skipped_tensors: skipped,
        scales_sha256: null,
        review: null,
        mode,
        mode_details: modeDetails(mode, stats),
        statistics: stats
          ? { hash: stats.statistics_hash, queries_hash: stats.queries_hash, query_count: stats.query_count, tokens: stats.tokens, checkpoint_hash: stats.checkpoint_hash }
          : null,
        backend: ran,
      };
      if (stats) {
        profile.overall_objective = counted > 0 ? objAfter / counted : 0;
        profile.overall_objective_before = counted > 0 ? objBefore / counted : 0;
      }
      if (!writer) return { profile, profilePath: null };
      const final = await writer.finish(profile, {
        format: this.config.format,
        model_id: ckpt.modelId,
        golden_checkpoint_hash: hashBefore,
        calibscope_version: CALIBSCOPE_VERSION,
      });
      return { profile: final, profilePath: writer.outDir };
    } catch (err) {
      await writer?.abort();
      throw err;
    } finally {
      if (typeof model === 'string') await ckpt.close();
    }
  }

  /** Splits the checkpoint's tensors into those to calibrate and those reported as skipped (with
   *  the tensors a sharded checkpoint stores but its index does not list: transformers does not
   *  load them either). */
  plan(ckpt: Checkpoint): { todo: TensorInfo[]; skipped: SkippedTensor[] } {
    const todo: TensorInfo[] = [];
    const skipped: SkippedTensor[] = [];
    for (const t of ckpt.tensors) {
      const d = this.filter.decide(t.name, t.dtype, t.shape);
      if (d.quantize) todo.push(t);
      else skipped.push({ name: t.name, dtype: t.dtype, shape: t.shape, reason: d.reason });
    }
    const index = path.basename(ckpt.indexPath ?? 'the index');
    for (const t of ckpt.unlisted) {
      const file = path.relative(ckpt.root, t.file).split(path.sep).join('/');
      skipped.push({ name: t.name, dtype: t.dtype, shape: t.shape, reason: `stored in ${file} but not listed in ${index}'s weight_map` });
    }
    return { todo, skipped };
  }
}
