// The options that make up a CalibrationConfig, shared by `calibrate` and `status` so both name
// the same profile folder (<format>-<config-hash>) for the same flags.
import type { ConfigInput } from '../calibration/config.js';
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
