// CalibrationConfig defaults and the hash that names a profile folder (`<format>-<config-hash>`).
import crypto from 'node:crypto';
import type { SchemeName, SearchName } from '../native/index.js';
import { CalibscopeError } from '../util/errors.js';
import { parseBackend } from './backend.js';
import { parseMode } from './modes.js';
import { resolveBlockSizes, schemeFor } from './schemes.js';
import type { BlockPolicy, CalibrationConfig } from './types.js';

export const DEFAULT_CORRELATION_THRESHOLD = 0.99;
export const DEFAULT_BITS_TOLERANCE = 0.05;

export interface ConfigInput {
  format: string;
  block_sizes?: number[];
  block_policy?: string;
  bits_tolerance?: number;
  search?: string;
  include?: string[];
  exclude?: string[];
  allow_nonfinite?: boolean;
  mse_threshold?: number | null;
  correlation_threshold?: number;
  num_calibration_samples?: number;
  semantic_test_queries?: string[];
  /** static (default) | activation-aware | entropy-aware (docs/modes.md). */
  mode?: string;
  /** Weighted modes: the calibration query set's hash (queriesHash); null or absent = the shipped default set. */
  calibration_queries_hash?: string | null;
  /** auto (default) | cpu | cuda: where the search runs (backend.ts); not part of the hash. */
  backend?: string;
}

/** Validates user input into a complete config; bad values become E_BAD_ARGUMENT / E_BAD_FORMAT. */
export function makeConfig(input: ConfigInput): CalibrationConfig {
  const scheme = schemeFor(input.format);
  const policy = input.block_policy ?? 'min-mse';
  if (policy !== 'min-mse' && policy !== 'bits') {
    throw new CalibscopeError('E_BAD_ARGUMENT', `unknown block policy "${policy}": expected min-mse or bits`);
  }
  const search = input.search ?? 'exact';
  if (search !== 'exact' && search !== 'ternary' && search !== 'naive') {
    throw new CalibscopeError('E_BAD_ARGUMENT', `unknown search "${search}": expected exact, ternary or naive`);
  }
  const tol = input.bits_tolerance ?? DEFAULT_BITS_TOLERANCE;
  if (!(tol >= 0) || !Number.isFinite(tol)) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `bits tolerance must be a non-negative number, got ${tol}`);
  }
  const mode = parseMode(input.mode);
  const backend = parseBackend(input.backend);
  const qh = input.calibration_queries_hash ?? null;
  if (qh !== null && (typeof qh !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(qh))) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `calibration_queries_hash must be sha256:<64 hex digits> or null, got ${JSON.stringify(qh)}`);
  }
  const corr = input.correlation_threshold ?? DEFAULT_CORRELATION_THRESHOLD;
  if (!(corr >= -1 && corr <= 1)) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `correlation threshold must be in [-1, 1], got ${corr}`);
  }
  return {
    format: scheme.name as SchemeName,
    block_sizes: resolveBlockSizes(scheme, input.block_sizes),
    num_calibration_samples: input.num_calibration_samples ?? 0,
    semantic_test_queries: input.semantic_test_queries ?? [],
    mse_threshold: input.mse_threshold ?? null,
    correlation_threshold: corr,
    block_policy: policy as BlockPolicy,
    bits_tolerance: tol,
    search: search as SearchName,
    include: input.include ?? [],
    exclude: input.exclude ?? [],
    allow_nonfinite: input.allow_nonfinite ?? false,
    mode,
    calibration_queries_hash: mode === 'static' ? null : qh,
    backend,
  };
}

/** Hash of the settings that change the scales (not thresholds, validation query sets or the
 *  backend, which gives the same scales on every device): 12 hex digits. A weighted mode and its
 *  calibration query set are part of it (static leaves the key as it was before modes existed, so
 *  older profiles keep their folders). */
export function configHash(c: CalibrationConfig): string {
  const mode = c.mode ?? 'static';
  const key: Record<string, unknown> = {
    format: c.format,
    block_sizes: c.block_sizes,
    block_policy: c.block_policy,
    bits_tolerance: c.block_policy === 'bits' ? c.bits_tolerance : null,
    search: c.search,
    include: c.include,
    exclude: c.exclude,
    allow_nonfinite: c.allow_nonfinite,
  };
  if (mode !== 'static') {
    key.mode = mode;
    key.calibration_queries_hash = c.calibration_queries_hash ?? null;
  }
  return crypto.createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 12);
}
