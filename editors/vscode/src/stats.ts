// `kvsplice/stats` answers and how the status bar and the stats command show them.
import type { Task } from "./progress";

/** One document's figures (counts are tokens of the last edit, times ms) plus the model's state. */
export interface DocumentStats {
  model: string;
  device: string;
  dtype: string;
  /** false while the model loads, or when it failed to (then `error` says why) */
  ready: boolean;
  error: string | null;
  cached: boolean;
  /** false while the server is still encoding the document's cache */
  cache_ready: boolean;
  encoding: { done: number; total: number } | null;
  tokens: number;
  reused: number;
  rotated: number;
  encoded: number;
  stale: number;
  last_patch_ms: number | null;
  /** how long the last answered draft for this document took, request to answer, in this editor */
  last_draft_ms: number | null;
}

/** One document in a `kvsplice/stats` answer, as the server sends it. */
export interface DocumentEntry {
  uri: string;
  cached?: boolean;
  ready?: boolean;
  encoding?: { done: number; total: number } | null;
  tokens?: number;
  reused?: number;
  rotated?: number;
  encoded?: number;
  stale?: number;
  last_patch_ms?: number | null;
  last_draft_ms?: number | null;
}

/** The `kvsplice/stats` answer: server-wide fields, then one entry per document. */
export interface StatsAnswer {
  model: string;
  device: string;
  dtype: string;
  ready: boolean;
  error: string | null;
  documents: DocumentEntry[];
}

/**
 * `uri`'s figures from an answer, or undefined when the server does not know the document.
 * The server's `last_draft_ms` is not used: it reads 0 before any draft and counts drafts that
 * were cancelled; `lastDraftMs` is what this editor measured for drafts it received.
 */
export function documentStats(answer: StatsAnswer, uri: string, lastDraftMs?: number): DocumentStats | undefined {
  const doc = answer.documents.find((d) => d.uri === uri);
  if (!doc) {
    return undefined;
  }
  return {
    model: answer.model, device: answer.device, dtype: answer.dtype, ready: answer.ready, error: answer.error,
    cached: doc.cached ?? false,
    cache_ready: doc.ready ?? true,
    encoding: doc.encoding ?? null,
    tokens: doc.tokens ?? 0,
    reused: doc.reused ?? 0,
    rotated: doc.rotated ?? 0,
    encoded: doc.encoded ?? 0,
    stale: doc.stale ?? 0,
    last_patch_ms: doc.last_patch_ms ?? null,
    last_draft_ms: lastDraftMs ?? null,
  };
}

/** The work drafts for `fileName` wait for according to a stats answer (progress may say sooner). */
export function statsTask(stats: DocumentStats | undefined, fileName: string): Task | undefined {
  if (!stats || stats.error) {
    return undefined;
  }
  if (!stats.ready) {
    return { kind: "loading", subject: stats.model };
  }
  if (!stats.cache_ready) {
    const e = stats.encoding;
    return {
      kind: "encoding", subject: fileName,
      message: e ? `${e.done}/${e.total} tokens` : undefined,
      percentage: e && e.total ? (100 * e.done) / e.total : undefined,
    };
  }
  return undefined;
}

function count(n: number): string {
  return n >= 10_000 ? `${Math.round(n / 1000)}k` : n >= 1000 ? `${(n / 1000).toFixed(1)}k` : `${n}`;
}

function ms(value: number | null | undefined): string {
  return value == null ? "–" : `${Math.round(value)} ms`;
}

function percent(task: Task): string | undefined {
  return task.percentage == null ? undefined : `${Math.round(task.percentage)}%`;
}

/** A task in full: "encoding colorsys.py: 1200/4900 tokens (24%)". */
export function taskText(task: Task): string {
  const pct = percent(task);
  return `${task.kind} ${task.subject}${task.message ? `: ${task.message}` : ""}${pct ? ` (${pct})` : ""}`;
}

/** What the status bar shows for the active document. */
export interface StatusView {
  stats?: DocumentStats;
  /** the work drafts wait for: from `$/progress` as it arrives, else from the stats */
  task?: Task;
  /** the active document's file name */
  fileName: string;
  /** the kvsplice.model setting ("" for the server's default) */
  model: string;
  enabled: boolean;
}

/** Status bar text: model (or its state), then the last edit's reuse and the last draft's latency. */
export function statusText(view: StatusView): string {
  const { stats, task } = view;
  const name = stats?.model || (task?.kind === "loading" ? task.subject : "") || view.model || "kvsplice";
  if (!view.enabled) {
    return `$(circle-slash) ${name}`;
  }
  if (stats?.error) {
    return `$(error) ${name}`;
  }
  if (task?.kind === "loading") {
    return `$(loading~spin) ${name} loading${task.message ? ` ${task.message}` : ""}`;
  }
  if (task) {
    const other = task.subject === view.fileName ? "" : ` ${task.subject}`;
    const done = percent(task) ?? task.message;
    return `$(loading~spin) ${name} encoding${other}${done ? ` ${done}` : ""}`;
  }
  if (!stats?.cached) {
    return `$(sparkle) ${name}`;
  }
  return `$(sparkle) ${name} ♻${count(stats.reused)} +${count(stats.encoded)} ↻${count(stats.rotated)}`
    + ` ${ms(stats.last_draft_ms)}`;
}

/** The rows shown by the stats command and the status bar tooltip. */
export function statsRows(stats: DocumentStats, task?: Task): [string, string][] {
  const state = stats.error ? `; failed to load: ${stats.error}` : stats.ready ? "" : "; loading";
  const cache = task ? taskText(task) : !stats.cached ? "none yet" : "ready";
  return [
    ["model", `${stats.model} on ${stats.device} (${stats.dtype})${state}`],
    ["cache", cache],
    ["tokens cached", count(stats.tokens)],
    ["reused (last edit)", count(stats.reused)],
    ["encoded (last edit)", count(stats.encoded)],
    ["rotated (last edit)", count(stats.rotated)],
    ["stale", count(stats.stale)],
    ["last patch", ms(stats.last_patch_ms)],
    ["last draft", ms(stats.last_draft_ms)],
  ];
}

/**
 * The stats command's text, one "label: value" per line: VS Code's dialogs use a proportional
 * font, so columns padded with spaces do not line up there.
 */
export function statsText(stats: DocumentStats, task?: Task): string {
  return statsRows(stats, task).map(([label, value]) => `${label}: ${value}`).join("\n");
}
