// Writes safetensors files (profiles' scales.safetensors, test checkpoints). Files are replaced
// atomically: a reader sees the old file or the complete new one, never a half-written one.
import fs from 'node:fs';
import path from 'node:path';
import { fsyncDir, tempPathFor, unlinkQuiet, writeFileAtomic, writeFully } from '../util/atomic.js';
import { CalibscopeError } from '../util/errors.js';
import { dtypeBits, dtypeByteLength } from './safetensors.js';

export interface TensorSpec {
  name: string;
  dtype: string;
  shape: number[];
}

export interface TensorToWrite extends TensorSpec {
  data: Uint8Array;
}

function badArg(message: string, tensor?: string): CalibscopeError {
  return new CalibscopeError('E_BAD_ARGUMENT', message, tensor === undefined ? {} : { tensor });
}

/** Byte size of each spec, after checking names, dtypes and shapes. */
function specSizes(specs: readonly TensorSpec[]): number[] {
  const seen = new Set<string>();
  return specs.map((s) => {
    if (typeof s.name !== 'string' || s.name === '') throw badArg('tensor name must be a non-empty string');
    if (s.name === '__metadata__') throw badArg("'__metadata__' is reserved and cannot name a tensor", s.name);
    if (seen.has(s.name)) throw badArg(`tensor '${s.name}' is listed twice`, s.name);
    seen.add(s.name);
    if (dtypeBits(s.dtype) === undefined) {
      throw new CalibscopeError('E_UNSUPPORTED_DTYPE', `tensor '${s.name}': cannot write unknown dtype '${s.dtype}'`, {
        tensor: s.name,
        dtype: s.dtype,
      });
    }
    if (!Array.isArray(s.shape) || !s.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw badArg(`tensor '${s.name}': shape ${JSON.stringify(s.shape)} must be non-negative integers`, s.name);
    }
    let numel = 1n;
    for (const d of s.shape) numel *= BigInt(d);
    const bytes = numel <= BigInt(Number.MAX_SAFE_INTEGER) ? dtypeByteLength(s.dtype, Number(numel)) : undefined;
    if (bytes === undefined) {
      throw badArg(`tensor '${s.name}': shape ${JSON.stringify(s.shape)} of ${s.dtype} is not a whole, representable number of bytes`, s.name);
    }
    return bytes;
  });
}

/**
 * The 8-byte length prefix plus the JSON header, padded with spaces so the data section starts
 * 8-byte aligned (or at `padTo`, a multiple of 8, when the header fits before it). Built by hand rather than with JSON.stringify of one object, because JS objects
 * move integer-like keys ("0", "1") to the front and the header must list tensors in file order.
 */
function encodeHeader(specs: readonly TensorSpec[], sizes: number[], metadata?: Record<string, string>, padTo = 0): Buffer {
  const parts: string[] = [];
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw badArg(`metadata value for '${k}' must be a string`);
    }
    parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  let offset = 0;
  specs.forEach((s, i) => {
    const entry = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + sizes[i]] };
    parts.push(`${JSON.stringify(s.name)}:${JSON.stringify(entry)}`);
    offset += sizes[i];
  });
  let json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const pad = Math.max((8 - (json.byteLength % 8)) % 8, padTo - 8 - json.byteLength);
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.byteLength), 0);
  return Buffer.concat([prefix, json]);
}

/** Encodes tensors, in the given order with contiguous offsets, as one safetensors file image. */
export function encodeSafetensors(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Buffer {
  const sizes = specSizes(tensors);
  tensors.forEach((t, i) => {
    if (!(t.data instanceof Uint8Array)) throw badArg(`tensor '${t.name}': data must be a Uint8Array`, t.name);
    if (t.data.byteLength !== sizes[i]) {
      throw badArg(
        `tensor '${t.name}': data is ${t.data.byteLength} bytes, but shape ${JSON.stringify(t.shape)} of ${t.dtype} needs ${sizes[i]}`,
        t.name,
      );
    }
  });
  const header = encodeHeader(tensors, sizes, metadata);
  return Buffer.concat([header, ...tensors.map((t) => t.data)], header.byteLength + sizes.reduce((a, b) => a + b, 0));
}

/** Encodes and writes atomically. */
export async function writeSafetensors(
  file: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}

/** What both writers share: a temporary file beside the target, moved into place when complete,
 *  removed on failure or abort, and one operation at a time. */
abstract class TempFileWriter {
  protected state: 'open' | 'done' | 'aborted' = 'open';
  protected busy = false;

  protected constructor(
    readonly path: string,
    protected tmp: string,
    protected handle: fs.promises.FileHandle | null,
  ) {}

  protected enter(what: string): void {
    if (this.state !== 'open') throw badArg(`${this.path}: cannot ${what}: writer is ${this.state === 'done' ? 'closed' : 'aborted'}`);
    if (this.busy) throw badArg(`${this.path}: cannot ${what} while another write or close is in progress (await each call)`);
  }

  /** Runs `last` (the final writes), then syncs and moves the file into place. */
  protected async finish(last: () => Promise<void>): Promise<void> {
    this.busy = true;
    try {
      await last();
      await this.handle!.sync();
      await this.handle!.close();
      this.handle = null;
      await fs.promises.rename(this.tmp, this.path);
      this.state = 'done';
      await fsyncDir(path.dirname(this.path));
    } catch (err) {
      if (this.state !== 'done') await this.abort();
      throw ioError(this.path, 'finishing the file failed', err);
    } finally {
      this.busy = false;
    }
  }

  /** Discards everything written; the target stays as it was. Safe to call more than once. */
  async abort(): Promise<void> {
    if (this.state === 'done') return;
    this.state = 'aborted';
    const h = this.handle;
    this.handle = null;
    await h?.close().catch(() => undefined);
    await unlinkQuiet(this.tmp).catch(() => undefined);
  }
}

/**
 * Writes a safetensors file too large to hold in memory: the header is written from the specs
 * first, then each tensor's bytes are appended as they come, in spec order, in one or more chunks.
 * Memory stays bounded by one chunk. The file appears at `path` only when close() succeeds; on
 * any failure (or abort) the temporary file is removed and the target is untouched.
 */
export class SafetensorsStreamWriter extends TempFileWriter {
  private index = 0;
  private written = 0;

  private constructor(
    target: string,
    tmp: string,
    handle: fs.promises.FileHandle,
    private readonly specs: TensorSpec[],
    private readonly sizes: number[],
    private position: number,
  ) {
    super(target, tmp, handle);
  }

  static async create(file: string, specs: readonly TensorSpec[], metadata?: Record<string, string>): Promise<SafetensorsStreamWriter> {
    const target = path.resolve(file);
    const copied = specs.map((s) => ({ name: s.name, dtype: s.dtype, shape: s.shape.slice() }));
    const sizes = specSizes(copied);
    const header = encodeHeader(copied, sizes, metadata);
    const tmp = tempPathFor(target);
    let handle: fs.promises.FileHandle | undefined;
    try {
      handle = await fs.promises.open(tmp, 'wx');
      await writeFully(handle, header, 0);
    } catch (err) {
      await handle?.close().catch(() => undefined);
      await unlinkQuiet(tmp).catch(() => undefined);
      throw ioError(target, 'cannot start writing', err);
    }
    return new SafetensorsStreamWriter(target, tmp, handle, copied, sizes, header.byteLength);
  }

  /** Skips past tensors that are complete (empty ones included) unless `name` is the current one. */
  private advance(name?: string): void {
    while (this.index < this.specs.length && this.written === this.sizes[this.index] && this.specs[this.index].name !== name) {
      this.index++;
      this.written = 0;
    }
  }

  /** Appends a chunk of tensor `name`, which must be the tensor being written or the next in spec order. */
  async write(name: string, data: Uint8Array): Promise<void> {
    this.enter('write');
    this.advance(name);
    const cur = this.specs[this.index];
    if (!cur || cur.name !== name) {
      const pos = this.specs.findIndex((s) => s.name === name);
      if (pos < 0) throw badArg(`${this.path}: no tensor '${name}' in this file's specs`, name);
      if (pos < this.index) throw badArg(`${this.path}: tensor '${name}' is already complete`, name);
      throw badArg(`${this.path}: tensor '${name}' written out of order; '${cur!.name}' comes first`, name);
    }
    const size = this.sizes[this.index];
    if (this.written + data.byteLength > size) {
      throw badArg(
        `${this.path}: tensor '${name}' is ${size} bytes; this chunk of ${data.byteLength} would bring it to ${this.written + data.byteLength}`,
        name,
      );
    }
    this.busy = true;
    try {
      await writeFully(this.handle!, data, this.position);
      this.position += data.byteLength;
      this.written += data.byteLength;
    } catch (err) {
      await this.abort();
      throw ioError(this.path, `writing tensor '${name}' failed`, err, name);
    } finally {
      this.busy = false;
    }
  }

  /** Checks every tensor is complete, then syncs and moves the file into place. */
  async close(): Promise<void> {
    this.enter('close');
    this.advance();
    if (this.index < this.specs.length) {
      const s = this.specs[this.index];
      const written = this.written;
      await this.abort();
      throw badArg(`${this.path}: tensor '${s.name}' has ${written} of ${this.sizes[this.index]} bytes written; nothing was saved`, s.name);
    }
    await this.finish(async () => undefined);
  }
}

/**
 * Writes a safetensors file whose tensors are not known in advance (a profile's arrays, tensor by
 * tensor as calibration finishes them): each tensor's bytes are appended once, straight into the
 * file, after room left for the header, which is written last. The header is padded with spaces
 * (as the format allows) to fill that room; one that outgrows it moves the data up once. The file
 * appears at `path` only when close() succeeds; on failure or abort the target is untouched.
 */
export class SafetensorsAppendWriter extends TempFileWriter {
  private readonly specs: TensorSpec[] = [];
  private readonly sizes: number[] = [];
  private readonly names = new Set<string>();
  private position: number;

  private constructor(
    target: string,
    tmp: string,
    handle: fs.promises.FileHandle,
    private readonly reserve: number,
  ) {
    super(target, tmp, handle);
    this.position = reserve;
  }

  /** `reserve`: bytes left for the length prefix and the header (rounded up to a multiple of 8). */
  static async create(file: string, reserve: number): Promise<SafetensorsAppendWriter> {
    const target = path.resolve(file);
    const tmp = tempPathFor(target);
    try {
      const handle = await fs.promises.open(tmp, 'wx+'); // read back if the data has to move
      return new SafetensorsAppendWriter(target, tmp, handle, Math.ceil(Math.max(reserve, 16) / 8) * 8);
    } catch (err) {
      throw ioError(target, 'cannot start writing', err);
    }
  }

  /** Appends one whole tensor. */
  async append(spec: TensorSpec, data: Uint8Array): Promise<void> {
    this.enter('append');
    const copied = { name: spec.name, dtype: spec.dtype, shape: spec.shape.slice() };
    const [size] = specSizes([copied]);
    if (this.names.has(copied.name)) throw badArg(`${this.path}: tensor '${copied.name}' is written twice`, copied.name);
    if (data.byteLength !== size) {
      throw badArg(`${this.path}: tensor '${copied.name}' is ${data.byteLength} bytes, but shape ${JSON.stringify(copied.shape)} of ${copied.dtype} needs ${size}`, copied.name);
    }
    this.busy = true;
    try {
      await writeFully(this.handle!, data, this.position);
    } catch (err) {
      await this.abort();
      throw ioError(this.path, `writing tensor '${copied.name}' failed`, err, copied.name);
    } finally {
      this.busy = false;
    }
    this.position += size;
    this.specs.push(copied);
    this.sizes.push(size);
    this.names.add(copied.name);
  }

  /** Writes the header, syncs and moves the file into place. */
  async close(metadata?: Record<string, string>): Promise<void> {
    this.enter('close');
    await this.finish(async () => {
      const header = encodeHeader(this.specs, this.sizes, metadata, this.reserve);
      if (header.byteLength !== this.reserve) await this.moveData(header.byteLength);
      await writeFully(this.handle!, header, 0);
    });
  }

  /** The header outgrew its room: the data moves to a second file, `start` bytes in. */
  private async moveData(start: number): Promise<void> {
    const tmp = tempPathFor(this.path);
    const handle = await fs.promises.open(tmp, 'wx');
    try {
      const chunk = Buffer.allocUnsafe(4 << 20);
      for (let off = this.reserve; off < this.position; ) {
        const n = Math.min(chunk.length, this.position - off);
        const { bytesRead } = await this.handle!.read(chunk, 0, n, off);
        if (bytesRead <= 0) throw new Error(`short read at byte ${off} of ${this.tmp}`);
        await writeFully(handle, chunk.subarray(0, bytesRead), start + off - this.reserve);
        off += bytesRead;
      }
    } catch (err) {
      await handle.close().catch(() => undefined);
      await unlinkQuiet(tmp).catch(() => undefined);
      throw err;
    }
    await this.handle!.close().catch(() => undefined);
    await unlinkQuiet(this.tmp).catch(() => undefined);
    this.handle = handle;
    this.tmp = tmp;
  }
}

function ioError(file: string, what: string, err: unknown, tensor?: string): CalibscopeError {
  if (err instanceof CalibscopeError) return err;
  const details: Record<string, unknown> = { file, errno: (err as NodeJS.ErrnoException)?.code };
  if (tensor !== undefined) details.tensor = tensor;
  return new CalibscopeError('E_IO', `${file}: ${what}: ${(err as Error)?.message ?? String(err)}`, details);
}
