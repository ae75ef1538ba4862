#!/usr/bin/env node
'use strict';
// `npm start`: the Electron window where Electron can run; otherwise the same workbench in the
// browser (`calibscope serve`), on the demo pipeline unless arguments say otherwise. Arguments
// after `npm start --` go to either (--pipeline FILE, --model DIR, --format F, --cache DIR).
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const args = process.argv.slice(2);
const say = (line) => process.stderr.write(`calibscope start: ${line}\n`);

function ensureBuilt() {
  const need = ['dist/electron/main.js', 'dist/src/cli/main.js', 'dist/ui/index.html'].filter((f) => !fs.existsSync(path.join(root, f)));
  if (need.length === 0) return;
  say(`building the app (missing ${need.join(', ')})`);
  const r = spawnSync('npm', ['run', 'build:ui'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

/** The Electron executable, or the reason there is none (Electron fetches its binary on first use). */
function electronBinary() {
  if (process.platform === 'linux' && !process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) return { reason: 'no display (DISPLAY / WAYLAND_DISPLAY unset)' };
  const r = spawnSync(process.execPath, ['-e', "process.stdout.write(require('electron'))"], { cwd: root, encoding: 'utf8', timeout: 300_000 });
  if (r.status === 0 && r.stdout && fs.existsSync(r.stdout)) return { bin: r.stdout };
  const lines = `${r.stderr || ''}${r.error ? r.error.message : ''}`.split('\n').map((l) => l.trim()).filter(Boolean);
  const why = lines.find((l) => /^(Error|TypeError):/.test(l)) || lines[lines.length - 1] || `exit code ${r.status}`;
  return { reason: `the Electron binary is not available (${why})` };
}

function run(cmd, argv, onEarlyExit) {
  const started = Date.now();
  const child = spawn(cmd, argv, { cwd: root, stdio: 'inherit' });
  const forward = (sig) => child.kill(sig);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  child.on('exit', (code, signal) => {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
    // Electron that dies at once (missing libraries, no GPU/sandbox support) falls back too.
    if (onEarlyExit && code !== 0 && Date.now() - started < 5000) return onEarlyExit(`Electron exited at once (code ${code ?? signal})`);
    process.exit(code ?? (signal ? 1 : 0));
  });
  child.on('error', (err) => (onEarlyExit ? onEarlyExit(err.message) : (say(err.message), process.exit(1))));
}

function browserMode(reason) {
  say(`${reason}; serving the workbench in the browser instead${args.some((a) => a === '--pipeline' || a === '--model') ? '' : ' (the demo pipeline)'}.`);
  const noDisplay = process.platform === 'linux' && !process.env.DISPLAY && !process.env.WAYLAND_DISPLAY;
  const serveArgs = ['bin/calibscope.js', 'serve', ...args, ...(noDisplay && !args.includes('--no-open') ? ['--no-open'] : [])];
  say('open the URL below in a browser on this machine (it carries the access token):');
  run(process.execPath, serveArgs, null);
}

ensureBuilt();
const e = process.env.CALIBSCOPE_BROWSER ? { reason: 'CALIBSCOPE_BROWSER is set' } : electronBinary();
if (e.bin) run(e.bin, [path.join(root, 'dist', 'electron', 'main.js'), ...args], browserMode);
else browserMode(`Electron cannot start here: ${e.reason}`);
