#!/usr/bin/env node
'use strict';
// Runs every compiled test file under dist/test with Node's built-in test runner.
// Node 20's `--test` takes no globs, so the files are listed here.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..', 'dist', 'test');
const filter = process.argv[2];
const files = [];
(function walk(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(p);
    else if (entry.name.endsWith('.test.js') && (!filter || p.includes(filter))) files.push(p);
  }
})(root);
files.sort();
if (files.length === 0) {
  console.error('no test files found under dist/test');
  process.exit(1);
}
const res = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...files], { stdio: 'inherit' });
process.exit(res.status === null ? 1 : res.status);
