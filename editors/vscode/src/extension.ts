// VS Code wiring: the language client, settings sync, status bar and commands. The decisions
// (option names, restart rules, messages, formatting) live in the vscode-free modules.
import * as vscode from "vscode";
import {
  CloseAction,
  DidChangeConfigurationNotification,
  ErrorAction,
  LanguageClient,
  State,
} from "vscode-languageclient/node";

import { resolveExecutable } from "./executable";
import {
  CrashWindow,
  INSTALL_HINT,
  crashMessage,
  missingServerMessage,
  modelFailedMessage,
  startFailedMessage,
} from "./failures";
import { Settings, needsRestart, readSettings, serverCommand, serverOptions } from "./settings";
import { DocumentStats, StatsAnswer, documentStats, statsRows, statsText, statusText } from "./stats";

const SECTION = "kvsplice";
const STATS_REQUEST = "kvsplice/stats";
const STATS_DELAY_MS = 300;
const LOADING_POLL_MS = 1000;

function currentSettings(): Settings {
  const config = vscode.workspace.getConfiguration(SECTION);
  return readSettings((key, fallback) => config.get(key, fallback));
}

class Kvsplice implements vscode.Disposable {
  private settings = currentSettings();
  private client: LanguageClient | undefined;
  private readonly output = vscode.window.createOutputChannel("kvsplice", { log: true });
  private readonly status = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  private readonly crashes = new CrashWindow();
  private lastStats: DocumentStats | undefined;
  private reportedError: string | undefined;
  private statsTimer: NodeJS.Timeout | undefined;
  /** Set when the server command is missing: no retry (and no repeated error) per opened file. */
  private missingServer = false;

  constructor(context: vscode.ExtensionContext) {
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
      vscode.window.onDidChangeActiveTextEditor(() => {
        this.lastStats = undefined;
        this.scheduleStats();
      }),
    );
    vscode.workspace.textDocuments.forEach((doc) => this.startIfWanted(doc));
    this.scheduleStats();
  }

  dispose(): void {
    clearTimeout(this.statsTimer);
  }

  private wants(doc: vscode.TextDocument): boolean {
    return this.settings.languages.includes(doc.languageId);
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
    const client = new LanguageClient(SECTION, "kvsplice", { command, args, options: { cwd } }, {
      documentSelector: s.languages.flatMap((language) => [
        { scheme: "file", language },
        { scheme: "untitled", language },
      ]),
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
          const result = await next(document, position, context, token);
          this.scheduleStats();
          return result;
        },
        // The suggest widget would show the same drafts again, and the server lets a document's
        // newest completion request supersede the one before, so the two would cancel each other.
        provideCompletionItem: () => undefined,
      },
    });
    this.client = client;
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

  private onServerClosed() {
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

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client?.needsStop()) {
      await client.stop().catch((error) => this.output.warn(`stopping the server: ${error}`));
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
    const stats = documentStats(await this.client.sendRequest<StatsAnswer>(STATS_REQUEST, { uri }), uri);
    if (stats?.error && stats.error !== this.reportedError) {
      this.reportedError = stats.error;
      void this.offerFix(modelFailedMessage(stats.model, stats.error), "kvsplice.model");
    }
    return stats;
  }

  /**
   * Stats follow drafts and editor switches, debounced so typing does not flood the server,
   * and are polled while the model loads so the status bar shows when it is ready.
   */
  private scheduleStats(delayMs = STATS_DELAY_MS): void {
    clearTimeout(this.statsTimer);
    this.statsTimer = setTimeout(async () => {
      const doc = vscode.window.activeTextEditor?.document;
      if (doc && this.wants(doc)) {
        this.lastStats = await this.requestStats(doc).catch(() => undefined);
      }
      this.render();
      if (this.lastStats && !this.lastStats.ready && !this.lastStats.error) {
        this.scheduleStats(LOADING_POLL_MS);
      }
    }, delayMs);
  }

  private render(): void {
    const doc = vscode.window.activeTextEditor?.document;
    if (!this.client || !doc || !this.wants(doc)) {
      this.status.hide();
      return;
    }
    this.status.text = statusText(this.lastStats, this.settings.model, this.settings.enabled);
    const tooltip = new vscode.MarkdownString(
      this.settings.enabled ? "**kvsplice** — click for this document's cache stats\n\n" : "**kvsplice** — drafts off\n\n",
    );
    if (this.lastStats) {
      tooltip.appendMarkdown("| | |\n|---|---|\n");
      statsRows(this.lastStats).forEach(([label, value]) => tooltip.appendMarkdown(`| ${label} | ${value} |\n`));
    }
    this.status.tooltip = tooltip;
    this.status.show();
  }

  private async showStats(): Promise<void> {
    const doc = vscode.window.activeTextEditor?.document;
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
    void vscode.window.showInformationMessage(
      `kvsplice: ${vscode.workspace.asRelativePath(doc.uri)}`,
      { modal: true, detail: statsText(stats) },
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
