// What the workbench has open: one model folder or a pipeline manifest, each model with its
// resolved config and the cache folder its profile lives in, and the state of every profile.
import path from 'node:path';
import type { BackendChoice } from '../calibration/backend.js';
import { makeConfig } from '../calibration/config.js';
import type { CalibrationConfig, CalibrationMode, ModelCalibrationProfile } from '../calibration/types.js';
import { openCheckpoint } from '../checkpoints/checkpoint.js';
import { loadManifest, resolveModels, type ResolvedModel } from '../pipeline/manifest.js';
import { cachedProfileDir } from '../profiles/cache.js';
import { profileStatus } from '../profiles/store.js';
import { configHash } from '../calibration/config.js';
import { CalibscopeError, asCalibscopeError } from '../util/errors.js';
import type { ModelSummary, ProfileState, Thresholds, WorkspaceView } from './protocol.js';

export interface WorkspaceModel {
  id: string;
  path: string;
  config: CalibrationConfig;
  profileDir: string;
}

/** What a kept re-run records in profile.json: the profile is a draft made from another one. */
export interface DraftRecord {
  based_on: string;
  changed_tensors: string[];
  time: string;
  previous_review: ModelCalibrationProfile['review'];
  /** The mode each kept re-run used (it may differ from the profile's), with the hash of the
   *  calibration statistics it was weighted by (null for static). Absent in older drafts. */
  tensor_modes?: Record<string, { mode: CalibrationMode; statistics_hash: string | null }>;
}

export type DraftProfile = ModelCalibrationProfile & { draft?: DraftRecord };

/** A profile's calibration mode: profiles written before modes existed are static. */
export function profileMode(p: ModelCalibrationProfile): CalibrationMode {
  return p.mode ?? p.config.mode ?? 'static';
}

/** The mode one tensor of a profile was calibrated in: a kept re-run's, else the profile's. */
export function tensorMode(p: DraftProfile, tensor: string): CalibrationMode {
  return p.draft?.tensor_modes?.[tensor]?.mode ?? profileMode(p);
}

export const DEFAULT_FORMAT = 'fp4';

export interface ModelStatus {
  state: ProfileState;
  reason: string;
  profile: DraftProfile | null;
}

export class Workspace {
  private constructor(
    readonly kind: WorkspaceView['kind'],
    readonly source: string | null,
    readonly name: string,
    readonly isDemo: boolean,
    readonly cacheDir: string,
    readonly calibrationMode: CalibrationMode,
    readonly models: WorkspaceModel[],
    readonly resolved: ResolvedModel[],
  ) {}

  static empty(cacheDir: string, mode: CalibrationMode = 'static'): Workspace {
    return new Workspace('none', null, 'nothing opened', false, cacheDir, mode, [], []);
  }

  /** `mode` applies to the models that do not name their own in the manifest; `backend` to all. */
  static async fromPipeline(
    file: string,
    format: string | undefined,
    cacheDir: string,
    isDemo = false,
    mode: CalibrationMode = 'static',
    backend: BackendChoice = 'auto',
  ): Promise<Workspace> {
    const manifest = await loadManifest(file);
    const resolved = resolveModels(manifest, { format: format ?? DEFAULT_FORMAT, mode, backend });
    const models = resolved.map((r) => ({
      id: r.entry.id,
      path: r.entry.path,
      config: r.config,
      profileDir: cachedProfileDir(cacheDir, r.entry.id, r.config),
    }));
    const name = isDemo ? 'demo pipeline (tiny)' : path.basename(path.dirname(manifest.file)) || path.basename(manifest.file);
    return new Workspace('pipeline', manifest.file, name, isDemo, cacheDir, mode, models, resolved);
  }

  static async fromModel(
    modelPath: string,
    format: string | undefined,
    cacheDir: string,
    mode: CalibrationMode = 'static',
    backend: BackendChoice = 'auto',
  ): Promise<Workspace> {
    const ckpt = await openCheckpoint(modelPath);
    const abs = ckpt.root;
    const id = ckpt.modelId;
    await ckpt.close();
    const config = makeConfig({ format: format ?? DEFAULT_FORMAT, mode, backend });
    const model: WorkspaceModel = { id, path: path.resolve(modelPath), config, profileDir: cachedProfileDir(cacheDir, id, config) };
    const resolved: ResolvedModel = { entry: { id, path: model.path }, config };
    return new Workspace('model', path.resolve(modelPath), path.basename(abs), false, cacheDir, mode, [model], [resolved]);
  }

  model(id: string): WorkspaceModel {
    const m = this.models.find((x) => x.id === id);
    if (!m) throw new CalibscopeError('E_NOT_FOUND', `model '${id}' is not open in the workbench`, { model: id });
    return m;
  }

  thresholds(): Thresholds {
    const c = this.models[0]?.config;
    return { correlation: c?.correlation_threshold ?? 0.99, mse: c?.mse_threshold ?? null };
  }

  /** The profile's state against the checkpoint as it is now. */
  async status(m: WorkspaceModel): Promise<ModelStatus> {
    try {
      const st = await profileStatus(m.profileDir, m.path, { cacheDir: this.cacheDir, expectConfigHash: configHash(m.config), expectModelId: m.id });
      return { state: st.state, reason: st.reason, profile: st.profile as DraftProfile | null };
    } catch (err) {
      // A profile from a newer calibscope, or a checkpoint that cannot be read: shown, not thrown.
      return { state: 'corrupt', reason: asCalibscopeError(err).message, profile: null };
    }
  }

  async summary(m: WorkspaceModel, st?: ModelStatus): Promise<ModelSummary> {
    const s = st ?? (await this.status(m));
    const p = s.profile;
    const corr = p?.semantic_correlation ?? null;
    const mseTh = m.config.mse_threshold;
    let passed: boolean | null = null;
    if (p && (corr !== null || mseTh !== null)) {
      passed = (corr === null || corr >= m.config.correlation_threshold) && (mseTh === null || p.overall_mse <= mseTh);
    }
    return {
      id: m.id,
      path: m.path,
      format: m.config.format,
      mode: p ? profileMode(p) : (m.config.mode ?? 'static'),
      state: s.state,
      reason: s.reason,
      draft: Boolean(p?.draft),
      profilePath: p ? m.profileDir : null,
      overallMse: p?.overall_mse ?? null,
      overallMseBefore: p?.overall_mse_before ?? null,
      overallObjective: p?.overall_objective ?? null,
      overallObjectiveBefore: p?.overall_objective_before ?? null,
      meanCorrelation: corr,
      passed,
      tensorCount: p ? Object.keys(p.tensor_calibrations).length : null,
      review: p?.review ?? null,
    };
  }

  async view(): Promise<WorkspaceView> {
    return {
      kind: this.kind,
      source: this.source,
      name: this.name,
      isDemo: this.isDemo,
      calibrationMode: this.calibrationMode,
      thresholds: this.thresholds(),
      models: await Promise.all(this.models.map((m) => this.summary(m))),
    };
  }
}
