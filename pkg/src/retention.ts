// Bounded local storage (`retain: { events }`): a synced store drops the confirmed events
// that every projection's snapshot covers, keeping the newest ones, the outbox and the
// snapshots (the core's rule: `src/retention.rs`). Reads and `stateAt` below what is kept
// ask the sync server for the dropped part, page by page, or fail with `NOT_RETAINED`
// naming the range kept. Also: the browser's persistent storage (`navigator.storage`),
// requested on open, and `store.storage()`'s report.

import { AnnalsError } from "./errors.js";
import { pullServerLog } from "./server-log.js";
import type { AnnalsEvent, EventQuery, RetainOptions, StorageReport, SyncOptions } from "./types.js";

/** Applying the policy waits this long after a change (snapshots are written meanwhile). */
const RETAIN_SPACING_MS = 200;

/** What retention needs from its store. */
export interface RetentionHost {
  readonly core: {
    readonly dropped: number;
    readonly confirmedHead: number;
    retain(events: number, names: string[], versions: Float64Array): Promise<unknown>;
  };
  readonly sync: SyncOptions | undefined;
  /** Each projection's name and version: their snapshots must cover a cut. */
  projections(): { name: string; version: number }[];
  /** The stored events as this build reads them (upcast). */
  upcast(events: AnnalsEvent[]): AnnalsEvent[];
  isClosed(): boolean;
  track<T>(promise: Promise<T>): Promise<T>;
  reportError(error: unknown): void;
  /** A cut was made: the other tabs should take it in. */
  cut(): void;
}

/** The first confirmed position kept, and the error of a read below it. */
export function notRetained(what: string, dropped: number, confirmedHead: number, cause?: unknown): AnnalsError {
  const kept = confirmedHead > dropped ? `positions ${dropped + 1} to ${confirmedHead}` : "no confirmed event";
  const why = cause === undefined ? "" : `; the sync server could not be asked (${cause instanceof Error ? cause.message : String(cause)})`;
  const error = new AnnalsError(
    "NOT_RETAINED",
    `${what} reaches below the retained range: this replica keeps ${kept} (retention dropped positions 1 to ${dropped}, which the sync server still holds)${why}`,
    cause === undefined ? undefined : { cause },
  );
  (error as AnnalsError & { retainedFrom?: number }).retainedFrom = dropped + 1;
  return error;
}

/**
 * Events `after + 1 ..= to` read across the retention cut: `fetched`, those dropped here,
 * from `fetchDropped` (the sync server), then `held`, the rest, from `local`. A cut made
 * while the server answers (this tab's policy or another tab's) moves the line: what it
 * dropped is fetched too before `local` runs, so `local` never meets `NOT_RETAINED`.
 */
export async function readAcrossCut<T>(
  after: number,
  to: number,
  dropped: () => number,
  fetchDropped: (after: number, to: number) => Promise<T[]>,
  local: (after: number, to: number) => T[],
): Promise<{ fetched: T[]; held: T[] }> {
  let fetched: T[] = [];
  let from = after;
  for (let cut = Math.min(dropped(), to); cut > from; cut = Math.min(dropped(), to)) {
    fetched = fetched.concat(await fetchDropped(from, cut));
    from = cut;
  }
  return { fetched, held: local(from, to) };
}

export class Retention {
  readonly #host: RetentionHost;
  readonly #options: RetainOptions | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running: Promise<number> | undefined;

  constructor(host: RetentionHost, options: RetainOptions | undefined, signal: AbortSignal) {
    this.#host = host;
    this.#options = options;
    signal.addEventListener("abort", () => {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    });
  }

  get options(): RetainOptions | undefined {
    return this.#options;
  }

  /** Applies the policy shortly (after a change: snapshots may have moved). */
  schedule(): void {
    if (!this.#options || this.#timer !== undefined || this.#host.isClosed()) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.apply().catch((error: unknown) => {
        if (!this.#host.isClosed()) this.#host.reportError(error);
      });
    }, RETAIN_SPACING_MS);
    (this.#timer as { unref?: () => void }).unref?.();
  }

  /** Applies the policy now (one cut at a time); resolves to the last position dropped, or 0. */
  apply(): Promise<number> {
    const options = this.#options;
    if (!options || this.#host.isClosed()) return Promise.resolve(0);
    const previous = this.#running ?? Promise.resolve(0);
    const run = previous
      .catch(() => 0)
      .then(async () => {
        if (this.#host.isClosed()) return 0;
        const host = this.#host;
        const projections = host.projections();
        const cut = Number(
          await host.core.retain(
            options.events,
            projections.map((p) => p.name),
            Float64Array.from(projections, (p) => p.version),
          ),
        );
        if (cut > 0) host.cut();
        return cut;
      });
    this.#running = this.#host.track(run).finally(() => {
      if (this.#running === run) this.#running = undefined;
    });
    return run;
  }

  /** The first confirmed position held (1 when nothing was dropped). */
  get retainedFrom(): number {
    return this.#host.core.dropped + 1;
  }

  /**
   * The confirmed events `after + 1 ..= to` (all below the retained range) from the sync
   * server, as this build reads them (`stored`: as stored, for exports), or `NOT_RETAINED`
   * (naming the range kept) when it cannot be asked.
   */
  async fetch(after: number, to: number, what: string, stored = false): Promise<AnnalsEvent[]> {
    const host = this.#host;
    const { dropped, confirmedHead } = host.core;
    if (to <= after) return [];
    if (!host.sync) throw notRetained(what, dropped, confirmedHead);
    const out: AnnalsEvent[] = [];
    try {
      await pullServerLog(
        host.sync,
        async (page) => {
          for (const event of page) out.push({ ...event, pending: false });
        },
        { after, to },
      );
    } catch (error) {
      throw notRetained(what, dropped, confirmedHead, error);
    }
    return stored ? out : host.upcast(out);
  }

  /**
   * A read that reaches below the retained range: the dropped part comes from the server
   * (page by page, filtered here as the core filters), the rest from `local` (which reads
   * what the replica holds: positions after the cut, pending events too); then the order
   * and `limit` of the query apply to the whole.
   */
  async read(query: EventQuery, local: (query: EventQuery) => AnnalsEvent[]): Promise<AnnalsEvent[]> {
    const after = query.after ?? 0;
    const what = query.stream === undefined ? `a read after position ${after}` : `a read of stream \`${query.stream}\``;
    const { limit, backwards, ...rest } = query;
    // A stream's reads skip everything up to its last delete: look from its start for it.
    const { fetched, held } = await readAcrossCut(
      query.stream === undefined ? after : 0,
      query.to ?? Infinity,
      () => this.#host.core.dropped,
      (from, to) => this.fetch(from, to, what),
      (from) => local({ ...rest, after: Math.max(after, from) }),
    );
    let early = fetched.filter((e) => matches(query, e));
    if (query.stream !== undefined) {
      let deletedAt = 0;
      for (const e of fetched) if (e.stream === query.stream && e.type === "$StreamDeleted") deletedAt = e.version;
      early = early.filter((e) => e.version > deletedAt && e.position > after);
    }
    const all = early.concat(held);
    if (backwards) all.reverse();
    return limit === undefined ? all : all.slice(0, limit);
  }

  /** The storage report of `store.storage()`. */
  async report(): Promise<StorageReport> {
    const { dropped, confirmedHead } = this.#host.core;
    const browser = await storageEstimate();
    return {
      ...browser,
      retained: { from: dropped + 1, to: confirmedHead, events: confirmedHead - dropped, dropped },
      retain: this.#options,
    };
  }
}

/** Whether a fetched event meets the query's filters (not its bounds). */
function matches(query: EventQuery, event: AnnalsEvent): boolean {
  if (query.stream !== undefined && event.stream !== query.stream) return false;
  if (query.fromVersion !== undefined && event.version < query.fromVersion) return false;
  if (query.type !== undefined && event.type !== query.type) return false;
  if (query.correlationId !== undefined) {
    const meta = event.meta as { correlationId?: unknown } | undefined;
    if (meta?.correlationId !== query.correlationId) return false;
  }
  return true;
}

interface StorageManagerLike {
  persist?: () => Promise<boolean>;
  persisted?: () => Promise<boolean>;
  estimate?: () => Promise<{ usage?: number; quota?: number }>;
}

function storageManager(): StorageManagerLike | undefined {
  const nav = (globalThis as { navigator?: { storage?: StorageManagerLike } }).navigator;
  return nav?.storage;
}

/**
 * Asks the browser to keep this origin's storage when space runs short (it may say no, or
 * ask the user); resolves to its answer, or undefined where there is no such API (Node).
 */
export async function requestPersistence(): Promise<boolean | undefined> {
  const storage = storageManager();
  if (typeof storage?.persist !== "function") return undefined;
  try {
    return await storage.persist();
  } catch {
    return undefined;
  }
}

/** The origin's usage and quota and whether its storage is persistent (undefined where unknown). */
export async function storageEstimate(): Promise<Pick<StorageReport, "usage" | "quota" | "persisted">> {
  const storage = storageManager();
  let usage: number | undefined;
  let quota: number | undefined;
  let persisted: boolean | undefined;
  try {
    if (typeof storage?.estimate === "function") ({ usage, quota } = await storage.estimate());
    if (typeof storage?.persisted === "function") persisted = await storage.persisted();
  } catch {
    // Some embedders refuse: the report says unknown.
  }
  return { usage, quota, persisted };
}
