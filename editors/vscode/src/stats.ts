// `kvsplice/stats` answers and how the status bar and the stats command show them.

/** One document's figures (counts are tokens of the last edit, times ms) plus the model's state. */
export interface DocumentStats {
  model: string;
  device: string;
  dtype: string;
  /** false while the model loads, or when it failed to (then `error` says why) */
  ready: boolean;
  error: string | null;
  cached: boolean;
  tokens: number;
  reused: number;
  rotated: number;
  encoded: number;
  stale: number;
  last_patch_ms: number | null;
  last_draft_ms: number | null;
}

/** The `kvsplice/stats` answer: server-wide fields, then one entry per document. */
export interface StatsAnswer {
  model: string;
  device: string;
  dtype: string;
  ready: boolean;
  error: string | null;
  documents: ({ uri: string } & Partial<DocumentStats>)[];
}

/** `uri`'s figures from an answer, or undefined when the server does not know the document. */
export function documentStats(answer: StatsAnswer, uri: string): DocumentStats | undefined {
  const doc = answer.documents.find((d) => d.uri === uri);
  if (!doc) {
    return undefined;
  }
  return {
    cached: false, tokens: 0, reused: 0, rotated: 0, encoded: 0, stale: 0,
    last_patch_ms: null, last_draft_ms: null,
    ...doc,
    model: answer.model, device: answer.device, dtype: answer.dtype, ready: answer.ready, error: answer.error,
  };
}

function count(n: number): string {
  return n >= 10_000 ? `${Math.round(n / 1000)}k` : n >= 1000 ? `${(n / 1000).toFixed(1)}k` : `${n}`;
}

function ms(value: number | null | undefined): string {
  return value == null ? "–" : `${Math.round(value)} ms`;
}

/** Status bar text: model (or its state), then the last edit's reuse and the last draft's latency. */
export function statusText(stats: DocumentStats | undefined, model: string, enabled: boolean): string {
  const name = stats?.model || model || "kvsplice";
  if (!enabled) {
    return `$(circle-slash) ${name}`;
  }
  if (stats?.error) {
    return `$(error) ${name}`;
  }
  if (stats && !stats.ready) {
    return `$(loading~spin) ${name}`;
  }
  if (!stats?.cached) {
    return `$(sparkle) ${name}`;
  }
  return `$(sparkle) ${name} ♻${count(stats.reused)} +${count(stats.encoded)} ↻${count(stats.rotated)}`
    + ` ${ms(stats.last_draft_ms)}`;
}

/** The rows shown by the stats command and the status bar tooltip. */
export function statsRows(stats: DocumentStats): [string, string][] {
  const state = stats.error ? `; failed to load: ${stats.error}` : stats.ready ? "" : "; loading";
  return [
    ["model", `${stats.model} on ${stats.device} (${stats.dtype})${state}`],
    ["tokens cached", count(stats.tokens)],
    ["reused (last edit)", count(stats.reused)],
    ["encoded (last edit)", count(stats.encoded)],
    ["rotated (last edit)", count(stats.rotated)],
    ["stale", count(stats.stale)],
    ["last patch", ms(stats.last_patch_ms)],
    ["last draft", ms(stats.last_draft_ms)],
  ];
}

export function statsText(stats: DocumentStats): string {
  const rows = statsRows(stats);
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join("\n");
}
