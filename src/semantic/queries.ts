// The semantic query set: assets/semantic-queries.txt by default (the one set every front door
// uses), or a user's file — one query a line, blank lines ignored.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CalibscopeError } from '../util/errors.js';

/** The default query set, shipped in assets/. */
export const DEFAULT_QUERIES_FILE = path.resolve(__dirname, '..', '..', '..', 'assets', 'semantic-queries.txt');

const MAX_QUERY_FILE_BYTES = 64 << 20;

/** Splits a query file's text: one query per line; CR, a BOM and blank lines are dropped. */
export function parseQueries(text: string): string[] {
  return text
    .replace(/^\ufeff/, '')
    .split('\n')
    .map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l))
    .filter((l) => l.trim().length > 0);
}

/** Reads a query file (the default set when none is given). An empty file is an error. */
export async function loadQueries(file?: string): Promise<{ file: string; queries: string[] }> {
  const f = path.resolve(file ?? DEFAULT_QUERIES_FILE);
  let buf: Buffer;
  try {
    const st = await fs.promises.stat(f);
    if (!st.isFile()) throw new CalibscopeError('E_BAD_ARGUMENT', `${f}: the query file is not a file`, { file: f });
    if (st.size > MAX_QUERY_FILE_BYTES) throw new CalibscopeError('E_BAD_ARGUMENT', `${f}: ${st.size} bytes is too large for a query file`, { file: f });
    buf = await fs.promises.readFile(f);
  } catch (err) {
    if (err instanceof CalibscopeError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new CalibscopeError('E_NOT_FOUND', `${f}: no such query file`, { file: f });
    throw new CalibscopeError('E_IO', `${f}: ${(err as Error).message}`, { file: f, errno: code });
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw new CalibscopeError('E_BAD_ARGUMENT', `${f}: the query file is not valid UTF-8`, { file: f });
  }
  const queries = parseQueries(text);
  if (queries.length === 0) throw new CalibscopeError('E_BAD_ARGUMENT', `${f}: the query file has no queries (one per line)`, { file: f });
  return { file: f, queries };
}

/** `sha256:<hex>` of the queries, one per line: which set a correlation was measured with. */
export function queriesHash(queries: readonly string[]): string {
  const h = crypto.createHash('sha256');
  for (const q of queries) h.update(q).update('\n');
  return `sha256:${h.digest('hex')}`;
}

export function checkQueries(queries: readonly string[]): void {
  if (!Array.isArray(queries) || queries.length === 0) throw new CalibscopeError('E_BAD_ARGUMENT', 'the query set is empty');
  queries.forEach((q, i) => {
    if (typeof q !== 'string') throw new CalibscopeError('E_BAD_ARGUMENT', `query ${i} is not a string`);
  });
}
