// Which document the status bar is about. VS Code also reports the Output view, the debug console
// and other panels as the active text editor; their documents are never ones kvsplice drafts for,
// so focusing them keeps the status of the file still shown in the editor area.

/** The URI schemes of documents the server sees (the client's document selector). */
export const SCHEMES = ["file", "untitled"];

interface Doc {
  uri: { scheme: string };
}

/**
 * The active editor's document when it is a file, else the previously followed document while
 * one of the visible editors still shows it, else none.
 */
export function followedDocument<D extends Doc>(active: D | undefined, visible: readonly D[], previous: D | undefined): D | undefined {
  if (active && SCHEMES.includes(active.uri.scheme)) {
    return active;
  }
  return previous && visible.includes(previous) ? previous : undefined;
}
