// VS Code wiring: the language client, settings sync, status bar and commands. The decisions
// (option names, restart rules, messages, formatting) live in the vscode-free modules.
import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import * as vscode from "vscode";
import {
  type ChildProcessInfo,
  CloseAction,
  DidChangeConfigurationNotification,
  ErrorAction,
  LanguageClient,
  State,
} from "vscode-languageclient/node";

import { SCHEMES, followedDocument } from "./documents";
import { resolveExecutable } from "./executable";
import {
  CrashWindow,
  INSTALL_HINT,
  crashMessage,
  missingServerMessage,
  modelFailedMessage,
  startFailedMessage,
} from "./failures";
import { endProcess } from "./process";
import { ProgressTracker } from "./progress";
import { Settings, needsRestart, readSettings, serverCommand, serverOptions } from "./settings";
import { DocumentStats, StatsAnswer, documentStats, statsRows, statsTask, statsText, statusText, taskText } from "./stats";

const SECTION = "kvsplice";
const STATS_REQUEST = "kvsplice/stats";
const STATS_DELAY_MS = 300;
const STOP_TIMEOUT_MS = 5_000; // the shutdown/exit handshake
const EXIT_GRACE_MS = 10_000; // then for the process to exit by itself, before any signal

function currentSettings(): Settings {
  const config = vscode.workspace.getConfiguration(SECTION);
  return readSettings((key, fallback) => config.get(key, fallback));
}

class Kvsplice implements vscode.Disposable {
  private settings = currentSettings();
  private client: LanguageClient | undefined;
  private process: ChildProcess | undefined;
  private readonly output = vscode.window.createOutputChannel("kvsplice", { log: true });
  private readonly status = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  private readonly crashes = new CrashWindow();
  private readonly progress = new ProgressTracker();
  /** The latency of the last draft received per document (vscode URI string). */
  private readonly draftMs = new Map<string, number>();
  /** The document the status bar is about (see documents.ts). */
  private document: vscode.TextDocument | undefined;
  private lastStats: DocumentStats | undefined;
  private reportedError: string | undefined;
  /** Whether a model load's progress ended since the server started (see settled()). */
  private loadEnded = false;
  private statsTimer: NodeJS.Timeout | undefined;
  /** Set when the server command is missing: no retry (and no repeated error) per opened file. */
  private missingServer = false;

  constructor(context: vscode.ExtensionContext) {
    this.status.name = "kvsplice";
    this.status.command = "kvsplice.showStats";
    context.subscriptions.push(
      this,
      this.output,
      this.status,
      vscode.commands.registerCommand("kvsplice.restart", () => this.restart()),
      vscode.commands.registerCommand("kvsplice.showStats", () => this.showStats()),
      vscode.commands.registerCommand("kvsplice.toggle", () => this.toggle()),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration(SECTION)) {
          void this.onSettingsChanged();
        }
      }),
      vscode.workspace.onDidOpenTextDocument((doc) => this.startIfWanted(doc)),
      vscode.window.onDidChangeActiveTextEditor(() => this.follow()),
      vscode.window.onDidChangeVisibleTextEditors(() => this.follow()),
    );
    vscode.workspace.textDocuments.forEach((doc) => this.startIfWanted(doc));
    this.follow();
  }

  dispose(): void {
    clearTimeout(this.statsTimer);
  }

  private wants(doc: vscode.TextDocument): boolean {
    return this.settings.languages.includes(doc.languageId);
  }

  private follow(): void {
    const visible = vscode.window.visibleTextEditors.map((editor) => editor.document);
    const doc = followedDocument(vscode.window.activeTextEditor?.document, visible, this.document);
    if (doc !== this.document) {
      this.document = doc;
      this.lastStats = undefined;
      this.scheduleStats();
    }
    this.render();
  }

  /** The model loads when the first document that wants drafts opens, not at startup. */
  private startIfWanted(doc: vscode.TextDocument): void {
    if (!this.client && !this.missingServer && this.wants(doc)) {
      void this.start();
    }
  }

  private async start(): Promise<void> {
    const s = this.settings;
    const { command, args } = serverCommand(s);
    const cwd = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    if (!resolveExecutable(command, process.env, process.platform, cwd)) {
      this.missingServer = true;
      void this.offerFix(missingServerMessage(s), "kvsplice.server", INSTALL_HINT);
      return;
    }
    const client = new LanguageClient(SECTION, "kvsplice", () => this.spawnServer(command, args, cwd), {
      documentSelector: s.languages.flatMap((language) => SCHEMES.map((scheme) => ({ scheme, language }))),
      initializationOptions: serverOptions(s),
      outputChannel: this.output,
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue }),
        closed: () => this.onServerClosed(),
      },
      middleware: {
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          if (!this.settings.enabled) {
            return undefined;
          }
          const started = Date.now();
          const result = await next(document, position, context, token);
          // A cancelled or superseded request answers nothing: only drafts that arrived count.
          if (result != null && !token.isCancellationRequested) {
            this.draftMs.set(document.uri.toString(), Date.now() - started);
          }
          this.scheduleStats();
          return result;
        },
        // The suggest widget would show the same drafts again, and the server lets a document's
        // newest completion request supersede the one before, so the two would cancel each other.
        provideCompletionItem: () => undefined,
        handleWorkDoneProgress: (token, params, next) => {
          next(token, params);
          const task = this.progress.update(token, params);
          if (task && params.kind === "end") {
            this.loadEnded ||= task.kind === "loading";
            this.scheduleStats();
          }
          if (task) {
            this.render();
          }
        },
      },
    });
    this.client = client;
    this.loadEnded = false;
    this.render();
    try {
      await client.start();
      this.scheduleStats();
    } catch (error) {
      this.output.error(String(error));
      void vscode.window.showErrorMessage(startFailedMessage(error), "Show Output").then((choice) => {
        if (choice) {
          this.output.show();
        }
      });
    }
  }

  /** The client runs this for every (re)start; the extension owns the process (see process.ts). */
  private async spawnServer(command: string, args: string[], cwd: string | undefined): Promise<ChildProcessInfo> {
    const proc = spawn(command, args, { cwd });
    this.process = proc;
    proc.on("error", (error) => this.output.error(`server process: ${error.message}`));
    proc.on("exit", (code, signal) => {
      const how = signal ? `signal ${signal}` : `code ${code}`;
      const log = code === 0 ? this.output.info : this.output.error;
      log.call(this.output, `server process ${proc.pid} exited with ${how}`);
    });
    // detached: the client must not kill it 2 s after `exit`; stop() waits for it instead.
    return { process: proc, detached: true };
  }

  private onServerClosed() {
    this.progress.clear(); // what was in progress died with the server
    this.render();
    if (this.crashes.shouldRestart(Date.now())) {
      return { action: CloseAction.Restart };
    }
    const message = crashMessage(this.crashes.crashes, this.crashes.windowMs / 60_000);
    void vscode.window.showErrorMessage(message, "Show Output", "Restart Server").then((choice) => {
      if (choice === "Show Output") {
        this.output.show();
      } else if (choice) {
        void this.restart();
      }
    });
    return { action: CloseAction.DoNotRestart, handled: true };
  }

  /** An error with buttons that lead to the fix: the setting to change, and a command to copy. */
  private async offerFix(message: string, setting: string, copy?: string): Promise<void> {
    const actions = copy ? ["Open Settings", "Copy Install Command"] : ["Open Settings"];
    const choice = await vscode.window.showErrorMessage(message, ...actions);
    if (choice === "Open Settings") {
      await vscode.commands.executeCommand("workbench.action.openSettings", setting);
    } else if (choice && copy) {
      await vscode.env.clipboard.writeText(copy);
    }
  }

  /** The shutdown/exit handshake, then the process's own exit (signals only for a hung one). */
  async stop(): Promise<void> {
    const client = this.client;
    const proc = this.process;
    this.client = undefined;
    this.process = undefined;
    this.progress.clear();
    if (client?.needsStop()) {
      await client.stop(STOP_TIMEOUT_MS).catch((error) => this.output.warn(`stopping the server: ${error}`));
    }
    if (proc) {
      await endProcess(proc, EXIT_GRACE_MS, (message) => this.output.warn(message));
    }
  }

  private async restart(): Promise<void> {
    await this.stop();
    this.missingServer = false;
    this.crashes.reset();
    this.lastStats = undefined;
    await this.start();
  }

  private async onSettingsChanged(): Promise<void> {
    const before = this.settings;
    this.settings = currentSettings();
    this.missingServer = false;
    if (this.client && needsRestart(before, this.settings)) {
      await this.restart();
    } else if (this.client?.isRunning()) {
      await this.client.sendNotification(DidChangeConfigurationNotification.type, {
        settings: { [SECTION]: serverOptions(this.settings) },
      });
    } else {
      vscode.workspace.textDocuments.forEach((doc) => this.startIfWanted(doc));
    }
    this.render();
  }

  private async toggle(): Promise<void> {
    await vscode.workspace
      .getConfiguration(SECTION)
      .update("enabled", !this.settings.enabled, vscode.ConfigurationTarget.Global);
  }

  private async requestStats(doc: vscode.TextDocument): Promise<DocumentStats | undefined> {
    if (this.client?.state !== State.Running) {
      return undefined;
    }
    const uri = this.client.code2ProtocolConverter.asUri(doc.uri);
    const answer = await this.client.sendRequest<StatsAnswer>(STATS_REQUEST, { uri });
    const stats = this.settled(documentStats(answer, uri, this.draftMs.get(doc.uri.toString())));
    if (stats?.error && stats.error !== this.reportedError) {
      this.reportedError = stats.error;
      void this.offerFix(modelFailedMessage(stats.model, stats.error), "kvsplice.model");
    }
    return stats;
  }

  /**
   * The server reports an `error` while its model is still loading ("model 'x' is loading");
   * only one that remains once the load's progress has ended is a failure to show.
   */
  private settled(stats: DocumentStats | undefined): DocumentStats | undefined {
    const loading = !this.loadEnded || this.progress.current()?.kind === "loading";
    return stats?.error && loading ? { ...stats, error: null } : stats;
  }

  /** Stats follow drafts, progress ends and editor switches, debounced so typing does not flood the server. */
  private scheduleStats(): void {
    clearTimeout(this.statsTimer);
    this.statsTimer = setTimeout(async () => {
      const doc = this.document;
      if (doc && this.wants(doc)) {
        const stats = await this.requestStats(doc).catch(() => undefined);
        if (doc === this.document) {
          this.lastStats = stats;
        }
      }
      this.render();
    }, STATS_DELAY_MS);
  }

  private render(): void {
    const doc = this.document;
    if (!this.client || !doc || !this.wants(doc)) {
      this.status.hide();
      return;
    }
    const fileName = path.posix.basename(doc.uri.path);
    const task = this.progress.current(fileName) ?? statsTask(this.lastStats, fileName);
    this.status.text = statusText({
      stats: this.lastStats, task, fileName, model: this.settings.model, enabled: this.settings.enabled,
    });
    const tooltip = new vscode.MarkdownString(
      this.settings.enabled ? "**kvsplice** — click for this document's cache stats\n\n" : "**kvsplice** — drafts off\n\n",
    );
    if (this.lastStats) {
      tooltip.appendMarkdown("| | |\n|---|---|\n");
      statsRows(this.lastStats, task).forEach(([label, value]) => tooltip.appendMarkdown(`| ${label} | ${value} |\n`));
    } else if (task) {
      tooltip.appendText(taskText(task));
    }
    this.status.tooltip = tooltip;
    this.status.show();
  }

  private async showStats(): Promise<void> {
    const doc = this.document;
    if (!doc || !this.wants(doc)) {
      void vscode.window.showInformationMessage("kvsplice: the active editor is not a language kvsplice drafts for (kvsplice.languages).");
      return;
    }
    const stats = await this.requestStats(doc).catch((error) => {
      this.output.error(`${STATS_REQUEST}: ${error}`);
      return undefined;
    });
    if (!stats) {
      void vscode.window.showWarningMessage("kvsplice: the server is not running; see Output ▸ kvsplice, or run \"kvsplice: Restart Server\".");
      return;
    }
    this.lastStats = stats;
    this.render();
    const fileName = path.posix.basename(doc.uri.path);
    void vscode.window.showInformationMessage(
      `kvsplice: ${vscode.workspace.asRelativePath(doc.uri)}`,
      { modal: true, detail: statsText(stats, this.progress.current(fileName) ?? statsTask(stats, fileName)) },
    );
  }
}

let instance: Kvsplice | undefined;

export function activate(context: vscode.ExtensionContext): void {
  instance = new Kvsplice(context);
}

/** Returning the promise lets VS Code wait for the server's shutdown/exit handshake. */
export function deactivate(): Promise<void> | undefined {
  return instance?.stop();
}
