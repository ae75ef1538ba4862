#!/usr/bin/env node
'use strict';
// Thin launcher: the CLI is compiled from src/cli to dist/ by `npm install` (prepare) or `npm run build:ts`.
// A calibration call holds a libuv pool thread for its whole search (on the GPU, while it waits for
// the device), and the read-ahead and profile writes need the same pool: with Node's default of 4
// threads, a pipeline's I/O would queue behind up to 4 running models. Must be set before the pool
// starts, i.e. before any asynchronous file access.
if (!process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = '16';
let main;
try {
  main = require('../dist/src/cli/main.js');
} catch (err) {
  if (err && err.code === 'MODULE_NOT_FOUND' && /dist[\\/]src[\\/]cli/.test(String(err.message))) {
    process.stderr.write('calibscope: the CLI is not built yet. Run `npm install` (or `npm run build:ts`) in the calibscope folder first.\n');
    process.exit(2);
  }
  throw err;
}
main.run(process.argv.slice(2)).then((code) => { process.exitCode = code; });
