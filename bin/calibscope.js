#!/usr/bin/env node
'use strict';
// Thin launcher: the CLI is compiled from src/cli to dist/ by `npm install` (prepare) or `npm run build:ts`.
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
