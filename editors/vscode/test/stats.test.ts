import * as assert from "node:assert/strict";

import { DocumentStats, StatsAnswer, documentStats, statsText, statusText } from "../src/stats";

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
      uri: URI, cached: true, tokens: 12_345, reused: 1_530, rotated: 640, encoded: 7, stale: 640,
      last_patch_ms: 12.4, last_draft_ms: 85.6,
    },
  ],
};

const stats = documentStats(answer, URI) as DocumentStats;

describe("kvsplice/stats answers", () => {
  it("give the document's figures with the server's model beside them", () => {
    assert.equal(stats.tokens, 12_345);
    assert.equal(stats.model, "smollm2-135m");
    assert.equal(stats.dtype, "float32");
  });

  it("fill in a document the server has no cache for yet", () => {
    const fresh = documentStats({ ...answer, ready: false, documents: [{ uri: URI, cached: false }] }, URI);
    assert.equal(fresh?.reused, 0);
    assert.equal(fresh?.last_draft_ms, null);
  });

  it("know nothing of documents the server does not list", () => {
    assert.equal(documentStats(answer, "file:///elsewhere.py"), undefined);
  });
});

describe("status bar", () => {
  it("shows the model before any stats arrive", () => {
    assert.equal(statusText(undefined, "smollm2-135m", true), "$(sparkle) smollm2-135m");
    assert.equal(statusText(undefined, "", true), "$(sparkle) kvsplice");
  });

  it("shows reused / encoded / rotated and the last draft's latency", () => {
    assert.equal(statusText(stats, "", true), "$(sparkle) smollm2-135m ♻1.5k +7 ↻640 86 ms");
  });

  it("says when drafts are off, the model is loading, or it failed", () => {
    assert.equal(statusText(stats, "", false), "$(circle-slash) smollm2-135m");
    assert.equal(statusText({ ...stats, ready: false }, "", true), "$(loading~spin) smollm2-135m");
    assert.equal(statusText({ ...stats, ready: false, error: "no such model" }, "", true), "$(error) smollm2-135m");
  });

  it("shows a dash for a document that has had no draft yet", () => {
    assert.match(statusText({ ...stats, last_draft_ms: null }, "", true), / –$/);
  });
});

describe("stats report", () => {
  it("lists every figure, aligned", () => {
    const lines = statsText(stats).split("\n");
    assert.deepEqual(lines.map((line) => line.split(/ {2,}/)), [
      ["model", "smollm2-135m on cpu (float32)"],
      ["tokens cached", "12k"],
      ["reused (last edit)", "1.5k"],
      ["encoded (last edit)", "7"],
      ["rotated (last edit)", "640"],
      ["stale", "640"],
      ["last patch", "12 ms"],
      ["last draft", "86 ms"],
    ]);
    assert.equal(new Set(lines.map((line) => line.search(/ {2}\S/))).size, 1);
  });

  it("says why the model is not there", () => {
    const model = statsText({ ...stats, ready: false, error: "sha256 mismatch" }).split("\n")[0];
    assert.match(model, /smollm2-135m on cpu \(float32\); failed to load: sha256 mismatch$/);
  });
});
