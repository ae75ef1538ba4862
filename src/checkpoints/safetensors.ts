// A safetensors reader that trusts nothing in the file: the header is read with positioned reads
// (the data section is never loaded as a whole), every entry is checked against the file's real
// size, and tensors are read one at a time into fresh buffers, so memory stays bounded by the
// largest tensor.
//
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON (an object: tensor name →
// { dtype, shape, data_offsets: [begin, end] }, plus an optional "__metadata__" string map),
// then the data section; offsets are relative to the start of the data section.
import fs from 'node:fs';
import path from 'node:path';
import { CalibscopeError } from '../util/errors.js';

/** Bits per element of the dtypes safetensors defines; sub-byte types pack densely. */
export const DTYPE_BITS: Readonly<Record<string, number>> = Object.freeze({
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
});

/** Bits per element of `dtype`, or undefined when calibscope does not know the dtype. */
export function dtypeBits(dtype: string): number | undefined {
  return Object.prototype.hasOwnProperty.call(DTYPE_BITS, dtype) ? DTYPE_BITS[dtype] : undefined;
}

/** The exact byte size of `numel` elements of `dtype`, or undefined for unknown dtypes or a partial byte. */
export function dtypeByteLength(dtype: string, numel: number): number | undefined {
  const bits = dtypeBits(dtype);
  if (bits === undefined) return undefined;
  const total = BigInt(numel) * BigInt(bits);
  if (total % 8n !== 0n) return undefined;
  const bytes = total / 8n;
  return bytes <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(bytes) : undefined;
}

export interface TensorInfo {
  name: string;
  /** The dtype string exactly as the header gives it. */
  dtype: string;
  /** False for a dtype string calibscope does not know: its size could not be checked, and the caller decides whether to skip it. */
  knownDtype: boolean;
  shape: number[];
  /** Product of the shape (1 for a scalar, 0 when a dimension is 0). */
  numel: number;
  /** Absolute offset of the tensor's first byte in `file`. */
  byteOffset: number;
  byteLength: number;
  /** Absolute path of the file holding the tensor. */
  file: string;
}

/** A header larger than this is treated as corrupt rather than allocated. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** One read() call is capped below 2 GiB by the OS; larger tensors are read in slices. */
const READ_SLICE = 1 << 30;

function bad(file: string, message: string, tensor?: string): CalibscopeError {
  const details: Record<string, unknown> = { file };
  if (tensor !== undefined) details.tensor = tensor;
  const where = tensor !== undefined ? `${file}: tensor '${tensor}'` : file;
  return new CalibscopeError('E_BAD_CHECKPOINT', `${where}: ${message}`, details);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Reads exactly `length` bytes at `position` into `target`; a short read means the file is shorter than claimed. */
async function readExactly(
  handle: fs.promises.FileHandle,
  target: Buffer,
  position: number,
  length: number,
  onShort: (got: number) => Error,
): Promise<void> {
  let done = 0;
  while (done < length) {
    const want = Math.min(length - done, READ_SLICE);
    const { bytesRead } = await handle.read(target, done, want, position + done);
    if (bytesRead === 0) throw onShort(done);
    done += bytesRead;
  }
}

export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  readonly tensors: TensorInfo[];
  /** Size of the file when it was opened. */
  readonly size: number;
  private handle: fs.promises.FileHandle | null;
  private readonly byName: Map<string, TensorInfo>;

  private constructor(
    file: string,
    handle: fs.promises.FileHandle,
    size: number,
    metadata: Record<string, string>,
    tensors: TensorInfo[],
  ) {
    this.path = file;
    this.handle = handle;
    this.size = size;
    this.metadata = metadata;
    this.tensors = tensors;
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  /** Opens and validates `file`; throws E_NOT_FOUND, E_IO or E_BAD_CHECKPOINT naming the file. */
  static async open(fileArg: string): Promise<SafetensorsFile> {
    const file = path.resolve(fileArg);
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(file, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new CalibscopeError('E_NOT_FOUND', `${file}: no such file`, { file });
      if (code === 'EISDIR') throw bad(file, 'is a folder, not a safetensors file');
      throw new CalibscopeError('E_IO', `${file}: cannot open: ${(err as Error).message}`, { file, errno: code });
    }
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw bad(file, 'is not a regular file');
      const { metadata, tensors } = await parseHeader(handle, file, st.size);
      return new SafetensorsFile(file, handle, st.size, metadata, tensors);
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw err;
    }
  }

  /** The entry named `name`, if any. */
  tensor(name: string): TensorInfo | undefined {
    return this.byName.get(name);
  }

  /** Reads exactly the tensor's bytes: into `into` when it is large enough (the view of its first
   *  bytes is returned), else into a fresh Buffer of its own (never a slice of Node's shared pool,
   *  so that a caller may read into it again). */
  async readTensor(info: TensorInfo, into?: Buffer): Promise<Buffer> {
    if (!this.handle) throw new CalibscopeError('E_IO', `${this.path}: file is closed`, { file: this.path, tensor: info.name });
    if (info.file !== this.path) {
      throw new CalibscopeError('E_BAD_ARGUMENT', `tensor '${info.name}' belongs to ${info.file}, not ${this.path}`, {
        file: this.path,
        tensor: info.name,
      });
    }
    // Only entries this file produced are read, so a caller cannot steer a read to arbitrary bytes.
    const own = this.byName.get(info.name);
    if (!own || own.byteOffset !== info.byteOffset || own.byteLength !== info.byteLength) {
      throw new CalibscopeError('E_BAD_ARGUMENT', `${this.path}: no tensor '${info.name}' at that offset`, {
        file: this.path,
        tensor: info.name,
      });
    }
    let buf: Buffer;
    try {
      buf = into && into.byteLength >= own.byteLength ? into.subarray(0, own.byteLength) : Buffer.allocUnsafeSlow(own.byteLength);
    } catch {
      throw new CalibscopeError(
        'E_OUT_OF_MEMORY',
        `${this.path}: tensor '${own.name}' is ${own.byteLength} bytes, more than one buffer can hold`,
        { file: this.path, tensor: own.name },
      );
    }
    try {
      await readExactly(this.handle, buf, own.byteOffset, own.byteLength, (got) =>
        bad(this.path, `file ended after ${got} of ${own.byteLength} bytes (was it truncated after opening?)`, own.name),
      );
    } catch (err) {
      if (err instanceof CalibscopeError) throw err;
      throw new CalibscopeError('E_IO', `${this.path}: reading tensor '${own.name}' failed: ${(err as Error).message}`, {
        file: this.path,
        tensor: own.name,
        errno: (err as NodeJS.ErrnoException).code,
      });
    }
    return buf;
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = null;
    await h?.close();
  }
}

async function parseHeader(
  handle: fs.promises.FileHandle,
  file: string,
  size: number,
): Promise<{ metadata: Record<string, string>; tensors: TensorInfo[] }> {
  if (size < 8) throw bad(file, `truncated: ${size} bytes, shorter than the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  await readExactly(handle, lenBuf, 0, 8, () => bad(file, 'truncated while reading the header length'));
  const headerLen = lenBuf.readBigUInt64LE(0);
  if (headerLen > BigInt(size - 8)) {
    throw bad(file, `header length ${headerLen} runs past the end of the file (${size} bytes); truncated or not safetensors`);
  }
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    throw bad(file, `header length ${headerLen} is absurd (more than ${MAX_HEADER_BYTES} bytes)`);
  }
  const n = Number(headerLen);
  const headerBuf = Buffer.alloc(n);
  await readExactly(handle, headerBuf, 8, n, () => bad(file, 'truncated while reading the header'));

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBuf);
  } catch {
    throw bad(file, 'header is not valid UTF-8; not a safetensors file');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    throw bad(file, `header is not valid JSON (${(err as Error).message}); not a safetensors file`);
  }
  if (!isPlainObject(header)) throw bad(file, 'header JSON is not an object');

  const dataStart = 8 + n;
  const dataSize = size - dataStart;
  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const ranges: { begin: number; end: number; name: string }[] = [];

  // Header order as JSON.parse gives it: the file's order, except that integer-like names ("0")
  // come first, as they do for any JS object.
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(file, entry);
      continue;
    }
    if (!isPlainObject(entry)) throw bad(file, 'entry is not an object', name);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (dtype === undefined) throw bad(file, 'missing dtype', name);
    if (typeof dtype !== 'string' || dtype.length === 0) throw bad(file, `dtype must be a non-empty string, got ${JSON.stringify(dtype)}`, name);
    if (shape === undefined) throw bad(file, 'missing shape', name);
    if (!Array.isArray(shape)) throw bad(file, `shape must be an array, got ${JSON.stringify(shape)}`, name);
    for (const d of shape) {
      if (!isCount(d)) throw bad(file, `shape ${JSON.stringify(shape)} has a dimension that is not a non-negative integer`, name);
    }
    if (offsets === undefined) throw bad(file, 'missing data_offsets', name);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !isCount(offsets[0]) || !isCount(offsets[1])) {
      throw bad(file, `data_offsets must be two non-negative integers, got ${JSON.stringify(offsets)}`, name);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) throw bad(file, `data_offsets [${begin}, ${end}] end before they begin`, name);
    if (end > dataSize) {
      throw bad(file, `data_offsets [${begin}, ${end}] run past the data section (${dataSize} bytes); file truncated?`, name);
    }
    let numelBig = 1n;
    for (const d of shape as number[]) numelBig *= BigInt(d);
    if (numelBig > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(file, `shape ${JSON.stringify(shape)} is too large`, name);
    const numel = Number(numelBig);
    const byteLength = end - begin;
    const bits = dtypeBits(dtype);
    if (bits !== undefined && numelBig * BigInt(bits) !== BigInt(byteLength) * 8n) {
      throw bad(
        file,
        `holds ${byteLength} bytes, but shape ${JSON.stringify(shape)} of ${dtype} needs ${(numelBig * BigInt(bits)) / 8n}` +
          ((numelBig * BigInt(bits)) % 8n !== 0n ? ' and a fraction' : ''),
        name,
      );
    }
    tensors.push({
      name,
      dtype,
      knownDtype: bits !== undefined,
      shape: (shape as number[]).slice(),
      numel,
      byteOffset: dataStart + begin,
      byteLength,
      file,
    });
    if (byteLength > 0) ranges.push({ begin, end, name });
  }

  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1];
    const cur = ranges[i];
    if (cur.begin < prev.end) {
      throw bad(file, `data_offsets [${cur.begin}, ${cur.end}] overlap tensor '${prev.name}' [${prev.begin}, ${prev.end}]`, cur.name);
    }
  }
  return { metadata, tensors };
}

function parseMetadata(file: string, entry: unknown): Record<string, string> {
  if (!isPlainObject(entry)) throw bad(file, '__metadata__ is not an object');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v !== 'string') throw bad(file, `__metadata__ value for '${k}' is not a string`);
    out[k] = v;
  }
  return out;
}
