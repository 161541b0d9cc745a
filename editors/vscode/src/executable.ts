// Finding the server executable before spawning it, so that a missing install becomes a
// message with the fix instead of a bare ENOENT from the language client.
import * as fs from "node:fs";
import * as path from "node:path";

function isExecutableFile(file: string, platform: NodeJS.Platform): boolean {
  try {
    if (!fs.statSync(file).isFile()) {
      return false;
    }
    // Windows has no execute bit; PATHEXT already chose the candidates.
    if (platform !== "win32") {
      fs.accessSync(file, fs.constants.X_OK);
    }
    return true;
  } catch {
    return false;
  }
}

/** Whether `command` names a file by path rather than a name to look up on PATH. */
export function hasDirectory(command: string, platform: NodeJS.Platform = process.platform): boolean {
  return command.includes("/") || (platform === "win32" && command.includes("\\"));
}

/**
 * The absolute path `command` would run as, or undefined when nothing runs. A command with a
 * directory part is taken as a path (relative ones against `cwd`); a bare name is looked up
 * on PATH, with PATHEXT's extensions on Windows.
 */
export function resolveExecutable(
  command: string,
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
  cwd: string = process.cwd(),
): string | undefined {
  const p = platform === "win32" ? path.win32 : path.posix;
  const extensions = platform === "win32"
    ? ["", ...(env.PATHEXT ?? ".COM;.EXE;.BAT;.CMD").split(";").filter(Boolean)]
    : [""];
  const byPath = hasDirectory(command, platform);
  const directories = byPath
    ? [""]
    : (env.PATH ?? env.Path ?? "").split(p.delimiter).filter(Boolean);
  for (const directory of directories) {
    const base = byPath ? p.resolve(cwd, command) : p.join(directory, command);
    for (const extension of extensions) {
      if (isExecutableFile(base + extension, platform)) {
        return base + extension;
      }
    }
  }
  return undefined;
}
