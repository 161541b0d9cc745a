import * as assert from "node:assert/strict";

import { CrashWindow, INSTALL_HINT, crashMessage, missingServerMessage, modelFailedMessage } from "../src/failures";
import { DEFAULTS } from "../src/settings";

describe("failure messages", () => {
  it("name the missing command and both fixes", () => {
    const message = missingServerMessage(DEFAULTS, "linux");
    assert.match(message, /"kvsplice" was not found on PATH/);
    assert.match(message, /kvsplice\.server\.command/);
  });

  it("give the install the README gives: from a clone, since no package index has kvsplice", () => {
    assert.equal(INSTALL_HINT, "pip install .");
    assert.match(missingServerMessage(DEFAULTS, "linux"), /\(run "pip install \." in a clone of the kvsplice repository\)/);
    assert.doesNotMatch(missingServerMessage(DEFAULTS, "linux"), /pip install kvsplice/);
  });

  it("say a full path does not exist rather than that it is not on PATH", () => {
    const message = missingServerMessage({ ...DEFAULTS, command: "/opt/kvsplice/bin/kvsplice" }, "linux");
    assert.match(message, /"\/opt\/kvsplice\/bin\/kvsplice" \(kvsplice\.server\.command\) does not exist or is not executable/);
    assert.doesNotMatch(message, /PATH/);
  });

  it("blame the python path when one is set", () => {
    const message = missingServerMessage({ ...DEFAULTS, pythonPath: "/nope/python" });
    assert.match(message, /"\/nope\/python" \(kvsplice\.server\.pythonPath\) does not exist/);
  });

  it("name the model that failed and the setting to change", () => {
    const message = modelFailedMessage("qwen9", "not a packaged model");
    assert.match(message, /"qwen9" failed to load: not a packaged model\. Set kvsplice\.model/);
  });

  it("say how to recover after repeated crashes", () => {
    assert.match(crashMessage(3, 3), /stopped 3 times in 3 minutes.*Restart Server/);
  });
});

describe("CrashWindow", () => {
  it("restarts until the limit is reached within the window", () => {
    const window = new CrashWindow(3, 1000);
    assert.equal(window.shouldRestart(0), true);
    assert.equal(window.shouldRestart(10), true);
    assert.equal(window.shouldRestart(20), false);
    assert.equal(window.crashes, 3);
  });

  it("forgets crashes older than the window", () => {
    const window = new CrashWindow(2, 1000);
    assert.equal(window.shouldRestart(0), true);
    assert.equal(window.shouldRestart(5000), true);
    assert.equal(window.crashes, 1);
    window.reset();
    assert.equal(window.crashes, 0);
  });
});
