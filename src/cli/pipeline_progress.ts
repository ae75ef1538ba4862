// Pipeline progress on a terminal: one live line per model being worked on plus an overall line,
// redrawn in place; a finished model leaves a permanent line above them. Silent when stderr is not
// a TTY (CI logs, pipes) — the final table or JSON says everything there.
import type { PipelineEvent } from '../pipeline/run.js';
import { eng } from './format.js';

interface Row {
  id: string;
  weight: number;
  phase: string;
  fraction: number;
  label: string;
  finished: boolean;
}

function bar(f: number, width = 20): string {
  const filled = Math.round(Math.max(0, Math.min(1, f)) * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}

export class PipelineProgress {
  private readonly rows: Row[];
  private drawn = 0;
  private last = 0;
  private readonly idWidth: number;

  constructor(
    models: { id: string }[],
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly enabled: boolean = Boolean(process.stderr.isTTY),
  ) {
    this.rows = models.map((m) => ({ id: m.id, weight: 1, phase: 'queued', fraction: 0, label: '', finished: false }));
    this.idWidth = Math.min(32, Math.max(...this.rows.map((r) => r.id.length), 'overall'.length));
  }

  update(e: PipelineEvent): void {
    if (!this.enabled) return;
    const row = this.rows[e.index];
    let permanent: string | null = null;
    if (e.type === 'queued') {
      row.weight = Math.max(1, e.bytes);
      return;
    }
    if (e.type === 'phase') {
      row.phase = e.phase;
      row.label = e.phase === 'waiting' ? 'waiting for another calibscope process' : e.phase;
    } else if (e.type === 'progress') {
      const p = e.progress;
      row.fraction = p.elementsTotal > 0 ? p.elementsDone / p.elementsTotal : 0;
      row.label = `${p.tensorsDone}/${p.tensorsTotal} ${p.tensor ?? ''}`;
    } else if (e.type === 'done') {
      row.finished = true;
      row.fraction = 1;
      const p = e.profile;
      permanent = p.cached
        ? `ok  ${p.model_id.padEnd(this.idWidth)}  ${p.state_before}, reused`
        : `ok  ${p.model_id.padEnd(this.idWidth)}  calibrated in ${p.seconds.toFixed(1)} s, MSE ${eng(p.overall_mse_before)} → ${eng(p.overall_mse)} (was ${p.state_before})`;
    } else {
      row.finished = true;
      row.fraction = 1;
      permanent = `ERR ${row.id.padEnd(this.idWidth)}  ${e.error.code}: ${e.error.message}`;
    }
    const now = Date.now();
    if (permanent === null && now - this.last < 100) return;
    this.last = now;
    this.draw(permanent);
  }

  private draw(permanent: string | null): void {
    // A pseudo-terminal without a size reports 0 columns.
    const cols = this.stream.columns && this.stream.columns > 20 ? this.stream.columns - 1 : 100;
    const live = this.rows.filter((r) => !r.finished && r.phase !== 'queued');
    const total = this.rows.reduce((a, r) => a + r.weight, 0);
    const done = this.rows.reduce((a, r) => a + r.weight * r.fraction, 0);
    const finished = this.rows.filter((r) => r.finished).length;
    const lines = live.map((r) => `    ${r.id.slice(0, this.idWidth).padEnd(this.idWidth)}  ${bar(r.fraction)} ${(r.fraction * 100).toFixed(0).padStart(3)}%  ${r.label}`);
    lines.push(`    ${'overall'.padEnd(this.idWidth)}  ${bar(done / total)} ${((done / total) * 100).toFixed(0).padStart(3)}%  ${finished}/${this.rows.length} models`);
    let out = this.drawn > 0 ? `\x1b[${this.drawn}A\r` : '\r';
    if (permanent !== null) out += `${permanent.slice(0, cols)}\x1b[K\n`;
    for (const l of lines) out += `${l.slice(0, cols)}\x1b[K\n`;
    out += '\x1b[J';
    this.stream.write(out);
    this.drawn = lines.length;
  }

  /** Removes the live lines (the permanent ones stay). */
  done(): void {
    if (!this.enabled || this.drawn === 0) return;
    this.stream.write(`\x1b[${this.drawn}A\r\x1b[J`);
    this.drawn = 0;
  }
}
