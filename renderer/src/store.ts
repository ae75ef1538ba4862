// The workbench's state (zustand): what is open and selected, the loaded views, jobs and toasts,
// and the actions that ask the service for more. DOM-free, so it runs (and is tested) under Node
// against the real service through an in-process transport.
import { createStore, type StoreApi } from 'zustand/vanilla';
import type {
  AppInfo,
  BlockDetail,
  BlockPolicy,
  CalibrationMode,
  GridAggregate,
  GridMetric,
  GridView,
  HistogramView,
  JobInfo,
  Method,
  Params,
  ProfileView,
  ProtocolError,
  QuantFormat,
  RerunParams,
  RerunResult,
  Result,
  SearchMode,
  ServiceEvent,
  SignOffParams,
  TensorRow,
  ValidationView,
  WorkspaceView,
} from '../../src/service/protocol';
import type { ConnectionState, Transport } from './transport';

export type SortKey = 'tensor_name' | 'numel' | 'block_size' | 'mse_before' | 'mse_after' | 'improvement_ratio' | 'outlier_count' | 'bits_per_weight';
export type ThemePref = 'auto' | 'light' | 'dark';
export type Tab = 'heatmap' | 'correlation' | 'mse';

export interface Toast {
  id: number;
  kind: 'error' | 'info';
  text: string;
  code?: string;
}

export interface GridWindow {
  rowStart?: number;
  rowEnd?: number;
  blockStart?: number;
  blockEnd?: number;
}

/** The re-run form's choices; '' everywhere means "as the profile has it". */
export interface RerunForm {
  format: QuantFormat | '';
  /** One block size, or '' to search the format's sizes. */
  blockSize: string;
  policy: BlockPolicy | '';
  search: SearchMode | '';
  mode: CalibrationMode | '';
}

export const RERUN_FORM_DEFAULTS: Readonly<RerunForm> = { format: '', blockSize: '', policy: '', search: '', mode: '' };

/** The calibrate.tensor settings the form asks for: only what differs from the profile. */
export function rerunSettings(f: RerunForm): Omit<RerunParams, 'modelId' | 'tensor'> {
  return {
    ...(f.format ? { format: f.format } : {}),
    ...(f.blockSize ? { blockSizes: [Number(f.blockSize)] } : {}),
    ...(f.policy ? { policy: f.policy } : {}),
    ...(f.search ? { search: f.search } : {}),
    ...(f.mode ? { mode: f.mode } : {}),
  };
}

export interface WorkbenchState {
  connection: ConnectionState;
  info: AppInfo | null;
  workspace: WorkspaceView | null;
  selectedModel: string | null;
  profile: ProfileView | null;
  /** The highlighted row of the tensor table (keyboard cursor). */
  cursor: string | null;
  selectedTensor: string | null;
  sort: { key: SortKey; dir: 'asc' | 'desc' };
  filter: string;
  metric: GridMetric;
  /** Per metric, the aggregate the user chose for cells covering several blocks; a metric not
   *  here gets the service's default (the one that shows the worst block, named in the grid). */
  aggregates: Partial<Record<GridMetric, GridAggregate>>;
  gridWindow: GridWindow;
  /** Bumped whenever the window goes back to the whole tensor by other means than the plot's own
   *  zoom (Reset zoom, a new selection, a rewritten profile): the heatmap's axes follow it then,
   *  instead of keeping the range the user last zoomed to. */
  viewRev: number;
  gridSize: { rows: number; cols: number };
  grid: GridView | null;
  gridLoading: boolean;
  /** ms from the grid request to its data (for the heatmap's first-paint timing). */
  gridFetchMs: number | null;
  hover: BlockDetail | null;
  histogram: HistogramView | null;
  validation: ValidationView | null;
  jobs: Record<string, JobInfo>;
  /** Finished re-runs waiting for keep / discard, by rerunId. */
  reruns: Record<string, RerunResult>;
  toasts: Toast[];
  /** Back to RERUN_FORM_DEFAULTS whenever another tensor (or model) is selected: a re-run starts
   *  from the selected tensor's own settings, not the last tensor's choices. */
  rerunForm: RerunForm;
  tab: Tab;
  theme: ThemePref;

  init(): Promise<void>;
  selectModel(id: string | null): Promise<void>;
  selectTensor(name: string | null): Promise<void>;
  moveCursor(delta: number): void;
  openCursor(): Promise<void>;
  setSort(key: SortKey): void;
  setFilter(text: string): void;
  setMetric(m: GridMetric): Promise<void>;
  /** The aggregate of the current metric. */
  setAggregate(a: GridAggregate): Promise<void>;
  setTab(t: Tab): void;
  setTheme(t: ThemePref): void;
  setGridSize(rows: number, cols: number): Promise<void>;
  zoom(w: GridWindow): Promise<void>;
  hoverBlock(row: number, block: number): Promise<void>;
  clearHover(): void;
  calibrateModel(id: string, force?: boolean): Promise<void>;
  /** Calibrates what needs it, then validates (where semantic validation is built in). */
  calibratePipeline(force?: boolean): Promise<void>;
  cancelJob(id: string): Promise<void>;
  /** A new format also resets the block size (the sizes differ per format). */
  setRerunForm(patch: Partial<RerunForm>): void;
  rerun(p: Omit<RerunParams, 'modelId' | 'tensor'>): Promise<JobInfo | null>;
  keepRerun(rerunId: string): Promise<void>;
  discardRerun(rerunId: string): Promise<void>;
  signOff(p: Omit<SignOffParams, 'modelId'>): Promise<boolean>;
  /** True when it opened; a failure is a toast. */
  openModel(path: string, format?: string): Promise<boolean>;
  openPipeline(path: string, format?: string): Promise<boolean>;
  /** `dynamicActivations`: also with every Linear's input quantized per batch. */
  runValidation(attribution: boolean, dynamicActivations?: boolean): Promise<void>;
  /** Info toasts go after TOAST_MS.info, errors after TOAST_MS.error (not while held); an equal
   *  toast replaces the one shown rather than stacking up. */
  toast(kind: Toast['kind'], text: string, code?: string): void;
  dismissToast(id: number): void;
  /** While held (the pointer is over the toasts), none expires, so one being read stays. */
  holdToasts(held: boolean): void;
}

export type WorkbenchStore = StoreApi<WorkbenchState>;

function sortValue(t: TensorRow, key: SortKey): number | string {
  switch (key) {
    case 'tensor_name':
      return t.tensor_name;
    case 'improvement_ratio':
      return t.improvement_ratio ?? Infinity;
    default:
      return t[key];
  }
}

/** The tensor table's rows: filtered by name (case-insensitive substring) and sorted. */
export function visibleTensors(tensors: readonly TensorRow[], filter: string, sort: WorkbenchState['sort']): TensorRow[] {
  const f = filter.trim().toLowerCase();
  const rows = f ? tensors.filter((t) => t.tensor_name.toLowerCase().includes(f)) : [...tensors];
  const sign = sort.dir === 'asc' ? 1 : -1;
  rows.sort((a, b) => {
    const x = sortValue(a, sort.key);
    const y = sortValue(b, sort.key);
    const c = typeof x === 'string' ? x.localeCompare(y as string) : x === y ? 0 : x < (y as number) ? -1 : 1;
    return c !== 0 ? sign * c : a.tensor_name.localeCompare(b.tensor_name);
  });
  return rows;
}

const THEME_KEY = 'calibscope.theme';

function savedTheme(): ThemePref {
  try {
    const v = globalThis.localStorage?.getItem(THEME_KEY);
    return v === 'light' || v === 'dark' ? v : 'auto';
  } catch {
    return 'auto';
  }
}

let toastId = 1;

/** How long a toast stays. Errors stay longer, but not for good: they sit over the screen. */
export const TOAST_MS: Record<Toast['kind'], number> = { info: 4000, error: 20000 };

/** A timer that does not keep Node alive (the store also runs in tests). */
function later(fn: () => void, ms: number): void {
  const h = setTimeout(fn, ms) as unknown as { unref?: () => void };
  h.unref?.();
}

export function createWorkbenchStore(transport: Transport): WorkbenchStore {
  // Sequence numbers: a response for an older selection is dropped.
  let gridSeq = 0;
  let hoverSeq = 0;
  let profileSeq = 0;
  let refreshTimer: ReturnType<typeof setTimeout> | null = null;
  let toastsHeld = false;
  let subscribe = () => undefined as void;

  const store = createStore<WorkbenchState>()((set, get) => {
    /** Calls the service; a failure becomes a toast and null. */
    async function call<M extends Method>(method: M, params: Params<M>, quiet = false): Promise<Result<M> | null> {
      const out = await transport.request(method, params);
      if (out.ok) return out.result;
      if (!quiet) showError(out.error);
      return null;
    }
    function showError(e: ProtocolError) {
      get().toast('error', e.message, e.code);
    }
    /** True (and says so) while the connection to the service is lost. */
    function offline(): boolean {
      if (get().connection !== 'closed') return false;
      get().toast('error', 'not connected to the calibscope service; reconnecting… (what is shown is as last loaded)', 'E_IO');
      return true;
    }

    async function loadGrid() {
      const s = get();
      if (!s.selectedModel || !s.selectedTensor) return;
      const seq = ++gridSeq;
      set({ gridLoading: true });
      const t0 = Date.now();
      const g = await call('tensor.grid', {
        modelId: s.selectedModel,
        tensor: s.selectedTensor,
        metric: s.metric,
        aggregate: s.aggregates[s.metric],
        ...s.gridWindow,
        maxRows: Math.max(1, Math.min(4096, Math.round(s.gridSize.rows))),
        maxCols: Math.max(1, Math.min(4096, Math.round(s.gridSize.cols))),
      });
      if (seq !== gridSeq) return;
      set({ grid: g, gridLoading: false, gridFetchMs: Date.now() - t0 });
    }

    async function loadTensorViews() {
      const s = get();
      if (!s.selectedModel || !s.selectedTensor) return;
      const model = s.selectedModel;
      const tensor = s.selectedTensor;
      // The histogram after the grid: the heatmap is what the reviewer looks at first, and the
      // histogram's read of the whole tensor and its two passes would compete with it for the cores.
      await loadGrid();
      if (get().selectedModel !== model || get().selectedTensor !== tensor) return;
      const h = await call('tensor.histogram', { modelId: model, tensor });
      if (get().selectedModel === model && get().selectedTensor === tensor) set({ histogram: h });
    }

    async function loadProfile(keepTensor: boolean) {
      const id = get().selectedModel;
      if (!id) return;
      const seq = ++profileSeq;
      const p = await call('profile.get', { modelId: id });
      if (seq !== profileSeq || get().selectedModel !== id) return;
      const prev = get().selectedTensor;
      const still = keepTensor && prev && p?.tensors.some((t) => t.tensor_name === prev) ? prev : null;
      set({ profile: p });
      const v = await call('validation.get', { modelId: id }, true);
      if (get().selectedModel === id) set({ validation: v });
      if (still) {
        set({ gridWindow: {}, viewRev: get().viewRev + 1, hover: null });
        await loadTensorViews();
      } else {
        // Open the worst tensor, so the heatmap is never empty while a profile is shown.
        const first = p ? visibleTensors(p.tensors, get().filter, get().sort)[0] : undefined;
        await get().selectTensor(first ? first.tensor_name : null);
      }
    }

    function refreshWorkspaceSoon() {
      if (refreshTimer) return;
      refreshTimer = setTimeout(async () => {
        refreshTimer = null;
        const w = await call('workspace.get', {}, true);
        if (w) set({ workspace: w });
      }, 150);
    }

    function onEvent(e: ServiceEvent) {
      switch (e.type) {
        case 'job.progress':
          set({ jobs: { ...get().jobs, [e.job.id]: e.job } });
          return;
        case 'job.finished': {
          set({ jobs: { ...get().jobs, [e.job.id]: e.job } });
          if (e.job.status === 'failed' && e.job.error) showError(e.job.error);
          if (e.job.status === 'cancelled') get().toast('info', `${e.job.label}: cancelled`);
          if (e.job.status === 'done' && e.job.rerun) set({ reruns: { ...get().reruns, [e.job.rerun.rerunId]: e.job.rerun } });
          return;
        }
        case 'profile.changed':
          refreshWorkspaceSoon();
          if (e.modelId === get().selectedModel) void loadProfile(true);
          return;
        case 'workspace.changed': {
          set({ workspace: e.workspace, reruns: {} });
          const sel = get().selectedModel;
          if (!sel || !e.workspace.models.some((m) => m.id === sel)) void get().selectModel(e.workspace.models[0]?.id ?? null);
          return;
        }
      }
    }

    subscribe = () => {
      transport.onEvent(onEvent);
      transport.onConnection((c) => {
        const was = get().connection;
        set({ connection: c });
        // After a reconnect the service may have moved on: fetch everything again.
        if (c === 'open' && was === 'closed') void get().init();
      });
    };

    return {
      connection: 'connecting',
      info: null,
      workspace: null,
      selectedModel: null,
      profile: null,
      cursor: null,
      selectedTensor: null,
      sort: { key: 'mse_after', dir: 'desc' },
      filter: '',
      metric: 'scale',
      aggregates: {},
      gridWindow: {},
      viewRev: 0,
      gridSize: { rows: 400, cols: 800 },
      grid: null,
      gridLoading: false,
      gridFetchMs: null,
      hover: null,
      histogram: null,
      validation: null,
      jobs: {},
      reruns: {},
      toasts: [],
      rerunForm: { ...RERUN_FORM_DEFAULTS },
      tab: 'heatmap',
      theme: savedTheme(),

      async init() {
        const [info, ws, jobs] = await Promise.all([call('app.info', {}), call('workspace.get', {}), call('jobs.list', {})]);
        const byId: Record<string, JobInfo> = {};
        for (const j of jobs ?? []) byId[j.id] = j;
        set({ info, workspace: ws, jobs: byId });
        const sel = get().selectedModel;
        if (ws && (!sel || !ws.models.some((m) => m.id === sel))) await get().selectModel(ws.models[0]?.id ?? null);
        else if (sel) await loadProfile(true);
      },

      async selectModel(id) {
        // Without the service nothing new can be loaded: keep what is shown rather than a blank view.
        if (id !== null && offline()) return;
        set({ selectedModel: id, profile: null, selectedTensor: null, cursor: null, grid: null, histogram: null, hover: null, validation: null, gridWindow: {}, viewRev: get().viewRev + 1, rerunForm: { ...RERUN_FORM_DEFAULTS } });
        if (id) await loadProfile(false);
      },

      async selectTensor(name) {
        if (name !== null && offline()) return;
        // Closing keeps the cursor where it was, so Enter opens the same tensor again.
        const changed = name !== get().selectedTensor;
        set({
          selectedTensor: name,
          cursor: name ?? get().cursor,
          grid: null,
          histogram: null,
          hover: null,
          gridWindow: {},
          viewRev: get().viewRev + 1,
          ...(changed ? { rerunForm: { ...RERUN_FORM_DEFAULTS } } : {}),
        });
        if (name) await loadTensorViews();
      },

      moveCursor(delta) {
        const s = get();
        if (!s.profile) return;
        const rows = visibleTensors(s.profile.tensors, s.filter, s.sort);
        if (rows.length === 0) return;
        const i = rows.findIndex((t) => t.tensor_name === s.cursor);
        const next = i < 0 ? (delta > 0 ? 0 : rows.length - 1) : Math.max(0, Math.min(rows.length - 1, i + delta));
        set({ cursor: rows[next].tensor_name });
      },

      async openCursor() {
        const c = get().cursor;
        if (c && c !== get().selectedTensor) await get().selectTensor(c);
      },

      setSort(key) {
        const s = get().sort;
        // Numbers start worst-first (descending); names start A→Z.
        const dir = s.key === key ? (s.dir === 'asc' ? 'desc' : 'asc') : key === 'tensor_name' ? 'asc' : 'desc';
        set({ sort: { key, dir } });
      },

      setFilter(text) {
        set({ filter: text });
      },

      async setMetric(m) {
        set({ metric: m });
        await loadGrid();
      },

      async setAggregate(agg) {
        set({ aggregates: { ...get().aggregates, [get().metric]: agg } });
        await loadGrid();
      },

      setTab(t) {
        set({ tab: t });
      },

      setTheme(t) {
        try {
          globalThis.localStorage?.setItem(THEME_KEY, t);
        } catch {
          // storage may be unavailable (private mode); the choice then lasts for this page only
        }
        set({ theme: t });
      },

      async setGridSize(rows, cols) {
        const s = get().gridSize;
        if (Math.abs(s.rows - rows) < 16 && Math.abs(s.cols - cols) < 16) return;
        set({ gridSize: { rows, cols } });
        await loadGrid();
      },

      async zoom(w) {
        const whole = w.rowStart === undefined && w.rowEnd === undefined && w.blockStart === undefined && w.blockEnd === undefined;
        set(whole ? { gridWindow: {}, viewRev: get().viewRev + 1 } : { gridWindow: w });
        await loadGrid();
      },

      async hoverBlock(row, block) {
        const s = get();
        if (!s.selectedModel || !s.selectedTensor) return;
        const seq = ++hoverSeq;
        const d = await call('tensor.block', { modelId: s.selectedModel, tensor: s.selectedTensor, row, block }, true);
        if (seq === hoverSeq) set({ hover: d });
      },

      clearHover() {
        hoverSeq++;
        set({ hover: null });
      },

      async calibrateModel(id, force) {
        const j = await call('calibrate.model', { modelId: id, force });
        if (j) set({ jobs: { ...get().jobs, [j.id]: j } });
      },

      async calibratePipeline(force) {
        const j = await call('calibrate.pipeline', { force, validate: get().info?.semanticAvailable ?? false });
        if (j) set({ jobs: { ...get().jobs, [j.id]: j } });
      },

      async cancelJob(id) {
        await call('job.cancel', { jobId: id });
      },

      setRerunForm(patch) {
        const next = { ...get().rerunForm, ...patch };
        if (patch.format !== undefined && patch.blockSize === undefined && patch.format !== get().rerunForm.format) next.blockSize = '';
        set({ rerunForm: next });
      },

      async rerun(p) {
        const s = get();
        if (!s.selectedModel || !s.selectedTensor) return null;
        const j = await call('calibrate.tensor', { modelId: s.selectedModel, tensor: s.selectedTensor, ...p });
        if (j) set({ jobs: { ...get().jobs, [j.id]: j } });
        return j;
      },

      async keepRerun(rerunId) {
        const p = await call('rerun.keep', { rerunId });
        const { [rerunId]: _kept, ...rest } = get().reruns;
        set({ reruns: rest });
        if (p && p.modelId === get().selectedModel) {
          set({ profile: p });
          await loadProfile(true);
        }
      },

      async discardRerun(rerunId) {
        await call('rerun.discard', { rerunId }, true);
        const { [rerunId]: _dropped, ...rest } = get().reruns;
        set({ reruns: rest });
      },

      async signOff(p) {
        const id = get().selectedModel;
        if (!id) return false;
        const v = await call('signoff.submit', { modelId: id, ...p });
        if (v && get().selectedModel === id) set({ profile: v });
        return v !== null;
      },

      async openModel(path, format) {
        return (await call('workspace.openModel', { path, ...(format ? { format: format as never } : {}) })) !== null;
      },

      async openPipeline(path, format) {
        return (await call('workspace.openPipeline', { path, ...(format ? { format: format as never } : {}) })) !== null;
      },

      async runValidation(attribution, dynamicActivations) {
        const id = get().selectedModel;
        if (!id) return;
        const j = await call('validation.run', { modelId: id, attribution, ...(dynamicActivations ? { dynamicActivations } : {}) });
        if (j) set({ jobs: { ...get().jobs, [j.id]: j } });
      },

      toast(kind, text, code) {
        const t: Toast = { id: toastId++, kind, text, code };
        const others = get().toasts.filter((x) => !(x.kind === kind && x.text === text && x.code === code));
        set({ toasts: [...others.slice(-4), t] });
        const expire = () => (toastsHeld ? later(expire, 1000) : get().dismissToast(t.id));
        later(expire, TOAST_MS[kind]);
      },

      dismissToast(id) {
        if (get().toasts.some((t) => t.id === id)) set({ toasts: get().toasts.filter((t) => t.id !== id) });
      },

      holdToasts(held) {
        toastsHeld = held;
      },
    };
  });
  // Subscribed once the state exists: a transport may report its state at once.
  subscribe();
  return store;
}
