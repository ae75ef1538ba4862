// The error model: every failure a user can cause carries a stable code, a message naming the
// file/tensor and the reason, and optional details. It crosses the CLI (--json), the service
// protocol and the UI unchanged.

export type ErrorCode =
  | 'E_BAD_ARGUMENT'
  | 'E_BAD_FORMAT'
  | 'E_BAD_BLOCK_SIZE'
  | 'E_BAD_CHECKPOINT'
  | 'E_NOT_FOUND'
  | 'E_UNSUPPORTED_DTYPE'
  | 'E_NOTHING_TO_CALIBRATE'
  | 'E_EMPTY_TENSOR'
  | 'E_NONFINITE'
  | 'E_CANCELLED'
  | 'E_CUDA'
  | 'E_IO'
  | 'E_BAD_PROFILE'
  | 'E_SEMANTIC_DRIFT'
  | 'E_NATIVE_MISSING'
  | 'E_OUT_OF_MEMORY'
  | 'E_INTERNAL';

export class CalibscopeError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'CalibscopeError';
    this.code = code;
    this.details = details;
  }
  toJSON(): { code: ErrorCode; message: string; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/** Normalises anything thrown (native errors carry `code` too) into a CalibscopeError. */
export function asCalibscopeError(err: unknown): CalibscopeError {
  if (err instanceof CalibscopeError) return err;
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const code = typeof e?.code === 'string' && e.code.startsWith('E_') ? (e.code as ErrorCode) : 'E_INTERNAL';
  if (code === 'E_INTERNAL' && typeof e?.code === 'string') {
    // Node's own errors (ENOENT, EACCES, ...) are I/O problems.
    return new CalibscopeError('E_IO', message, { errno: e.code });
  }
  return new CalibscopeError(code, message);
}

/** The errno of a write refused because the place is read-only (EACCES, EPERM, EROFS), from a raw
 *  fs error or a CalibscopeError's details.errno (as the lock reports it); else null. */
export function readOnlyErrno(err: unknown): string | null {
  const e = err as { code?: unknown; details?: { errno?: unknown } } | null;
  for (const code of [e?.code, e?.details?.errno]) {
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return code;
  }
  return null;
}
