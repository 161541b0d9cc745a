import * as assert from "node:assert/strict";

import { DocumentStats, StatsAnswer, documentStats, statsTask, statsText, statusText } from "../src/stats";

const URI = "file:///work/app.py";

const answer: StatsAnswer = {
  model: "smollm2-135m",
  device: "cpu",
  dtype: "float32",
  ready: true,
  error: null,
  documents: [
    { uri: "file:///work/other.py", tokens: 1 },
    {
      uri: URI, cached: true, ready: true, encoding: null, tokens: 12_345, reused: 1_530, rotated: 640, encoded: 7,
      stale: 640, last_patch_ms: 12.4, last_draft_ms: 3.5,
    },
  ],
};

const stats = documentStats(answer, URI, 85.6) as DocumentStats;
const encoding: DocumentStats = { ...stats, cache_ready: false, encoding: { done: 1200, total: 4800 } };
const view = { fileName: "app.py", model: "", enabled: true };

describe("kvsplice/stats answers", () => {
  it("give the document's figures with the server's model beside them", () => {
    assert.equal(stats.tokens, 12_345);
    assert.equal(stats.model, "smollm2-135m");
    assert.equal(stats.dtype, "float32");
    assert.equal(stats.cache_ready, true);
  });

  it("take the last draft's latency from the editor, not the server", () => {
    assert.equal(stats.last_draft_ms, 85.6);
    assert.equal(documentStats(answer, URI)?.last_draft_ms, null);
  });

  it("fill in a document the server has no cache for yet", () => {
    const fresh = documentStats({ ...answer, ready: false, documents: [{ uri: URI, cached: false }] }, URI);
    assert.equal(fresh?.reused, 0);
    assert.equal(fresh?.cache_ready, true);
    assert.equal(fresh?.encoding, null);
  });

  it("know nothing of documents the server does not list", () => {
    assert.equal(documentStats(answer, "file:///elsewhere.py"), undefined);
  });

  it("say what drafts wait for: the model, then the document's encode", () => {
    assert.deepEqual(statsTask({ ...stats, ready: false }, "app.py"), { kind: "loading", subject: "smollm2-135m" });
    assert.deepEqual(statsTask(encoding, "app.py"), {
      kind: "encoding", subject: "app.py", message: "1200/4800 tokens", percentage: 25,
    });
    assert.equal(statsTask(stats, "app.py"), undefined);
    assert.equal(statsTask({ ...stats, ready: false, error: "no such model" }, "app.py"), undefined);
  });
});

describe("status bar", () => {
  it("shows the model before any stats arrive", () => {
    assert.equal(statusText({ ...view, model: "smollm2-135m" }), "$(sparkle) smollm2-135m");
    assert.equal(statusText(view), "$(sparkle) kvsplice");
  });

  it("shows reused / encoded / rotated and the last draft's latency", () => {
    assert.equal(statusText({ ...view, stats }), "$(sparkle) smollm2-135m ♻1.5k +7 ↻640 86 ms");
  });

  it("shows a dash for a document that has had no draft yet", () => {
    assert.match(statusText({ ...view, stats: { ...stats, last_draft_ms: null } }), / –$/);
  });

  it("says when drafts are off or the model failed", () => {
    assert.equal(statusText({ ...view, stats, enabled: false }), "$(circle-slash) smollm2-135m");
    assert.equal(statusText({ ...view, stats: { ...stats, ready: false, error: "no such model" } }), "$(error) smollm2-135m");
  });

  it("spins while the model loads, naming it from the progress before any stats", () => {
    const task = { kind: "loading" as const, subject: "smollm2-135m", message: "4 s" };
    assert.equal(statusText({ ...view, task }), "$(loading~spin) smollm2-135m loading 4 s");
  });

  it("spins while the document encodes, with how far it got", () => {
    const task = { kind: "encoding" as const, subject: "app.py", message: "1200/4800 tokens", percentage: 25 };
    assert.equal(statusText({ ...view, stats, task }), "$(loading~spin) smollm2-135m encoding 25%");
    assert.equal(statusText({ ...view, task: { ...task, percentage: undefined } }), "$(loading~spin) kvsplice encoding 1200/4800 tokens");
  });

  it("names the file when another one is encoding (drafts wait for it too)", () => {
    const task = { kind: "encoding" as const, subject: "big.py", percentage: 10 };
    assert.equal(statusText({ ...view, stats, task }), "$(loading~spin) smollm2-135m encoding big.py 10%");
  });
});

describe("stats report", () => {
  it("lists every figure as label: value lines, with nothing to align in a proportional font", () => {
    assert.deepEqual(statsText(stats).split("\n"), [
      "model: smollm2-135m on cpu (float32)",
      "cache: ready",
      "tokens cached: 12k",
      "reused (last edit): 1.5k",
      "encoded (last edit): 7",
      "rotated (last edit): 640",
      "stale: 640",
      "last patch: 12 ms",
      "last draft: 86 ms",
    ]);
  });

  it("shows an encode in progress and a document without a cache", () => {
    const lines = statsText(encoding, statsTask(encoding, "app.py")).split("\n");
    assert.equal(lines[1], "cache: encoding app.py: 1200/4800 tokens (25%)");
    assert.equal(statsText({ ...stats, cached: false }).split("\n")[1], "cache: none yet");
  });

  it("says why the model is not there", () => {
    const model = statsText({ ...stats, ready: false, error: "sha256 mismatch" }).split("\n")[0];
    assert.match(model, /smollm2-135m on cpu \(float32\); failed to load: sha256 mismatch$/);
  });
});
