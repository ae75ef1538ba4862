// The workbench's one typed contract: every request with its parameters and result, every event,
// and the messages that carry them. Electron IPC and the browser mode's WebSocket carry exactly
// these shapes; the renderer imports this file's types only (no runtime code lives here).
import type { BlockPolicy, CalibrationMode, CalibrationResult, ModeDetails, QuantFormat, SignOff, StatisticsRef } from '../calibration/types.js';
import type { ErrorCode } from '../util/errors.js';

export type { BlockPolicy, CalibrationMode, CalibrationResult, ModeDetails, QuantFormat, SignOff, StatisticsRef, WeightingKind } from '../calibration/types.js';
export type SearchMode = 'exact' | 'ternary' | 'naive';

/** An error as it crosses the protocol. */
export interface ProtocolError {
  code: ErrorCode;
  message: string;
  details: Record<string, unknown>;
}

/** State of a model's profile on disk. `draft`: a kept re-run changed it after calibration. */
export type ProfileState = 'missing' | 'valid' | 'stale' | 'corrupt' | 'signed-off';

export interface FormatInfo {
  name: QuantFormat;
  element: string;
  elementMax: number;
  blockSizes: number[];
}

export interface AppInfo {
  version: string;
  /** Which front door the renderer is behind. */
  mode: 'electron' | 'browser';
  cacheDir: string;
  formats: FormatInfo[];
  /** Whether semantic validation (issue: semantic alignment) is built in. */
  semanticAvailable: boolean;
  semanticReason: string | null;
  /** The calibration modes a re-run may choose (docs/modes.md). */
  calibrationModes: CalibrationMode[];
}

/** One row of the model list. */
export interface ModelSummary {
  id: string;
  path: string;
  format: QuantFormat;
  /** The profile's calibration mode ('static' for profiles written before modes existed); with no
   *  profile, the mode a calibration would use. */
  mode: CalibrationMode;
  state: ProfileState;
  /** Why the state is what it is (e.g. "checkpoint changed since calibration"). */
  reason: string | null;
  draft: boolean;
  profilePath: string | null;
  overallMse: number | null;
  overallMseBefore: number | null;
  /** Weighted profiles: the element-weighted mean of the searched objective (null for static). */
  overallObjective: number | null;
  overallObjectiveBefore: number | null;
  meanCorrelation: number | null;
  /** null: nothing to judge yet (no profile or no validation and no MSE threshold). */
  passed: boolean | null;
  tensorCount: number | null;
  review: SignOff | null;
}

export interface Thresholds {
  correlation: number;
  mse: number | null;
}

export interface WorkspaceView {
  kind: 'none' | 'model' | 'pipeline';
  /** The opened pipeline.json or model folder. */
  source: string | null;
  name: string;
  /** True for the embedded tiny demo opened because nothing else was. */
  isDemo: boolean;
  /** The mode Calibrate uses for models that do not name one (the service's configuration). */
  calibrationMode: CalibrationMode;
  thresholds: Thresholds;
  models: ModelSummary[];
}

/** One row of the tensor table: the profile's result plus the arrays' shape. `objective_before`,
 *  `objective_after` and `weighting` are there when the tensor was calibrated in a weighted mode. */
export interface TensorRow extends CalibrationResult {
  rows: number;
  blocks: number;
  /** The mode this tensor was calibrated in: the profile's, or that of a kept re-run. */
  mode: CalibrationMode;
}

export interface ProfileView {
  modelId: string;
  summary: ModelSummary;
  timestamp: string | null;
  configHash: string | null;
  tensors: TensorRow[];
  /** Whether per-block diagnostics (MSE before/after, outliers) were written. */
  hasDiagnostics: boolean;
  /** The profile's exact weighting (null for profiles written before modes existed). */
  modeDetails: ModeDetails | null;
  /** Weighted profiles: the calibration statistics used. */
  statistics: StatisticsRef | null;
}

export type GridMetric = 'scale' | 'mse_before' | 'mse_after' | 'improvement' | 'outliers';

/** What colours a cell that covers several blocks: their mean, min, max, or the block furthest
 *  (on a log scale) from the metric's centre — 1× for improvement, the tensor's median scale for
 *  scales; for the error metrics and outliers, which have no centre, the largest (as max). */
export type GridAggregate = 'mean' | 'min' | 'max' | 'extreme';

export interface GridRequest {
  modelId: string;
  tensor: string;
  metric: GridMetric;
  /** Half-open ranges of rows and blocks to show; the whole tensor when omitted. */
  rowStart?: number;
  rowEnd?: number;
  blockStart?: number;
  blockEnd?: number;
  /** Screen resolution: at most this many cells in each direction. */
  maxRows: number;
  maxCols: number;
  /** Default: the one that shows outlier blocks — max for MSE and outliers, extreme for scale and improvement. */
  aggregate?: GridAggregate;
}

/** A rows × blocks grid, downsampled to screen resolution: each cell covers `cellRows` × `cellBlocks`
 *  blocks of the tensor (the last row/column of cells may cover fewer) and holds their min, max and mean. */
export interface GridView {
  modelId: string;
  tensor: string;
  metric: GridMetric;
  /** The tensor's full per-block shape. */
  totalRows: number;
  totalBlocks: number;
  rowStart: number;
  rowEnd: number;
  blockStart: number;
  blockEnd: number;
  cellRows: number;
  cellBlocks: number;
  nRows: number;
  nCols: number;
  /** Row-major nRows × nCols; null where every block of the cell is undefined (e.g. improvement 0/0). */
  mean: (number | null)[];
  min: (number | null)[];
  max: (number | null)[];
  /** The aggregate the colours show, and its values (row-major, as `mean`). */
  aggregate: GridAggregate;
  value: (number | null)[];
  /** Where each shown value comes from: its block's flat index, row × totalBlocks + block
   *  (null for the mean and for empty cells). */
  valueAt: (number | null)[];
  /** What `extreme` measures from: 1 for improvement, the tensor's median scale for scale, else null. */
  center: number | null;
  /** True when every cell is one block (no downsampling): the values are the exact per-block values. */
  exact: boolean;
  /** Min and max over the whole tensor, so the colour scale stays put while zooming. */
  fullMin: number | null;
  fullMax: number | null;
}

/** Every metric of one block, exactly as stored. */
export interface BlockDetail {
  modelId: string;
  tensor: string;
  row: number;
  block: number;
  /** First and one-past-last column of the block within its row. */
  colStart: number;
  colEnd: number;
  scale: number;
  mseBefore: number | null;
  mseAfter: number | null;
  improvement: number | null;
  outliers: number | null;
}

export interface HistogramView {
  modelId: string;
  tensor: string;
  /** Bin edges of |x·s| (bins + 1 values, linear from 0). */
  edges: number[];
  counts: number[];
  /** The element format's largest value: |x·s| above it is clipped. */
  formatMax: number;
  clipped: number;
  total: number;
}

export interface QueryCorrelation {
  query: string;
  correlation: number;
}

export interface AttributionEntry {
  tensor: string;
  correlation: number;
}

/** Validation with every Linear layer's input also quantized per batch (docs/modes.md). The
 *  summary in profile.json has the two correlations; the rest is there while the service keeps the run. */
export interface DynamicActivationsView {
  meanCorrelation: number;
  minCorrelation: number;
  weightOnlyMeanCorrelation: number | null;
  retrievalAgreement: number | null;
  scaleMin: number | null;
  scaleMax: number | null;
  globalScaleMin: number | null;
  globalScaleMax: number | null;
  clippedFraction: number | null;
  linearsQuantized: number | null;
}

export interface ValidationView {
  available: boolean;
  /** Why validation is not shown (not built in, or not run yet). */
  reason: string | null;
  modelId: string;
  threshold: number;
  meanCorrelation: number | null;
  minCorrelation: number | null;
  retrievalAgreement: number | null;
  perQuery: QueryCorrelation[];
  passed: boolean | null;
  attribution: AttributionEntry[] | null;
  suggestion: { keepHigher: { tensor: string; format: string }[]; bitsPerWeight: number | null; passes: boolean | null } | null;
  dynamicActivations: DynamicActivationsView | null;
}

export type JobKind = 'calibrate-model' | 'calibrate-pipeline' | 'calibrate-tensor' | 'validate' | 'attribute' | 'demo';
export type JobStatus = 'running' | 'done' | 'failed' | 'cancelled';

/** A re-run of one tensor, kept aside until the user keeps or discards it. */
export interface RerunResult {
  rerunId: string;
  modelId: string;
  tensor: string;
  before: CalibrationResult;
  after: CalibrationResult;
  /** The mode of the current result and of the re-run. */
  beforeMode: CalibrationMode;
  mode: CalibrationMode;
}

export interface JobInfo {
  id: string;
  kind: JobKind;
  label: string;
  modelId: string | null;
  tensor: string | null;
  status: JobStatus;
  /** 0..1 */
  progress: number;
  detail: string;
  startedAt: string;
  finishedAt: string | null;
  error: ProtocolError | null;
  rerun: RerunResult | null;
  /** A pipeline job's models, each with its own progress. */
  parts: JobPart[] | null;
}

export interface JobPart {
  id: string;
  progress: number;
  state: 'queued' | 'waiting' | 'checking' | 'calibrating' | 'done' | 'cached' | 'validating' | 'validated' | 'failed';
}

export interface RerunParams {
  modelId: string;
  tensor: string;
  format?: QuantFormat;
  blockSizes?: number[];
  policy?: BlockPolicy;
  search?: SearchMode;
  /** Default: the profile's mode. The weighted modes use the profile's calibration query set. */
  mode?: CalibrationMode;
}

export interface SignOffParams {
  modelId: string;
  reviewer: string;
  decision: 'approved' | 'rejected';
  note: string;
}

/** Every request: its parameters and its result. */
export interface Requests {
  'app.info': { params: Record<string, never>; result: AppInfo };
  'workspace.get': { params: Record<string, never>; result: WorkspaceView };
  'workspace.openModel': { params: { path: string; format?: QuantFormat }; result: WorkspaceView };
  'workspace.openPipeline': { params: { path: string; format?: QuantFormat }; result: WorkspaceView };
  /** Opens the tiny demo pipeline (written into the cache first if needed) and calibrates it: a job. */
  'workspace.openDemo': { params: { format?: QuantFormat }; result: JobInfo };
  'profile.get': { params: { modelId: string }; result: ProfileView };
  'tensor.grid': { params: GridRequest; result: GridView };
  'tensor.block': { params: { modelId: string; tensor: string; row: number; block: number }; result: BlockDetail };
  'tensor.histogram': { params: { modelId: string; tensor: string; bins?: number }; result: HistogramView };
  'calibrate.model': { params: { modelId: string; force?: boolean }; result: JobInfo };
  /** Calibrates every model that needs it; `validate` then runs semantic validation where it is missing. */
  'calibrate.pipeline': { params: { force?: boolean; validate?: boolean }; result: JobInfo };
  'calibrate.tensor': { params: RerunParams; result: JobInfo };
  'rerun.keep': { params: { rerunId: string }; result: ProfileView };
  'rerun.discard': { params: { rerunId: string }; result: { discarded: boolean } };
  'job.cancel': { params: { jobId: string }; result: { cancelled: boolean } };
  'jobs.list': { params: Record<string, never>; result: JobInfo[] };
  'validation.get': { params: { modelId: string }; result: ValidationView };
  /** `dynamicActivations`: also validate with every Linear's input quantized per batch. */
  'validation.run': { params: { modelId: string; attribution?: boolean; dynamicActivations?: boolean }; result: JobInfo };
  'signoff.submit': { params: SignOffParams; result: ProfileView };
}

export type Method = keyof Requests;
export type Params<M extends Method> = Requests[M]['params'];
export type Result<M extends Method> = Requests[M]['result'];

/** Events the service pushes to every connected front end. */
export type ServiceEvent =
  | { type: 'job.progress'; job: JobInfo }
  | { type: 'job.finished'; job: JobInfo }
  | { type: 'profile.changed'; modelId: string }
  | { type: 'workspace.changed'; workspace: WorkspaceView };

/** Wire messages (WebSocket frames as JSON; the Electron utility process's messages). */
export interface RequestMessage<M extends Method = Method> {
  type: 'request';
  id: number;
  method: M;
  params: Params<M>;
}

export type Outcome<T> = { ok: true; result: T } | { ok: false; error: ProtocolError };

export type ResponseMessage = { type: 'response'; id: number } & Outcome<unknown>;
export interface EventMessage {
  type: 'event';
  event: ServiceEvent;
}
export type ServerMessage = ResponseMessage | EventMessage;
