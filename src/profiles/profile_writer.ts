// Writes a profile folder (profile.json, scales.safetensors, diagnostics.safetensors) atomically:
// everything goes into a temporary sibling folder that is renamed into place only when complete,
// so a failed or cancelled run never leaves a half-written profile. Per-tensor arrays go straight
// into their files as tensors finish (the header is written last), so memory stays bounded by one
// tensor, not by the model, and every byte is written once.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { TensorCalibration } from '../calibration/tensor_calibration.js';
import type { ModelCalibrationProfile } from '../calibration/types.js';
import { sha256File } from '../checkpoints/hash.js';
import { SafetensorsAppendWriter } from '../checkpoints/safetensors_writer.js';
import { fsyncDir, writeFileAtomic } from '../util/atomic.js';
import { CalibscopeError } from '../util/errors.js';

export const PROFILE_JSON = 'profile.json';
export const SCALES_FILE = 'scales.safetensors';
export const DIAGNOSTICS_FILE = 'diagnostics.safetensors';

/** Header room for a file listing these tensors, each with the suffixed companions: generous, since
 *  too little costs one copy of the data (SafetensorsAppendWriter). 112 bytes hold an entry's
 *  dtype, a 2-D shape and its offsets at their longest. */
function headerRoom(names: readonly string[], suffixes: readonly string[]): number {
  let bytes = 8192; // the metadata
  for (const n of names) for (const suffix of suffixes) bytes += Buffer.byteLength(JSON.stringify(n + suffix)) + 112;
  return bytes;
}

const SCALES_SUFFIXES = ['', ':codes', ':global'];
const DIAGNOSTICS_SUFFIXES = [':mse_before', ':mse_after', ':outliers'];

function bytesOf(a: Float32Array | Uint8Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Refuses to replace a folder that is not a calibscope profile (or empty): never clobber user data. */
async function checkReplaceable(dir: string): Promise<boolean> {
  let entries: string[];
  try {
    entries = await fs.promises.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') {
      // ENOTDIR: either the path itself is a file, or one of the folders above it is.
      if (await fs.promises.lstat(dir).then(() => true, () => false)) {
        throw new CalibscopeError('E_BAD_ARGUMENT', `output path ${dir} exists and is not a folder`, { path: dir });
      }
      throw new CalibscopeError('E_BAD_ARGUMENT', `output path ${dir} cannot be created: a folder above it is a file`, { path: dir });
    }
    throw err;
  }
  if (entries.length > 0 && !entries.includes(PROFILE_JSON)) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `output folder ${dir} exists and is not a calibscope profile; choose another --out`, { path: dir });
  }
  return true;
}

export class ProfileWriter {
  private scales: SafetensorsAppendWriter | null = null;
  private diagnostics: SafetensorsAppendWriter | null = null;
  private finished = false;

  private constructor(
    readonly outDir: string,
    private readonly tmpDir: string,
    private readonly createdParent: string | undefined,
    private readonly tensorNames: readonly string[],
  ) {}

  /** `tensorNames`: the tensors the profile may hold (to size the files' headers; optional). */
  static async create(outDir: string, tensorNames: readonly string[] = []): Promise<ProfileWriter> {
    const target = path.resolve(outDir);
    const parent = path.dirname(target);
    await checkReplaceable(target);
    let created: string | undefined;
    try {
      // mkdir returns the first folder it had to create: removed again if the run fails.
      created = await fs.promises.mkdir(parent, { recursive: true });
    } catch (err) {
      throw new CalibscopeError('E_IO', `cannot create ${parent}: ${(err as Error).message}`, { path: parent });
    }
    const tmp = path.join(parent, `.${path.basename(target)}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
    try {
      await fs.promises.mkdir(tmp);
    } catch (err) {
      throw new CalibscopeError('E_IO', `cannot write in ${parent}: ${(err as Error).message}`, { path: parent });
    }
    return new ProfileWriter(target, tmp, created, tensorNames);
  }

  /** Appends one tensor's scales (and codes/global scale/diagnostics). */
  async add(tc: TensorCalibration): Promise<void> {
    const name = tc.result.tensor_name;
    const shape = [tc.rows, tc.blocksPerRow];
    this.scales ??= await SafetensorsAppendWriter.create(path.join(this.tmpDir, SCALES_FILE), headerRoom(this.tensorNames, SCALES_SUFFIXES));
    await this.scales.append({ name, dtype: 'F32', shape }, bytesOf(tc.scales));
    if (tc.codes) await this.scales.append({ name: `${name}:codes`, dtype: 'U8', shape }, bytesOf(tc.codes));
    if (tc.globalScale !== undefined) {
      await this.scales.append({ name: `${name}:global`, dtype: 'F32', shape: [1] }, bytesOf(new Float32Array([tc.globalScale])));
    }
    if (tc.blockMseBefore && tc.blockMseAfter && tc.blockOutliers) {
      this.diagnostics ??= await SafetensorsAppendWriter.create(
        path.join(this.tmpDir, DIAGNOSTICS_FILE),
        headerRoom(this.tensorNames, DIAGNOSTICS_SUFFIXES),
      );
      await this.diagnostics.append({ name: `${name}:mse_before`, dtype: 'F32', shape }, bytesOf(tc.blockMseBefore));
      await this.diagnostics.append({ name: `${name}:mse_after`, dtype: 'F32', shape }, bytesOf(tc.blockMseAfter));
      await this.diagnostics.append({ name: `${name}:outliers`, dtype: 'U16', shape }, bytesOf(tc.blockOutliers));
    }
  }

  /** Writes the files, records the scales checksum in the profile and moves the folder into place. */
  async finish(profile: ModelCalibrationProfile, metadata: Record<string, string>): Promise<ModelCalibrationProfile> {
    try {
      const scalesPath = path.join(this.tmpDir, SCALES_FILE);
      this.scales ??= await SafetensorsAppendWriter.create(scalesPath, headerRoom([], SCALES_SUFFIXES));
      await Promise.all([this.scales.close(metadata), this.diagnostics?.close(metadata)]);
      const final: ModelCalibrationProfile = { ...profile, scales_sha256: await sha256File(scalesPath) };
      await writeFileAtomic(path.join(this.tmpDir, PROFILE_JSON), `${JSON.stringify(final, null, 2)}\n`);
      await fsyncDir(this.tmpDir);
      await this.moveIntoPlace();
      this.finished = true;
      return final;
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  private async moveIntoPlace(): Promise<void> {
    const parent = path.dirname(this.outDir);
    // Another writer (a second process calibrating the same model) may put its own profile here
    // between any two of these steps; each race shows up as ENOENT / ENOTEMPTY / EEXIST and is
    // retried. Both profiles are complete, so whichever lands last is a valid one.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.moveOnce(parent);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const racing = code === 'ENOENT' || code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'EPERM';
        if (!racing || attempt >= 20) throw err;
        await new Promise((r) => setTimeout(r, 5 + Math.random() * 20 * (attempt + 1)));
      }
    }
    await fsyncDir(parent);
  }

  private async moveOnce(parent: string): Promise<void> {
    const exists = await checkReplaceable(this.outDir);
    if (!exists) {
      await fs.promises.rename(this.tmpDir, this.outDir);
      return;
    }
    // Swap: the old profile is moved aside first, so a reader sees either the old or the new one.
    const old = path.join(parent, `.${path.basename(this.outDir)}.old-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
    await fs.promises.rename(this.outDir, old);
    try {
      await fs.promises.rename(this.tmpDir, this.outDir);
    } catch (err) {
      // Put the old profile back unless a concurrent writer already filled the place.
      await fs.promises.rename(old, this.outDir).catch(() => undefined);
      await fs.promises.rm(old, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
    await fs.promises.rm(old, { recursive: true, force: true });
  }

  async abort(): Promise<void> {
    if (this.finished) return;
    await this.scales?.abort().catch(() => undefined);
    await this.diagnostics?.abort().catch(() => undefined);
    await fs.promises.rm(this.tmpDir, { recursive: true, force: true }).catch(() => undefined);
    // Remove the parent folders this run created, deepest first, as long as they are empty.
    if (this.createdParent) {
      for (let dir = path.dirname(this.outDir); dir.startsWith(this.createdParent); dir = path.dirname(dir)) {
        try {
          await fs.promises.rmdir(dir);
        } catch {
          break;
        }
        if (dir === this.createdParent) break;
      }
    }
  }
}
