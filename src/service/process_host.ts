// Runs the workbench service in its own process (Electron's utility process, or a Node child
// process in tests), speaking the protocol's wire messages with its parent: requests in,
// responses and events out. The Electron main process only forwards, so heavy work never
// blocks the window's main thread.
import path from 'node:path';
import { parseMode } from '../calibration/modes.js';
import type { CalibrationMode } from '../calibration/types.js';
import { defaultCacheDir } from '../profiles/paths.js';
import { asCalibscopeError } from '../util/errors.js';
import { openDefaultWorkspace } from './default_workspace.js';
import type { ServerMessage } from './protocol.js';
import { WorkbenchService } from './service.js';

export interface HostArgs {
  cacheDir: string;
  pipeline: string | null;
  model: string | null;
  format: string | undefined;
  /** The calibration mode as given (checked when the service starts). */
  mode: string | undefined;
}

/** The host's own arguments: --cache DIR, --pipeline FILE | --model DIR, --format F, --mode M (others are ignored: Electron adds its own). */
export function parseHostArgs(argv: readonly string[]): HostArgs {
  const get = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < argv.length ? argv[i + 1] : undefined;
  };
  const cache = get('cache');
  const pipeline = get('pipeline');
  const model = get('model');
  return {
    cacheDir: cache ? path.resolve(cache) : defaultCacheDir(),
    pipeline: pipeline ? path.resolve(pipeline) : null,
    model: model ? path.resolve(model) : null,
    format: get('format'),
    mode: get('mode'),
  };
}

/** Messages from the parent besides protocol requests. */
export type HostControl = { type: 'shutdown' };

interface ParentPortLike {
  on(event: 'message', cb: (e: { data: unknown }) => void): void;
  postMessage(m: unknown): void;
}

export async function runServiceHost(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  const args = parseHostArgs(argv);
  const port = (process as unknown as { parentPort?: ParentPortLike }).parentPort;
  const post = (m: ServerMessage | { type: 'ready' } | { type: 'fatal'; error: unknown }) => (port ? port.postMessage(m) : process.send?.(m));
  // A bad --mode is reported like a model that cannot be opened; the service then runs static.
  let calibrationMode: CalibrationMode = 'static';
  let modeError: unknown = null;
  try {
    calibrationMode = parseMode(args.mode);
  } catch (err) {
    modeError = err;
  }
  const service = new WorkbenchService({ cacheDir: args.cacheDir, mode: 'electron', calibrationMode });
  service.onEvent((event) => post({ type: 'event', event }));

  const onMessage = async (raw: unknown) => {
    const msg = raw as { type?: string; id?: unknown; method?: unknown; params?: unknown };
    if (msg?.type === 'shutdown') {
      await service.shutdown();
      process.exit(0);
    }
    if (msg?.type !== 'request' || typeof msg.id !== 'number') return;
    const outcome = await service.request(msg.method, msg.params);
    post({ type: 'response', id: msg.id, ...outcome });
  };
  if (port) port.on('message', (e) => void onMessage(e.data));
  else process.on('message', (m) => void onMessage(m));
  // The parent went away: stop jobs cleanly (no half-written profiles) and exit.
  process.on('disconnect', () => void service.shutdown().then(() => process.exit(0)));

  try {
    if (modeError) throw modeError;
    if (args.pipeline) await service.openPipeline(args.pipeline, args.format);
    else if (args.model) await service.openModel(args.model, args.format);
    else openDefaultWorkspace(service, args.format);
  } catch (err) {
    // Shown in the window as a toast once it asks; the service keeps running with nothing open.
    post({ type: 'fatal', error: asCalibscopeError(err).toJSON() });
  }
  post({ type: 'ready' });
}
