// `calibscope info`: version, threads, SIMD level, the CUDA device(s) or why there is none, and the
// backend `--backend auto` picks here.
import os from 'node:os';
import { resolveBackend } from '../../calibration/backend.js';
import { native, type NativeCudaDevice } from '../../native/index.js';
import { CalibscopeError } from '../../util/errors.js';
import { CALIBSCOPE_VERSION } from '../../version.js';
import { parseArgs } from '../args.js';
import type { CommandContext } from '../context.js';

const GIB = 1024 ** 3;

export const INFO_HELP = `calibscope info [--json]

  Prints the version, the CPU threads and SIMD level, the CUDA device(s) or why there is none,
  and the backend --backend auto picks here.
  --json                  {"version", "addon_version", "node", "platform", "threads", "simd",
                          "cuda": {"compiled", "available", "reason", "devices"}, "auto_backend"}`;

/** A device as --json reports it (snake_case, like the rest of the CLI's JSON). */
function deviceJson(d: NativeCudaDevice) {
  return {
    index: d.index,
    name: d.name,
    total_memory_bytes: d.totalMemory,
    total_memory_gib: Math.round((d.totalMemory / GIB) * 100) / 100,
    compute_capability: d.computeCapability,
    multiprocessors: d.multiprocessors,
  };
}

export async function infoCommand(argv: string[], ctx: CommandContext): Promise<number> {
  const { positionals, options } = parseArgs(argv, { json: 'boolean' });
  if (positionals.length > 0) throw new CalibscopeError('E_BAD_ARGUMENT', `info takes no arguments, got "${positionals[0]}"`);
  ctx.json = Boolean(options.json);
  const n = native().info();
  const cuda = n.cuda;
  const info = {
    version: CALIBSCOPE_VERSION,
    addon_version: n.version,
    node: process.versions.node,
    platform: `${process.platform}-${process.arch}`,
    threads: n.hardwareThreads || os.cpus().length,
    simd: n.simd,
    cuda: { compiled: cuda.compiled, available: cuda.available, reason: cuda.reason, devices: (cuda.devices ?? []).map(deviceJson) },
    /** What `--backend auto` runs on here. */
    auto_backend: resolveBackend('auto'),
  };
  if (ctx.json) {
    ctx.out(JSON.stringify(info));
    return 0;
  }
  ctx.out(`calibscope ${info.version} (node ${info.node}, ${info.platform})`);
  ctx.out(`cpu: ${info.threads} threads, SIMD ${info.simd}`);
  if (info.cuda.available) {
    const k = info.cuda.devices.length;
    ctx.out(`cuda: available, ${k} device${k === 1 ? '' : 's'}`);
  } else {
    ctx.out(`cuda: not available (${info.cuda.compiled ? 'CUDA build' : 'CPU-only build'}): ${info.cuda.reason || 'no usable device'}`);
  }
  for (const d of info.cuda.devices) {
    ctx.out(`  ${d.index}: ${d.name}, ${d.total_memory_gib.toFixed(1)} GiB, compute capability ${d.compute_capability}, ${d.multiprocessors} SMs`);
  }
  ctx.out(`backend: --backend auto runs on ${info.auto_backend}`);
  return 0;
}
