// `calibscope info`: version, threads, SIMD level and the CUDA status.
import os from 'node:os';
import { native } from '../../native/index.js';
import { CALIBSCOPE_VERSION } from '../../version.js';
import { parseArgs } from '../args.js';
import type { CommandContext } from '../context.js';

export async function infoCommand(argv: string[], ctx: CommandContext): Promise<number> {
  const { options } = parseArgs(argv, { json: 'boolean' });
  ctx.json = Boolean(options.json);
  const n = native().info();
  const info = {
    version: CALIBSCOPE_VERSION,
    addon_version: n.version,
    node: process.versions.node,
    platform: `${process.platform}-${process.arch}`,
    threads: n.hardwareThreads || os.cpus().length,
    simd: n.simd,
    cuda: n.cuda,
  };
  if (ctx.json) {
    ctx.out(JSON.stringify(info));
    return 0;
  }
  ctx.out(`calibscope ${info.version} (node ${info.node}, ${info.platform})`);
  ctx.out(`cpu: ${info.threads} threads, SIMD ${info.simd}`);
  ctx.out(`cuda: ${info.cuda.available ? 'available' : 'not available'}${info.cuda.compiled ? '' : ' (not compiled)'}: ${info.cuda.reason}`);
  return 0;
}
