// `calibscope serve`: the workbench in a browser (for GPU servers without a display). Serves the
// renderer and the service protocol over a WebSocket on loopback, guarded by a per-start token.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { defaultCacheDir } from '../../profiles/paths.js';
import { isLoopback, startServer } from '../../server/server.js';
import { openDefaultWorkspace } from '../../service/default_workspace.js';
import { WorkbenchService } from '../../service/service.js';
import { schemeFor } from '../../calibration/schemes.js';
import { CALIBRATION_MODES, parseMode } from '../../calibration/modes.js';
import { parseBackend, resolveBackend } from '../../calibration/backend.js';
import { CalibscopeError } from '../../util/errors.js';
import { intOption, parseArgs } from '../args.js';
import type { CommandContext } from '../context.js';

export const SERVE_HELP = `calibscope serve [--pipeline FILE | --model DIR] [options]

  --pipeline FILE         open a pipeline manifest (pipeline.json)
  --model DIR             open one model folder or checkpoint
                          (neither: the tiny demo pipeline, generated into the cache and calibrated)
  --format F              format for models without one (default fp4)
  --mode M                ${CALIBRATION_MODES.join(' | ')}: the calibration mode for models
                          that do not name one (default static; see docs/modes.md). The weighted
                          modes use the shipped calibration query set
  --backend B             auto (default: the GPU when one is usable) | cpu | cuda: where
                          calibrations and re-runs search (see docs/backends.md)
  --cache DIR             cache folder (default ${defaultCacheDir()})
  --host H                address to listen on (default 127.0.0.1; anything else is reachable
                          from other machines, still guarded by the token)
  --port N                port (default 0: a free one)
  --no-open               do not open a browser
  Prints http://HOST:PORT/?token=… on stdout; requests without the token get 401.`;

const SPEC = {
  pipeline: 'string',
  model: 'string',
  format: 'string',
  mode: 'string',
  backend: 'string',
  cache: 'string',
  host: 'string',
  port: 'string',
  'no-open': 'boolean',
  json: 'boolean',
} as const;

function openBrowser(url: string, err: (line: string) => void): void {
  const cmd = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open';
  try {
    const child = spawn(cmd, [url], { detached: true, stdio: 'ignore' });
    child.on('error', () => err(`calibscope serve: could not start ${cmd}; open the URL yourself`));
    child.unref();
  } catch {
    err(`calibscope serve: could not start ${cmd}; open the URL yourself`);
  }
}

export async function serveCommand(argv: string[], ctx: CommandContext): Promise<number> {
  const { positionals, options } = parseArgs(argv, SPEC);
  if (positionals.length > 0) throw new CalibscopeError('E_BAD_ARGUMENT', `serve takes no positional arguments (got "${positionals[0]}")`);
  if (options.pipeline !== undefined && options.model !== undefined) throw new CalibscopeError('E_BAD_ARGUMENT', 'give --pipeline or --model, not both');
  const format = typeof options.format === 'string' ? schemeFor(options.format).name : undefined;
  const calibrationMode = parseMode(options.mode);
  const backend = parseBackend(options.backend);
  resolveBackend(backend); // --backend cuda without a usable GPU: E_CUDA now, not at the first job
  const port = intOption(options.port, 'port', 0, 65535) ?? 0;
  const host = typeof options.host === 'string' ? options.host : '127.0.0.1';
  const cacheDir = typeof options.cache === 'string' ? path.resolve(options.cache) : defaultCacheDir();

  const service = new WorkbenchService({ cacheDir, mode: 'browser', calibrationMode, backend });
  if (typeof options.pipeline === 'string') await service.openPipeline(path.resolve(options.pipeline), format);
  else if (typeof options.model === 'string') await service.openModel(path.resolve(options.model), format);

  let server;
  try {
    server = await startServer({ service, host, port });
  } catch (err) {
    // Nothing runs yet, but the service's job manager is let go before the error is reported.
    await service.shutdown();
    throw err;
  }
  ctx.out(server.openUrl);
  if (!isLoopback(host)) ctx.err(`calibscope serve: listening on ${host}, reachable from other machines (token required)`);
  if (options.pipeline === undefined && options.model === undefined) {
    ctx.err(`calibscope serve: nothing opened; opening the tiny demo pipeline from ${path.join(cacheDir, 'demo')} (generated and calibrated on first start)`);
    openDefaultWorkspace(service, format);
  }
  if (!options['no-open']) openBrowser(server.openUrl, ctx.err);

  // Runs until Ctrl-C (the CLI's signal) or SIGTERM; then running jobs are cancelled cleanly.
  // (The CLI's own handler turns SIGTERM and SIGHUP into the same abort.)
  await new Promise<void>((resolve) => {
    if (ctx.signal.aborted) return resolve();
    ctx.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  ctx.err('calibscope serve: stopping');
  await server.close();
  await service.shutdown();
  return 0;
}
