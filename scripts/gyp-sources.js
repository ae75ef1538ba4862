#!/usr/bin/env node
'use strict';
// Lists the .cc files of the given native/ folders for binding.gyp, so that adding a source file
// needs no build-file edit. Paths are printed relative to the repository root, one per line.
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
for (const dir of process.argv.slice(2)) {
  const abs = path.join(root, dir);
  if (!fs.existsSync(abs)) continue;
  for (const f of fs.readdirSync(abs).sort()) {
    if (f.endsWith('.cc') && !f.startsWith('kernels_')) console.log(path.posix.join(dir, f));
  }
}
