// A small, strict argument parser: --flag, --key value, --key=value, positionals. Unknown flags are
// errors (a typo must not silently change a calibration).
import { FORMAT_NAMES } from '../calibration/schemes.js';
import { CalibscopeError } from '../util/errors.js';

/** The formats, as usage errors list them. */
export const FORMAT_CHOICES = FORMAT_NAMES.join(' | ');

/** What a command got instead of its one path, for the usage error (the help is one --help away). */
export function positionalsText(positionals: readonly string[]): string {
  return positionals.length === 0 ? 'none' : `${positionals.length}: ${positionals.map((p) => JSON.stringify(p)).join(', ')}`;
}

export interface OptionSpec {
  /** 'boolean' flags take no value; 'string' options take one. */
  [name: string]: 'boolean' | 'string';
}

export interface ParsedArgs {
  positionals: string[];
  options: Record<string, string | boolean | undefined>;
}

export function parseArgs(argv: readonly string[], spec: OptionSpec): ParsedArgs {
  const positionals: string[] = [];
  const options: Record<string, string | boolean | undefined> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('--') || a === '-') {
      positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    const kind = spec[name];
    if (!kind) throw new CalibscopeError('E_BAD_ARGUMENT', `unknown option --${name}`);
    if (kind === 'boolean') {
      if (eq >= 0) throw new CalibscopeError('E_BAD_ARGUMENT', `--${name} takes no value`);
      options[name] = true;
    } else {
      const value = eq >= 0 ? a.slice(eq + 1) : argv[++i];
      if (value === undefined || (eq < 0 && value.startsWith('--'))) {
        throw new CalibscopeError('E_BAD_ARGUMENT', `--${name} needs a value`);
      }
      // An empty value is usually an unset shell variable: as a path it would mean the current folder.
      if (value.trim() === '') throw new CalibscopeError('E_BAD_ARGUMENT', `--${name} needs a value, got an empty string`, { option: name });
      const prior = options[name];
      if (typeof prior === 'string' && prior !== value) {
        throw new CalibscopeError('E_BAD_ARGUMENT', `--${name} is given twice, as "${prior}" and as "${value}": give it once`, { option: name });
      }
      options[name] = value;
    }
  }
  return { positionals, options };
}

// One grammar per kind, so that a value means what it reads as: Number() alone would take "0x10"
// as 16, "0b1" as 1, " 5 " as 5 and "1e3" as an integer.
const INTEGER = /^[+-]?[0-9]+$/;
const DECIMAL = /^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;

export function intOption(v: string | boolean | undefined, name: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'string' && INTEGER.test(v) ? Number(v) : NaN;
  if (!(n >= min && n <= max)) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `--${name} must be an integer in ${min}..${max} (decimal digits), got "${String(v)}"`, { option: name, value: v });
  }
  return n + 0; // -0 → 0
}

export function numberOption(v: string | boolean | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'string' && DECIMAL.test(v) ? Number(v) : NaN;
  if (!Number.isFinite(n)) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `--${name} must be a decimal number (such as 0.05 or 5e-2), got "${String(v)}"`, { option: name, value: v });
  }
  return n + 0;
}

export function listOption(v: string | boolean | undefined, name: string): string[] | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new CalibscopeError('E_BAD_ARGUMENT', `--${name} needs a value`);
  return v.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

export function blockSizesOption(v: string | boolean | undefined): number[] | undefined {
  const items = listOption(v, 'block-sizes');
  if (!items) return undefined;
  return items.map((s) => {
    // A malformed number is a bad argument; a well-formed size the format does not allow is E_BAD_BLOCK_SIZE (later).
    if (!/^[0-9]+$/.test(s)) {
      throw new CalibscopeError('E_BAD_ARGUMENT', `--block-sizes: "${s}" is not a positive integer in decimal digits (in "${String(v)}")`, {
        option: 'block-sizes',
        value: v,
      });
    }
    return Number(s);
  });
}
