// Long work as jobs: each has an id, a progress fraction and a cancel switch, and reports through
// events. The work itself runs on the native addon's threads (calibration, encoder) or in async
// I/O, so the process hosting the service keeps answering requests while a job runs.
import crypto from 'node:crypto';
import { asCalibscopeError } from '../util/errors.js';
import type { JobInfo, JobKind, JobPart, RerunResult } from './protocol.js';

export interface JobContext {
  signal: AbortSignal;
  /** Reports progress (0..1) and a short line of what is being done; throttled to ~10 events a second. */
  progress(fraction: number, detail?: string, parts?: JobPart[]): void;
}

export interface JobSpec {
  kind: JobKind;
  label: string;
  modelId?: string | null;
  tensor?: string | null;
  run(ctx: JobContext): Promise<{ rerun?: RerunResult } | void>;
}

export type JobListener = (type: 'job.progress' | 'job.finished', job: JobInfo) => void;

const KEEP_FINISHED = 50;

function snapshot(info: JobInfo): JobInfo {
  return { ...info, parts: info.parts ? info.parts.map((p) => ({ ...p })) : null };
}
const THROTTLE_MS = 100;

export class JobManager {
  private readonly jobs = new Map<string, { info: JobInfo; controller: AbortController; done: Promise<void> }>();

  constructor(private readonly listener: JobListener) {}

  start(spec: JobSpec): JobInfo {
    const info: JobInfo = {
      id: crypto.randomBytes(6).toString('hex'),
      kind: spec.kind,
      label: spec.label,
      modelId: spec.modelId ?? null,
      tensor: spec.tensor ?? null,
      status: 'running',
      progress: 0,
      detail: '',
      startedAt: new Date().toISOString(),
      finishedAt: null,
      error: null,
      rerun: null,
      parts: null,
    };
    const controller = new AbortController();
    let last = 0;
    const ctx: JobContext = {
      signal: controller.signal,
      progress: (fraction, detail, parts) => {
        if (info.status !== 'running') return;
        info.progress = Math.max(0, Math.min(1, Number.isFinite(fraction) ? fraction : 0));
        if (detail !== undefined) info.detail = detail;
        if (parts !== undefined) info.parts = parts.map((p) => ({ ...p }));
        const now = Date.now();
        if (now - last < THROTTLE_MS && info.progress < 1) return;
        last = now;
        this.listener('job.progress', snapshot(info));
      },
    };
    const done = (async () => {
      // Start on the next turn, so the caller gets the job before its first event.
      await new Promise((r) => setImmediate(r));
      try {
        if (controller.signal.aborted) throw Object.assign(new Error('cancelled'), { code: 'E_CANCELLED' });
        const out = await spec.run(ctx);
        if (controller.signal.aborted) throw Object.assign(new Error('cancelled'), { code: 'E_CANCELLED' });
        info.status = 'done';
        info.progress = 1;
        info.rerun = out?.rerun ?? null;
      } catch (err) {
        const e = asCalibscopeError(err);
        info.status = e.code === 'E_CANCELLED' || controller.signal.aborted ? 'cancelled' : 'failed';
        info.error = info.status === 'cancelled' ? { code: 'E_CANCELLED', message: `${info.label}: cancelled`, details: {} } : e.toJSON();
      }
      info.finishedAt = new Date().toISOString();
      this.listener('job.finished', snapshot(info));
      this.prune();
    })();
    this.jobs.set(info.id, { info, controller, done });
    return snapshot(info);
  }

  cancel(id: string): boolean {
    const j = this.jobs.get(id);
    if (!j || j.info.status !== 'running') return false;
    j.controller.abort();
    return true;
  }

  /** The running job of this kind for this model/tensor, so a second click does not start a duplicate. */
  findRunning(kind: JobKind, modelId: string | null, tensor: string | null = null): JobInfo | undefined {
    for (const { info } of this.jobs.values()) {
      if (info.status === 'running' && info.kind === kind && info.modelId === modelId && info.tensor === tensor) return snapshot(info);
    }
    return undefined;
  }

  list(): JobInfo[] {
    return [...this.jobs.values()].map((j) => snapshot(j.info));
  }

  get(id: string): JobInfo | undefined {
    const j = this.jobs.get(id);
    return j ? snapshot(j.info) : undefined;
  }

  /** Resolves when the job has finished (whatever the outcome). */
  async wait(id: string): Promise<JobInfo | undefined> {
    await this.jobs.get(id)?.done;
    return this.get(id);
  }

  /** Cancels every running job and waits for them to stop. */
  async shutdown(): Promise<void> {
    for (const j of this.jobs.values()) if (j.info.status === 'running') j.controller.abort();
    await Promise.all([...this.jobs.values()].map((j) => j.done));
  }

  private prune(): void {
    const finished = [...this.jobs.values()].filter((j) => j.info.status !== 'running');
    for (const j of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) this.jobs.delete(j.info.id);
  }
}
