// The server's `$/progress` as the status bar shows it: the model load and each document's first
// encode, tracked from the notifications as they arrive. A `kvsplice/stats` answer can wait behind
// an encode on the server's one model thread, so it cannot be what tells the user one is running.

/** The `value` of a `$/progress` notification for work-done progress. */
export type ProgressValue =
  | { kind: "begin"; title: string; message?: string; percentage?: number }
  | { kind: "report"; message?: string; percentage?: number }
  | { kind: "end"; message?: string };

/** Work the server is doing that drafts wait for. */
export interface Task {
  kind: "loading" | "encoding";
  /** the model being loaded, or the file name being encoded */
  subject: string;
  /** "4 s" while loading, "1200/4900 tokens" while encoding */
  message?: string;
  percentage?: number;
}

// The titles the server gives its progress (server/lsp.py).
const TITLES: [Task["kind"], RegExp][] = [
  ["loading", /^kvsplice: loading (.+)$/],
  ["encoding", /^kvsplice: encoding (.+)$/],
];

export class ProgressTracker {
  private readonly tasks = new Map<string, Task>();

  /** Applies one notification; returns the task it began, updated or ended (none: not kvsplice's). */
  update(token: string | number, value: ProgressValue): Task | undefined {
    const key = String(token);
    if (value.kind === "begin") {
      const match = TITLES.map(([kind, re]) => [kind, re.exec(value.title)] as const).find(([, m]) => m);
      if (!match) {
        return undefined;
      }
      const task: Task = { kind: match[0], subject: match[1]![1], message: value.message, percentage: value.percentage };
      this.tasks.set(key, task);
      return task;
    }
    const task = this.tasks.get(key);
    if (task && value.kind === "end") {
      this.tasks.delete(key);
    } else if (task && value.kind === "report") {
      task.message = value.message ?? task.message;
      task.percentage = value.percentage ?? task.percentage;
    }
    return task;
  }

  /**
   * What the status bar shows while drafts wait: the model load first (nothing else can run),
   * then the encode of `fileName`, then any other encode (the server encodes one file at a time,
   * so a draft for this file waits for it too).
   */
  current(fileName?: string): Task | undefined {
    const tasks = [...this.tasks.values()];
    return tasks.find((t) => t.kind === "loading")
      ?? tasks.find((t) => t.subject === fileName)
      ?? tasks[0];
  }

  clear(): void {
    this.tasks.clear();
  }
}
