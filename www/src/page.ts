// What both demo pages (the board and the todo list) read from their page: elements by
// their test id, and which store to open and how to sync it from the URL.

export function byTestId<T extends HTMLElement>(id: string): T {
  const el = document.querySelector<T>(`[data-testid="${id}"]`);
  if (!el) throw new Error(`missing element [data-testid="${id}"]`);
  return el;
}

/** The store a page opens and its sync options, from the URL. */
export interface PageStore {
  name: string;
  /** False with `?sync=off`. */
  syncEnabled: boolean;
  sync: { url: string; store: string; token: string } | undefined;
}

/**
 * `?store=` names the store (default `defaultName`). The page syncs with the annals-server
 * that serves it (`make demo`) unless `?sync=off` (a local-only store, for example on a
 * plain static server); `?token=` overrides the demo token.
 */
export function pageStore(defaultName: string): PageStore {
  const params = new URLSearchParams(location.search);
  const name = params.get("store") || defaultName;
  const syncEnabled = params.get("sync") !== "off";
  const sync = syncEnabled ? { url: location.origin, store: name, token: params.get("token") || "dev" } : undefined;
  return { name, syncEnabled, sync };
}
