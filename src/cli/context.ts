// What every CLI command gets: output sinks, the JSON switch and a cancellation signal (Ctrl-C).
export interface CommandContext {
  json: boolean;
  out: (line: string) => void;
  err: (line: string) => void;
  signal: AbortSignal;
}
