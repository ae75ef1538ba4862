// Checks every request that arrives over a transport (WebSocket, Electron IPC) against the
// protocol before the service sees it: known method, known keys, types and ranges. A front end is
// not trusted to send well-formed requests.
import { CALIBRATION_MODES } from '../calibration/modes.js';
import { FORMAT_NAMES } from '../calibration/schemes.js';
import { CalibscopeError } from '../util/errors.js';
import type { GridAggregate, GridMetric, Method, Params } from './protocol.js';

export const GRID_METRICS: readonly GridMetric[] = ['scale', 'mse_before', 'mse_after', 'improvement', 'outliers'];
export const GRID_AGGREGATES: readonly GridAggregate[] = ['mean', 'min', 'max', 'extreme'];

type Field =
  | { type: 'string'; max: number; optional?: boolean; enum?: readonly string[]; nonEmpty?: boolean }
  | { type: 'int'; min: number; max: number; optional?: boolean }
  | { type: 'bool'; optional?: boolean }
  | { type: 'ints'; min: number; max: number; maxItems: number; optional?: boolean };

const ID = { type: 'string', max: 512, nonEmpty: true } as const;
const PATH = { type: 'string', max: 4096, nonEmpty: true } as const;
const FORMAT = { type: 'string', max: 32, enum: FORMAT_NAMES, optional: true } as const;
const INDEX = { type: 'int', min: 0, max: 2 ** 31 } as const;
const CELLS = { type: 'int', min: 1, max: 4096 } as const;

const SCHEMAS: { [M in Method]: Record<string, Field> } = {
  'app.info': {},
  'workspace.get': {},
  'workspace.openModel': { path: PATH, format: FORMAT },
  'workspace.openPipeline': { path: PATH, format: FORMAT },
  'workspace.openDemo': { format: FORMAT },
  'profile.get': { modelId: ID },
  'tensor.grid': {
    modelId: ID,
    tensor: ID,
    metric: { type: 'string', max: 32, enum: GRID_METRICS },
    rowStart: { ...INDEX, optional: true },
    rowEnd: { ...INDEX, optional: true },
    blockStart: { ...INDEX, optional: true },
    blockEnd: { ...INDEX, optional: true },
    maxRows: CELLS,
    maxCols: CELLS,
    aggregate: { type: 'string', max: 16, enum: GRID_AGGREGATES, optional: true },
  },
  'tensor.block': { modelId: ID, tensor: ID, row: INDEX, block: INDEX },
  'tensor.histogram': { modelId: ID, tensor: ID, bins: { type: 'int', min: 4, max: 1024, optional: true } },
  'calibrate.model': { modelId: ID, force: { type: 'bool', optional: true } },
  'calibrate.pipeline': { force: { type: 'bool', optional: true }, validate: { type: 'bool', optional: true } },
  'calibrate.tensor': {
    modelId: ID,
    tensor: ID,
    format: FORMAT,
    blockSizes: { type: 'ints', min: 1, max: 1 << 20, maxItems: 16, optional: true },
    policy: { type: 'string', max: 16, enum: ['min-mse', 'bits'], optional: true },
    search: { type: 'string', max: 16, enum: ['exact', 'ternary', 'naive'], optional: true },
    mode: { type: 'string', max: 32, enum: CALIBRATION_MODES, optional: true },
  },
  'rerun.keep': { rerunId: ID },
  'rerun.discard': { rerunId: ID },
  'job.cancel': { jobId: ID },
  'jobs.list': {},
  'validation.get': { modelId: ID },
  'validation.run': { modelId: ID, attribution: { type: 'bool', optional: true }, dynamicActivations: { type: 'bool', optional: true } },
  'signoff.submit': {
    modelId: ID,
    reviewer: { type: 'string', max: 200, nonEmpty: true },
    decision: { type: 'string', max: 16, enum: ['approved', 'rejected'] },
    note: { type: 'string', max: 4000 },
  },
};

export const METHODS = Object.keys(SCHEMAS) as Method[];

function bad(method: string, message: string): CalibscopeError {
  return new CalibscopeError('E_BAD_ARGUMENT', `${method}: ${message}`, { method });
}

function checkField(method: string, key: string, f: Field, v: unknown): void {
  switch (f.type) {
    case 'string':
      if (typeof v !== 'string') throw bad(method, `"${key}" must be a string`);
      if (v.length > f.max) throw bad(method, `"${key}" is longer than ${f.max} characters`);
      if (f.nonEmpty && v.trim() === '') throw bad(method, `"${key}" must not be empty`);
      if (f.enum && !f.enum.includes(v)) throw bad(method, `"${key}" must be one of ${f.enum.join(', ')}, got "${v.slice(0, 40)}"`);
      return;
    case 'int':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < f.min || v > f.max) {
        throw bad(method, `"${key}" must be an integer in ${f.min}..${f.max}`);
      }
      return;
    case 'bool':
      if (typeof v !== 'boolean') throw bad(method, `"${key}" must be true or false`);
      return;
    case 'ints':
      if (!Array.isArray(v) || v.length === 0 || v.length > f.maxItems) throw bad(method, `"${key}" must be a list of 1..${f.maxItems} integers`);
      for (const x of v) {
        if (typeof x !== 'number' || !Number.isInteger(x) || x < f.min || x > f.max) throw bad(method, `"${key}" holds a value that is not an integer in ${f.min}..${f.max}`);
      }
      return;
  }
}

/** Returns the request typed, or throws E_BAD_ARGUMENT naming the method and the field. */
export function validateRequest(method: unknown, params: unknown): { method: Method; params: Params<Method> } {
  if (typeof method !== 'string' || !Object.prototype.hasOwnProperty.call(SCHEMAS, method)) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `unknown request "${String(method).slice(0, 60)}"`);
  }
  const m = method as Method;
  const p = params === undefined ? {} : params;
  if (typeof p !== 'object' || p === null || Array.isArray(p)) throw bad(m, 'parameters must be an object');
  const schema = SCHEMAS[m];
  for (const key of Object.keys(p)) {
    if (!Object.prototype.hasOwnProperty.call(schema, key)) throw bad(m, `unknown parameter "${key.slice(0, 60)}"`);
  }
  for (const [key, field] of Object.entries(schema)) {
    const v = (p as Record<string, unknown>)[key];
    if (v === undefined) {
      if (!field.optional) throw bad(m, `"${key}" is required`);
      continue;
    }
    checkField(m, key, field, v);
  }
  return { method: m, params: p as Params<Method> };
}
