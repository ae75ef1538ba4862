// The profile store: save, load (verified), read scales, update, sign off, and the state of a
// profile against its checkpoint — missing, valid, stale, corrupt or signed-off, with a reason.
// Layout (DESIGN.md): a profile folder holds profile.json and scales.safetensors (and optionally
// diagnostics.safetensors); profile.json records the scales file's SHA-256.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { configHash } from '../calibration/config.js';
import { FORMAT_NAMES } from '../calibration/schemes.js';
import { rowsCols, type TensorCalibration } from '../calibration/tensor_calibration.js';
import type { ModelCalibrationProfile, SignOff } from '../calibration/types.js';
import { checkpointLocation, openCheckpoint, sameCheckpointSource, type Checkpoint } from '../checkpoints/checkpoint.js';
import { sha256File } from '../checkpoints/hash.js';
import { SafetensorsFile } from '../checkpoints/safetensors.js';
import { writeFileAtomic } from '../util/atomic.js';
import { CalibscopeError, asCalibscopeError } from '../util/errors.js';
import { PROFILE_FORMAT_VERSION } from '../version.js';
import { currentCheckpointHash } from './hash_cache.js';
import { acquireLock, lockPathFor } from './lock.js';
import { PROFILE_JSON, ProfileWriter, SCALES_FILE } from './profile_writer.js';

export type ProfileState = 'missing' | 'valid' | 'stale' | 'corrupt' | 'signed-off';

export interface ProfileStatus {
  state: ProfileState;
  reason: string;
  profile_path: string;
  /** The loaded profile (null when missing or corrupt). */
  profile: ModelCalibrationProfile | null;
  /** The checkpoint's current hash (null when it was not needed: missing or corrupt profile). */
  checkpoint_hash: string | null;
  /** Stale: the profile was made from another checkpoint (its recorded path) that has the same
   *  model id, rather than from an earlier version of this one. */
  other_checkpoint?: string;
}

export interface ProfileScales {
  /** The multipliers s (x̂ = Q(x·s)/s), rows × blocksPerRow, row-major. */
  scales: Float32Array;
  /** NVFP4 / MX: the encoded scale bytes (E4M3 code, or biased exponent k + 127). */
  codes?: Uint8Array;
  /** NVFP4: the per-tensor decode scale g. */
  global?: number;
  rows: number;
  blocksPerRow: number;
}

/** profile.json is small (no big arrays); anything larger than this is not one. */
const MAX_PROFILE_JSON = 256 << 20;
const HASH_RE = /^sha256:[0-9a-f]{64}$/;
const HEX64_RE = /^[0-9a-f]{64}$/;

function bad(dir: string, reason: string, extra: Record<string, unknown> = {}): CalibscopeError {
  return new CalibscopeError('E_BAD_PROFILE', `profile ${dir}: ${reason}`, { path: dir, reason, ...extra });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Checks a parsed profile.json: the fields other code relies on, with the right types. A profile
 * from a newer calibscope is refused by its profile_format_version before anything else, so that
 * its other fields are never misread.
 */
export function checkProfileJson(json: unknown, dir: string): ModelCalibrationProfile {
  if (!isObject(json)) throw bad(dir, `${PROFILE_JSON} is not a JSON object`);
  const v = json.profile_format_version;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
    throw bad(dir, `${PROFILE_JSON} has no valid profile_format_version (got ${JSON.stringify(v)})`);
  }
  if (v > PROFILE_FORMAT_VERSION) {
    const by = typeof json.calibscope_version === 'string' ? `calibscope ${json.calibscope_version}` : 'a newer calibscope';
    throw bad(
      dir,
      `written by ${by} (profile format ${v}); this calibscope reads profile format ${PROFILE_FORMAT_VERSION} and older. ` +
        'Upgrade calibscope to use it, or recalibrate with --force to replace it',
      { newer: true, profile_format_version: v },
    );
  }
  const need = (key: string, ok: (x: unknown) => boolean, what: string) => {
    if (!ok(json[key])) throw bad(dir, `${PROFILE_JSON}: ${key} must be ${what}, got ${JSON.stringify(json[key])?.slice(0, 80)}`);
  };
  const num = (x: unknown) => typeof x === 'number' && Number.isFinite(x);
  need('model_id', (x) => typeof x === 'string' && x.length > 0, 'a non-empty string');
  need('format', (x) => typeof x === 'string' && (FORMAT_NAMES as string[]).includes(x), `one of ${FORMAT_NAMES.join(', ')}`);
  need('timestamp', (x) => typeof x === 'string', 'a string');
  need('tensor_calibrations', isObject, 'an object');
  need('overall_mse', (x) => num(x) && (x as number) >= 0, 'a non-negative number');
  need('semantic_correlation', (x) => x === null || num(x), 'null or a number');
  need('golden_checkpoint_hash', (x) => typeof x === 'string' && HASH_RE.test(x), 'sha256:<64 hex digits>');
  need('config', isObject, 'an object');
  need('scales_sha256', (x) => typeof x === 'string' && HEX64_RE.test(x), '64 hex digits');
  need('review', (x) => x === null || isObject(x), 'null or an object');
  need('skipped_tensors', Array.isArray, 'an array');
  // Absent in profiles written before backends existed, or before the checkpoint's path was recorded.
  need('checkpoint_path', (x) => x === undefined || (typeof x === 'string' && x.length > 0), 'a path when present');
  need('backend', (x) => x === undefined || (typeof x === 'string' && x.length > 0), 'a backend name when present');
  for (const [name, r] of Object.entries(json.tensor_calibrations as Record<string, unknown>)) {
    if (!isObject(r)) throw bad(dir, `${PROFILE_JSON}: tensor_calibrations['${name}'] is not an object`, { tensor: name });
    const okShape = Array.isArray(r.shape) && r.shape.length >= 1 && r.shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0);
    const okBlock = Number.isSafeInteger(r.block_size) && (r.block_size as number) > 0;
    if (r.tensor_name !== name || !okShape || !okBlock || !num(r.mse_after) || !num(r.mse_before)) {
      throw bad(dir, `${PROFILE_JSON}: tensor_calibrations['${name}'] lacks a valid tensor_name, shape, block_size or MSE`, { tensor: name });
    }
  }
  if (json.review !== null) checkSignOff(json.review as Record<string, unknown>, dir);
  return json as unknown as ModelCalibrationProfile;
}

function checkSignOff(r: Record<string, unknown>, dir: string): void {
  const ok =
    typeof r.reviewer === 'string' &&
    (r.decision === 'approved' || r.decision === 'rejected') &&
    typeof r.note === 'string' &&
    typeof r.time === 'string' &&
    typeof r.content_hash === 'string' &&
    HASH_RE.test(r.content_hash);
  if (!ok) throw bad(dir, `${PROFILE_JSON}: review must be {reviewer, decision: approved|rejected, note, time, content_hash}`);
}

/** The rows × blocks each calibrated tensor's scales must have. */
function scalesShape(r: { shape: number[]; block_size: number }): [number, number] {
  const { rows, cols } = rowsCols(r.shape);
  return [rows, Math.ceil(cols / r.block_size)];
}

/** JSON with object keys sorted, so equal content always serialises (and hashes) the same. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (isObject(v)) {
    return `{${Object.keys(v)
      .filter((k) => v[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** `sha256:<hex>` of the profile's content without its review: what a sign-off vouches for. */
export function profileContentHash(profile: ModelCalibrationProfile): string {
  const { review: _review, ...content } = profile;
  return `sha256:${crypto.createHash('sha256').update(canonicalJson(content)).digest('hex')}`;
}

async function readProfileJson(dir: string): Promise<ModelCalibrationProfile> {
  const file = path.join(dir, PROFILE_JSON);
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      const dirStat = await fs.promises.stat(dir).catch(() => null);
      if (!dirStat) throw new CalibscopeError('E_NOT_FOUND', `no profile at ${dir}`, { path: dir });
      if (!dirStat.isDirectory()) throw bad(dir, 'the profile path is a file, not a folder');
      throw bad(dir, `${PROFILE_JSON} is missing`);
    }
    throw new CalibscopeError('E_IO', `${file}: ${(err as Error).message}`, { file, errno: code });
  }
  if (!st.isFile()) throw bad(dir, `${PROFILE_JSON} is not a file`);
  if (st.size > MAX_PROFILE_JSON) throw bad(dir, `${PROFILE_JSON} is ${st.size} bytes, too large to be a profile`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(await fs.promises.readFile(file));
  } catch (err) {
    if (err instanceof TypeError) throw bad(dir, `${PROFILE_JSON} is not valid UTF-8`);
    throw new CalibscopeError('E_IO', `${file}: ${(err as Error).message}`, { file });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw bad(dir, `${PROFILE_JSON} is not valid JSON (${(err as Error).message})`);
  }
  return checkProfileJson(json, dir);
}

export interface LoadOptions {
  /** Check scales.safetensors against scales_sha256 and the tensor shapes (default true). */
  verifyScales?: boolean;
}

/**
 * Loads and verifies a profile folder. Errors: E_NOT_FOUND when there is no profile folder;
 * E_BAD_PROFILE (with the reason) for a bad profile.json, a missing, truncated or altered scales
 * file, or a profile written by a newer calibscope (details.newer = true).
 */
export async function loadProfile(dirArg: string, opts: LoadOptions = {}): Promise<ModelCalibrationProfile> {
  const dir = path.resolve(dirArg);
  const profile = await readProfileJson(dir);
  if (opts.verifyScales === false) return profile;
  const scalesPath = path.join(dir, SCALES_FILE);
  let sha: string;
  let size: number;
  try {
    size = (await fs.promises.stat(scalesPath)).size;
    sha = await sha256File(scalesPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw bad(dir, `${SCALES_FILE} is missing`);
    if (code === 'EISDIR') throw bad(dir, `${SCALES_FILE} is not a file`);
    throw new CalibscopeError('E_IO', `${scalesPath}: ${(err as Error).message}`, { file: scalesPath, errno: code });
  }
  if (sha !== profile.scales_sha256) {
    throw bad(dir, `${SCALES_FILE} does not match its checksum in ${PROFILE_JSON} (${size} bytes, sha256 ${sha.slice(0, 12)}…, recorded ${profile.scales_sha256!.slice(0, 12)}…): truncated or altered`, {
      expected: profile.scales_sha256,
      actual: sha,
    });
  }
  // The checksum matched the file profile.json names; its header must also fit the profile.
  let sf: SafetensorsFile;
  try {
    sf = await SafetensorsFile.open(scalesPath);
  } catch (err) {
    throw bad(dir, `${SCALES_FILE}: ${asCalibscopeError(err).message}`);
  }
  try {
    for (const r of Object.values(profile.tensor_calibrations)) {
      const t = sf.tensor(r.tensor_name);
      const want = scalesShape(r);
      if (!t || t.dtype !== 'F32' || t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) {
        throw bad(dir, `${SCALES_FILE} has no F32 [${want.join(', ')}] scales for tensor '${r.tensor_name}'`, { tensor: r.tensor_name });
      }
    }
  } finally {
    await sf.close();
  }
  return profile;
}

/**
 * Reads one tensor's scales (and codes / global scale where the scheme has them) from a profile
 * folder. Pass the loaded profile to skip re-reading profile.json. The scales file is not
 * re-checksummed here: loadProfile / profileStatus do that.
 */
export async function readScales(dirArg: string, tensorName: string, profile?: ModelCalibrationProfile): Promise<ProfileScales> {
  const dir = path.resolve(dirArg);
  const p = profile ?? (await readProfileJson(dir));
  const r = p.tensor_calibrations[tensorName];
  if (!r) {
    throw new CalibscopeError('E_NOT_FOUND', `profile ${dir}: tensor '${tensorName}' was not calibrated`, { path: dir, tensor: tensorName });
  }
  const [rows, blocksPerRow] = scalesShape(r);
  let sf: SafetensorsFile;
  try {
    sf = await SafetensorsFile.open(path.join(dir, SCALES_FILE));
  } catch (err) {
    throw bad(dir, `${SCALES_FILE}: ${asCalibscopeError(err).message}`, { tensor: tensorName });
  }
  try {
    const read = async (name: string, dtype: string, shape: number[]): Promise<Buffer | undefined> => {
      const t = sf.tensor(name);
      if (!t) return undefined;
      if (t.dtype !== dtype || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw bad(dir, `${SCALES_FILE}: '${name}' is ${t.dtype} [${t.shape.join(', ')}], expected ${dtype} [${shape.join(', ')}]`, {
          tensor: tensorName,
        });
      }
      return sf.readTensor(t);
    };
    const s = await read(tensorName, 'F32', [rows, blocksPerRow]);
    if (!s) throw bad(dir, `${SCALES_FILE} has no scales for tensor '${tensorName}'`, { tensor: tensorName });
    // Copies into fresh, aligned arrays: the read buffer may sit at any byte offset.
    const out: ProfileScales = { scales: new Float32Array(s.buffer.slice(s.byteOffset, s.byteOffset + s.byteLength)), rows, blocksPerRow };
    const c = await read(`${tensorName}:codes`, 'U8', [rows, blocksPerRow]);
    if (c) out.codes = new Uint8Array(c);
    if (r.scale_encoding !== 'fp32' && !c) throw bad(dir, `${SCALES_FILE} has no ${r.scale_encoding} codes for tensor '${tensorName}'`, { tensor: tensorName });
    const g = await read(`${tensorName}:global`, 'F32', [1]);
    if (g) out.global = g.readFloatLE(0);
    if (r.scale_encoding === 'e4m3_x_fp32' && g === undefined) throw bad(dir, `${SCALES_FILE} has no global scale for tensor '${tensorName}'`, { tensor: tensorName });
    return out;
  } finally {
    await sf.close();
  }
}

/**
 * Writes a complete profile folder from calibrated tensors (atomically: a temporary sibling
 * folder renamed into place). Returns the profile as written, with scales_sha256 filled in.
 */
export async function saveProfile(
  dirArg: string,
  profile: ModelCalibrationProfile,
  tensors: Iterable<TensorCalibration> | AsyncIterable<TensorCalibration>,
  metadata: Record<string, string> = {},
): Promise<ModelCalibrationProfile> {
  const writer = await ProfileWriter.create(path.resolve(dirArg), Object.keys(profile.tensor_calibrations));
  try {
    const seen = new Set<string>();
    for await (const tc of tensors) {
      const name = tc.result.tensor_name;
      if (!profile.tensor_calibrations[name]) throw new CalibscopeError('E_BAD_ARGUMENT', `tensor '${name}' is not in the profile's tensor_calibrations`, { tensor: name });
      if (seen.has(name)) throw new CalibscopeError('E_BAD_ARGUMENT', `tensor '${name}' is given twice`, { tensor: name });
      seen.add(name);
      await writer.add(tc);
    }
    const missing = Object.keys(profile.tensor_calibrations).filter((n) => !seen.has(n));
    if (missing.length > 0) {
      throw new CalibscopeError('E_BAD_ARGUMENT', `no scales given for ${missing.length} tensors of the profile, e.g. '${missing[0]}'`, { tensor: missing[0] });
    }
    return await writer.finish(profile, { format: profile.format, model_id: profile.model_id, golden_checkpoint_hash: profile.golden_checkpoint_hash, ...metadata });
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** Fields that describe the scales and the checkpoint: an update must not change them. */
const FIXED_FIELDS = [
  'model_id',
  'format',
  'timestamp',
  'tensor_calibrations',
  'overall_mse',
  'overall_mse_before',
  'golden_checkpoint_hash',
  'checkpoint_path',
  'config',
  'calibscope_version',
  'profile_format_version',
  'skipped_tensors',
  'scales_sha256',
  'backend',
] as const;

async function rewriteLocked(
  dir: string,
  edit: (p: ModelCalibrationProfile) => ModelCalibrationProfile,
): Promise<ModelCalibrationProfile> {
  const release = await acquireLock(lockPathFor(dir), { timeoutMs: 60_000 });
  try {
    const current = await loadProfile(dir);
    const next = edit(current);
    checkProfileJson(JSON.parse(JSON.stringify(next)), dir);
    await writeFileAtomic(path.join(dir, PROFILE_JSON), `${JSON.stringify(next, null, 2)}\n`);
    return next;
  } finally {
    await release();
  }
}

/**
 * Rewrites profile.json atomically with `mutate` applied (to a copy; return a new object or
 * change the copy): for results that come after calibration, such as semantic_correlation.
 * Refused for a signed-off profile (its sign-off vouches for the content: use clearSignOff
 * first), and for changes to the fields that describe the scales or the checkpoint, or to review.
 */
export async function updateProfile(
  dirArg: string,
  mutate: (p: ModelCalibrationProfile) => ModelCalibrationProfile | void,
): Promise<ModelCalibrationProfile> {
  const dir = path.resolve(dirArg);
  return rewriteLocked(dir, (current) => {
    if (current.review !== null) {
      throw bad(dir, `signed off by ${current.review.reviewer} (${current.review.decision}); clear the sign-off before changing it`, {
        signedOff: true,
      });
    }
    const copy = JSON.parse(JSON.stringify(current)) as ModelCalibrationProfile;
    const next = mutate(copy) ?? copy;
    for (const k of FIXED_FIELDS) {
      if (canonicalJson(next[k]) !== canonicalJson(current[k])) {
        throw new CalibscopeError('E_BAD_ARGUMENT', `profile ${dir}: updateProfile may not change ${k}`, { path: dir, field: k });
      }
    }
    if (next.review !== null) {
      throw new CalibscopeError('E_BAD_ARGUMENT', `profile ${dir}: a review is added with signOff, not updateProfile`, { path: dir });
    }
    return next;
  });
}

export interface SignOffInput {
  reviewer: string;
  decision: 'approved' | 'rejected';
  note?: string;
  /** Defaults to now. */
  time?: Date;
}

/**
 * Records a review on a profile: who, the decision, a note, when, and the SHA-256 of the
 * profile's content (profileContentHash), so any later change to the content is detected.
 * Pass `checkpoint` to refuse signing off a profile whose checkpoint has changed.
 */
export async function signOff(
  dirArg: string,
  input: SignOffInput,
  opts: { checkpoint?: string | Checkpoint; cacheDir?: string } = {},
): Promise<ModelCalibrationProfile> {
  const dir = path.resolve(dirArg);
  if (typeof input.reviewer !== 'string' || input.reviewer.trim() === '') {
    throw new CalibscopeError('E_BAD_ARGUMENT', 'sign-off needs a reviewer name');
  }
  if (input.decision !== 'approved' && input.decision !== 'rejected') {
    throw new CalibscopeError('E_BAD_ARGUMENT', `sign-off decision must be approved or rejected, got ${JSON.stringify(input.decision)}`);
  }
  if (opts.checkpoint !== undefined) {
    const st = await profileStatus(dir, opts.checkpoint, { cacheDir: opts.cacheDir });
    if (st.state !== 'valid') throw bad(dir, `cannot sign off a profile that is ${st.state}: ${st.reason}`);
  }
  return rewriteLocked(dir, (current) => {
    if (current.review !== null) {
      throw bad(dir, `already signed off by ${current.review.reviewer} (${current.review.decision}) at ${current.review.time}`, { signedOff: true });
    }
    const review: SignOff = {
      reviewer: input.reviewer,
      decision: input.decision,
      note: input.note ?? '',
      time: (input.time ?? new Date()).toISOString(),
      content_hash: profileContentHash(current),
    };
    return { ...current, review };
  });
}

/** Removes a sign-off (for example to record a new validation result), leaving the content as is. */
export async function clearSignOff(dirArg: string): Promise<ModelCalibrationProfile> {
  const dir = path.resolve(dirArg);
  return rewriteLocked(dir, (current) => ({ ...current, review: null }));
}

export interface StatusOptions {
  /** The cache folder whose stat cache may answer for the checkpoint hash. */
  cacheDir?: string | null;
  /** The config hash the folder is named after: a profile made with another config is corrupt. */
  expectConfigHash?: string;
  /** The model id the profile must carry. */
  expectModelId?: string;
}

/**
 * The state of the profile in `dir` for `checkpoint` (a path or an opened checkpoint):
 * - missing: no profile folder;
 * - corrupt: profile.json unreadable or inconsistent, scales file missing / truncated / altered,
 *   or content changed after sign-off;
 * - stale: made for other checkpoint bytes (golden_checkpoint_hash ≠ the current hash);
 * - signed-off: valid, with a review record that still matches the content;
 * - valid.
 * A profile written by a newer calibscope is not judged: E_BAD_PROFILE is thrown.
 */
export async function profileStatus(dirArg: string, checkpoint: string | Checkpoint, opts: StatusOptions = {}): Promise<ProfileStatus> {
  const dir = path.resolve(dirArg);
  const base = { profile_path: dir, profile: null, checkpoint_hash: null };
  let profile: ModelCalibrationProfile;
  try {
    profile = await loadProfile(dir);
  } catch (err) {
    const e = asCalibscopeError(err);
    if (e.code === 'E_NOT_FOUND') return { ...base, state: 'missing', reason: `no profile at ${dir}` };
    if (e.code === 'E_BAD_PROFILE' && !e.details.newer) return { ...base, state: 'corrupt', reason: String(e.details.reason ?? e.message) };
    throw e;
  }
  if (opts.expectConfigHash !== undefined) {
    const h = configHash(profile.config);
    if (h !== opts.expectConfigHash) {
      return { ...base, state: 'corrupt', reason: `its config hashes to ${h}, but the folder is for config ${opts.expectConfigHash}` };
    }
  }
  if (opts.expectModelId !== undefined && profile.model_id !== opts.expectModelId) {
    return { ...base, state: 'corrupt', reason: `it is for model '${profile.model_id}', not '${opts.expectModelId}'` };
  }
  if (profile.review !== null && profile.review.content_hash !== profileContentHash(profile)) {
    return { ...base, state: 'corrupt', reason: `changed after ${profile.review.reviewer}'s sign-off (content hash differs)` };
  }
  const ckpt = typeof checkpoint === 'string' ? await openCheckpoint(checkpoint) : checkpoint;
  let current: string;
  try {
    current = (await currentCheckpointHash(ckpt, opts.cacheDir ?? null)).hash;
  } finally {
    if (typeof checkpoint === 'string') await ckpt.close();
  }
  const withHash = { profile_path: dir, profile, checkpoint_hash: current };
  if (current !== profile.golden_checkpoint_hash) {
    const made = profile.checkpoint_path;
    if (made !== undefined && !sameCheckpointSource(made, checkpointLocation(ckpt))) {
      return {
        ...withHash,
        state: 'stale',
        reason: `it was made from another checkpoint with the same model id '${profile.model_id}': ${made}`,
        other_checkpoint: made,
      };
    }
    return {
      ...withHash,
      state: 'stale',
      reason: `the checkpoint changed since calibration: it hashes to ${current.slice(0, 19)}…, the profile was made for ${profile.golden_checkpoint_hash.slice(0, 19)}…`,
    };
  }
  if (profile.review !== null) {
    const r = profile.review;
    return { ...withHash, state: 'signed-off', reason: `${r.decision} by ${r.reviewer} at ${r.time}${r.note ? `: ${r.note}` : ''}` };
  }
  return { ...withHash, state: 'valid', reason: `checkpoint hash matches (${current.slice(0, 19)}…), scales checksum verified` };
}
