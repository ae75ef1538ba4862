// Timings the end-to-end tests log (not assert): kept on window.__calibscope.timings.
export interface TimingRecord {
  kind: string;
  at: number;
  [key: string]: unknown;
}

export function recordTiming(kind: string, fields: Record<string, unknown>): void {
  const w = window as unknown as { __calibscope?: { timings: TimingRecord[] } };
  w.__calibscope ??= { timings: [] };
  w.__calibscope.timings.push({ kind, at: performance.now(), ...fields });
}
