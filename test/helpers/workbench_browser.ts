// What the browser-level tests share: Debian's Chromium (headless, for playwright-core) and
// `calibscope serve` started on a free port, stopped like Ctrl-C.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..', '..');

export const CHROMIUM = process.env.CALIBSCOPE_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
export const skip = !fs.existsSync(CHROMIUM) ? `no Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CALIBSCOPE_CHROMIUM)` : false;

export interface Serve {
  url: string;
  origin: string;
  child: ChildProcess;
  startedAt: number;
  stop(): Promise<number | null>;
}

/** Starts `calibscope serve` and returns once it printed its tokened URL. */
export function serve(args: string[]): Promise<Serve> {
  const startedAt = Date.now();
  const child = spawn(process.execPath, ['bin/calibscope.js', 'serve', '--no-open', '--port', '0', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /^(http:\/\/127\.0\.0\.1:\d+\/)\?token=\S+$/m.exec(out);
      if (!m) return;
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      resolve({
        url: m[0],
        origin: m[1],
        child,
        startedAt,
        stop: async () => {
          child.kill('SIGINT');
          return exited;
        },
      });
    });
    child.once('exit', (code) => reject(new Error(`calibscope serve exited with ${code}: ${err}`)));
  });
}

export function httpStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject);
  });
}
