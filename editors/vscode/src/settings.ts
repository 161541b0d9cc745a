// The extension's settings and what the server gets from them. No `vscode` import here:
// everything in this file is unit-tested under plain node.

export interface Settings {
  enabled: boolean;
  command: string;
  pythonPath: string;
  extraArgs: string[];
  model: string;
  device: string;
  dtype: string;
  threads: number;
  strategy: string;
  drafts: number;
  maxLines: number;
  maxNewTokens: number;
  languages: string[];
}

/** Reads one `kvsplice.*` setting; `WorkspaceConfiguration.get` has this shape. */
export type SettingGetter = <T>(key: string, fallback: T) => T;

export const DEFAULTS: Settings = {
  enabled: true,
  command: "kvsplice",
  pythonPath: "",
  extraArgs: [],
  model: "",
  device: "cpu",
  dtype: "float32",
  threads: 0,
  strategy: "pie",
  drafts: 1,
  maxLines: 8,
  maxNewTokens: 48,
  languages: [
    "python", "javascript", "javascriptreact", "typescript", "typescriptreact",
    "rust", "go", "java", "c", "cpp", "lua", "shellscript",
  ],
};

export function readSettings(get: SettingGetter): Settings {
  return {
    enabled: get("enabled", DEFAULTS.enabled),
    command: get("server.command", DEFAULTS.command).trim() || DEFAULTS.command,
    pythonPath: get("server.pythonPath", DEFAULTS.pythonPath).trim(),
    extraArgs: get("server.extraArgs", DEFAULTS.extraArgs),
    model: get("model", DEFAULTS.model).trim(),
    device: get("device", DEFAULTS.device).trim() || DEFAULTS.device,
    dtype: get("dtype", DEFAULTS.dtype),
    threads: get("threads", DEFAULTS.threads),
    strategy: get("strategy", DEFAULTS.strategy),
    drafts: get("drafts", DEFAULTS.drafts),
    maxLines: get("maxLines", DEFAULTS.maxLines),
    maxNewTokens: get("maxNewTokens", DEFAULTS.maxNewTokens),
    languages: get("languages", DEFAULTS.languages),
  };
}

/**
 * The server's option names (snake_case), sent as `initializationOptions` and again under
 * `kvsplice` in `workspace/didChangeConfiguration`. An empty model means "the server's
 * default", so the key is left out rather than sent empty.
 */
export function serverOptions(s: Settings): Record<string, unknown> {
  const options: Record<string, unknown> = {
    device: s.device,
    dtype: s.dtype,
    threads: s.threads,
    strategy: s.strategy,
    drafts: s.drafts,
    max_lines: s.maxLines,
    max_new_tokens: s.maxNewTokens,
    languages: s.languages,
  };
  if (s.model) {
    options.model = s.model;
  }
  return options;
}

export interface ServerCommand {
  command: string;
  args: string[];
}

export function serverCommand(s: Settings): ServerCommand {
  if (s.pythonPath) {
    return { command: s.pythonPath, args: ["-m", "kvsplice.server.cli", "serve", ...s.extraArgs] };
  }
  return { command: s.command, args: ["serve", ...s.extraArgs] };
}

/**
 * Whether going from `before` to `after` needs a new client. The process command is fixed
 * once spawned and the document selector once the client starts; everything else reaches
 * the running server through didChangeConfiguration.
 */
export function needsRestart(before: Settings, after: Settings): boolean {
  const key = (s: Settings) =>
    JSON.stringify([serverCommand(s), [...s.languages].sort()]);
  return key(before) !== key(after);
}
