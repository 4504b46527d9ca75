// Unsynced events of stores whose database was deleted under them, kept until a store of
// that name is opened again and appends them again, by id, so that a deleted database does
// not silently lose work the server never saw. They are kept in this tab's memory and, up to
// a bound, in `localStorage`, which is synchronous (the store is closing as the database goes,
// no await is safe), survives a reload, and is not deleted with the database.

import type { OutboxEvent } from "./wasm-contract.js";

/** How long a reopened store waits to become the tab that syncs, and for its first sync,
 * before it appends the orphaned outbox anyway. */
export const ADOPT_WAIT_MS = 5_000;

/**
 * Most characters of JSON kept in `localStorage` per store name. Browsers give an origin
 * about 5 million characters there, shared with the app: a fifth of it at most. Past the
 * bound, the events that do not fit (the last ones: earlier ones come first, as later ones
 * may expect their versions) are kept in this tab's memory only.
 */
export const MAX_PERSISTED_CHARS = 1_000_000;

/** The `localStorage` key of a store name's orphans. */
export function orphansKey(name: string): string {
  return `annals-orphans:${name}`;
}

/** The part of `localStorage` used here. */
export interface OrphanStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** `localStorage` where there is one and it may be used (not in Node, a sandboxed frame, ...). */
function persistent(): OrphanStorage | undefined {
  try {
    const storage = (globalThis as { localStorage?: OrphanStorage }).localStorage;
    return storage && typeof storage.getItem === "function" ? storage : undefined;
  } catch {
    return undefined; // reading `localStorage` throws where the page may not use it
  }
}

/** By store name: everything kept in this tab (the persisted ones too). */
const orphanedOutboxes = new Map<string, OutboxEvent[]>();

/** The orphans kept in `localStorage` for `name` (none if unreadable). */
function persisted(storage: OrphanStorage | undefined, name: string): OutboxEvent[] {
  if (!storage) return [];
  try {
    const raw = storage.getItem(orphansKey(name));
    if (raw === null) return [];
    const parsed = JSON.parse(raw) as { v?: unknown; events?: unknown };
    return parsed?.v === 1 && Array.isArray(parsed.events) ? (parsed.events as OutboxEvent[]) : [];
  } catch {
    return [];
  }
}

/** `earlier` then those of `later` whose ids are not in it. */
function mergeById(earlier: readonly OutboxEvent[], later: readonly OutboxEvent[]): OutboxEvent[] {
  const known = new Set(earlier.map((e) => e.id));
  return [...earlier, ...later.filter((e) => !known.has(e.id))];
}

/** What `keepOrphans` could keep. */
export interface KeptOrphans {
  /** Events kept for the next open of the store name (this tab's, and earlier ones). */
  kept: number;
  /** Of those, the ones that survive a reload (in `localStorage`). */
  persisted: number;
}

/**
 * Keeps `unsynced` (merged by id with what is kept already) for the next store named `name`:
 * in this tab's memory, and the first of them, up to MAX_PERSISTED_CHARS, in `localStorage`.
 */
export function keepOrphans(name: string, unsynced: readonly OutboxEvent[]): KeptOrphans {
  const storage = persistent();
  const before = mergeById(persisted(storage, name), orphanedOutboxes.get(name) ?? []);
  const all = mergeById(before, unsynced);
  if (all.length === 0) return { kept: 0, persisted: 0 };
  orphanedOutboxes.set(name, all);
  if (!storage) return { kept: all.length, persisted: 0 };
  // The longest prefix that fits (one serialisation per event, then one for the record).
  let chars = 20;
  let fit = 0;
  for (const event of all) {
    chars += JSON.stringify(event).length + 1;
    if (chars > MAX_PERSISTED_CHARS) break;
    fit += 1;
  }
  for (let count = fit; count > 0; count = Math.floor(count / 2)) {
    try {
      storage.setItem(orphansKey(name), JSON.stringify({ v: 1, events: all.slice(0, count) }));
      return { kept: all.length, persisted: count };
    } catch {
      // The origin's quota is full: try with fewer.
    }
  }
  try {
    storage.removeItem(orphansKey(name));
  } catch {
    // nothing kept there either way
  }
  return { kept: all.length, persisted: 0 };
}

/** The orphans kept for `name`: in `localStorage` (an earlier page), then this tab's. */
export function keptOrphans(name: string): OutboxEvent[] {
  return mergeById(persisted(persistent(), name), orphanedOutboxes.get(name) ?? []);
}

/** Forgets the orphans of `name` that are among `adopted` (others may have come since). */
function forgetOrphans(name: string, adopted: readonly OutboxEvent[]): void {
  const ids = new Set(adopted.map((e) => e.id));
  const left = keptOrphans(name).filter((e) => !ids.has(e.id));
  orphanedOutboxes.delete(name);
  try {
    persistent()?.removeItem(orphansKey(name));
  } catch {
    // An entry left behind holds adopted events only: appending them again adds nothing.
  }
  if (left.length > 0) keepOrphans(name, left);
}

/** What adopting orphans needs from the reopened store. */
export interface OrphansHost {
  readonly name: string;
  readonly synced: boolean;
  isLeader(): boolean;
  isClosed(): boolean;
  sync(): Promise<unknown>;
  appendMany(events: Record<string, unknown>[]): Promise<unknown>;
  reportError(error: unknown): void;
}

/**
 * Appends again the orphans kept for `host.name` (by this tab, or by an earlier page and
 * found in `localStorage`). A first sync comes before, so that their expected versions are
 * checked against the server's log and those the server already has are duplicates. If the
 * append fails, they are kept for the next open and the error reported.
 */
export async function adoptOrphans(host: OrphansHost): Promise<void> {
  const orphans = keptOrphans(host.name);
  if (orphans.length === 0) return;
  if (host.synced) {
    const deadline = Date.now() + ADOPT_WAIT_MS;
    while (!host.isLeader() && !host.isClosed() && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      host.sync().catch(() => undefined),
      new Promise((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - Date.now())))),
    ]);
    clearTimeout(timer);
  }
  try {
    await host.appendMany(
      orphans.map((e) => {
        const event: Record<string, unknown> = { id: e.id, stream: e.stream, type: e.type, data: e.data };
        if (e.meta !== undefined) event.meta = e.meta;
        if (e.expectedVersion !== undefined) event.expectedVersion = e.expectedVersion;
        return event;
      }),
    );
    forgetOrphans(host.name, orphans);
  } catch (error) {
    host.reportError(error);
  }
}
