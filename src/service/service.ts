// The workbench service: answers every request of the protocol and pushes events. The Electron
// main process (through a utility process) and the browser mode's WebSocket server both sit on
// top of this one class; nothing here knows which front end asks.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseBackend, type BackendChoice } from '../calibration/backend.js';
import { configHash } from '../calibration/config.js';
import { CALIBRATION_MODES, parseMode } from '../calibration/modes.js';
import type { CalibrationMode } from '../calibration/types.js';
import { SCHEMES } from '../calibration/schemes.js';
import { openCheckpoint } from '../checkpoints/checkpoint.js';
import { openCacheMode, calibrateCached } from '../profiles/cache.js';
import { PROFILE_JSON } from '../profiles/profile_writer.js';
import { loadProfile, signOff } from '../profiles/store.js';
import { CALIBSCOPE_VERSION } from '../version.js';
import { CalibscopeError, asCalibscopeError } from '../util/errors.js';
import { BlockArrayCache, blockDetail, downsampleGrid } from './block_data.js';
import { HistogramCache, scaledHistogram } from './histogram.js';
import { JobManager, type JobSpec } from './jobs.js';
import type {
  AppInfo,
  FormatInfo,
  JobInfo,
  Method,
  Outcome,
  Params,
  ProfileView,
  Result,
  ServiceEvent,
  TensorRow,
  ValidationView,
  WorkspaceView,
} from './protocol.js';
import { runPipelineJob } from './pipeline_job.js';
import { keepRerun, rerunTensor, type PendingRerun } from './rerun.js';
import { openDefaultWorkspace } from './default_workspace.js';
import { semanticSupport } from './semantic.js';
import { validateRequest } from './validate.js';
import { Workspace, tensorMode, type DraftProfile, type WorkspaceModel } from './workspace.js';
import { rowsCols } from '../calibration/tensor_calibration.js';

export interface ServiceOptions {
  cacheDir: string;
  /** The front door (not the calibration mode). */
  mode: AppInfo['mode'];
  /** The calibration mode for models that do not name one (a pipeline manifest's per-model `mode`
   *  wins); default static. */
  calibrationMode?: CalibrationMode;
  /** Where calibrations and re-runs search (docs/backends.md); default auto: the GPU when usable. */
  backend?: BackendChoice;
  /** Jobs running at once that requests may start (default MAX_RUNNING_JOBS). */
  maxRunningJobs?: number;
  /** Finished re-runs kept for Keep / Discard (default MAX_PENDING_RERUNS); the oldest go first. */
  maxPendingReruns?: number;
}

/** Every calibration or validation job reads a checkpoint into memory and keeps the addon's
 *  threads busy: a client flooding job requests (a broken script, a stuck button) gets
 *  E_BAD_ARGUMENT past this many running jobs instead of running the machine out of memory. */
export const MAX_RUNNING_JOBS = 8;
/** Each waiting re-run holds a tensor's scales and diagnostics (MBs for a large embedding). */
export const MAX_PENDING_RERUNS = 32;

/** A file's identity for cache keys: device, inode, size and times to the nanosecond (a rewrite
 *  by rename moves the inode; one in place moves ctime). Null when it cannot be read. */
async function fileIdentity(file: string): Promise<string | null> {
  const st = await fs.promises.stat(file, { bigint: true }).catch(() => null);
  return st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` : null;
}

type Handler<M extends Method> = (params: Params<M>) => Promise<Result<M>>;

export class WorkbenchService {
  readonly cacheDir: string;
  readonly calibrationMode: CalibrationMode;
  readonly backend: BackendChoice;
  private workspace: Workspace;
  private readonly listeners = new Set<(e: ServiceEvent) => void>();
  private readonly jobs: JobManager;
  private readonly blocks = new BlockArrayCache();
  private readonly histograms = new HistogramCache();
  private readonly pending = new Map<string, PendingRerun>();
  private readonly profiles = new Map<string, { key: string; profile: DraftProfile }>();
  private readonly handlers: { [M in Method]: Handler<M> };
  private cacheReadOnly: { errno: string } | null = null;

  constructor(private readonly opts: ServiceOptions) {
    this.cacheDir = opts.cacheDir;
    this.calibrationMode = parseMode(opts.calibrationMode);
    this.backend = parseBackend(opts.backend);
    this.workspace = Workspace.empty(opts.cacheDir, this.calibrationMode);
    this.jobs = new JobManager((type, job) => this.emit({ type, job }));
    this.handlers = {
      'app.info': async () => this.appInfo(),
      'workspace.get': async () => this.workspace.view(),
      'workspace.openModel': async (p) => this.openModel(p.path, p.format),
      'workspace.openPipeline': async (p) => this.openPipeline(p.path, p.format),
      'workspace.openDemo': async (p) => {
        this.admitJob();
        return openDefaultWorkspace(this, p.format);
      },
      'profile.get': async (p) => this.profileView(p.modelId),
      'tensor.grid': async (p) => {
        const { dir, profile } = await this.loadFor(p.modelId);
        this.tensorResult(profile, p.tensor, dir);
        return downsampleGrid(await this.blocks.get(dir, profile, p.tensor), p);
      },
      'tensor.block': async (p) => {
        const { dir, profile } = await this.loadFor(p.modelId);
        this.tensorResult(profile, p.tensor, dir);
        return blockDetail(await this.blocks.get(dir, profile, p.tensor), p.modelId, p.tensor, p.row, p.block);
      },
      'tensor.histogram': async (p) => this.histogram(p.modelId, p.tensor, p.bins ?? 64),
      'calibrate.model': async (p) => this.calibrateModel(p.modelId, p.force ?? false),
      'calibrate.pipeline': async (p) => this.calibratePipeline(p.force ?? false, p.validate ?? false),
      'calibrate.tensor': async (p) => this.startRerun(p),
      'rerun.keep': async (p) => this.keep(p.rerunId),
      'rerun.discard': async (p) => ({ discarded: this.pending.delete(p.rerunId) }),
      'job.cancel': async (p) => ({ cancelled: this.jobs.cancel(p.jobId) }),
      'jobs.list': async () => this.jobs.list(),
      'validation.get': async (p) => this.validationView(p.modelId),
      'validation.run': async (p) => this.startValidation(p.modelId, p.attribution ?? false, p.dynamicActivations ?? false),
      'signoff.submit': async (p) => {
        const m = this.workspace.model(p.modelId);
        await signOff(m.profileDir, { reviewer: p.reviewer.trim(), decision: p.decision, note: p.note }, { checkpoint: m.path, cacheDir: this.cacheDir });
        this.blocks.forget(m.profileDir);
        this.histograms.forget(m.profileDir);
        this.emit({ type: 'profile.changed', modelId: m.id });
        return this.profileView(m.id);
      },
    };
  }

  /** Subscribes to events; returns the unsubscribe function. */
  onEvent(listener: (e: ServiceEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(e: ServiceEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        // A broken front end must not stop the others from hearing about it.
      }
    }
  }

  /** Typed entry point for in-process callers; throws CalibscopeError. */
  async call<M extends Method>(method: M, params: Params<M>): Promise<Result<M>> {
    const handler = this.handlers[method] as Handler<M>;
    return handler(params);
  }

  /** Entry point for transports: validates an untrusted request and never throws. */
  async request(method: unknown, params: unknown): Promise<Outcome<unknown>> {
    try {
      const v = validateRequest(method, params);
      return { ok: true, result: await this.call(v.method, v.params) };
    } catch (err) {
      return { ok: false, error: asCalibscopeError(err).toJSON() };
    }
  }

  async shutdown(): Promise<void> {
    await this.jobs.shutdown();
  }

  waitForJob(id: string): Promise<JobInfo | undefined> {
    return this.jobs.wait(id);
  }

  // ------------------------------------------------------------------------------------------
  // Workspace

  private appInfo(): AppInfo {
    const sem = semanticSupport();
    const formats: FormatInfo[] = Object.values(SCHEMES).map((s) => ({ name: s.name, element: s.element, elementMax: s.elementMax, blockSizes: [...s.blockSizes] }));
    return {
      version: CALIBSCOPE_VERSION,
      mode: this.opts.mode,
      cacheDir: this.cacheDir,
      formats,
      semanticAvailable: sem.available,
      semanticReason: sem.reason,
      calibrationModes: [...CALIBRATION_MODES],
    };
  }

  private async setWorkspace(w: Workspace): Promise<WorkspaceView> {
    // A read-only cache (a CI artifact, another user's) still shows its valid profiles; only
    // writing to it fails, with E_IO saying so.
    this.cacheReadOnly = (await openCacheMode(this.cacheDir)).readOnly;
    this.workspace = w;
    this.pending.clear();
    const view = await w.view();
    this.emit({ type: 'workspace.changed', workspace: view });
    return view;
  }

  async openModel(modelPath: string, format?: string): Promise<WorkspaceView> {
    return this.setWorkspace(await Workspace.fromModel(modelPath, format, this.cacheDir, this.calibrationMode, this.backend));
  }

  async openPipeline(file: string, format?: string, isDemo = false): Promise<WorkspaceView> {
    return this.setWorkspace(await Workspace.fromPipeline(file, format, this.cacheDir, isDemo, this.calibrationMode, this.backend));
  }

  get current(): Workspace {
    return this.workspace;
  }

  /** `fileKey`: profile.json's identity (inode, size, times) when it was read. */
  private async loadFor(modelId: string): Promise<{ m: WorkspaceModel; dir: string; profile: DraftProfile; fileKey: string }> {
    const m = this.workspace.model(modelId);
    try {
      // Hover and zoom ask many times a second: profile.json is parsed again only when it changed
      // (any rewrite is a rename, so the inode or ctime moves). The scales checksum is verified by
      // profileStatus in the model list; here only the JSON is read.
      const key = (await fileIdentity(path.join(m.profileDir, PROFILE_JSON))) ?? '';
      const hit = this.profiles.get(m.profileDir);
      if (hit && key && hit.key === key) return { m, dir: m.profileDir, profile: hit.profile, fileKey: key };
      const profile = (await loadProfile(m.profileDir, { verifyScales: false })) as DraftProfile;
      if (key) this.profiles.set(m.profileDir, { key, profile });
      // Without a stat the profile's own identity must do; such a key never equals a stat's.
      return { m, dir: m.profileDir, profile, fileKey: key || `unstated:${profile.timestamp}:${profile.scales_sha256}` };
    } catch (err) {
      const e = asCalibscopeError(err);
      if (e.code === 'E_NOT_FOUND') throw new CalibscopeError('E_NOT_FOUND', `model '${modelId}' has no profile yet: calibrate it first`, { model: modelId });
      throw e;
    }
  }

  private tensorResult(profile: DraftProfile, tensor: string, dir: string) {
    const r = profile.tensor_calibrations[tensor];
    if (!r) throw new CalibscopeError('E_NOT_FOUND', `profile ${dir}: tensor '${tensor}' was not calibrated`, { tensor, path: dir });
    return r;
  }

  async profileView(modelId: string): Promise<ProfileView> {
    const m = this.workspace.model(modelId);
    const st = await this.workspace.status(m);
    const summary = await this.workspace.summary(m, st);
    const p = st.profile;
    const tensors: TensorRow[] = p
      ? Object.values(p.tensor_calibrations).map((r) => {
          const { rows, cols } = rowsCols(r.shape);
          return { ...r, rows, blocks: Math.ceil(cols / r.block_size), mode: tensorMode(p, r.tensor_name) };
        })
      : [];
    let hasDiagnostics = false;
    if (p && tensors.length > 0) {
      const a = await this.blocks.get(m.profileDir, p, tensors[0].tensor_name).catch(() => null);
      hasDiagnostics = Boolean(a?.mseBefore);
    }
    return {
      modelId,
      summary,
      timestamp: p?.timestamp ?? null,
      configHash: p ? configHash(m.config) : null,
      tensors,
      hasDiagnostics,
      modeDetails: p?.mode_details ?? null,
      statistics: p?.statistics ?? null,
    };
  }

  // ------------------------------------------------------------------------------------------
  // Per-tensor data

  /** Cached: each computation reads the whole tensor from the checkpoint and scans it twice (tens
   *  of ms for 30522 × 384), and a reviewer goes back and forth between tensors. The key holds
   *  everything the counts depend on, so a kept re-run, a recalibration, a sign-off or a changed
   *  checkpoint misses rather than serving a stale histogram. */
  private async histogram(modelId: string, tensor: string, bins: number) {
    const { m, dir, profile, fileKey } = await this.loadFor(modelId);
    const r = this.tensorResult(profile, tensor, dir);
    const ckpt = await openCheckpoint(m.path);
    try {
      const info = ckpt.tensor(tensor);
      if (!info) throw new CalibscopeError('E_NOT_FOUND', `${ckpt.root}: the checkpoint has no tensor '${tensor}'`, { tensor });
      // profile.json is rewritten (a new inode) whenever its scales are; the weights are named by
      // file, place and the file's identity.
      const key = [tensor, bins, fileKey, info.file, info.dtype, info.byteOffset, info.byteLength, await fileIdentity(info.file)].join('\0');
      const h = await this.histograms.get(dir, key, async () => {
        const blocks = await this.blocks.get(dir, profile, tensor);
        return scaledHistogram(await ckpt.readTensor(info), info.dtype, blocks, r, bins);
      });
      return { modelId, tensor, ...h };
    } finally {
      await ckpt.close();
    }
  }

  // ------------------------------------------------------------------------------------------
  // Jobs

  private modelChanged(m: WorkspaceModel): void {
    this.blocks.forget(m.profileDir);
    this.histograms.forget(m.profileDir);
    this.emit({ type: 'profile.changed', modelId: m.id });
  }

  private calibrateModel(modelId: string, force: boolean): JobInfo {
    const m = this.workspace.model(modelId);
    const running = this.jobs.findRunning('calibrate-model', m.id);
    if (running) return running;
    this.admitJob();
    return this.jobs.start({
      kind: 'calibrate-model',
      label: `calibrate ${m.id} (${m.config.format}${m.config.mode && m.config.mode !== 'static' ? `, ${m.config.mode}` : ''})`,
      modelId: m.id,
      run: async (ctx) => {
        try {
          await calibrateCached({
            cacheDir: this.cacheDir,
            readOnly: this.cacheReadOnly,
            model: m.path,
            modelId: m.id,
            config: m.config,
            force,
            signal: ctx.signal,
            onPhase: (phase) => ctx.progress(0, phase),
            onProgress: (p) => ctx.progress(p.elementsTotal > 0 ? p.elementsDone / p.elementsTotal : 1, `${p.tensorsDone}/${p.tensorsTotal} ${p.tensor ?? ''}`),
          });
        } finally {
          this.modelChanged(m);
        }
      },
    });
  }

  /** `admit`: false for the demo job's own follow-up, which is not a client's request. */
  private calibratePipeline(force: boolean, validate: boolean, admit = true): JobInfo {
    const ws = this.workspace;
    if (ws.models.length === 0) throw new CalibscopeError('E_BAD_ARGUMENT', 'nothing is open: open a model folder or a pipeline first');
    const running = this.jobs.findRunning('calibrate-pipeline', null);
    if (running) return running;
    if (admit) this.admitJob();
    const sem = semanticSupport();
    return this.jobs.start({
      kind: 'calibrate-pipeline',
      label: `calibrate ${ws.name} (${ws.models.length} models)${validate && sem.available ? ' and validate' : ''}`,
      run: (ctx) =>
        runPipelineJob(ws, ctx, {
          cacheDir: this.cacheDir,
          readOnly: this.cacheReadOnly,
          force,
          semantic: validate && sem.available ? sem : null,
          onModelChanged: (m) => this.modelChanged(m),
        }),
    });
  }

  private startRerun(p: Params<'calibrate.tensor'>): JobInfo {
    const m = this.workspace.model(p.modelId);
    this.admitJob();
    const settings = [p.format, p.blockSizes?.join('/'), p.policy, p.search, p.mode].filter(Boolean).join(', ');
    return this.jobs.start({
      kind: 'calibrate-tensor',
      label: `re-run ${p.tensor}${settings ? ` (${settings})` : ''}`,
      modelId: m.id,
      tensor: p.tensor,
      run: async (ctx) => {
        const out = await rerunTensor(m, p, this.cacheDir, ctx.signal, (f, d) => ctx.progress(f, d));
        const rerunId = crypto.randomBytes(8).toString('hex');
        this.pending.set(rerunId, {
          rerunId,
          model: m,
          baseTimestamp: out.baseTimestamp,
          before: out.before,
          tc: out.tc,
          mode: out.mode,
          statisticsHash: out.statisticsHash,
        });
        // Maps iterate in insertion order: the first keys are the oldest re-runs.
        for (const old of this.pending.keys()) {
          if (this.pending.size <= this.maxPendingReruns) break;
          this.pending.delete(old);
        }
        return { rerun: { rerunId, modelId: m.id, tensor: p.tensor, before: out.before, after: out.tc.result, beforeMode: out.beforeMode, mode: out.mode } };
      },
    });
  }

  private async keep(rerunId: string): Promise<ProfileView> {
    const pending = this.pending.get(rerunId);
    if (!pending) throw new CalibscopeError('E_NOT_FOUND', `no re-run ${rerunId} is waiting to be kept (already kept, discarded, another workspace was opened, or dropped as the oldest of more than ${this.maxPendingReruns} waiting)`);
    // Only the workspace's own model object may be written, in case the workspace changed meanwhile.
    const m = this.workspace.model(pending.model.id);
    if (m.profileDir !== pending.model.profileDir) throw new CalibscopeError('E_NOT_FOUND', `re-run ${rerunId} belongs to a workspace that is no longer open`);
    await keepRerun(pending);
    this.pending.delete(rerunId);
    this.modelChanged(m);
    return this.profileView(m.id);
  }

  // ------------------------------------------------------------------------------------------
  // Semantic validation

  private async validationView(modelId: string): Promise<ValidationView> {
    const m = this.workspace.model(modelId);
    const sem = semanticSupport();
    const st = await this.workspace.status(m);
    return sem.view(m, st.profile);
  }

  private startValidation(modelId: string, attribution: boolean, dynamicActivations: boolean): JobInfo {
    const m = this.workspace.model(modelId);
    const sem = semanticSupport();
    if (!sem.available) throw new CalibscopeError('E_BAD_ARGUMENT', `semantic validation is not available: ${sem.reason}`);
    this.admitJob();
    return this.jobs.start({
      kind: attribution ? 'attribute' : 'validate',
      label: `${attribution ? 'attribute drift of' : 'validate'} ${m.id}${dynamicActivations ? ' (with dynamic activations)' : ''}`,
      modelId: m.id,
      run: async (ctx) => {
        try {
          await sem.run(m, { attribution, dynamicActivations, signal: ctx.signal, cacheDir: this.cacheDir, onProgress: (f, d) => ctx.progress(f, d) });
        } finally {
          this.modelChanged(m);
        }
      },
    });
  }

  /** Runs work as a job of this service (progress events, cancellation). */
  startJob(spec: JobSpec): JobInfo {
    return this.jobs.start(spec);
  }

  /** Starts a calibration of every model of the open workspace that needs one (a job). */
  calibrateAll(validate = true): JobInfo {
    return this.calibratePipeline(false, validate, false);
  }

  private get maxRunningJobs(): number {
    return this.opts.maxRunningJobs ?? MAX_RUNNING_JOBS;
  }

  private get maxPendingReruns(): number {
    return this.opts.maxPendingReruns ?? MAX_PENDING_RERUNS;
  }

  /** Refuses a request that would start a job beyond the cap (a protocol error, nothing started). */
  private admitJob(): void {
    const running = this.jobs.list().filter((j) => j.status === 'running').length;
    if (running >= this.maxRunningJobs) {
      throw new CalibscopeError('E_BAD_ARGUMENT', `${running} jobs are running, the most at once: wait for one to finish, or cancel one, then ask again`, {
        running,
        limit: this.maxRunningJobs,
      });
    }
  }
}
