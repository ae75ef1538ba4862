// The service's bridge to semantic validation and drift attribution (src/semantic): runs them as
// jobs on the default query set and shapes their results for the correlation panel. The summary
// a validation records in profile.json is shown after a restart too; the per-query values and the
// attribution ranking are kept for the profile they were computed on, while the service runs.
import type { ModelCalibrationProfile } from '../calibration/types.js';
import { native } from '../native/index.js';
import { loadProfile } from '../profiles/store.js';
import { attributeDrift, type AttributionResult } from '../semantic/attribution.js';
import { loadQueries } from '../semantic/queries.js';
import { validateSemanticAlignment, type ProfileWithValidation, type ValidationResult } from '../semantic/validate.js';
import { CalibscopeError } from '../util/errors.js';
import type { DynamicActivationsView, ValidationView } from './protocol.js';
import type { WorkspaceModel } from './workspace.js';

export interface SemanticRunOptions {
  attribution: boolean;
  /** Also embed with every Linear's input quantized per batch (docs/modes.md). */
  dynamicActivations?: boolean;
  signal: AbortSignal;
  cacheDir: string;
  onProgress: (fraction: number, detail: string) => void;
}

export interface SemanticSupport {
  available: boolean;
  reason: string | null;
  view(m: WorkspaceModel, profile: ModelCalibrationProfile | null): ValidationView;
  run(m: WorkspaceModel, opts: SemanticRunOptions): Promise<void>;
}

interface Kept {
  /** The profile content the results belong to. */
  key: string;
  validation: ValidationResult | null;
  attribution: AttributionResult | null;
}

/** The dynamic-activations figures: all of them from a run the service keeps, the two correlations from profile.json. */
function dynamicView(v: ValidationResult | null, summary: ProfileWithValidation['semantic_validation']): DynamicActivationsView | null {
  const d = v?.dynamic_activations;
  if (d) {
    return {
      meanCorrelation: d.mean_correlation,
      minCorrelation: d.min_correlation,
      weightOnlyMeanCorrelation: d.weight_only_mean_correlation,
      retrievalAgreement: d.retrieval_agreement,
      scaleMin: d.scale_min,
      scaleMax: d.scale_max,
      globalScaleMin: d.global_scale_min,
      globalScaleMax: d.global_scale_max,
      clippedFraction: d.clipped_fraction,
      linearsQuantized: d.linears_quantized,
    };
  }
  // A kept run without dynamic activations is newer than anything the summary could say.
  const s = v ? undefined : summary?.dynamic_activations;
  if (!s) return null;
  return {
    meanCorrelation: s.mean_correlation,
    minCorrelation: s.min_correlation,
    weightOnlyMeanCorrelation: summary?.mean_correlation ?? null,
    retrievalAgreement: null,
    scaleMin: null,
    scaleMax: null,
    globalScaleMin: null,
    globalScaleMax: null,
    clippedFraction: null,
    linearsQuantized: null,
  };
}

function contentKey(p: ModelCalibrationProfile): string {
  return `${p.timestamp}|${p.scales_sha256}`;
}

/** Whether the addon was built with the BERT encoder. */
function encoderReason(): string | null {
  try {
    return typeof (native() as { Encoder?: unknown }).Encoder === 'function' ? null : 'the native addon was built without the BERT encoder';
  } catch (err) {
    return (err as Error).message.split('\n')[0];
  }
}

export class SemanticBridge implements SemanticSupport {
  readonly available: boolean;
  readonly reason: string | null;
  private readonly kept = new Map<string, Kept>();

  constructor() {
    this.reason = encoderReason();
    this.available = this.reason === null;
  }

  view(m: WorkspaceModel, profile: ModelCalibrationProfile | null): ValidationView {
    const threshold = m.config.correlation_threshold;
    const summary = (profile as ProfileWithValidation | null)?.semantic_validation;
    const kept = profile ? this.kept.get(m.profileDir) : undefined;
    const fresh = kept && profile && kept.key === contentKey(profile) ? kept : null;
    const v = fresh?.validation ?? null;
    const a = fresh?.attribution ?? null;
    const mean = v?.mean_correlation ?? summary?.mean_correlation ?? profile?.semantic_correlation ?? null;
    let reason: string | null = this.reason;
    if (this.available && !profile) reason = 'the model has no profile yet: calibrate it first';
    else if (this.available && mean === null) reason = 'not validated yet: run Validate';
    return {
      available: this.available && profile !== null,
      reason,
      modelId: m.id,
      threshold: v?.threshold ?? summary?.threshold ?? threshold,
      meanCorrelation: mean,
      minCorrelation: v?.min_correlation ?? summary?.min_correlation ?? null,
      retrievalAgreement: v?.retrieval_agreement ?? summary?.retrieval_agreement ?? null,
      perQuery: v ? v.per_query.map((q) => ({ query: q.query, correlation: q.correlation })) : [],
      passed: mean === null ? null : mean >= (v?.threshold ?? summary?.threshold ?? threshold),
      attribution: a ? a.ranking.filter((e) => e.used).map((e) => ({ tensor: e.tensor, correlation: e.mean_correlation })) : null,
      suggestion: a
        ? {
            keepHigher: a.suggestion.keep.map((k) => ({ tensor: k.tensor, format: k.precision })),
            bitsPerWeight: a.suggestion.bits_per_weight_quantized,
            passes: a.suggestion.passes,
          }
        : null,
      dynamicActivations: dynamicView(v, summary),
    };
  }

  async run(m: WorkspaceModel, opts: SemanticRunOptions): Promise<void> {
    if (!this.available) throw new CalibscopeError('E_BAD_ARGUMENT', `semantic validation is not available: ${this.reason}`);
    const { queries } = await loadQueries();
    const threshold = m.config.correlation_threshold;
    const share = opts.attribution ? 0.3 : 1;
    const validation = await validateSemanticAlignment(m.path, m.profileDir, queries, {
      threshold,
      cacheDir: opts.cacheDir,
      signal: opts.signal,
      throwOnDrift: false,
      dynamicActivations: opts.dynamicActivations ?? false,
      onProgress: (f, d) => opts.onProgress(share * f, d),
    });
    let attribution: AttributionResult | null = null;
    if (opts.attribution) {
      attribution = await attributeDrift(m.path, m.profileDir, queries, {
        threshold,
        cacheDir: opts.cacheDir,
        signal: opts.signal,
        onProgress: (f, d) => opts.onProgress(share + (1 - share) * f, d),
      });
    }
    // Keyed by the profile as it is now (the validation may just have recorded its result in it).
    const profile = await loadProfile(m.profileDir, { verifyScales: false });
    this.kept.set(m.profileDir, { key: contentKey(profile), validation, attribution });
  }
}

let bridge: SemanticBridge | null = null;

export function semanticSupport(): SemanticSupport {
  bridge ??= new SemanticBridge();
  return bridge;
}
