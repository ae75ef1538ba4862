// The calibration cache: `<cache>/calibration/<model-id>/<format>-<config-hash>/` profile folders
// plus a stat cache of checkpoint hashes. calibrateCached reuses a valid profile and calibrates a
// missing, stale or damaged one, holding a per-profile lock so concurrent processes take turns.
import fs from 'node:fs';
import path from 'node:path';
import { QuantizationCalibrator, type ModelProgress } from '../calibration/calibrator.js';
import { configHash, type ConfigInput } from '../calibration/config.js';
import { modeNeedsStats } from '../calibration/modes.js';
import type { TensorCalibration } from '../calibration/tensor_calibration.js';
import type { CalibrationConfig, ModelCalibrationProfile } from '../calibration/types.js';
import { checkpointLocation, openCheckpoint, type Checkpoint } from '../checkpoints/checkpoint.js';
import { calibrationStatsCached, resolveCalibrationQueries, STATS_DIR, type CalibrationStats } from '../semantic/calibration_stats.js';
import { removeStaleTemps, unlinkQuiet } from '../util/atomic.js';
import { CalibscopeError, readOnlyErrno } from '../util/errors.js';
import { HASH_CACHE_DIR, currentCheckpointHash } from './hash_cache.js';
import { pidAlive } from '../util/atomic.js';
import { acquireLock, lockHeld, lockPathFor, removeDeadLock, type LockOwner } from './lock.js';
import { profileDir } from './paths.js';
import { profileStatus, type ProfileState, type ProfileStatus } from './store.js';

/** Temporary and set-aside folders that ProfileWriter and the lock leave when their process dies. */
const LEFTOVER_RE = /^\.(.+)\.(tmp|old)-(\d+)-[0-9a-f]+$|^\.(.+)\.lock\.stale-(\d+)-[0-9a-f]+$/;

function ioError(cacheDir: string, err: unknown): CalibscopeError {
  const e = err as NodeJS.ErrnoException;
  return new CalibscopeError('E_IO', `cache folder ${cacheDir} is not writable: ${e.message}`, { path: cacheDir, errno: e.code });
}

/**
 * A file where the cache folder, or a folder above it, should be: E_IO (like any cache that cannot
 * be written) naming the file, rather than the bare ENOTDIR that creating the folder gives.
 */
export async function checkNotAFile(cacheDir: string): Promise<void> {
  for (let p = cacheDir; ; p = path.dirname(p)) {
    const st = await fs.promises.stat(p).catch(() => null);
    if (st) {
      if (st.isDirectory()) return;
      throw new CalibscopeError(
        'E_IO',
        p === cacheDir
          ? `cache folder ${cacheDir}: the path is a file, not a folder, so it is not writable as a cache — give --cache a folder (it is created if needed)`
          : `cache folder ${cacheDir}: ${p} above it is a file, not a folder, so it is not writable as a cache`,
        { path: cacheDir, file: p, errno: 'ENOTDIR' },
      );
    }
    if (path.dirname(p) === p) return;
  }
}

export interface OpenedCache {
  cacheDir: string;
  /** Set when the cache cannot be written (the error code that said so): valid profiles can still be reused. */
  readOnly: { errno: string } | null;
  /** What writers that died left behind and was removed (nothing for a read-only cache). */
  removed: string[];
}

/**
 * Opens the cache folder for calibrateCached: creates it and checks that it is writable (a probe
 * file is created and removed), then removes what writers that died left behind. A cache that
 * cannot be written (EACCES, EPERM, EROFS) is returned as read-only, with nothing written or
 * removed; other failures, and a file in the folder's place, are E_IO.
 */
export async function openCacheMode(cacheDirArg: string): Promise<OpenedCache> {
  const cacheDir = path.resolve(cacheDirArg);
  await checkNotAFile(cacheDir);
  const calib = path.join(cacheDir, 'calibration');
  try {
    await fs.promises.mkdir(calib, { recursive: true });
    const probe = path.join(calib, `.probe.tmp-${process.pid}-0`);
    await fs.promises.writeFile(probe, '');
    await unlinkQuiet(probe);
  } catch (err) {
    const errno = readOnlyErrno(err);
    if (errno) return { cacheDir, readOnly: { errno }, removed: [] };
    throw ioError(cacheDir, err);
  }
  return { cacheDir, readOnly: null, removed: await sweepLeftovers(cacheDir) };
}

/**
 * Makes sure the cache folder exists and is writable (E_IO otherwise), and removes what writers
 * that died left behind: `.name.tmp-<pid>-*` / `.name.old-<pid>-*` folders, temporary files and
 * lock files of processes that no longer exist. Returns the removed paths.
 */
export async function openCache(cacheDirArg: string): Promise<string[]> {
  const opened = await openCacheMode(cacheDirArg);
  if (opened.readOnly) {
    throw new CalibscopeError('E_IO', `cache folder ${opened.cacheDir} is not writable: ${opened.readOnly.errno}`, {
      path: opened.cacheDir,
      errno: opened.readOnly.errno,
    });
  }
  return opened.removed;
}

async function sweepLeftovers(cacheDir: string): Promise<string[]> {
  const calib = path.join(cacheDir, 'calibration');
  const removed: string[] = [];
  const sweep = async (dir: string) => {
    removed.push(...(await removeStaleTemps(dir).catch(() => [])));
    let names: string[];
    try {
      names = await fs.promises.readdir(dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (/^\..+\.lock$/.test(name)) {
        if (await removeDeadLock(path.join(dir, name)).catch(() => false)) removed.push(path.join(dir, name));
        continue;
      }
      const m = LEFTOVER_RE.exec(name);
      if (!m) continue;
      const pid = Number(m[3] ?? m[5]);
      if (!Number.isSafeInteger(pid) || pid <= 0 || pidAlive(pid)) continue;
      // A profile's temporary and set-aside folders exist only while its lock is held. A pid from
      // another host or container means nothing here, so while that lock is held the folder may
      // be a live writer's, not a dead one's.
      if (m[1] !== undefined && (await lockHeld(path.join(dir, `.${m[1]}.lock`)))) continue;
      const p = path.join(dir, name);
      await fs.promises.rm(p, { recursive: true, force: true }).catch(() => undefined);
      removed.push(p);
    }
  };
  await sweep(path.join(cacheDir, HASH_CACHE_DIR));
  // Calibration statistics: temporaries of interrupted writes.
  for (const model of await fs.promises.readdir(path.join(cacheDir, STATS_DIR), { withFileTypes: true }).catch(() => [])) {
    if (model.isDirectory() && !model.name.startsWith('.')) removed.push(...(await removeStaleTemps(path.join(cacheDir, STATS_DIR, model.name)).catch(() => [])));
  }
  for (const model of await fs.promises.readdir(calib, { withFileTypes: true }).catch(() => [])) {
    if (!model.isDirectory() || model.name.startsWith('.')) continue;
    const modelDir = path.join(calib, model.name);
    await sweep(modelDir);
    // profile.json temporaries from an interrupted update (made under the profile's lock, as above)
    for (const p of await fs.promises.readdir(modelDir, { withFileTypes: true }).catch(() => [])) {
      if (!p.isDirectory() || p.name.startsWith('.')) continue;
      if (await lockHeld(lockPathFor(path.join(modelDir, p.name)))) continue;
      removed.push(...(await removeStaleTemps(path.join(modelDir, p.name)).catch(() => [])));
    }
  }
  return removed;
}

/**
 * With the profile's lock held, removes that profile's temporary and set-aside folders left by a
 * writer that was killed: such folders are only made under the lock, so one whose process is gone
 * (or has our pid, from an earlier process that had it) is nobody's. The cache-wide sweep of
 * openCacheMode misses those of a process that died after it ran (a second pipeline that waited
 * for this lock).
 */
async function removeProfileLeftovers(dir: string): Promise<void> {
  const parent = path.dirname(dir);
  const base = path.basename(dir);
  for (const name of await fs.promises.readdir(parent).catch(() => [] as string[])) {
    const m = LEFTOVER_RE.exec(name);
    if (!m || m[1] !== base) continue;
    const pid = Number(m[3]);
    if (pid !== process.pid && pidAlive(pid)) continue;
    await fs.promises.rm(path.join(parent, name), { recursive: true, force: true }).catch(() => undefined);
  }
}

export type CachePhase = 'waiting' | 'checking' | 'calibrating';

export interface CachedCalibrationOptions {
  cacheDir: string;
  /** A checkpoint path, or an opened checkpoint (not closed here). */
  model: string | Checkpoint;
  /** The id that names the cache folder (default: the checkpoint's folder name). */
  modelId?: string;
  config: CalibrationConfig | ConfigInput;
  /** Recalibrate even when the profile is valid. */
  force?: boolean;
  threads?: number;
  diagnostics?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: ModelProgress) => void;
  onPhase?: (phase: CachePhase, detail?: LockOwner) => void;
  onTensor?: (tc: TensorCalibration) => void;
  /** Weighted modes: the calibration queries (default: the shipped set; they must match the
   *  config's calibration_queries_hash), and the model folder the encoder reads them with
   *  (default: `model` when it is a path, else the checkpoint's folder). */
  queries?: readonly string[];
  modelDir?: string;
  /** Weighted modes: statistics already at hand (otherwise from `<cache>/stats/`, collected when missing). */
  statistics?: CalibrationStats;
  /** The cache is read-only (openCacheMode said so): reuse a valid profile without writing
   *  anything, E_IO when it would need calibrating. Found out here too when the lock cannot be created. */
  readOnly?: { errno: string } | null;
}

export interface CachedCalibration {
  profile: ModelCalibrationProfile;
  profilePath: string;
  /** True when a valid profile was reused. */
  cached: boolean;
  /** The profile's state before this call, with its reason. */
  before: { state: ProfileState; reason: string };
  /** A sign-off that --force recalibration dropped, if any. */
  droppedSignOff?: ModelCalibrationProfile['review'];
  /** Weighted modes, when calibrated: where the statistics came from. */
  statistics?: { path: string | null; cached: boolean; seconds: number };
}

function readOnlyError(cacheDir: string, errno: string, modelId: string, format: string, st: ProfileStatus, force: boolean): CalibscopeError {
  const needs = st.state === 'missing' ? 'calibration' : 'recalibration';
  const why = force ? `--force asks for it (the profile is ${st.state}: ${st.reason})` : `the profile is ${st.state}: ${st.reason}`;
  return new CalibscopeError(
    'E_IO',
    `cache folder ${cacheDir} is read-only (not writable: ${errno}): the profile for ${modelId} (${format}) needs ${needs}, which would write to it — ${why}. ` +
      'Calibrate into a writable cache (--cache DIR), or use a cache where this profile is valid',
    { path: cacheDir, errno, read_only: true, profile_path: st.profile_path, state: st.state, reason: st.reason, force },
  );
}

function sharedIdError(ckpt: Checkpoint, format: string, st: ProfileStatus): CalibscopeError {
  const review = st.profile?.review;
  const what = review ? `${review.decision} by ${review.reviewer}` : 'calibrated';
  return new CalibscopeError(
    'E_BAD_ARGUMENT',
    `the cached ${format} profile for model id '${ckpt.modelId}' (${st.profile_path}) belongs to another checkpoint, ${st.other_checkpoint} ` +
      `(${what}); calibrating ${checkpointLocation(ckpt)} would replace it. Give this model its own id (--model-id ID, or a pipeline's "id"), ` +
      'or use --force to replace that profile',
    { model_id: ckpt.modelId, profile_path: st.profile_path, other_checkpoint: st.other_checkpoint, checkpoint: checkpointLocation(ckpt), signed_off: Boolean(review) },
  );
}

/** The profile folder for a checkpoint and config in `cacheDir`. */
export function cachedProfileDir(cacheDir: string, modelId: string, config: CalibrationConfig): string {
  return profileDir(path.resolve(cacheDir), modelId, config.format, configHash(config));
}

/** Opens a checkpoint under the pipeline's id, so the cache folder and profile carry that id. */
export function withModelId(ckpt: Checkpoint, modelId: string | undefined): Checkpoint {
  return modelId === undefined || modelId === ckpt.modelId ? ckpt : { ...ckpt, modelId };
}

/**
 * Returns the valid cached profile for the checkpoint and config, or calibrates it into the cache.
 * The profile folder's lock is held from the check to the final rename.
 */
export async function calibrateCached(opts: CachedCalibrationOptions): Promise<CachedCalibration> {
  const calibrator = new QuantizationCalibrator(opts.config);
  const cacheDir = path.resolve(opts.cacheDir);
  const opened = typeof opts.model === 'string' ? await openCheckpoint(opts.model) : opts.model;
  const ckpt = withModelId(opened, opts.modelId);
  const dir = cachedProfileDir(cacheDir, ckpt.modelId, calibrator.config);
  const modelDir = path.dirname(dir);
  let release: (() => Promise<void>) | null = null;
  let success = false;
  let readOnly = opts.readOnly ?? null;
  const check = async (): Promise<ProfileStatus> => {
    opts.onPhase?.('checking');
    try {
      return await profileStatus(dir, ckpt, {
        cacheDir,
        expectConfigHash: configHash(calibrator.config),
        expectModelId: ckpt.modelId,
      });
    } catch (err) {
      // Only a profile from a newer calibscope gets here: --force replaces it.
      if (!opts.force) throw err;
      return { state: 'corrupt', reason: (err as Error).message, profile_path: dir, profile: null, checkpoint_hash: null };
    }
  };
  const reusable = (st: ProfileStatus) => !opts.force && (st.state === 'valid' || st.state === 'signed-off');
  try {
    if (readOnly === null) {
      try {
        await fs.promises.mkdir(modelDir, { recursive: true });
        release = await acquireLock(lockPathFor(dir), { signal: opts.signal, onWait: (o) => opts.onPhase?.('waiting', o) });
        await removeProfileLeftovers(dir);
      } catch (err) {
        const errno = readOnlyErrno(err);
        if (!errno) throw err instanceof CalibscopeError ? err : ioError(cacheDir, err);
        readOnly = { errno };
      }
    }
    if (readOnly !== null) {
      // Profiles are published by an atomic rename, so reading one without the lock is safe; a
      // read-only cache can only be reused, never written (no lock, no hash-cache entry).
      const st = await check();
      if (reusable(st)) {
        success = true;
        return { profile: st.profile!, profilePath: dir, cached: true, before: { state: st.state, reason: st.reason } };
      }
      throw readOnlyError(cacheDir, readOnly.errno, ckpt.modelId, calibrator.config.format, st, Boolean(opts.force));
    }
    const before = await check();
    if (reusable(before)) {
      success = true;
      return { profile: before.profile!, profilePath: dir, cached: true, before: { state: before.state, reason: before.reason } };
    }
    // Two models whose folders share a name ("model", "checkpoint-1000") share a cache folder;
    // the other one's profile (perhaps signed off) is not replaced without being asked.
    if (before.other_checkpoint !== undefined && !opts.force) throw sharedIdError(ckpt, calibrator.config.format, before);
    if (before.state === 'corrupt') {
      // A damaged folder in the cache is ours to replace; ProfileWriter keeps anything that does not
      // look like a profile, so clear it first.
      const hasJson = await fs.promises.stat(path.join(dir, 'profile.json')).then(() => true, () => false);
      if (!hasJson) await fs.promises.rm(dir, { recursive: true, force: true });
    }
    opts.onPhase?.('calibrating');
    let statistics = opts.statistics ?? null;
    let statsInfo: CachedCalibration['statistics'];
    if (modeNeedsStats(calibrator.config.mode) && !statistics) {
      const queries = await resolveCalibrationQueries(calibrator.config, opts.queries);
      const got = await calibrationStatsCached(opts.modelDir ?? (typeof opts.model === 'string' ? opts.model : ckpt.root), queries, {
        cacheDir,
        modelId: ckpt.modelId,
        threads: opts.threads,
        signal: opts.signal,
      });
      statistics = got.stats;
      statsInfo = { path: got.path, cached: got.cached, seconds: got.stats.seconds };
    } else if (statistics) {
      statsInfo = { path: null, cached: true, seconds: statistics.seconds };
    }
    const result = await calibrator.calibrateModel(ckpt, {
      // An unchanged checkpoint (a recalibration: --force, another format or config) is not read
      // a second time for its hash; a computed hash is remembered for the next run. The calibrator
      // still checks that the files do not change while it runs.
      checkpointHash: async (c) => (await currentCheckpointHash(c, cacheDir)).hash,
      statistics,
      outDir: dir,
      threads: opts.threads,
      diagnostics: opts.diagnostics,
      signal: opts.signal,
      onProgress: opts.onProgress,
      onTensor: opts.onTensor,
    });
    success = true;
    return {
      profile: result.profile,
      profilePath: dir,
      cached: false,
      before: { state: before.state, reason: before.reason },
      droppedSignOff: before.profile?.review ?? undefined,
      statistics: statsInfo,
    };
  } finally {
    await release?.();
    // A failed first calibration leaves no empty model folder behind (a read-only cache is not touched).
    if (!success && readOnly === null) await fs.promises.rmdir(modelDir).catch(() => undefined);
    if (typeof opts.model === 'string') await opened.close();
  }
}
