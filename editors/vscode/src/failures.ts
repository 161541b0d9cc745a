// What to tell the user when the server cannot start or keeps dying, and when to stop
// restarting it. Kept apart from the VS Code wiring so the wording and policy are tested.
import type { Settings } from "./settings";

export const INSTALL_HINT = "pip install kvsplice";

export function missingServerMessage(s: Settings): string {
  if (s.pythonPath) {
    return `kvsplice: the Python interpreter "${s.pythonPath}" (kvsplice.server.pythonPath) does not exist. `
      + `Point the setting at a Python that has kvsplice installed (${INSTALL_HINT}), or clear it to use "${s.command}" from PATH.`;
  }
  return `kvsplice: the server command "${s.command}" was not found on PATH. `
    + `Install it (${INSTALL_HINT}) in an environment on PATH, or set kvsplice.server.command to its full path `
    + `(or kvsplice.server.pythonPath to a Python that has it).`;
}

export function crashMessage(crashes: number, windowMinutes: number): string {
  return `kvsplice: the server stopped ${crashes} times in ${windowMinutes} minutes and will not be restarted. `
    + `Its last output is in Output ▸ kvsplice; a model that fails to load (kvsplice.model, kvsplice.device) is the usual cause. `
    + `Fix it, then run "kvsplice: Restart Server".`;
}

export function modelFailedMessage(model: string, error: string): string {
  return `kvsplice: the model "${model}" failed to load: ${error}. Set kvsplice.model to a packaged name `
    + `(smollm2-135m, qwen2.5-coder-0.5b), a model folder or a Hugging Face id; kvsplice.device and kvsplice.dtype must suit the machine.`;
}

export function startFailedMessage(error: unknown): string {
  const detail = error instanceof Error ? error.message : String(error);
  return `kvsplice: the server failed to start: ${detail}. See Output ▸ kvsplice for its log.`;
}

/** Allows a restart unless `limit` crashes happened within the last `windowMs`. */
export class CrashWindow {
  private times: number[] = [];

  constructor(readonly limit = 3, readonly windowMs = 3 * 60_000) {}

  /** Records a crash at `now`; true when the server should be restarted. */
  shouldRestart(now: number): boolean {
    this.times = [...this.times.filter((t) => now - t < this.windowMs), now];
    return this.times.length < this.limit;
  }

  get crashes(): number {
    return this.times.length;
  }

  reset(): void {
    this.times = [];
  }
}
