import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import { resolveExecutable } from "../src/executable";

describe("resolveExecutable", () => {
  let dir: string;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvsplice-exe-"));
    fs.writeFileSync(path.join(dir, "kvsplice"), "#!/bin/sh\n", { mode: 0o755 });
    fs.writeFileSync(path.join(dir, "notexec"), "", { mode: 0o644 });
    fs.mkdirSync(path.join(dir, "folder"));
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("finds a bare name on PATH", () => {
    const env = { PATH: ["/nonexistent", dir].join(path.delimiter) };
    assert.equal(resolveExecutable("kvsplice", env, "linux"), path.join(dir, "kvsplice"));
  });

  it("reports a name missing from PATH", () => {
    assert.equal(resolveExecutable("kvsplice", { PATH: "/nonexistent" }, "linux"), undefined);
    assert.equal(resolveExecutable("kvsplice", {}, "linux"), undefined);
  });

  it("rejects files without the execute bit and folders", () => {
    const env = { PATH: dir };
    assert.equal(resolveExecutable("notexec", env, "linux"), undefined);
    assert.equal(resolveExecutable("folder", env, "linux"), undefined);
  });

  it("takes a command with a directory part as a path, relative to the workspace", () => {
    assert.equal(resolveExecutable(path.join(dir, "kvsplice"), {}, "linux"), path.join(dir, "kvsplice"));
    assert.equal(resolveExecutable("./kvsplice", {}, "linux", dir), path.join(dir, "kvsplice"));
    assert.equal(resolveExecutable("./missing", {}, "linux", dir), undefined);
  });
});
