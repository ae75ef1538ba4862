// The checkpoint hash that a calibration profile records (golden_checkpoint_hash): a profile is
// valid only while the checkpoint still hashes the same.
import { createHash, type Hash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CalibscopeError } from '../util/errors.js';
import type { Checkpoint } from './checkpoint.js';

/**
 * `sha256:<64 hex digits>`, the SHA-256 of this byte stream, file after file:
 *
 *   for each file, in this order —
 *     1. config.json, if the checkpoint has one,
 *     2. the weight files, sorted by their path relative to the checkpoint folder,
 *     3. the sharded index file, if there is one —
 *   append: relative path (UTF-8, '/' as separator) · 0x00 · byte size in decimal ASCII · 0x00 ·
 *           the file's bytes.
 *
 * Contents are hashed, not timestamps, so touching a file changes nothing and editing one byte
 * changes the hash. To reproduce it in Python:
 *
 *   h = hashlib.sha256()
 *   for rel in files:
 *       data = open(os.path.join(root, rel), 'rb').read()
 *       h.update(rel.encode() + b'\0' + str(len(data)).encode() + b'\0' + data)
 *   'sha256:' + h.hexdigest()
 *
 * Files are streamed, so memory stays small whatever the checkpoint's size.
 */
export async function checkpointHash(ckpt: Checkpoint): Promise<string> {
  const rel = (abs: string) => path.relative(ckpt.root, abs).split(path.sep).join('/');
  const weights = ckpt.files.map((f) => ({ abs: f, rel: rel(f) })).sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  const order = [
    ...(ckpt.configPath ? [{ abs: ckpt.configPath, rel: rel(ckpt.configPath) }] : []),
    ...weights,
    ...(ckpt.indexPath ? [{ abs: ckpt.indexPath, rel: rel(ckpt.indexPath) }] : []),
  ];
  const h = createHash('sha256');
  for (const f of order) await hashFile(h, f.abs, f.rel);
  return `sha256:${h.digest('hex')}`;
}

async function hashFile(h: Hash, abs: string, rel: string): Promise<void> {
  let size: number;
  try {
    size = (await fs.promises.stat(abs)).size;
  } catch (err) {
    throw new CalibscopeError('E_IO', `${abs}: cannot hash: ${(err as Error).message}`, { file: abs });
  }
  h.update(Buffer.from(rel, 'utf8'));
  h.update(Buffer.from([0]));
  h.update(Buffer.from(String(size), 'ascii'));
  h.update(Buffer.from([0]));
  let seen = 0;
  try {
    for await (const chunk of fs.createReadStream(abs, { highWaterMark: 1 << 20 })) {
      const buf = chunk as Buffer;
      seen += buf.byteLength;
      h.update(buf);
    }
  } catch (err) {
    throw new CalibscopeError('E_IO', `${abs}: cannot hash: ${(err as Error).message}`, { file: abs });
  }
  // The size is framed before the bytes, so a file that changes while hashed would give a hash of nothing real.
  if (seen !== size) {
    throw new CalibscopeError('E_IO', `${abs}: changed while being hashed (${size} bytes before, ${seen} read)`, { file: abs });
  }
}
