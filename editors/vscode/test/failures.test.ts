import * as assert from "node:assert/strict";

import { CrashWindow, crashMessage, missingServerMessage, modelFailedMessage } from "../src/failures";
import { DEFAULTS } from "../src/settings";

describe("failure messages", () => {
  it("name the missing command and both fixes", () => {
    const message = missingServerMessage(DEFAULTS);
    assert.match(message, /"kvsplice" was not found on PATH/);
    assert.match(message, /pip install kvsplice/);
    assert.match(message, /kvsplice\.server\.command/);
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
