// The options that make up a CalibrationConfig, shared by `calibrate` and `status` so both name
// the same profile folder (<format>-<config-hash>) for the same flags.
import type { ConfigInput } from '../calibration/config.js';
import { calibrationQueriesHash } from '../semantic/calibration_stats.js';
import { loadQueries } from '../semantic/queries.js';
import { CalibscopeError } from '../util/errors.js';
import { blockSizesOption, listOption, numberOption, type ParsedArgs } from './args.js';

export const CONFIG_SPEC = {
  format: 'string',
  'block-sizes': 'string',
  'block-policy': 'string',
  'bits-tolerance': 'string',
  search: 'string',
  include: 'string',
  exclude: 'string',
  'allow-nonfinite': 'boolean',
  mode: 'string',
} as const;

/** The config flags given on the command line; `format` may be undefined (a pipeline's models can name theirs). */
export function configInput(options: ParsedArgs['options']): Partial<ConfigInput> {
  return {
    format: typeof options.format === 'string' ? options.format : undefined,
    block_sizes: blockSizesOption(options['block-sizes']),
    block_policy: options['block-policy'] as string | undefined,
    bits_tolerance: numberOption(options['bits-tolerance'], 'bits-tolerance'),
    search: options.search as string | undefined,
    include: listOption(options.include, 'include'),
    exclude: listOption(options.exclude, 'exclude'),
    allow_nonfinite: Boolean(options['allow-nonfinite']),
    mode: options.mode as string | undefined,
  };
}

/**
 * The calibration query set named on the command line (--calibration-queries, else --queries, as
 * `calibrate` reads them): its queries and the hash a weighted mode's config records (null for the
 * shipped set). Part of the profile folder's name, so `status` needs it as much as `calibrate`.
 */
export async function calibrationQueriesInput(options: ParsedArgs['options']): Promise<{ queries?: string[]; calibration_queries_hash?: string | null }> {
  const file = options['calibration-queries'] ?? options.queries;
  if (typeof file !== 'string') return {};
  const { queries } = await loadQueries(file);
  return { queries, calibration_queries_hash: await calibrationQueriesHash(queries) };
}

/** The help line of --model-id (calibrate, status, validate, attribute: one model, not --pipeline). */
export const MODEL_ID_HELP = `  --model-id ID           the model's id, which names its cache folder (default: the model folder's
                          name; "org/name" for a Hugging Face hub snapshot). Two checkpoints whose
                          folders share a name ("model", "checkpoint-1000") need their own ids`;

/** --model-id: a single model's id instead of its folder's name (a pipeline's models have "id"). */
export function modelIdOption(options: ParsedArgs['options']): string | undefined {
  const v = options['model-id'];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.trim() === '' || v.length > 200) {
    throw new CalibscopeError('E_BAD_ARGUMENT', '--model-id must be a non-empty name of at most 200 characters', { option: 'model-id', value: v });
  }
  if (options.pipeline !== undefined) throw new CalibscopeError('E_BAD_ARGUMENT', '--model-id is for one model: a pipeline names its models with "id" in the manifest');
  return v;
}
