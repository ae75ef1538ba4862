// Which device runs the block search: the CPU threads or the CUDA kernels (docs/backends.md).
// Both give bit-identical results, so the choice is a run setting, not part of the config hash.
import { native, type NativeBackend, type NativeCudaInfo } from '../native/index.js';
import { CalibscopeError } from '../util/errors.js';

export const BACKEND_CHOICES = ['auto', 'cpu', 'cuda'] as const;
/** What a user asks for: `auto` takes the GPU when one is usable. */
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
/** What runs: `cuda-emulated` (the GPU's per-block code on CPU threads) is for tests only. */
export type { NativeBackend } from '../native/index.js';

export function parseBackend(v: unknown): BackendChoice {
  if (v === undefined || v === null) return 'auto';
  if (typeof v === 'string' && (BACKEND_CHOICES as readonly string[]).includes(v)) return v as BackendChoice;
  throw new CalibscopeError('E_BAD_ARGUMENT', `unknown backend ${JSON.stringify(v)}: expected ${BACKEND_CHOICES.join(', ')}`, {
    backend: v,
    backends: [...BACKEND_CHOICES],
  });
}

/** The addon's CUDA status. Not cached: it is cheap, and a test may stand in for the addon. */
export function cudaInfo(): NativeCudaInfo {
  const c = native().info().cuda;
  return { compiled: c.compiled, available: c.available, reason: c.reason, devices: c.devices ?? [] };
}

/** The backend that calibrated a profile: profiles written before backends existed ran on the CPU. */
export function profileBackend(p: { backend?: NativeBackend }): NativeBackend {
  return p.backend ?? 'cpu';
}

/** The E_CUDA error for asking for the GPU where there is none usable. */
export function noCudaError(info: NativeCudaInfo): CalibscopeError {
  const why = info.reason || (info.compiled ? 'no usable CUDA device' : 'this build has no CUDA kernels');
  return new CalibscopeError('E_CUDA', `backend cuda was asked for, but there is no usable CUDA device: ${why}; use --backend cpu or auto`, {
    backend: 'cuda',
    compiled: info.compiled,
    reason: info.reason,
  });
}

/**
 * The backend to run: `auto` is `cuda` when a device is usable and `cpu` otherwise; `cuda` without
 * a usable device is E_CUDA with the addon's reason. Call it before anything is written, so that
 * the refusal leaves nothing behind.
 */
export function resolveBackend(choice: BackendChoice | NativeBackend | undefined): NativeBackend {
  if (choice === 'cuda-emulated') return choice;
  const c = parseBackend(choice);
  if (c === 'cpu') return c;
  const info = cudaInfo();
  if (info.available) return 'cuda';
  if (c === 'cuda') throw noCudaError(info);
  return 'cpu';
}
