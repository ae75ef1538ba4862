// The embedded default: with nothing opened, the workbench opens the tiny demo pipeline (written
// into the cache on first start) and calibrates it, so a new user sees real results at once.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { writeDemoPipeline } from '../demo/index.js';
import { CalibscopeError, readOnlyErrno } from '../util/errors.js';
import type { JobInfo } from './protocol.js';
import type { WorkbenchService } from './service.js';

export function demoDir(cacheDir: string): string {
  return path.join(cacheDir, 'demo', 'tiny');
}

/** Writes the tiny demo into the cache unless it is there; returns its pipeline.json. */
export async function ensureDemo(cacheDir: string, signal?: AbortSignal, onProgress?: (fraction: number, detail: string) => void): Promise<string> {
  const dir = demoDir(cacheDir);
  const manifest = path.join(dir, 'pipeline.json');
  if (fs.existsSync(manifest)) return manifest;
  // Written beside its place and renamed in, so an interrupted first start leaves no half demo.
  const tmp = `${dir}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  try {
    await fs.promises.mkdir(path.dirname(dir), { recursive: true });
    await writeDemoPipeline({
      size: 'tiny',
      outDir: tmp,
      signal,
      onProgress: (p) => onProgress?.(p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : 0, `writing ${p.model} (${p.modelIndex + 1}/${p.models})`),
    });
    await fs.promises.rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
      // Another process wrote it first: use theirs.
      if ((err.code === 'ENOTEMPTY' || err.code === 'EEXIST') && fs.existsSync(manifest)) return;
      throw err;
    });
  } catch (err) {
    // A read-only cache (a CI artifact, another user's) can still show profiles, just not a new demo.
    const errno = readOnlyErrno(err);
    if (errno) {
      throw new CalibscopeError(
        'E_IO',
        `the cache ${cacheDir} is read-only (${errno}), so the demo pipeline cannot be written there: open a model or a pipeline, or use a writable --cache`,
        { path: cacheDir, errno },
      );
    }
    throw err;
  } finally {
    await fs.promises.rm(tmp, { recursive: true, force: true });
  }
  return manifest;
}

/** Opens the demo and starts calibrating what needs it, as a job the UI shows from the start. */
export function openDefaultWorkspace(service: WorkbenchService, format?: string): JobInfo {
  return service.startJob({
    kind: 'demo',
    label: 'prepare the demo pipeline',
    run: async (ctx) => {
      ctx.progress(0, 'writing the tiny demo models');
      const manifest = await ensureDemo(service.cacheDir, ctx.signal, (f, d) => ctx.progress(0.95 * f, d));
      ctx.progress(0.97, 'opening the demo pipeline');
      await service.openPipeline(manifest, format, true);
      ctx.progress(1, 'opened; the calibration runs as its own job');
      service.calibrateAll();
    },
  });
}
