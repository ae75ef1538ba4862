// The `calibscope` command line: dispatch, error reporting and exit codes.
//   0 success · 1 failure · 2 bad usage or input arguments · 130 cancelled (Ctrl-C)
//   · 143 / 129 cancelled by SIGTERM / SIGHUP
import { asCalibscopeError, type CalibscopeError } from '../util/errors.js';
import { CALIBSCOPE_VERSION } from '../version.js';
import { CALIBRATE_HELP, calibrateCommand } from './commands/calibrate.js';
import { DEMO_HELP, demoCommand } from './commands/demo.js';
import { INFO_HELP, infoCommand } from './commands/info.js';
import { QUICKSTART_HELP, quickstartCommand } from './commands/quickstart.js';
import { ATTRIBUTE_HELP, EMBED_HELP, VALIDATE_HELP, attributeCommand, embedCommand, validateCommand } from './commands/semantic.js';
import { SERVE_HELP, serveCommand } from './commands/serve.js';
import { STATUS_HELP, statusCommand } from './commands/status.js';
import type { CommandContext } from './context.js';

const HELP = `calibscope ${CALIBSCOPE_VERSION}: MSE-optimal block scales for FP8/FP4 weight quantization

usage:
  calibscope calibrate <model> --format F [options]   calibrate a checkpoint, write its profile
  calibscope status <model> --format F [--json]      state of the cached profile, with the reason
  calibscope demo --size tiny|full --out DIR [--seed N] [--json]
                                                      write the 12-model demo pipeline (trained-like weights)
  calibscope info [--json]                            version, threads, SIMD, CUDA
  calibscope embed <model> [--queries F] [--json]     embed queries with the model's FP16 weights
  calibscope validate <model> (--profile D | --format F) [--threshold T] [--json]
                                                      FP16 vs quantized embeddings: Pearson, retrieval
  calibscope attribute <model> --format F [--json]    which tensors drift; mixed-precision suggestion
  calibscope quickstart                               calibrate the bundled example model
  calibscope serve [--pipeline F | --model D] [--format F] [--cache D] [--host H] [--port N] [--no-open]
                                                      the workbench in a browser; prints its URL

${CALIBRATE_HELP}`;

type Command = (argv: string[], ctx: CommandContext) => Promise<number>;

/** `calibscope <command> --help` prints the command's own help (every command has one). */
const COMMAND_HELP: Record<string, string> = {
  calibrate: CALIBRATE_HELP,
  demo: DEMO_HELP,
  status: STATUS_HELP,
  embed: EMBED_HELP,
  validate: VALIDATE_HELP,
  attribute: ATTRIBUTE_HELP,
  serve: SERVE_HELP,
  info: INFO_HELP,
  quickstart: QUICKSTART_HELP,
};
const COMMANDS: Record<string, Command> = {
  calibrate: calibrateCommand,
  demo: demoCommand,
  attribute: attributeCommand,
  embed: embedCommand,
  info: infoCommand,
  quickstart: quickstartCommand,
  serve: serveCommand,
  status: statusCommand,
  validate: validateCommand,
};

const USAGE_CODES = new Set(['E_BAD_ARGUMENT', 'E_BAD_FORMAT', 'E_BAD_BLOCK_SIZE']);

/** The signals that cancel a run cleanly (as Ctrl-C does), with the exit status each gives: 128 + its number. */
const CANCEL_SIGNALS = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
type CancelSignal = keyof typeof CANCEL_SIGNALS;

export function exitCodeFor(e: CalibscopeError, cancelledBy: CancelSignal = 'SIGINT'): number {
  if (e.code === 'E_CANCELLED') return CANCEL_SIGNALS[cancelledBy];
  return USAGE_CODES.has(e.code) ? 2 : 1;
}

/**
 * Output into a pipe whose reader has gone (`calibscope ... | head -1`) is dropped instead of
 * crashing with an unhandled EPIPE: the command still finishes (a calibration still writes its
 * profile) and exits with its own status. The error arrives after the write returned, possibly
 * after the command ended, so the guard stays for the life of the process (once per stream).
 */
const guarded = new WeakSet<NodeJS.WriteStream>();
const closed = new WeakSet<NodeJS.WriteStream>();
function guardClosedPipe(stream: NodeJS.WriteStream): (text: string) => void {
  if (!guarded.has(stream)) {
    guarded.add(stream);
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
      closed.add(stream);
    });
  }
  return (text) => {
    if (!closed.has(stream)) stream.write(text);
  };
}

export async function run(argv: string[]): Promise<number> {
  const controller = new AbortController();
  const stdout = guardClosedPipe(process.stdout);
  const stderr = guardClosedPipe(process.stderr);
  let cancelledBy: CancelSignal = 'SIGINT';
  // SIGTERM (CI timeouts, `docker stop`) and SIGHUP cancel like Ctrl-C, so temporary files and
  // locks are removed before the process exits; a second signal stops at once.
  const handlers = (Object.keys(CANCEL_SIGNALS) as CancelSignal[]).map((sig) => {
    const handler = () => {
      if (controller.signal.aborted) process.exit(CANCEL_SIGNALS[cancelledBy]);
      cancelledBy = sig;
      controller.abort();
    };
    process.on(sig, handler);
    return [sig, handler] as const;
  });
  const ctx: CommandContext = {
    json: argv.includes('--json'),
    out: (line) => stdout(`${line}\n`),
    err: (line) => stderr(`${line}\n`),
    signal: controller.signal,
  };
  try {
    const [name, ...rest] = argv;
    if (!name || name === '--help' || name === '-h' || name === 'help') {
      ctx.out(HELP);
      return name ? 0 : 2;
    }
    if (name === '--version' || name === '-v') {
      ctx.out(CALIBSCOPE_VERSION);
      return 0;
    }
    // Own keys only: "constructor" or "toString" are unknown commands, not Object's members.
    const cmd = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (!cmd) {
      ctx.err(`calibscope: unknown command "${name}"\n\n${HELP}`);
      return 2;
    }
    if (rest.includes('--help') || rest.includes('-h')) {
      ctx.out(COMMAND_HELP[name]);
      return 0;
    }
    return await cmd(rest, ctx);
  } catch (err) {
    const e = asCalibscopeError(err);
    if (ctx.json) ctx.out(JSON.stringify({ error: e.toJSON() }));
    else ctx.err(`calibscope: error ${e.code}: ${e.message}`);
    const code = exitCodeFor(e, cancelledBy);
    // Usage errors name what was wrong; the options are one --help away (not repeated in the message).
    if (code === 2 && !ctx.json && Object.hasOwn(COMMANDS, argv[0])) ctx.err(`(calibscope ${argv[0]} --help lists the options)`);
    return code;
  } finally {
    for (const [sig, handler] of handlers) process.off(sig, handler);
  }
}
