// The options that make up a CalibrationConfig, shared by `calibrate` and `status` so both name
// the same profile folder (<format>-<config-hash>) for the same flags.
import type { ConfigInput } from '../calibration/config.js';
import { calibrationQueriesHash } from '../semantic/calibration_stats.js';
import { loadQueries } from '../semantic/queries.js';
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
