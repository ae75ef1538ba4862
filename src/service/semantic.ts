// The service's bridge to semantic validation and drift attribution (src/semantic). Until the
// encoder and validation are built in, the correlation panel says so instead of showing numbers;
// a correlation recorded in the profile (e.g. by `calibscope validate`) is shown either way.
import type { ModelCalibrationProfile } from '../calibration/types.js';
import type { ValidationView } from './protocol.js';
import type { WorkspaceModel } from './workspace.js';

export interface SemanticRunOptions {
  attribution: boolean;
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

const NOT_BUILT = 'semantic validation (FP16 vs quantized embeddings, drift attribution) is not built into this calibscope yet';

function emptyView(m: WorkspaceModel, profile: ModelCalibrationProfile | null, reason: string): ValidationView {
  const mean = profile?.semantic_correlation ?? null;
  const threshold = m.config.correlation_threshold;
  return {
    available: false,
    reason,
    modelId: m.id,
    threshold,
    meanCorrelation: mean,
    minCorrelation: null,
    retrievalAgreement: null,
    perQuery: [],
    passed: mean === null ? null : mean >= threshold,
    attribution: null,
    suggestion: null,
  };
}

export function semanticSupport(): SemanticSupport {
  return {
    available: false,
    reason: NOT_BUILT,
    view: (m, profile) => emptyView(m, profile, NOT_BUILT),
    run: async () => {
      throw Object.assign(new Error(NOT_BUILT), { code: 'E_BAD_ARGUMENT' });
    },
  };
}
