// What the time-travel tools (`annals/devtools`, the Redux DevTools bridge) see of a store
// beyond its public API: the log (upcast as the app reads it), read synchronously from the core; fingerprints
// in batches; the other tabs' and the server's view for the divergence search; the
// checkpoints' memory. Reached through a symbol so that the public `Store` type stays what
// apps use, and so that `annals/devtools` needs nothing but a store to work with.

import { AnnalsError } from "./errors.js";
import type { AnnalsEvent, OpenedBundle, Store } from "./types.js";

/** The key under which an annals store (or a handle to one) offers its {@link DebugAccess}. */
export const DEBUG = Symbol.for("annals.debug");

/** One other tab's fingerprints (see {@link DebugAccess.tabFingerprints}). */
export interface TabFingerprints {
  /** An id the answering tab chose for itself for the life of its store. */
  tab: string;
  /** Its head when it answered. */
  head: number;
  /** One per asked position, in order; null where that tab could not compute it (past its head). */
  fingerprints: (string | null)[];
}

/** What a projection's time-travel checkpoints hold now. */
export interface CheckpointStats {
  count: number;
  /** What their states weigh (JSON characters). */
  bytes: number;
  /** The most they may weigh together. */
  budgetBytes: number;
}

export interface DebugAccess {
  /** Whether this store was opened with `sync` options (it has a server to compare with). */
  readonly synced: boolean;
  /** This store's projections, by name, with their versions. */
  projections(): { name: string; version: number }[];
  /**
   * Events `after + 1 ..= to` (`to` at most the head) as the app reads them: upcast by the
   * store's upcasters, an upcast event showing its stored type and schema version in
   * `upcastFrom` (bundles carry the events as stored). Read from the core's memory without
   * waiting: fails with `NOT_LOADED`-like `INVALID_ARGUMENT` only while a
   * lazily opened log is still loading (`whenComplete` first).
   */
  range(after: number, to: number): AnnalsEvent[];
  /** Resolves once the whole log is in memory (at once, unless the store opened lazily). */
  whenComplete(): Promise<void>;
  /** Fingerprints of `name` right after each of `positions` (any order), with `skip` as in `stateAt`. */
  fingerprints(name: string, positions: readonly number[], skip?: readonly string[]): Promise<string[]>;
  /**
   * Asks the other tabs of this store (same name, same origin) for their fingerprints of
   * `name` at `positions`; resolves with the answers heard within `timeoutMs` (default
   * 2000), or as soon as every tab that answered an earlier question has answered (so a
   * bisection waits the full time once). Empty for a memory store or where there is no
   * BroadcastChannel.
   */
  tabFingerprints(name: string, positions: readonly number[], timeoutMs?: number): Promise<TabFingerprints[]>;
  /**
   * A fresh memory store with this store's projections, holding the server's confirmed log
   * as it pulls it now (every page): a replica folded from the server's order. Fails with
   * `INVALID_ARGUMENT` when this store has no `sync` options. The caller closes it.
   */
  serverReplica(): Promise<Store>;
  /** `openBundle` with this store's projection definitions. */
  openBundle(bundle: string | Blob): Promise<OpenedBundle>;
  /** The checkpoints time travel keeps for `name`. */
  checkpointStats(name: string): CheckpointStats;
}

/** The {@link DebugAccess} of an annals store, or `INVALID_ARGUMENT` for anything else. */
export function debugAccess(store: unknown): DebugAccess {
  const access =
    typeof store === "object" && store !== null ? (store as { [DEBUG]?: DebugAccess })[DEBUG] : undefined;
  if (!access) {
    throw new AnnalsError("INVALID_ARGUMENT", "not an annals store: pass what openStore (or openBundle) returned");
  }
  return access;
}
