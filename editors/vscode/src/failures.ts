// What to tell the user when the server cannot start or keeps dying, and when to stop
// restarting it. Kept apart from the VS Code wiring so the wording and policy are tested.
import { hasDirectory } from "./executable";
import type { Settings } from "./settings";

/** What the README says: the server installs from a clone of the repository (no package index has it). */
export const INSTALL_HINT = "pip install .";
const INSTALL = `run "${INSTALL_HINT}" in a clone of the kvsplice repository`;

export function missingServerMessage(s: Settings, platform: NodeJS.Platform = process.platform): string {
  if (s.pythonPath) {
    return `kvsplice: the Python interpreter "${s.pythonPath}" (kvsplice.server.pythonPath) does not exist. `
      + `Point the setting at a Python that has kvsplice installed (${INSTALL}), or clear it to use "${s.command}".`;
  }
  if (hasDirectory(s.command, platform)) {
    return `kvsplice: the server command "${s.command}" (kvsplice.server.command) does not exist or is not executable. `
      + `Set it to the full path of an installed kvsplice ("which kvsplice" in its environment), or install the server (${INSTALL}).`;
  }
  return `kvsplice: the server command "${s.command}" was not found on PATH. `
    + `Install the server into an environment on PATH (${INSTALL}), or set kvsplice.server.command to its full path `
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
