import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";

import { endProcess } from "../src/process";

/** A node process running `script`, started once it says "up" (its signal handlers are set). */
async function node(script: string) {
  const proc = spawn(process.execPath, ["-e", `${script}; console.log("up")`]);
  await new Promise((resolve) => proc.stdout.once("data", resolve));
  return proc;
}

describe("ending the server process", () => {
  it("lets a process that exits by itself do so, with no signal", async () => {
    const proc = await node("setTimeout(() => process.exit(0), 300)");
    const warnings: string[] = [];
    await endProcess(proc, 5_000, (m) => warnings.push(m));
    assert.equal(proc.exitCode, 0);
    assert.equal(proc.signalCode, null);
    assert.deepEqual(warnings, []);
  });

  it("sends SIGTERM to one that does not exit, and says so", async () => {
    const proc = await node("setInterval(() => {}, 1000)");
    const warnings: string[] = [];
    await endProcess(proc, 200, (m) => warnings.push(m));
    assert.equal(proc.signalCode, "SIGTERM");
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /did not exit within 0\.2 s; sending SIGTERM/);
  });

  it("sends SIGKILL to one that ignores SIGTERM", async () => {
    const proc = await node("process.on('SIGTERM', () => {}); setInterval(() => {}, 1000)");
    const warnings: string[] = [];
    await endProcess(proc, 200, (m) => warnings.push(m));
    assert.equal(proc.signalCode, "SIGKILL");
    assert.match(warnings[1], /sending SIGKILL/);
  });
});
