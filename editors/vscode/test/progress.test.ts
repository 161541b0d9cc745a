import * as assert from "node:assert/strict";

import { ProgressTracker } from "../src/progress";

describe("progress from the server", () => {
  it("tracks the model load from begin to end", () => {
    const progress = new ProgressTracker();
    const load = progress.update("t1", { kind: "begin", title: "kvsplice: loading smollm2-135m", message: "on cpu" });
    assert.deepEqual(load, { kind: "loading", subject: "smollm2-135m", message: "on cpu", percentage: undefined });
    assert.equal(progress.current("a.py"), load);
    progress.update("t1", { kind: "report", message: "3 s" });
    assert.equal(progress.current("a.py")?.message, "3 s");
    assert.equal(progress.update("t1", { kind: "end", message: "smollm2-135m ready on cpu (float32)" }), load);
    assert.equal(progress.current("a.py"), undefined);
  });

  it("tracks an encode's tokens and percentage", () => {
    const progress = new ProgressTracker();
    progress.update(7, { kind: "begin", title: "kvsplice: encoding a.py", percentage: 0 });
    progress.update(7, { kind: "report", message: "1200/4800 tokens", percentage: 25 });
    assert.deepEqual(progress.current("a.py"), { kind: "encoding", subject: "a.py", message: "1200/4800 tokens", percentage: 25 });
  });

  it("puts the model load first, then this file's encode, then another's", () => {
    const progress = new ProgressTracker();
    progress.update("b", { kind: "begin", title: "kvsplice: encoding b.py" });
    progress.update("a", { kind: "begin", title: "kvsplice: encoding a.py" });
    assert.equal(progress.current("a.py")?.subject, "a.py");
    assert.equal(progress.current("c.py")?.subject, "b.py");
    progress.update("m", { kind: "begin", title: "kvsplice: loading qwen2.5-coder-0.5b" });
    assert.equal(progress.current("a.py")?.kind, "loading");
    progress.clear();
    assert.equal(progress.current("a.py"), undefined);
  });

  it("ignores progress it does not know and tokens it never saw begin", () => {
    const progress = new ProgressTracker();
    assert.equal(progress.update("x", { kind: "begin", title: "indexing" }), undefined);
    assert.equal(progress.update("y", { kind: "report", percentage: 5 }), undefined);
    assert.equal(progress.update("y", { kind: "end" }), undefined);
    assert.equal(progress.current("a.py"), undefined);
  });
});
