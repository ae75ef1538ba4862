// Where profiles live: <cache>/calibration/<model-id>/<format>-<config-hash>/.
import os from 'node:os';
import path from 'node:path';

/** The platform's user cache folder for calibscope (XDG on Linux, Library/Caches on macOS, LOCALAPPDATA on Windows). */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.CALIBSCOPE_CACHE) return path.resolve(env.CALIBSCOPE_CACHE);
  if (process.platform === 'win32' && env.LOCALAPPDATA) return path.join(env.LOCALAPPDATA, 'calibscope', 'Cache');
  if (process.platform === 'darwin') return path.join(os.homedir(), 'Library', 'Caches', 'calibscope');
  const base = env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME) ? env.XDG_CACHE_HOME : path.join(os.homedir(), '.cache');
  return path.join(base, 'calibscope');
}

/** Model ids become folder names: keep them to a safe character set. */
export function safeModelId(id: string): string {
  const s = id.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^\.+/, '_');
  return s.length > 0 ? s.slice(0, 120) : 'model';
}

export function profileDir(cacheDir: string, modelId: string, format: string, configHash: string): string {
  return path.join(cacheDir, 'calibration', safeModelId(modelId), `${format}-${configHash}`);
}
