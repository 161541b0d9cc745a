import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";

import { DEFAULTS, Settings, SettingGetter, needsRestart, readSettings, serverCommand, serverOptions } from "../src/settings";

const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8"));
const contributed: Record<string, { default: unknown }> = manifest.contributes.configuration.properties;

function getterFrom(values: Record<string, unknown>): SettingGetter {
  return <T>(key: string, fallback: T) => (key in values ? (values[key] as T) : fallback);
}

function settings(values: Record<string, unknown> = {}): Settings {
  return readSettings(getterFrom(values));
}

describe("settings", () => {
  it("match the defaults package.json contributes, so the manifest and the code cannot drift", () => {
    const fromManifest = Object.fromEntries(
      Object.entries(contributed).map(([key, spec]) => [key.replace(/^kvsplice\./, ""), spec.default]),
    );
    assert.deepEqual(settings(fromManifest), DEFAULTS);
    assert.deepEqual(settings(), DEFAULTS);
  });

  it("send snake_case option names to the server", () => {
    const options = serverOptions(settings({ model: "smollm2-135m", maxLines: 3, maxNewTokens: 20, drafts: 2 }));
    assert.deepEqual(options, {
      model: "smollm2-135m",
      device: "cpu",
      dtype: "float32",
      threads: 0,
      strategy: "pie",
      drafts: 2,
      max_lines: 3,
      max_new_tokens: 20,
      languages: DEFAULTS.languages,
    });
  });

  it("leave the model out when empty so the server picks its default", () => {
    assert.equal("model" in serverOptions(settings({ model: "  " })), false);
  });

  it("run `kvsplice serve` by default and `python -m` when a python path is set", () => {
    assert.deepEqual(serverCommand(settings()), { command: "kvsplice", args: ["serve"] });
    assert.deepEqual(serverCommand(settings({ "server.command": " ", "server.extraArgs": ["--tcp"] })), {
      command: "kvsplice",
      args: ["serve", "--tcp"],
    });
    assert.deepEqual(serverCommand(settings({ "server.pythonPath": "/venv/bin/python" })), {
      command: "/venv/bin/python",
      args: ["-m", "kvsplice.server.cli", "serve"],
    });
  });

  it("restart only for the command and the languages; model and sampling go over didChangeConfiguration", () => {
    const base = settings();
    for (const change of [{ model: "qwen2.5-coder-0.5b" }, { device: "cuda" }, { threads: 1 }, { drafts: 5 }, { strategy: "recompute" }, { enabled: false }]) {
      assert.equal(needsRestart(base, settings(change)), false, JSON.stringify(change));
    }
    for (const change of [{ "server.command": "/opt/kvsplice" }, { "server.pythonPath": "python3" }, { languages: ["python"] }]) {
      assert.equal(needsRestart(base, settings(change)), true, JSON.stringify(change));
    }
    assert.equal(needsRestart(settings({ languages: ["go", "python"] }), settings({ languages: ["python", "go"] })), false);
  });
});

describe("package.json", () => {
  it("registers in extension.ts every command it contributes", () => {
    const source = fs.readFileSync(path.join(__dirname, "..", "..", "src", "extension.ts"), "utf8");
    for (const { command } of manifest.contributes.commands) {
      assert.ok(source.includes(`registerCommand("${command}"`), command);
    }
  });

  it("pins @types/vscode to the engines.vscode floor", () => {
    assert.equal(`^${manifest.devDependencies["@types/vscode"]}`, manifest.engines.vscode);
  });
});
