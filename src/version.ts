// The calibscope version (from package.json) and the profile format it writes.
import fs from 'node:fs';
import path from 'node:path';

function readVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

export const CALIBSCOPE_VERSION = readVersion();
/** Bumped when profile.json changes incompatibly; a newer profile is refused, not misread. */
export const PROFILE_FORMAT_VERSION = 1;
