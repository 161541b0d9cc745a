// The server process after the LSP shutdown/exit handshake. The language client kills a server
// that has not exited 2 s after `exit` (SIGKILL, with an error in the output), which cuts off a
// server still shutting down its model thread. The extension owns the process instead and gives
// it time to exit by itself; signals are the fallback for one that hangs.
import type { ChildProcess } from "node:child_process";

/** Resolves true once `proc` has exited, or false after `ms`. */
export function exited(proc: ChildProcess, ms: number): Promise<boolean> {
  if (proc.exitCode !== null || proc.signalCode !== null) {
    return Promise.resolve(true);
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      proc.off("exit", onExit);
      resolve(false);
    }, ms);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    proc.once("exit", onExit);
  });
}

/**
 * Waits up to `graceMs` for `proc` to exit by itself, then sends SIGTERM, then SIGKILL after
 * `graceMs` more; `warn` says which signal was needed and why.
 */
export async function endProcess(proc: ChildProcess, graceMs: number, warn: (message: string) => void): Promise<void> {
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    if (await exited(proc, graceMs)) {
      return;
    }
    warn(`the server (pid ${proc.pid}) did not exit within ${graceMs / 1000} s; sending ${signal}`);
    proc.kill(signal);
  }
  await exited(proc, graceMs);
}
