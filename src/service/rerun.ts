// Re-running one tensor with other settings, and keeping the result: the profile is rewritten as a
// new draft (all other tensors' scales and diagnostics copied over, overall MSE and objective
// recomputed, any sign-off and validation result dropped, since they vouched for the old content).
// A weighted mode (the profile's, or the one the re-run chose) weights the search exactly as the
// calibrator does: the same cached calibration statistics of the profile's query set.
import { makeConfig } from '../calibration/config.js';
import { modeNeedsStats, tensorWeighting, type TensorWeighting } from '../calibration/modes.js';
import { calibrateTensorData, type TensorCalibration } from '../calibration/tensor_calibration.js';
import type { CalibrationMode, CalibrationResult } from '../calibration/types.js';
import { openCheckpoint } from '../checkpoints/checkpoint.js';
import { acquireLock, lockPathFor } from '../profiles/lock.js';
import { loadProfile, saveProfile } from '../profiles/store.js';
import { calibrationStatsCached, resolveCalibrationQueries } from '../semantic/calibration_stats.js';
import { CalibscopeError } from '../util/errors.js';
import { readBlockArrays } from './block_data.js';
import type { RerunParams } from './protocol.js';
import { profileMode, tensorMode, type DraftProfile, type WorkspaceModel } from './workspace.js';

export interface PendingRerun {
  rerunId: string;
  model: WorkspaceModel;
  /** The profile's timestamp the re-run started from: keeping it onto a newer profile is refused. */
  baseTimestamp: string;
  before: CalibrationResult;
  tc: TensorCalibration;
  mode: CalibrationMode;
  /** The calibration statistics the re-run was weighted by (null for static). */
  statisticsHash: string | null;
}

export interface RerunOutcome {
  before: CalibrationResult;
  beforeMode: CalibrationMode;
  baseTimestamp: string;
  tc: TensorCalibration;
  mode: CalibrationMode;
  statisticsHash: string | null;
}

/** The calibration queries of the profile's config: the shipped set (the only one the workbench has). */
async function profileQueries(profile: DraftProfile, mode: CalibrationMode, dir: string): Promise<string[]> {
  const want = profile.config.calibration_queries_hash ?? null;
  if (want !== null) {
    throw new CalibscopeError(
      'E_BAD_ARGUMENT',
      `profile ${dir} was calibrated with the query set ${want}, which the workbench does not have (it uses the shipped set): ` +
        `re-run this tensor in ${mode} mode with the CLI (calibscope calibrate --calibration-queries FILE)`,
      { path: dir, mode, calibration_queries_hash: want },
    );
  }
  return resolveCalibrationQueries({ mode, calibration_queries_hash: null });
}

/**
 * Calibrates one tensor of the model's checkpoint with the re-run's settings. `cacheDir` holds the
 * calibration statistics of the weighted modes (collected there when missing).
 */
export async function rerunTensor(
  m: WorkspaceModel,
  p: RerunParams,
  cacheDir: string,
  signal: AbortSignal,
  onProgress: (f: number, detail: string) => void,
): Promise<RerunOutcome> {
  const profile = (await loadProfile(m.profileDir)) as DraftProfile;
  const before = profile.tensor_calibrations[p.tensor];
  if (!before) throw new CalibscopeError('E_NOT_FOUND', `profile ${m.profileDir}: tensor '${p.tensor}' was not calibrated`, { tensor: p.tensor });
  const mode = p.mode ?? profileMode(profile);
  const format = p.format ?? before.format;
  const config = makeConfig({
    format,
    // Without block sizes of its own, a re-run in the profile's format searches the profile's sizes;
    // in another format, that format's.
    block_sizes: p.blockSizes ?? (format === profile.config.format ? profile.config.block_sizes : undefined),
    block_policy: p.policy ?? profile.config.block_policy,
    bits_tolerance: profile.config.bits_tolerance,
    search: p.search ?? profile.config.search,
    allow_nonfinite: profile.config.allow_nonfinite,
    mode,
    // The workbench's backend (auto unless it was started with another), not the profile's: the
    // machine that re-runs may not be the one that calibrated.
    backend: m.config.backend,
  });
  // The statistics take the first part of the bar when they have to be collected.
  const statsShare = modeNeedsStats(mode) ? 0.5 : 0;
  let stats = null;
  if (modeNeedsStats(mode)) {
    const queries = await profileQueries(profile, mode, m.profileDir);
    onProgress(0, 'calibration statistics');
    stats = (
      await calibrationStatsCached(m.path, queries, {
        cacheDir,
        modelId: m.id,
        signal,
        onProgress: (f, d) => onProgress(statsShare * f, d),
      })
    ).stats;
  }
  const ckpt = await openCheckpoint(m.path);
  try {
    const info = ckpt.tensor(p.tensor);
    if (!info) throw new CalibscopeError('E_NOT_FOUND', `${ckpt.root}: the checkpoint has no tensor '${p.tensor}'`, { tensor: p.tensor });
    // Exactly the calibrator's weighting of this tensor in this mode (embeddings: plain, 'none').
    const weighting: TensorWeighting | undefined = stats ? tensorWeighting(mode, info.name, info.shape, stats) : undefined;
    const data = await ckpt.readTensor(info);
    const tc = await calibrateTensorData(
      { name: info.name, dtype: info.dtype, shape: info.shape, data },
      config,
      { diagnostics: true, signal, onProgress: (f) => onProgress(statsShare + (1 - statsShare) * f, p.tensor), weighting },
      info.file,
    );
    return {
      before,
      beforeMode: tensorMode(profile, p.tensor),
      baseTimestamp: profile.timestamp,
      tc,
      mode,
      statisticsHash: stats ? stats.statistics_hash : null,
    };
  } finally {
    await ckpt.close();
  }
}

/** Element-weighted mean over the tensors, as the calibrator's overall_mse and overall_objective. */
function overall(results: CalibrationResult[], value: (r: CalibrationResult) => number): number {
  let sum = 0;
  let n = 0;
  for (const r of results) {
    const k = r.numel - r.nonfinite_excluded;
    sum += value(r) * k;
    n += k;
  }
  return n > 0 ? sum / n : 0;
}

/** Writes the profile with the re-run tensor in place of the old result, as a new draft. */
export async function keepRerun(pending: PendingRerun): Promise<DraftProfile> {
  const dir = pending.model.profileDir;
  const release = await acquireLock(lockPathFor(dir), { timeoutMs: 60_000 });
  try {
    const old = (await loadProfile(dir)) as DraftProfile;
    if (old.timestamp !== pending.baseTimestamp) {
      throw new CalibscopeError('E_BAD_PROFILE', `profile ${dir} changed since the re-run of '${pending.tc.result.tensor_name}' started; run it again`, {
        path: dir,
      });
    }
    const name = pending.tc.result.tensor_name;
    const results = { ...old.tensor_calibrations, [name]: pending.tc.result };
    const list = Object.values(results);
    const now = new Date().toISOString();
    const changed = [...new Set([...(old.draft?.changed_tensors ?? []), name])];
    const tensorModes = { ...(old.draft?.tensor_modes ?? {}), [name]: { mode: pending.mode, statistics_hash: pending.statisticsHash } };
    // A validation result vouched for the old scales: it goes with them.
    const { semantic_validation: _dropped, ...kept } = old as DraftProfile & { semantic_validation?: unknown };
    const next: DraftProfile = {
      ...kept,
      timestamp: now,
      tensor_calibrations: results,
      overall_mse: overall(list, (r) => r.mse_after),
      overall_mse_before: overall(list, (r) => r.mse_before),
      semantic_correlation: null,
      scales_sha256: null,
      review: null,
      draft: {
        based_on: old.draft?.based_on ?? old.timestamp,
        changed_tensors: changed,
        time: now,
        previous_review: old.review ?? old.draft?.previous_review ?? null,
        tensor_modes: tensorModes,
      },
    };
    // A weighted profile's overall objective, as the calibrator computes it; a tensor re-run in
    // static mode has no weighted objective and counts with its plain squared error (as 'none').
    if (modeNeedsStats(profileMode(old))) {
      next.overall_objective = overall(list, (r) => r.objective_after ?? r.mse_after);
      next.overall_objective_before = overall(list, (r) => r.objective_before ?? r.mse_before);
    }
    async function* tensors(): AsyncGenerator<TensorCalibration> {
      for (const t of Object.keys(results)) {
        if (t === name) {
          yield pending.tc;
          continue;
        }
        const a = await readBlockArrays(dir, old, t);
        yield {
          result: old.tensor_calibrations[t],
          rows: a.rows,
          blocksPerRow: a.blocks,
          scales: a.scale,
          codes: a.codes ?? undefined,
          globalScale: a.global ?? undefined,
          blockMseBefore: a.mseBefore ?? undefined,
          blockMseAfter: a.mseAfter ?? undefined,
          blockOutliers: a.outliers ?? undefined,
        };
      }
    }
    return (await saveProfile(dir, next, tensors())) as DraftProfile;
  } finally {
    await release();
  }
}
