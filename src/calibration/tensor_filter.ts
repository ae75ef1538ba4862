// Which tensors get quantized: floating tensors of 2+ dimensions; 1-D tensors (biases, LayerNorm)
// stay as they are. Include/exclude patterns (`*` matches any run of characters) override.
const FLOAT_DTYPES_SUPPORTED = new Set(['F32', 'F16', 'BF16']);
const FLOAT_DTYPES_OTHER = new Set(['F64', 'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F4']);

export type TensorDecision = { quantize: true } | { quantize: false; reason: string; report: boolean };

function globToRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*');
  return new RegExp(`^${escaped}$`);
}

export class TensorFilter {
  private readonly include: RegExp[];
  private readonly exclude: RegExp[];

  constructor(include: readonly string[], exclude: readonly string[]) {
    this.include = include.map(globToRegExp);
    this.exclude = exclude.map(globToRegExp);
  }

  decide(name: string, dtype: string, shape: readonly number[]): TensorDecision {
    const included = this.include.some((r) => r.test(name));
    if (this.exclude.some((r) => r.test(name))) return { quantize: false, reason: 'excluded by pattern', report: true };
    if (this.include.length > 0 && !included) return { quantize: false, reason: 'not matched by an include pattern', report: true };
    const isFloat = FLOAT_DTYPES_SUPPORTED.has(dtype) || FLOAT_DTYPES_OTHER.has(dtype);
    if (!isFloat) return { quantize: false, reason: `${dtype} is not a floating-point weight`, report: true };
    if (!FLOAT_DTYPES_SUPPORTED.has(dtype)) {
      return { quantize: false, reason: `unsupported dtype ${dtype} (calibscope reads F32, F16 and BF16)`, report: true };
    }
    if (shape.length < 2 && !included) {
      return { quantize: false, reason: `${shape.length}-D tensor (bias, LayerNorm) stays in ${dtype}`, report: true };
    }
    return { quantize: true };
  }
}
