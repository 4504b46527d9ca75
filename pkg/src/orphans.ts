// Unsynced events of stores whose database was deleted under them: kept in this tab's memory
// until a store of that name is opened again and appends them again, by id, so that a
// deleted database does not silently lose work the server never saw.

import type { OutboxEvent } from "./wasm-contract.js";

/** How long a reopened store waits to become the tab that syncs, and for its first sync,
 * before it appends the orphaned outbox anyway. */
export const ADOPT_WAIT_MS = 5_000;

/** By store name. */
const orphanedOutboxes = new Map<string, OutboxEvent[]>();

/** Keeps `unsynced` (merged by id with what is kept already) for the next store named `name`. */
export function keepOrphans(name: string, unsynced: readonly OutboxEvent[]): void {
  if (unsynced.length === 0) return;
  const kept = orphanedOutboxes.get(name) ?? [];
  const known = new Set(kept.map((e) => e.id));
  orphanedOutboxes.set(name, [...kept, ...unsynced.filter((e) => !known.has(e.id))]);
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
 * Appends again the orphans kept for `host.name`. A first sync comes before, so that their
 * expected versions are checked against the server's log and those the server already has
 * are duplicates. If the append fails, they are kept for the next open and the error reported.
 */
export async function adoptOrphans(host: OrphansHost): Promise<void> {
  const orphans = orphanedOutboxes.get(host.name);
  if (!orphans || orphans.length === 0) return;
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
    orphanedOutboxes.delete(host.name);
  } catch (error) {
    host.reportError(error);
  }
}
