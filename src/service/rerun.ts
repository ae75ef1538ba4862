// Re-running one tensor with other settings, and keeping the result: the profile is rewritten as a
// new draft (all other tensors' scales and diagnostics copied over, overall MSE recomputed, any
// sign-off and validation result dropped, since they vouched for the old content).
import { makeConfig } from '../calibration/config.js';
import { calibrateTensorData, type TensorCalibration } from '../calibration/tensor_calibration.js';
import type { CalibrationResult } from '../calibration/types.js';
import { openCheckpoint } from '../checkpoints/checkpoint.js';
import { acquireLock, lockPathFor } from '../profiles/lock.js';
import { loadProfile, saveProfile } from '../profiles/store.js';
import { CalibscopeError } from '../util/errors.js';
import { readBlockArrays } from './block_data.js';
import type { RerunParams } from './protocol.js';
import type { DraftProfile, WorkspaceModel } from './workspace.js';

export interface PendingRerun {
  rerunId: string;
  model: WorkspaceModel;
  /** The profile's timestamp the re-run started from: keeping it onto a newer profile is refused. */
  baseTimestamp: string;
  before: CalibrationResult;
  tc: TensorCalibration;
}

/** Calibrates one tensor of the model's checkpoint with the re-run's settings. */
export async function rerunTensor(
  m: WorkspaceModel,
  p: RerunParams,
  signal: AbortSignal,
  onProgress: (f: number) => void,
): Promise<{ before: CalibrationResult; baseTimestamp: string; tc: TensorCalibration }> {
  const profile = (await loadProfile(m.profileDir)) as DraftProfile;
  const before = profile.tensor_calibrations[p.tensor];
  if (!before) throw new CalibscopeError('E_NOT_FOUND', `profile ${m.profileDir}: tensor '${p.tensor}' was not calibrated`, { tensor: p.tensor });
  const config = makeConfig({
    format: p.format ?? before.format,
    block_sizes: p.blockSizes,
    block_policy: p.policy ?? profile.config.block_policy,
    bits_tolerance: profile.config.bits_tolerance,
    search: p.search ?? profile.config.search,
    allow_nonfinite: profile.config.allow_nonfinite,
  });
  const ckpt = await openCheckpoint(m.path);
  try {
    const info = ckpt.tensor(p.tensor);
    if (!info) throw new CalibscopeError('E_NOT_FOUND', `${ckpt.root}: the checkpoint has no tensor '${p.tensor}'`, { tensor: p.tensor });
    const data = await ckpt.readTensor(info);
    const tc = await calibrateTensorData(
      { name: info.name, dtype: info.dtype, shape: info.shape, data },
      config,
      { diagnostics: true, signal, onProgress },
      info.file,
    );
    return { before, baseTimestamp: profile.timestamp, tc };
  } finally {
    await ckpt.close();
  }
}

/** Element-weighted mean of the tensors' MSE (the calibrator's overall_mse). */
function overall(results: CalibrationResult[], key: 'mse_before' | 'mse_after'): number {
  let sum = 0;
  let n = 0;
  for (const r of results) {
    const k = r.numel - r.nonfinite_excluded;
    sum += r[key] * k;
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
    // A validation result vouched for the old scales: it goes with them.
    const { semantic_validation: _dropped, ...kept } = old as DraftProfile & { semantic_validation?: unknown };
    const next: DraftProfile = {
      ...kept,
      timestamp: now,
      tensor_calibrations: results,
      overall_mse: overall(list, 'mse_after'),
      overall_mse_before: overall(list, 'mse_before'),
      semantic_correlation: null,
      scales_sha256: null,
      review: null,
      draft: { based_on: old.draft?.based_on ?? old.timestamp, changed_tensors: changed, time: now, previous_review: old.review ?? old.draft?.previous_review ?? null },
    };
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
