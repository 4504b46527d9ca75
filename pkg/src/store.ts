// The store: the TypeScript side of annals. The wasm core keeps the log (append rules,
// storage, reads, the sync client); this module serialises batches, folds the changes the
// core reports into projections (confirmed and optimistic states), keeps checkpoints and
// snapshots, tells other tabs about changes, elects the tab that syncs, and runs the
// command side: aggregates, process managers, compensations.

import { AnnalsError, fromWasmError, isAnnalsError } from "./errors.js";
import { commandEventId, randomUuid } from "./ids.js";
import { ReactorRuntime, webLocks, type ReactorHost } from "./reactor.js";
import type {
  AggregateMap,
  AnnalsEvent,
  CommandOf,
  Change,
  ClosedInfo,
  CommandRejection,
  CommandRequest,
  CompactionReport,
  EventQuery,
  EventShape,
  ExecuteOptions,
  ExecuteResult,
  NewEvent,
  OpenOptions,
  Projection,
  Reactor,
  ReactorOptions,
  RejectedEvent,
  Rejection,
  Store,
  SyncOptions,
  SyncReport,
  SyncStatus,
} from "./types.js";

/** The surface of the wasm `WasmStore` this module uses. */
export interface WasmStoreHandle {
  readonly head: number;
  readonly confirmedHead: number;
  readonly pendingCount: number;
  readonly synced: boolean;
  readonly isComplete: boolean;
  readonly loadedAfter: number;
  loadFrom(after: number): Promise<unknown>;
  readableTo(after: number): number;
  readonly logGeneration: number;
  loadStep(): Promise<unknown>;
  complete(): Promise<unknown>;
  setListener(listener: (json: string | null, error?: unknown) => void): void;
  /** The batch as JSON, UTF-8 encoded. */
  append(batchJson: Uint8Array): Promise<unknown>;
  catchUp(): Promise<unknown>;
  read(queryJson: string): string;
  range(after: number, to: number): string;
  rejected(): Promise<unknown>;
  startSync(configJson: string, onStatus: (json: string) => void, onRejected: (json: string) => void): Promise<unknown>;
  syncNow(): Promise<unknown>;
  syncStatus(): string | undefined;
  setOnline(online: boolean): void;
  wakeSync(): void;
  stopSync(): void;
  putSnapshot(name: string, version: number, position: number, stateJson: string): Promise<unknown>;
  snapshot(name: string): Promise<unknown>;
  deleteSnapshot(name: string): Promise<unknown>;
  compact(): Promise<unknown>;
  /** Called once with "deleted", "upgraded" or "lost" if the IndexedDB connection is taken away. */
  setOnClosed(listener: (reason: string) => void): void;
  /** The outbox as JSON, read from memory (it still reads once the database is gone). */
  outbox(): string;
  close(): Promise<unknown>;
  free(): void;
}

/** An outbox entry as the core reports it: what to append again. */
interface OutboxEvent {
  id: string;
  stream: string;
  type: string;
  data: unknown;
  meta?: Record<string, unknown>;
  expectedVersion?: number | "no_stream" | "exists";
}

/**
 * Unsynced events of stores whose database was deleted under them, by store name: kept in
 * this tab's memory until a store of that name is opened again and takes them back.
 */
const orphanedOutboxes = new Map<string, OutboxEvent[]>();

/** How long a reopened store waits to become the tab that syncs, and for its first sync,
 * before it appends the orphaned outbox anyway. */
const ADOPT_WAIT_MS = 5_000;

export type WasmOpen = (name: string, storage: string, optionsJson: string) => Promise<WasmStoreHandle>;

const DEFAULT_INTERVAL = 1_000;
const utf8 = new TextEncoder();
/** Periodic snapshots are at least this far apart in time... */
const SNAPSHOT_SPACING_MS = 100;
/** ...unless this many times `snapshotEvery` events wait. */
const SNAPSHOT_BURST = 10;
/** Checkpoints kept per projection; past it, every other one goes and the interval doubles. */
const MAX_CHECKPOINTS = 64;
/** Events read from the core at a time when replaying. */
const REPLAY_CHUNK = 2_000;
/** `execute` decides at most this many times when other writers keep moving the stream. */
const MAX_ATTEMPTS = 5;
/** How long `sync()` in a tab that does not sync waits for the syncing tab's answer. */
const SYNC_ANSWER_MS = 30_000;
/** How long `close()` waits for the sync loop to end (a request in flight) before going on. */
const SYNC_STOP_MS = 2_000;
/** Snapshot records of process managers' checkpoints are named with this prefix. */
const REACTOR_PREFIX = "react:";

/** What the core's listener reports (see `setListener` in src/wasm/mod.rs). */
interface ChangeMessage {
  seq: number;
  reset: boolean;
  rebased: boolean;
  previousHead: number;
  head: number;
  confirmed: number;
  confirmedEvents: AnnalsEvent[];
  pendingEvents: AnnalsEvent[];
}

interface AppendReply {
  results: number[];
  duplicates: AnnalsEvent[];
  seq: number | null;
}

interface SnapshotReply {
  version: number;
  position: number;
  state: unknown;
}

/** The core's sync status (the wrapper adds `leader`). */
interface CoreSyncStatus {
  online: boolean;
  syncing: boolean;
  pending: number;
  lastPulled: number;
  lastError: string | null;
  lastErrorCode: string | null;
}

interface Checkpoint {
  position: number;
  /** JSON, so that later mutation of a state cannot change it. */
  json: string;
}

/** The events of one change, by position (they are contiguous). */
interface Captured {
  first: number;
  events: AnnalsEvent[];
}

type AnyProjection = Projection<unknown, EventShape>;

interface AnyAggregate {
  initial: unknown;
  evolve: (state: unknown, event: AnnalsEvent) => unknown;
  decide: (command: { type: string }, state: unknown) => readonly unknown[];
  onRejected?: (rejection: CommandRejection) => readonly CommandRequest[] | void;
}

/** An aggregate instance's state folded from its confirmed events. */
interface AggregateCache {
  state: unknown;
  /** The confirmed head this state was brought up to. */
  position: number;
  /** The stream's version among confirmed events. */
  version: number;
  /** Command ids found on the stream's confirmed events. */
  commands: Set<string>;
  generation: number;
}

/** A fresh deep copy of JSON-like data (structuredClone, else JSON). */
function copyState(state: unknown): unknown {
  if (state === null || typeof state !== "object") return state;
  try {
    return structuredClone(state);
  } catch {
    return JSON.parse(JSON.stringify(state)) as unknown;
  }
}

class ProjectionRuntime {
  /** The state folded from confirmed events up to `position`. */
  confirmed: unknown;
  /**
   * The optimistic state: `confirmed` itself while nothing is pending, else a copy of it
   * with the pending events folded in.
   */
  state: unknown;
  /** The last confirmed position folded into `confirmed`. */
  position = 0;
  /** Position of the last snapshot stored (or loaded). */
  snapshotPosition = 0;
  readonly subscribers = new Set<(state: unknown) => void>();
  /** Ascending by position; confirmed states only. */
  checkpoints: Checkpoint[] = [];
  checkpointEvery: number;

  constructor(
    readonly name: string,
    readonly def: AnyProjection,
    readonly version: number,
    checkpointEvery: number,
  ) {
    this.checkpointEvery = checkpointEvery;
    this.confirmed = this.initial();
    this.state = this.confirmed;
  }

  /** A fresh copy of `initial`, so that a mutating reducer cannot change it. */
  initial(): unknown {
    return copyState(this.def.initial);
  }

  /** The confirmed log restarted: so does the projection. */
  reset(): void {
    this.confirmed = this.initial();
    this.state = this.confirmed;
    this.position = 0;
    this.snapshotPosition = 0;
    this.checkpoints = [];
  }

  /** Records a checkpoint (keeping the list sorted and bounded). */
  addCheckpoint(position: number, json: string): void {
    const list = this.checkpoints;
    let i = list.length;
    while (i > 0 && list[i - 1]!.position > position) i--;
    if (i > 0 && list[i - 1]!.position === position) {
      list[i - 1] = { position, json };
      return;
    }
    list.splice(i, 0, { position, json });
    if (list.length > MAX_CHECKPOINTS) {
      this.checkpointEvery *= 2;
      const every = this.checkpointEvery;
      this.checkpoints = list.filter((c) => c.position % every === 0);
      if (this.checkpoints.length > MAX_CHECKPOINTS) this.checkpoints.splice(0, this.checkpoints.length - MAX_CHECKPOINTS);
    }
  }

  /** The checkpoint nearest at or before `position`. */
  checkpointAtOrBefore(position: number): Checkpoint | undefined {
    const list = this.checkpoints;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.position <= position) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 ? list[lo - 1] : undefined;
  }
}

function invalidArgument(message: string): AnnalsError {
  return new AnnalsError("INVALID_ARGUMENT", message);
}

function closedError(): AnnalsError {
  return new AnnalsError("CLOSED", "the store is closed");
}

function describeKey(key: string): string {
  return key === "" ? "the batch" : `the value at key ${JSON.stringify(key)}`;
}

/** Throws INVALID_EVENT on anything JSON cannot carry faithfully. */
function eventReplacer(key: string, value: unknown): unknown {
  switch (typeof value) {
    case "function":
      throw new AnnalsError("INVALID_EVENT", `${describeKey(key)} is a function; events must be JSON`);
    case "symbol":
      throw new AnnalsError("INVALID_EVENT", `${describeKey(key)} is a symbol; events must be JSON`);
    case "bigint":
      throw new AnnalsError(
        "INVALID_EVENT",
        `${describeKey(key)} is a BigInt; events must be JSON (store it as a string)`,
      );
    case "number":
      if (!Number.isFinite(value)) {
        throw new AnnalsError("INVALID_EVENT", `${describeKey(key)} is ${String(value)}; events must be JSON`);
      }
      return value;
    default:
      return value;
  }
}

/**
 * Whether `value` is data that `JSON.stringify` writes faithfully with no replacer: strings,
 * booleans, null, finite numbers, arrays and objects of them (properties that are
 * `undefined` are left out, as always). `false` for anything the replacer must look at: a
 * function, symbol, BigInt, non-finite number, `toJSON`, or nesting past 64 levels (cycles).
 */
function isPlainJson(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case "string":
    case "boolean":
    case "undefined":
      return true;
    case "number":
      return Number.isFinite(value);
    case "object": {
      if (value === null) return true;
      if (depth > 64) return false;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) if (!isPlainJson(value[i], depth + 1)) return false;
        return true;
      }
      const record = value as Record<string, unknown>;
      if (typeof record.toJSON === "function") return false;
      for (const key in record) {
        if (Object.prototype.hasOwnProperty.call(record, key) && !isPlainJson(record[key], depth + 1)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

/** One JSON.stringify for the whole batch. */
export function serializeBatch(events: readonly unknown[]): string {
  for (let i = 0; i < events.length; i++) {
    const event = events[i];
    if (typeof event !== "object" || event === null || Array.isArray(event)) {
      throw new AnnalsError("INVALID_EVENT", `event ${i}: an event must be an object with \`stream\` and \`type\``);
    }
  }
  try {
    // Plain JSON data (the common case) needs no replacer: the native serialiser's fast
    // path is several times quicker. Anything else goes through the checking replacer,
    // which refuses what JSON cannot carry with the reason.
    return isPlainJson(events, 0) ? JSON.stringify(events) : JSON.stringify(events, eventReplacer);
  } catch (error) {
    if (error instanceof AnnalsError) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new AnnalsError("INVALID_EVENT", `the events are not JSON-serialisable: ${reason}`, { cause: error });
  }
}

function serializeQuery(query: unknown): string {
  if (query === undefined || query === null) return "{}";
  if (typeof query !== "object" || Array.isArray(query)) {
    throw invalidArgument("a query must be an object such as { after: 0, limit: 100 }");
  }
  return JSON.stringify(query, (key: string, value: unknown) => {
    if (typeof value === "number" && !Number.isFinite(value)) {
      throw invalidArgument(`query \`${key}\` must be a finite number, got ${String(value)}`);
    }
    if (typeof value === "bigint" || typeof value === "function" || typeof value === "symbol") {
      throw invalidArgument(`query \`${key}\` must be a number or a string`);
    }
    return value;
  });
}

function wholeNumber(name: string, value: unknown, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > max) {
    throw invalidArgument(`\`${name}\` must be an integer from 0 to ${max}, got ${String(value)}`);
  }
  return value;
}

function rethrow(error: unknown): never {
  throw fromWasmError(error);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** `navigator.onLine` where it exists; true elsewhere. */
function platformOnline(): boolean {
  const nav = (globalThis as { navigator?: { onLine?: unknown } }).navigator;
  return typeof nav?.onLine === "boolean" ? nav.onLine : true;
}

function parseSyncOptions(sync: unknown): SyncOptions {
  if (typeof sync !== "object" || sync === null || Array.isArray(sync)) {
    throw invalidArgument("`sync` must be an object such as { url, store, token }");
  }
  const s = sync as Record<string, unknown>;
  const known = new Set(["url", "store", "token", "pushBatch", "pullLimit", "longPollSeconds"]);
  for (const key of Object.keys(s)) {
    if (!known.has(key)) throw invalidArgument(`unknown sync option \`${key}\``);
  }
  for (const key of ["url", "store"] as const) {
    if (typeof s[key] !== "string" || (s[key] as string).trim() === "") {
      throw invalidArgument(`\`sync.${key}\` must be a non-empty string`);
    }
  }
  if (typeof s.token !== "string") throw invalidArgument("`sync.token` must be a string");
  try {
    new URL(s.url as string);
  } catch {
    throw invalidArgument(`\`sync.url\` is not a URL: ${String(s.url)}`);
  }
  const out: SyncOptions = { url: s.url as string, store: s.store as string, token: s.token };
  for (const key of ["pushBatch", "pullLimit", "longPollSeconds"] as const) {
    if (s[key] === undefined) continue;
    const n = wholeNumber(`sync.${key}`, s[key], key === "longPollSeconds" ? 0xffff_ffff : Number.MAX_SAFE_INTEGER);
    if (n === 0 && key !== "longPollSeconds") throw invalidArgument(`\`sync.${key}\` must be positive`);
    out[key] = n;
  }
  return out;
}

/** Merges the changes seen during one catch-up into one. */
function mergeChanges<E extends EventShape>(changes: Change<E>[], head: number, confirmedHead: number): Change<E> {
  const [first, ...rest] = changes;
  if (!first) return { previousHead: head, head, events: [], confirmedHead, rebased: false, reset: false };
  const merged: Change<E> = { ...first, events: [...first.events] };
  for (const change of rest) {
    if (change.reset) {
      merged.previousHead = 0;
      merged.events = [...change.events];
      merged.reset = true;
    } else {
      if (change.previousHead < merged.head) merged.rebased = true;
      merged.previousHead = Math.min(merged.previousHead, change.previousHead);
      merged.events = merged.events.filter((e) => e.position <= change.previousHead).concat(change.events);
    }
    merged.rebased ||= change.rebased;
    merged.head = change.head;
    merged.confirmedHead = change.confirmedHead;
  }
  return merged;
}

interface Settings {
  name: string;
  storage: "indexeddb" | "memory";
  shared: boolean;
  snapshotEvery: number;
  sync: SyncOptions | undefined;
}

/** Messages between the tabs of one store (BroadcastChannel `annals:<name>`). */
type TabMessage =
  | { kind: "change"; head: number; confirmed: number }
  | { kind: "hello" }
  | { kind: "here"; head: number; confirmed: number }
  | { kind: "status"; status: CoreSyncStatus }
  | { kind: "status?" }
  | { kind: "rejected"; rejection: Rejection }
  | { kind: "sync?"; id: string }
  | { kind: "synced"; id: string; report?: SyncReport; error?: { code: string; message: string } };

/** Where the page lifecycle's `freeze` and `resume` events arrive (`document`). */
interface LifecycleTarget {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

interface SyncRequest {
  resolve: (report: SyncReport) => void;
  reject: (error: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyListener = (...args: any[]) => void;

export class AnnalsStore<E extends EventShape, S, A = {}> implements Store<E, S, A> {
  readonly #wasm: WasmStoreHandle;
  readonly #settings: Settings;
  readonly #projections = new Map<string, ProjectionRuntime>();
  readonly #aggregates: Map<string, AnyAggregate>;
  readonly #aggregateCache = new Map<string, AggregateCache>();
  readonly #listeners = {
    change: new Set<AnyListener>(),
    error: new Set<AnyListener>(),
    sync: new Set<AnyListener>(),
    rejected: new Set<AnyListener>(),
    closed: new Set<AnyListener>(),
  };
  readonly #inflight = new Set<Promise<unknown>>();
  #head = 0;
  #confirmedHead = 0;
  /** Counts restarts of the confirmed log (server epoch changes). */
  #generation = 0;
  #loading = true;
  #closed = false;
  /** The database was taken away (deleted, upgraded elsewhere): nothing more can be written. */
  #lost = false;
  #closing: Promise<void> | undefined;
  #channel: BroadcastChannel | undefined;
  #announcing: ReturnType<typeof setTimeout> | undefined;
  /** Another tab of this store has been heard from (it then hears of every change). */
  #peers = false;
  #snapshotting: Promise<void> | undefined;
  #lastSnapshotAt = -Infinity;
  #snapshotTimer: ReturnType<typeof setTimeout> | undefined;
  /** The background completion of the core's log (see #completeInBackground). */
  #complete: Promise<void> = Promise.resolve();
  #catchUpTail: Promise<unknown> = Promise.resolve();
  #catchUpQueued: Promise<Change<E>> | undefined;
  /** Changes seen by each catch-up in flight. */
  readonly #collectors = new Set<Change<E>[]>();
  #appendsInFlight = 0;
  /** The events of recent changes by `seq`, while appends are in flight. */
  readonly #captured = new Map<number, Captured>();
  // sync
  #leader = false;
  #leaderStatus: CoreSyncStatus | undefined;
  #remoteStatus: CoreSyncStatus | undefined;
  #statusCache: SyncStatus | undefined;
  #statusKey = "";
  #emittedStatusKey = "";
  #syncLoop: Promise<void> | undefined;
  #lockAbort: AbortController | undefined;
  /** Lets go of the sync lock this tab holds now (see #pauseSync). */
  #lockRelease: (() => void) | undefined;
  /** Counts this tab's turns at the sync lock: a turn that ended leaves a newer one alone. */
  #syncTurn = 0;
  /** Frozen: this tab left the sync lock (see #pauseSync) until the page resumes. */
  #paused = false;
  /** Frozen: the other tabs' messages, held until the page resumes (see #receive). */
  #held: TabMessage[] | undefined;
  #onlineHandler: (() => void) | undefined;
  /** The page lifecycle's `freeze` and `resume` handlers (browsers only; see #followLifecycle). */
  #lifecycle: { target: LifecycleTarget; freeze: () => void; resume: () => void } | undefined;
  readonly #syncRequests = new Map<string, SyncRequest>();
  /** Ids of rejected events already reported in this tab. */
  readonly #reportedRejections = new Set<string>();
  // process managers
  readonly #reactors = new Map<string, ReactorRuntime>();

  private constructor(wasm: WasmStoreHandle, settings: Settings, aggregates: Map<string, AnyAggregate>) {
    this.#wasm = wasm;
    this.#settings = settings;
    this.#aggregates = aggregates;
  }

  /** Opens the store: the core, then each projection from its snapshot plus the tail of the log. */
  static async open<E extends EventShape, S, A>(
    wasmOpen: WasmOpen,
    options: OpenOptions<E, S, AggregateMap>,
  ): Promise<AnnalsStore<E, S, A>> {
    if (typeof options !== "object" || options === null) {
      throw invalidArgument("openStore needs an options object such as { name: \"todos\" }");
    }
    const { name } = options;
    if (typeof name !== "string" || name.trim() === "") {
      throw invalidArgument("`name` must be a non-empty string");
    }
    const hasIndexedDb = typeof indexedDB !== "undefined";
    const storage = options.storage ?? (hasIndexedDb ? "indexeddb" : "memory");
    if (storage !== "indexeddb" && storage !== "memory") {
      throw invalidArgument(`\`storage\` must be "indexeddb" or "memory", got ${String(storage)}`);
    }
    if (storage === "indexeddb" && !hasIndexedDb) {
      throw invalidArgument('IndexedDB is not available here: use storage: "memory"');
    }
    const shared = options.sharedMemory === true;
    const snapshotEvery = wholeNumber("snapshotEvery", options.snapshotEvery ?? DEFAULT_INTERVAL);
    const checkpointEvery = wholeNumber("checkpointEvery", options.checkpointEvery ?? DEFAULT_INTERVAL);
    if (snapshotEvery === 0 || checkpointEvery === 0) {
      throw invalidArgument("`snapshotEvery` and `checkpointEvery` must be positive");
    }
    const runtimes: ProjectionRuntime[] = [];
    const projections = (options.projections ?? {}) as Record<string, unknown>;
    if (typeof projections !== "object" || projections === null) {
      throw invalidArgument("`projections` must be an object of { initial, apply, version? }");
    }
    for (const [key, def] of Object.entries(projections)) {
      if (typeof def !== "object" || def === null || typeof (def as AnyProjection).apply !== "function") {
        throw invalidArgument(`projection "${key}" needs an \`apply(state, event)\` function`);
      }
      if (key.startsWith(REACTOR_PREFIX)) {
        throw invalidArgument(`projection names starting with "${REACTOR_PREFIX}" are reserved for process managers`);
      }
      const version = wholeNumber(`projections.${key}.version`, (def as AnyProjection).version ?? 1, 0xffff_ffff);
      runtimes.push(new ProjectionRuntime(key, def as AnyProjection, version, checkpointEvery));
    }
    const aggregates = new Map<string, AnyAggregate>();
    const aggregateDefs = (options.aggregates ?? {}) as Record<string, unknown>;
    if (typeof aggregateDefs !== "object" || aggregateDefs === null || Array.isArray(aggregateDefs)) {
      throw invalidArgument("`aggregates` must be an object of { initial, evolve, decide }");
    }
    for (const [key, def] of Object.entries(aggregateDefs)) {
      const d = def as Partial<AnyAggregate> | null;
      if (typeof d !== "object" || d === null || typeof d.evolve !== "function" || typeof d.decide !== "function") {
        throw invalidArgument(`aggregate "${key}" needs \`evolve(state, event)\` and \`decide(command, state)\` functions`);
      }
      if (d.onRejected !== undefined && typeof d.onRejected !== "function") {
        throw invalidArgument(`aggregate "${key}": \`onRejected\` must be a function`);
      }
      aggregates.set(key, d as AnyAggregate);
    }
    const sync = options.sync === undefined ? undefined : parseSyncOptions(options.sync);

    const core: Record<string, unknown> = {};
    if (options.maxEventBytes !== undefined) core.maxEventBytes = wholeNumber("maxEventBytes", options.maxEventBytes);
    if (options.origin !== undefined) {
      if (typeof options.origin !== "string") throw invalidArgument("`origin` must be a string");
      core.origin = options.origin;
    }
    if (shared) core.sharedMemory = true;
    if (sync) core.synced = true;
    // The core reads no event at open: the projections' snapshots decide which ones come
    // first (#load); the rest is read in the background.
    core.lazy = true;

    const wasm = await wasmOpen(name, storage, JSON.stringify(core)).catch(rethrow);
    const store = new AnnalsStore<E, S, A>(wasm, { name, storage, shared, snapshotEvery, sync }, aggregates);
    try {
      wasm.setListener((json, error) => store.#onChange(json, error));
      wasm.setOnClosed((reason) => store.#connectionLost(reason));
      await store.#load(runtimes);
    } catch (error) {
      await wasm.close().catch(() => undefined);
      wasm.free();
      throw fromWasmError(error);
    }
    store.#listenToOtherTabs();
    if (sync) store.#startSync(sync);
    store.#followLifecycle();
    if (storage === "indexeddb") await store.#adoptOrphans();
    return store;
  }

  /**
   * The database went away under the store: it closes (calls fail with `CLOSED` instead of
   * waiting on a connection that is gone) and says why. Unless another tab upgraded it (the
   * data is still there), the unsynced events in memory are kept for the next open.
   */
  #connectionLost(reason: string): void {
    if (this.#closed || this.#closing) return;
    const why: ClosedInfo["reason"] = reason === "deleted" || reason === "upgraded" ? reason : "lost";
    let unsynced: OutboxEvent[] = [];
    try {
      unsynced = JSON.parse(this.#wasm.outbox()) as OutboxEvent[];
    } catch (error) {
      this.#emitError(fromWasmError(error));
    }
    if (why !== "upgraded" && unsynced.length > 0) {
      const kept = orphanedOutboxes.get(this.#settings.name) ?? [];
      const known = new Set(kept.map((e) => e.id));
      orphanedOutboxes.set(this.#settings.name, [...kept, ...unsynced.filter((e) => !known.has(e.id))]);
    }
    this.#lost = true;
    this.#closed = true;
    this.close().catch((error: unknown) => this.#emitError(error));
    const info: ClosedInfo = { reason: why, unsynced: unsynced.length };
    for (const listener of [...this.#listeners.closed]) this.#safely(() => listener(info));
  }

  /**
   * Appends again, by id, the unsynced events of a store of this name whose database was
   * deleted under it in this tab. A first sync comes before, so that their expected versions
   * are checked against the server's log and those the server already has are duplicates.
   * If the append fails, the events are kept for the next open and the error is reported.
   */
  async #adoptOrphans(): Promise<void> {
    const orphans = orphanedOutboxes.get(this.#settings.name);
    if (!orphans || orphans.length === 0) return;
    if (this.#settings.sync) {
      const deadline = Date.now() + ADOPT_WAIT_MS;
      while (!this.#leader && !this.#closed && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.sync().catch(() => undefined),
        new Promise((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - Date.now())))),
      ]);
      clearTimeout(timer);
    }
    try {
      await this.appendMany(
        orphans.map((e) => {
          const event: Record<string, unknown> = { id: e.id, stream: e.stream, type: e.type, data: e.data };
          if (e.meta !== undefined) event.meta = e.meta;
          if (e.expectedVersion !== undefined) event.expectedVersion = e.expectedVersion;
          return event as unknown as NewEvent<E>;
        }),
      );
      orphanedOutboxes.delete(this.#settings.name);
    } catch (error) {
      this.#emitError(error);
    }
  }

  get name(): string {
    return this.#settings.name;
  }

  get head(): number {
    return this.#head;
  }

  get confirmedHead(): number {
    return this.#confirmedHead;
  }

  get closed(): boolean {
    return this.#closed;
  }

  // ---- opening -------------------------------------------------------------------------

  async #load(runtimes: ProjectionRuntime[]): Promise<void> {
    for (const rt of runtimes) this.#projections.set(rt.name, rt);
    const checkpointEvery = runtimes.map((rt) => rt.checkpointEvery);
    // Another writer may reset the log while it loads (then it is loaded again, from the start).
    while (!(await this.#loadOnce(runtimes))) {
      runtimes.forEach((rt, i) => {
        rt.reset();
        rt.checkpointEvery = checkpointEvery[i]!;
      });
    }
    this.#loading = false;
    this.#scheduleSnapshots();
    this.#completeInBackground();
  }

  /** Each projection from its snapshot plus the events after it; false if the log was reset meanwhile. */
  async #loadOnce(runtimes: ProjectionRuntime[]): Promise<boolean> {
    const generation = this.#wasm.logGeneration;
    let confirmed = this.#wasm.confirmedHead;
    for (const rt of runtimes) {
      const reply = (await this.#wasm.snapshot(rt.name)) as string | undefined;
      if (reply === undefined) continue;
      const snapshot = JSON.parse(reply) as SnapshotReply;
      confirmed = this.#wasm.confirmedHead;
      // A snapshot of another version, or ahead of the log (a reset store), is not trusted.
      if (snapshot.version !== rt.version || snapshot.position > confirmed) continue;
      rt.confirmed = snapshot.state;
      rt.position = snapshot.position;
      rt.snapshotPosition = snapshot.position;
      if (snapshot.position > 0) rt.addCheckpoint(snapshot.position, JSON.stringify(snapshot.state));
    }
    // The events the snapshots do not cover come from storage first, part by part: the
    // next part is read while this one is folded. Nothing else changes the core meanwhile
    // (it completes the log before it takes in other writers' changes), but for a reset
    // seen while loading.
    let from = this.#wasm.confirmedHead;
    for (const rt of runtimes) from = Math.min(from, rt.position);
    await this.#wasm.loadFrom(from);
    if (this.#wasm.logGeneration !== generation) return false;
    confirmed = this.#wasm.confirmedHead;
    const head = this.#wasm.head;
    // Checkpoints at the spacing the replay will end with (the list halves past MAX_CHECKPOINTS).
    for (const rt of runtimes) {
      while ((confirmed - rt.position) / rt.checkpointEvery > MAX_CHECKPOINTS) rt.checkpointEvery *= 2;
    }
    for (let after = from; after < confirmed; ) {
      const readable = Math.min(this.#wasm.readableTo(after), confirmed);
      let next: Promise<unknown> | undefined;
      if (readable < confirmed) {
        next = this.#wasm.loadStep();
        await Promise.resolve(); // the step has asked IndexedDB for the next part
      }
      for (; after < readable; ) {
        const to = Math.min(after + REPLAY_CHUNK, readable);
        const events = JSON.parse(this.#wasm.range(after, to)) as AnnalsEvent[];
        for (const rt of runtimes) this.#foldConfirmed(rt, events);
        after = to;
      }
      if (next) await next;
      if (this.#wasm.logGeneration !== generation || this.#wasm.confirmedHead !== confirmed) return false;
    }
    const pending = head > confirmed ? (JSON.parse(this.#wasm.range(confirmed, head)) as AnnalsEvent[]) : [];
    for (const rt of runtimes) {
      rt.state = pending.length > 0 ? this.#foldOptimistic(rt, copyState(rt.confirmed), pending) : rt.confirmed;
    }
    this.#confirmedHead = confirmed;
    this.#head = head;
    return true;
  }

  /** Reads the events the open left out and builds the core's indexes, a step per task. */
  #completeInBackground(): void {
    if (this.#wasm.isComplete) {
      this.#complete = Promise.resolve();
      return;
    }
    const run = async () => {
      // A task boundary before each step: the app gets its first `get` (and everything
      // else it queued) before the core reads and indexes.
      do await new Promise((resolve) => setTimeout(resolve, 0));
      while (!this.#closed && !((await this.#wasm.loadStep().catch(rethrow)) as boolean));
    };
    this.#complete = run();
    this.#complete.catch((error: unknown) => {
      if (!this.#closed) this.#emitError(error);
    });
  }

  /**
   * Resolves once the core holds and indexes the whole log: reads by stream, type or
   * correlation id, and of events before the snapshots, wait for it.
   */
  async #whenComplete(): Promise<void> {
    if (this.#wasm.isComplete) return;
    try {
      await this.#complete;
    } catch {
      // Reported already; try again here so that the caller sees the error.
    }
    if (!this.#wasm.isComplete) await this.#wasm.complete().catch(rethrow);
  }

  #listenToOtherTabs(): void {
    const { storage, shared, name } = this.#settings;
    if (typeof BroadcastChannel === "undefined" || (storage === "memory" && !shared)) return;
    const channel = new BroadcastChannel(`annals:${name}`);
    channel.onmessage = (message: MessageEvent) => this.#receive(message.data as TabMessage | null);
    // Node: a channel must not keep the process alive.
    (channel as { unref?: () => void }).unref?.();
    this.#channel = channel;
    // Other tabs of the store answer, and tell of their changes from then on.
    this.#post({ kind: "hello" });
    if (this.#settings.sync) this.#post({ kind: "status?" });
  }

  #post(message: TabMessage): void {
    if (message.kind !== "change") this.#flushChange(); // keep the order of messages
    try {
      this.#channel?.postMessage(message);
    } catch (error) {
      this.#emitError(error);
    }
  }

  /**
   * Tells the other tabs that the log changed, once per task: posting costs the sender
   * about as much as a small IndexedDB request, so it is kept off the path of the append
   * (or pull) that caused it, and a burst of changes sends one message with the newest
   * heads.
   */
  #announceChange(): void {
    // Alone (no other tab of the store has shown up), there is nobody to tell: a tab that
    // opens later says hello and hears the heads in the answer.
    if (this.#announcing !== undefined || !this.#channel || !this.#peers) return;
    this.#announcing = setTimeout(() => this.#flushChange(), 0);
  }

  #flushChange(): void {
    if (this.#announcing === undefined) return;
    clearTimeout(this.#announcing);
    this.#announcing = undefined;
    this.#post({ kind: "change", head: this.#head, confirmed: this.#confirmedHead });
  }

  /**
   * A message from another tab. A frozen page still gets them (Chromium delivers a
   * BroadcastChannel's messages to a frozen page), but must not act on them: a catch-up would
   * open an IndexedDB transaction whose answers the frozen page cannot take in, and the
   * transaction would stay open, stalling every other tab's writes until this one resumes (or
   * IndexedDB aborts it, a minute later). They wait until the page resumes, and what is kept
   * stays small however long the freeze: the newest `change`, `status` and `hello` stand for
   * the older ones, questions for the syncing tab are not kept (a frozen tab let go of sync),
   * nor answers to questions this tab did not ask.
   */
  #receive(data: TabMessage | null): void {
    const held = this.#held;
    if (!held) {
      this.#onTabMessage(data);
      return;
    }
    if (typeof data !== "object" || data === null) return;
    switch (data.kind) {
      case "sync?":
      case "status?":
        return;
      case "synced":
        if (!this.#syncRequests.has(data.id)) return;
        break;
      case "change":
      case "status":
      case "hello": {
        const older = held.findIndex((m) => m.kind === data.kind);
        if (older >= 0) held.splice(older, 1);
        break;
      }
      default:
        break;
    }
    held.push(data);
  }

  #onTabMessage(data: TabMessage | null): void {
    if (this.#closed || typeof data !== "object" || data === null) return;
    this.#peers = true;
    switch (data.kind) {
      case "hello":
        // A tab opened: it learns of this one, and of what this one wrote since it read.
        this.#flushChange();
        this.#post({ kind: "here", head: this.#head, confirmed: this.#confirmedHead });
        return;
      case "here":
      case "change":
        if (data.head !== this.#head || data.confirmed !== this.#confirmedHead) {
          this.catchUp()
            .then(() => {
              // Another tab appended: the syncing tab pushes it now.
              if (this.#leader && this.#head > this.#confirmedHead && !this.#closed) this.#wasm.wakeSync();
              // An answer to this tab's hello that is behind: this tab wrote before it knew of
              // the other one (and so told nobody); tell it now.
              if (data.kind === "here" && (data.head !== this.#head || data.confirmed !== this.#confirmedHead)) {
                this.#announceChange();
              }
            })
            .catch((error: unknown) => {
              if (!this.#closed) this.#emitError(error);
            });
        }
        return;
      case "status":
        if (!this.#leader) {
          this.#remoteStatus = data.status;
          this.#emitSyncIfChanged();
        }
        return;
      case "status?":
        if (this.#leader && this.#leaderStatus) this.#post({ kind: "status", status: this.#leaderStatus });
        return;
      case "rejected":
        this.#reportRejection(data.rejection, false);
        return;
      case "sync?":
        if (this.#leader) void this.#answerSync(data.id);
        return;
      case "synced": {
        const request = this.#syncRequests.get(data.id);
        if (!request) return;
        this.#syncRequests.delete(data.id);
        clearTimeout(request.timer);
        if (data.error) {
          request.reject(fromWasmError(Object.assign(new Error(data.error.message), { name: "AnnalsError", code: data.error.code })));
        } else {
          request.resolve(data.report ?? { pushed: 0, pulled: 0, rejected: 0, restarts: 0 });
        }
        return;
      }
      default:
        return;
    }
  }

  // ---- folding -------------------------------------------------------------------------

  #applyEvent(rt: ProjectionRuntime, state: unknown, event: AnnalsEvent): unknown {
    try {
      return rt.def.apply(state, event);
    } catch (error) {
      this.#emitError(
        new Error(`projection "${rt.name}" threw on event ${event.position} (${event.type}); the event was skipped`, {
          cause: error,
        }),
      );
      return state;
    }
  }

  /** Folds confirmed events after the projection's position into its confirmed state, taking checkpoints. */
  #foldConfirmed(rt: ProjectionRuntime, events: readonly AnnalsEvent[]): boolean {
    let state = rt.confirmed;
    let changed = false;
    for (const event of events) {
      if (event.position <= rt.position) continue;
      state = this.#applyEvent(rt, state, event);
      rt.position = event.position;
      changed = true;
      if (event.position % rt.checkpointEvery === 0) this.#checkpoint(rt, event.position, state);
    }
    rt.confirmed = state;
    return changed;
  }

  /** Folds pending events into an optimistic state (never the confirmed one). */
  #foldOptimistic(rt: ProjectionRuntime, state: unknown, events: readonly AnnalsEvent[]): unknown {
    for (const event of events) state = this.#applyEvent(rt, state, event);
    return state;
  }

  #checkpoint(rt: ProjectionRuntime, position: number, state: unknown): void {
    let json: string | undefined;
    try {
      json = JSON.stringify(state);
    } catch (error) {
      this.#emitError(new Error(`projection "${rt.name}": its state is not JSON-serialisable`, { cause: error }));
    }
    if (json !== undefined) rt.addCheckpoint(position, json);
  }

  /** Events `after + 1 ..= to` as the core has them now. */
  #range(after: number, to: number): AnnalsEvent[] {
    return to > after ? (JSON.parse(this.#wasm.range(after, to)) as AnnalsEvent[]) : [];
  }

  /** A change that brings this store from what it folded to what the core has now. */
  #resyncMessage(): ChangeMessage {
    const confirmed = this.#wasm.confirmedHead;
    const head = this.#wasm.head;
    const reset = confirmed < this.#confirmedHead;
    const from = reset ? 0 : this.#confirmedHead;
    return {
      seq: -1,
      reset,
      rebased: true,
      previousHead: from,
      head,
      confirmed,
      confirmedEvents: this.#range(from, confirmed),
      pendingEvents: this.#range(confirmed, head),
    };
  }

  /** The core's listener: called synchronously after every change of the log. */
  #onChange(json: string | null, error?: unknown): void {
    if (this.#loading) return; // #load reads the core's state after its last await
    try {
      let message: ChangeMessage;
      if (typeof json === "string") {
        message = JSON.parse(json) as ChangeMessage;
      } else {
        this.#emitError(fromWasmError(error));
        message = this.#resyncMessage();
      }
      this.#apply(message);
    } catch (failure) {
      this.#emitError(failure);
    }
  }

  #apply(message: ChangeMessage): void {
    let c = message;
    const inStep = c.reset || (c.rebased ? c.previousHead === this.#confirmedHead : c.previousHead === this.#head);
    if (!inStep) c = this.#resyncMessage();
    const hadPending = this.#head > this.#confirmedHead;
    if (!c.reset && !c.rebased && hadPending && c.confirmedEvents.length > 0) {
      // Confirmed events behind pending ones: fold the whole outbox again.
      c = { ...c, rebased: true, previousHead: this.#confirmedHead, pendingEvents: this.#range(c.confirmed, c.head) };
    }
    if (c.reset) {
      this.#generation += 1;
      this.#aggregateCache.clear();
      for (const rt of this.#projections.values()) rt.reset();
      this.#dropSnapshots();
    }
    const fresh = c.reset || c.rebased || !hadPending;
    const touched = c.reset || c.rebased || c.confirmedEvents.length > 0 || c.pendingEvents.length > 0;
    const changed: ProjectionRuntime[] = [];
    for (const rt of this.#projections.values()) {
      if (c.confirmedEvents.length > 0) this.#foldConfirmed(rt, c.confirmedEvents);
      if (fresh) {
        rt.state =
          c.pendingEvents.length > 0 ? this.#foldOptimistic(rt, copyState(rt.confirmed), c.pendingEvents) : rt.confirmed;
      } else {
        rt.state = this.#foldOptimistic(rt, rt.state, c.pendingEvents);
      }
      if (touched) changed.push(rt);
    }
    const pendingBefore = this.#head - this.#confirmedHead;
    this.#confirmedHead = c.confirmed;
    this.#head = c.head;
    const events =
      c.pendingEvents.length === 0
        ? c.confirmedEvents
        : c.confirmedEvents.length === 0
          ? c.pendingEvents
          : c.confirmedEvents.concat(c.pendingEvents);
    if (this.#appendsInFlight > 0 && c.seq >= 0) this.#captured.set(c.seq, { first: c.previousHead + 1, events });
    const change: Change<E> = {
      previousHead: c.previousHead,
      head: c.head,
      events: events as AnnalsEvent<E>[],
      confirmedHead: c.confirmed,
      rebased: c.rebased,
      reset: c.reset,
    };
    for (const collector of this.#collectors) collector.push(change);
    // Other tabs read it from the shared storage.
    this.#announceChange();
    for (const rt of changed) {
      for (const listener of [...rt.subscribers]) this.#safely(() => listener(rt.state));
    }
    if (touched) {
      for (const listener of [...this.#listeners.change]) this.#safely(() => listener(change));
    }
    this.#scheduleSnapshots();
    if (c.confirmed !== c.previousHead || c.reset || c.rebased) {
      for (const reactor of this.#reactors.values()) reactor.wake();
    }
    if (pendingBefore !== c.head - c.confirmed) this.#emitSyncIfChanged();
  }

  #safely(f: () => void): void {
    try {
      f();
    } catch (error) {
      this.#emitError(error);
    }
  }

  #emitError(error: unknown): void {
    if (this.#listeners.error.size === 0) {
      console.error("annals:", error);
      return;
    }
    for (const listener of [...this.#listeners.error]) {
      try {
        listener(error);
      } catch (inner) {
        console.error("annals: an error listener threw", inner);
      }
    }
  }

  // ---- snapshots -----------------------------------------------------------------------

  #snapshotsEnabled(): boolean {
    // A private memory store is gone once closed: nobody could read its snapshots.
    return this.#settings.storage === "indexeddb" || this.#settings.shared;
  }

  #scheduleSnapshots(): void {
    if (this.#snapshotting || this.#closed || !this.#snapshotsEnabled()) return;
    const every = this.#settings.snapshotEvery;
    const due = [...this.#projections.values()].filter((rt) => rt.position - rt.snapshotPosition >= every);
    if (due.length === 0) return;
    // While events stream in, snapshots are spaced in time (each costs a serialisation and
    // a transaction), unless far more than `snapshotEvery` events wait.
    const wait = this.#lastSnapshotAt + SNAPSHOT_SPACING_MS - Date.now();
    const urgent = due.some((rt) => rt.position - rt.snapshotPosition >= SNAPSHOT_BURST * every);
    if (wait > 0 && !urgent) {
      if (this.#snapshotTimer === undefined) {
        this.#snapshotTimer = setTimeout(() => {
          this.#snapshotTimer = undefined;
          this.#scheduleSnapshots();
        }, wait);
        (this.#snapshotTimer as { unref?: () => void }).unref?.();
      }
      return;
    }
    this.#lastSnapshotAt = Date.now();
    this.#snapshotting = (async () => {
      await Promise.resolve(); // after the batch, never inside the append that caused it
      for (const rt of due) {
        if (this.#closed) return;
        await this.#writeSnapshot(rt);
      }
    })().finally(() => {
      this.#snapshotting = undefined;
    });
  }

  async #writeSnapshot(rt: ProjectionRuntime): Promise<void> {
    const position = rt.position;
    if (position <= rt.snapshotPosition) return;
    let json: string | undefined;
    // A checkpoint taken at this position already holds the state as JSON.
    const last = rt.checkpoints[rt.checkpoints.length - 1];
    if (last?.position === position) {
      json = last.json;
    } else {
      try {
        json = JSON.stringify(rt.confirmed);
      } catch (error) {
        this.#emitError(new Error(`projection "${rt.name}": its state is not JSON-serialisable`, { cause: error }));
        return;
      }
    }
    if (json === undefined) return;
    const generation = this.#generation;
    try {
      await this.#wasm.putSnapshot(rt.name, rt.version, position, json);
      if (generation !== this.#generation) return; // the log restarted meanwhile
      rt.snapshotPosition = position;
      rt.addCheckpoint(position, json);
    } catch (error) {
      // A database taken away fails every write; the store already said so ("closed").
      if (generation === this.#generation && !this.#lost) this.#emitError(fromWasmError(error));
    }
  }

  /** The confirmed log restarted: snapshots of the old one must not be loaded again. */
  #dropSnapshots(): void {
    if (!this.#snapshotsEnabled()) return;
    const names = [...this.#projections.keys()];
    const previous = this.#snapshotting ?? Promise.resolve();
    this.#snapshotting = this.#track(
      previous.then(async () => {
        for (const name of names) {
          await this.#wasm.deleteSnapshot(name).catch((error: unknown) => {
            if (!this.#closed) this.#emitError(fromWasmError(error));
          });
        }
      }),
    ).finally(() => {
      this.#snapshotting = undefined;
    });
  }

  // ---- writing -------------------------------------------------------------------------

  #checkOpen(): void {
    if (this.#closed) throw closedError();
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#inflight.add(promise);
    const done = () => this.#inflight.delete(promise);
    promise.then(done, done);
    return promise;
  }

  append(event: NewEvent<E>): Promise<AnnalsEvent<E>> {
    return this.#appendBatch([event]).then((events) => events[0]!);
  }

  appendMany(events: readonly NewEvent<E>[]): Promise<AnnalsEvent<E>[]> {
    if (!Array.isArray(events)) {
      return Promise.reject(new AnnalsError("INVALID_EVENT", "appendMany takes an array of events"));
    }
    return this.#appendBatch(events);
  }

  #appendBatch(events: readonly unknown[]): Promise<AnnalsEvent<E>[]> {
    try {
      this.#checkOpen();
      if (events.length === 0) return Promise.resolve([]);
      const json = serializeBatch(events);
      return this.#track(this.#sendBatch(json));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async #sendBatch(json: string): Promise<AnnalsEvent<E>[]> {
    let raw: string;
    this.#appendsInFlight += 1;
    try {
      raw = (await this.#wasm.append(utf8.encode(json))) as string;
    } catch (error) {
      // A failed append may still have read what other tabs wrote: the listener took it in.
      this.#appendDone(null);
      rethrow(error);
    }
    const reply = JSON.parse(raw) as AppendReply;
    const captured = reply.seq === null ? undefined : this.#captured.get(reply.seq);
    this.#appendDone(reply.seq);
    if (this.#settings.sync) this.#wakeSync();
    const duplicates = new Map<number, AnnalsEvent>();
    for (const e of reply.duplicates) duplicates.set(e.position, e);
    return reply.results.map((position) => {
      const inChange = captured?.events[position - captured.first];
      if (inChange && inChange.position === position) return inChange as AnnalsEvent<E>;
      const found = duplicates.get(position) ?? this.#range(position - 1, position)[0];
      return found as AnnalsEvent<E>;
    });
  }

  #appendDone(seq: number | null): void {
    this.#appendsInFlight -= 1;
    if (this.#appendsInFlight === 0) {
      this.#captured.clear();
    } else if (seq !== null) {
      for (const key of this.#captured.keys()) {
        if (key <= seq) this.#captured.delete(key);
      }
    }
  }

  catchUp(): Promise<Change<E>> {
    if (this.#closed) return Promise.reject(closedError());
    if (this.#catchUpQueued) return this.#catchUpQueued;
    const run = this.#catchUpTail.then(async () => {
      this.#catchUpQueued = undefined;
      if (this.#closed) throw closedError();
      const seen: Change<E>[] = [];
      this.#collectors.add(seen);
      try {
        await this.#wasm.catchUp().catch(rethrow);
      } finally {
        this.#collectors.delete(seen);
      }
      return mergeChanges(seen, this.#head, this.#confirmedHead);
    });
    this.#catchUpQueued = run;
    this.#catchUpTail = run.catch(() => undefined);
    return this.#track(run);
  }

  // ---- reading -------------------------------------------------------------------------

  #projection(name: string): ProjectionRuntime {
    const rt = this.#projections.get(name);
    if (!rt) {
      const known = [...this.#projections.keys()].map((k) => `"${k}"`).join(", ") || "none";
      throw invalidArgument(`no projection named ${JSON.stringify(name)} (known: ${known})`);
    }
    return rt;
  }

  get<K extends keyof S & string>(name: K): S[K] {
    return this.#projection(name).state as S[K];
  }

  subscribe<K extends keyof S & string>(name: K, listener: (state: S[K]) => void): () => void {
    if (typeof listener !== "function") throw invalidArgument("subscribe needs a listener function");
    const rt = this.#projection(name);
    const entry = (state: unknown) => listener(state as S[K]);
    rt.subscribers.add(entry);
    return () => {
      rt.subscribers.delete(entry);
    };
  }

  async stateAt<K extends keyof S & string>(name: K, position: number): Promise<S[K]> {
    this.#checkOpen();
    const rt = this.#projection(name);
    const target = wholeNumber("position", position);
    if (target > this.#head) {
      throw invalidArgument(`position ${target} is past the head ${this.#head}`);
    }
    if (target === this.#head) {
      const json = JSON.stringify(rt.state);
      return (json === undefined ? undefined : JSON.parse(json)) as S[K];
    }
    // The nearest base at or before the target: the confirmed state, a checkpoint, a snapshot.
    let base: Checkpoint | undefined;
    if (target >= rt.position) {
      const json = JSON.stringify(rt.confirmed);
      if (json !== undefined) base = { position: rt.position, json };
    }
    base ??= rt.checkpointAtOrBefore(target);
    const basePosition = base?.position ?? 0;
    if (target - basePosition > rt.checkpointEvery) {
      const reply = (await this.#wasm.snapshot(rt.name).catch(rethrow)) as string | undefined;
      if (reply !== undefined) {
        const snapshot = JSON.parse(reply) as SnapshotReply;
        if (
          snapshot.version === rt.version &&
          snapshot.position <= target &&
          snapshot.position > basePosition &&
          snapshot.position <= this.#confirmedHead
        ) {
          base = { position: snapshot.position, json: JSON.stringify(snapshot.state) };
        }
      }
    }
    if ((base?.position ?? 0) < this.#wasm.loadedAfter) await this.#whenComplete();
    this.#checkOpen();
    const generation = this.#generation;
    let state: unknown = base ? JSON.parse(base.json) : rt.initial();
    // Replay, leaving checkpoints behind (of confirmed states only) so that scrubbing back
    // and forth stays cheap.
    for (let after = base?.position ?? 0; after < target; after += REPLAY_CHUNK) {
      const to = Math.min(after + REPLAY_CHUNK, target);
      const events = JSON.parse(this.#rangeJson(after, to)) as AnnalsEvent[];
      for (const event of events) {
        state = this.#applyEvent(rt, state, event);
        if (
          event.position % rt.checkpointEvery === 0 &&
          event.position < target &&
          event.position <= this.#confirmedHead &&
          generation === this.#generation
        ) {
          this.#checkpoint(rt, event.position, state);
        }
      }
    }
    return state as S[K];
  }

  #rangeJson(after: number, to: number): string {
    try {
      return this.#wasm.range(after, to);
    } catch (error) {
      rethrow(error);
    }
  }

  #read(query: unknown): AnnalsEvent[] {
    const json = serializeQuery(query);
    let raw: string;
    try {
      raw = this.#wasm.read(json);
    } catch (error) {
      rethrow(error);
    }
    return JSON.parse(raw) as AnnalsEvent[];
  }

  async events<T extends E["type"] = E["type"]>(query?: EventQuery<T>): Promise<AnnalsEvent<Extract<E, { type: T }>>[]> {
    this.#checkOpen();
    if (!this.#wasm.isComplete) {
      await this.#whenComplete();
      this.#checkOpen();
    }
    return this.#read(query) as AnnalsEvent<Extract<E, { type: T }>>[];
  }

  on(event: "change", listener: (change: Change<E>) => void): () => void;
  on(event: "error", listener: (error: unknown) => void): () => void;
  on(event: "sync", listener: (status: SyncStatus) => void): () => void;
  on(
    event: "rejected",
    listener: (event: RejectedEvent<E>, reason: string, actualVersion: number | undefined) => void,
  ): () => void;
  on(event: "closed", listener: (info: ClosedInfo) => void): () => void;
  on(event: "change" | "error" | "sync" | "rejected" | "closed", listener: AnyListener): () => void {
    if (typeof listener !== "function") throw invalidArgument("on needs a listener function");
    const listeners: Record<string, Set<AnyListener>> = this.#listeners;
    const set = Object.prototype.hasOwnProperty.call(listeners, event) ? listeners[event]! : invalidEvent(event);
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  // ---- sync ----------------------------------------------------------------------------

  #startSync(config: SyncOptions): void {
    this.#takeTurn(config);
    const target = globalThis as {
      addEventListener?: (type: string, listener: () => void) => void;
    };
    if (typeof target.addEventListener === "function") {
      const handler = () => {
        if (this.#closed) return;
        if (this.#leader) this.#wasm.setOnline(platformOnline());
        this.#emitSyncIfChanged();
      };
      target.addEventListener("online", handler);
      target.addEventListener("offline", handler);
      this.#onlineHandler = handler;
    }
  }

  /**
   * A frozen page runs no script: holding a lock (the sync lock, a process manager's), or
   * being handed one while frozen, would stop every tab of the store from doing that work
   * until it is thawed (maybe never). The tab lets go when it freezes and queues again when
   * it resumes (Page Lifecycle: `freeze` and `resume` on `document`). Meanwhile it holds the
   * other tabs' messages, and acts on them as it resumes (see #receive).
   */
  #followLifecycle(): void {
    const doc = (globalThis as { document?: Partial<LifecycleTarget> }).document;
    if (typeof doc?.addEventListener !== "function" || typeof doc.removeEventListener !== "function") return;
    const lifecycle = {
      target: doc as LifecycleTarget,
      freeze: () => {
        if (this.#closed) return;
        this.#held ??= [];
        if (this.#settings.sync) this.#pauseSync();
        for (const reactor of this.#reactors.values()) reactor.pause();
      },
      resume: () => {
        if (this.#closed) return;
        const held = this.#held ?? [];
        this.#held = undefined;
        for (const message of held) this.#onTabMessage(message);
        const sync = this.#settings.sync;
        if (sync && this.#paused) {
          this.#paused = false;
          this.#takeTurn(sync);
        }
        for (const reactor of this.#reactors.values()) reactor.resume();
      },
    };
    lifecycle.target.addEventListener("freeze", lifecycle.freeze);
    lifecycle.target.addEventListener("resume", lifecycle.resume);
    this.#lifecycle = lifecycle;
  }

  /** Queues for the store's sync lock (Web Locks; without them, syncs at once) and syncs while holding it. */
  #takeTurn(config: SyncOptions): void {
    const turn = ++this.#syncTurn;
    const run = async (): Promise<void> => {
      if (this.#closed || turn !== this.#syncTurn) return;
      let loop: Promise<unknown>;
      try {
        loop = this.#wasm.startSync(
          JSON.stringify(config),
          (json) => {
            if (turn === this.#syncTurn) this.#onLeaderStatus(json);
          },
          (json) => this.#onLeaderRejected(json),
        );
      } catch (error) {
        this.#emitError(fromWasmError(error));
        return;
      }
      this.#leader = true;
      this.#wasm.setOnline(platformOnline());
      const status = this.#wasm.syncStatus();
      if (status) this.#leaderStatus = JSON.parse(status) as CoreSyncStatus;
      this.#emitSyncIfChanged();
      if (this.#leaderStatus) this.#post({ kind: "status", status: this.#leaderStatus });
      try {
        await loop;
      } catch (error) {
        if (!this.#closed) this.#emitError(fromWasmError(error));
      } finally {
        if (turn === this.#syncTurn) this.#endLeadership();
      }
    };
    const locks = webLocks();
    if (!locks) {
      this.#syncLoop = run();
      return;
    }
    const abort = new AbortController();
    this.#lockAbort = abort;
    // Settles when this turn must end at once (#pauseSync): the lock is released then, even
    // while the loop still waits for an answer that a frozen page cannot take in.
    const released = new Promise<void>((resolve) => {
      this.#lockRelease = resolve;
    });
    this.#syncLoop = locks
      .request(`annals-sync:${this.#settings.name}`, { signal: abort.signal }, () => Promise.race([run(), released]))
      .then(
        () => undefined,
        (error: unknown) => {
          if (!abort.signal.aborted && !this.#closed) this.#emitError(error);
        },
      )
      .finally(() => {
        if (turn === this.#syncTurn) this.#lockRelease = undefined;
      });
  }

  /**
   * Ends this tab's turn at once: stops its sync client (which then sends nothing more, even
   * if the step it was in finishes later) and releases the lock, or leaves its queue.
   */
  #pauseSync(): void {
    this.#paused = true;
    this.#syncTurn += 1;
    this.#lockAbort?.abort();
    this.#lockAbort = undefined;
    this.#lockRelease?.();
    this.#lockRelease = undefined;
    if (this.#leader) {
      this.#wasm.stopSync();
      this.#endLeadership();
    }
  }

  #endLeadership(): void {
    this.#leader = false;
    this.#leaderStatus = undefined;
    if (!this.#closed) this.#emitSyncIfChanged();
  }

  #wakeSync(): void {
    if (this.#leader && !this.#closed) this.#wasm.wakeSync();
  }

  #onLeaderStatus(json: string): void {
    if (this.#closed) return;
    try {
      this.#leaderStatus = JSON.parse(json) as CoreSyncStatus;
    } catch (error) {
      this.#emitError(error);
      return;
    }
    this.#post({ kind: "status", status: this.#leaderStatus });
    this.#emitSyncIfChanged();
  }

  #onLeaderRejected(json: string): void {
    let rejection: Rejection;
    try {
      rejection = JSON.parse(json) as Rejection;
    } catch (error) {
      this.#emitError(error);
      return;
    }
    this.#reportRejection(rejection, true);
  }

  /** Reports a rejection once per tab; the tab that synced it broadcasts it and compensates. */
  #reportRejection(rejection: Rejection, here: boolean): void {
    const id = rejection?.event?.id;
    if (typeof id !== "string" || this.#reportedRejections.has(id)) return;
    this.#reportedRejections.add(id);
    if (this.#reportedRejections.size > 10_000) {
      const oldest = this.#reportedRejections.values().next().value;
      if (oldest !== undefined) this.#reportedRejections.delete(oldest);
    }
    if (here) this.#post({ kind: "rejected", rejection });
    const event = rejection.event as RejectedEvent<E>;
    for (const listener of [...this.#listeners.rejected]) {
      this.#safely(() => listener(event, rejection.reason, rejection.actualVersion));
    }
    if (here) this.#compensate(rejection);
  }

  #computeStatus(): SyncStatus {
    const pending = this.#head - this.#confirmedHead;
    const base = this.#leader ? this.#leaderStatus : this.#remoteStatus;
    if (!this.#settings.sync) {
      return {
        online: false,
        syncing: false,
        pending,
        lastPulled: this.#confirmedHead,
        lastError: null,
        lastErrorCode: null,
        leader: false,
      };
    }
    return {
      online: (base?.online ?? false) && platformOnline(),
      syncing: base?.syncing ?? false,
      pending,
      lastPulled: base?.lastPulled ?? this.#confirmedHead,
      lastError: base?.lastError ?? null,
      lastErrorCode: base?.lastErrorCode ?? null,
      leader: this.#leader,
    };
  }

  get syncStatus(): SyncStatus {
    const status = this.#computeStatus();
    const key = JSON.stringify(status);
    if (key !== this.#statusKey || !this.#statusCache) {
      this.#statusKey = key;
      this.#statusCache = Object.freeze(status);
    }
    return this.#statusCache;
  }

  #emitSyncIfChanged(): void {
    if (!this.#settings.sync) return;
    const status = this.syncStatus;
    if (this.#statusKey === this.#emittedStatusKey) return;
    this.#emittedStatusKey = this.#statusKey;
    for (const listener of [...this.#listeners.sync]) this.#safely(() => listener(status));
  }

  async sync(): Promise<SyncReport> {
    this.#checkOpen();
    if (!this.#settings.sync) throw invalidArgument("this store was opened without `sync` options");
    let report: SyncReport;
    if (this.#leader) {
      report = await this.#syncHere();
    } else {
      report = await this.#askLeader();
      await this.catchUp();
    }
    return report;
  }

  async #syncHere(): Promise<SyncReport> {
    // Not tracked: close() must not wait for a request to a server that does not answer.
    const raw = (await this.#wasm.syncNow().catch(rethrow)) as string;
    return JSON.parse(raw) as SyncReport;
  }

  async #answerSync(id: string): Promise<void> {
    try {
      const report = await this.#syncHere();
      this.#post({ kind: "synced", id, report });
    } catch (error) {
      const code = isAnnalsError(error) ? error.code : "SERVER";
      this.#post({ kind: "synced", id, error: { code, message: errorMessage(error) } });
    }
  }

  #askLeader(): Promise<SyncReport> {
    if (!this.#channel) {
      return Promise.reject(new AnnalsError("OFFLINE", "no tab syncs this store"));
    }
    const id = randomUuid();
    return new Promise<SyncReport>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#syncRequests.delete(id);
        reject(new AnnalsError("OFFLINE", `the tab that syncs this store did not answer within ${SYNC_ANSWER_MS} ms`));
      }, SYNC_ANSWER_MS);
      this.#syncRequests.set(id, { resolve, reject, timer });
      this.#post({ kind: "sync?", id });
    });
  }

  async rejected(): Promise<Rejection<E>[]> {
    this.#checkOpen();
    const raw = (await this.#wasm.rejected().catch(rethrow)) as string;
    return JSON.parse(raw) as Rejection<E>[];
  }

  // ---- the write model -----------------------------------------------------------------

  #aggregate(name: string): AnyAggregate {
    const def = this.#aggregates.get(name);
    if (!def) {
      const known = [...this.#aggregates.keys()].map((k) => `"${k}"`).join(", ") || "none";
      throw invalidArgument(`no aggregate named ${JSON.stringify(name)} (known: ${known})`);
    }
    return def;
  }

  /**
   * The aggregate instance's state and version as `decide` sees them: its confirmed
   * events folded incrementally into a cached state, and its pending events folded on a
   * copy of it, every time (they may still move or be refused).
   */
  #loadAggregate(
    name: string,
    def: AnyAggregate,
    stream: string,
  ): { state: unknown; version: number; known: (commandId: string) => boolean } {
    const key = `${name}\u0000${stream}`;
    let cache = this.#aggregateCache.get(key);
    if (!cache || cache.generation !== this.#generation) {
      cache = {
        state: copyState(def.initial),
        position: 0,
        version: 0,
        commands: new Set(),
        generation: this.#generation,
      };
      this.#aggregateCache.set(key, cache);
    }
    const confirmed = this.#confirmedHead;
    try {
      if (confirmed > cache.position) {
        const events = this.#read({ stream, after: cache.position, to: confirmed });
        for (const event of events) {
          cache.state = def.evolve(cache.state, event);
          cache.version = event.version;
          const commandId = event.meta?.["commandId"];
          if (typeof commandId === "string") cache.commands.add(commandId);
        }
        cache.position = confirmed;
      }
    } catch (error) {
      this.#aggregateCache.delete(key); // half folded: start again next time
      throw error;
    }
    const commands = cache.commands;
    if (this.#head === confirmed) {
      return { state: cache.state, version: cache.version, known: (id) => commands.has(id) };
    }
    const pending = this.#read({ stream, after: confirmed });
    if (pending.length === 0) {
      return { state: cache.state, version: cache.version, known: (id) => commands.has(id) };
    }
    let state = copyState(cache.state);
    const pendingCommands = new Set<string>();
    for (const event of pending) {
      state = def.evolve(state, event);
      const commandId = event.meta?.["commandId"];
      if (typeof commandId === "string") pendingCommands.add(commandId);
    }
    return {
      state,
      version: pending[pending.length - 1]!.version,
      known: (id) => commands.has(id) || pendingCommands.has(id),
    };
  }

  async execute<K extends keyof A & string>(
    aggregate: K,
    id: string,
    command: CommandOf<A[K]>,
    options: ExecuteOptions = {},
  ): Promise<ExecuteResult<E>> {
    this.#checkOpen();
    const def = this.#aggregate(aggregate);
    if (typeof id !== "string" || id === "") throw invalidArgument("`id` (the aggregate's stream) must be a non-empty string");
    const cmd = command as unknown as { type?: unknown };
    if (typeof cmd !== "object" || cmd === null || typeof cmd.type !== "string") {
      throw invalidArgument("a command must be an object with a string `type`");
    }
    if (typeof options !== "object" || options === null) throw invalidArgument("execute options must be an object");
    for (const key of ["commandId", "correlationId", "causationId"] as const) {
      const value = options[key];
      if (value !== undefined && (typeof value !== "string" || value === "")) {
        throw invalidArgument(`\`${key}\` must be a non-empty string`);
      }
    }
    const commandId = options.commandId ?? randomUuid();
    const correlationId = options.correlationId ?? commandId;
    const causationId = options.causationId ?? commandId;
    if (!this.#wasm.isComplete) await this.#whenComplete(); // decide reads the aggregate's stream
    for (let attempt = 1; ; attempt++) {
      this.#checkOpen();
      const loaded = this.#loadAggregate(aggregate, def, id);
      if (loaded.known(commandId)) return this.#previousResult(id, commandId, loaded.version);
      let decided: readonly unknown[];
      try {
        decided = def.decide(cmd as { type: string }, loaded.state);
      } catch (error) {
        throw new AnnalsError("COMMAND_REJECTED", errorMessage(error), { cause: error });
      }
      if (!Array.isArray(decided)) {
        throw invalidArgument(`aggregate "${aggregate}": decide must return an array of events`);
      }
      if (decided.length === 0) return { commandId, events: [], version: loaded.version };
      const batch = decided.map((d, i) => {
        if (typeof d !== "object" || d === null) {
          throw new AnnalsError("INVALID_EVENT", `aggregate "${aggregate}": decide returned a non-object at ${i}`);
        }
        const { type, data, meta } = d as { type?: unknown; data?: unknown; meta?: unknown };
        if (meta !== undefined && (typeof meta !== "object" || meta === null || Array.isArray(meta))) {
          throw new AnnalsError("INVALID_EVENT", `aggregate "${aggregate}": event ${i}'s meta must be an object`);
        }
        const event: Record<string, unknown> = {
          id: commandEventId(commandId, i),
          stream: id,
          type,
          data,
          meta: { ...(meta as object | undefined), aggregate, commandId, correlationId, causationId },
        };
        if (i === 0) event.expectedVersion = loaded.version;
        return event;
      });
      try {
        const events = await this.#appendBatch(batch);
        return { commandId, events, version: events[events.length - 1]!.version };
      } catch (error) {
        if (isAnnalsError(error, "WRONG_EXPECTED_VERSION") && error.stream === id && attempt < MAX_ATTEMPTS) {
          // Another tab or a sync moved the stream: look at what is new and decide again.
          await this.catchUp().catch(() => undefined);
          continue;
        }
        throw error;
      }
    }
  }

  /** What a command id executed before left in its stream. */
  #previousResult(stream: string, commandId: string, version: number): ExecuteResult<E> {
    const events = this.#read({ stream }).filter((e) => e.meta?.["commandId"] === commandId) as AnnalsEvent<E>[];
    return { commandId, events, version: events.length > 0 ? events[events.length - 1]!.version : version };
  }

  #executeRequest(request: CommandRequest, options: ExecuteOptions): Promise<ExecuteResult<E>> {
    if (typeof request !== "object" || request === null || typeof request.aggregate !== "string") {
      return Promise.reject(invalidArgument("a command request must be { aggregate, id, command }"));
    }
    return (this.execute as (a: string, id: string, c: unknown, o: ExecuteOptions) => Promise<ExecuteResult<E>>)(
      request.aggregate,
      request.id,
      request.command,
      options,
    );
  }

  /** Runs the compensating commands of the aggregate whose command produced a refused event. */
  #compensate(rejection: Rejection): void {
    const meta = rejection.event.meta;
    const aggregate = meta?.["aggregate"];
    const commandId = meta?.["commandId"];
    if (typeof aggregate !== "string" || typeof commandId !== "string") return;
    const def = this.#aggregates.get(aggregate);
    if (!def?.onRejected) return;
    let commands: readonly CommandRequest[] | void;
    try {
      commands = def.onRejected({ ...rejection, aggregate, id: rejection.event.stream, commandId });
    } catch (error) {
      this.#emitError(error);
      return;
    }
    if (commands === undefined || commands === null) return;
    if (!Array.isArray(commands)) {
      this.#emitError(invalidArgument(`aggregate "${aggregate}": onRejected must return an array of commands`));
      return;
    }
    const correlation = meta?.["correlationId"];
    const context: ExecuteOptions = {
      correlationId: typeof correlation === "string" ? correlation : rejection.event.id,
      causationId: rejection.event.id,
    };
    const list = commands;
    void this.#track(
      (async () => {
        for (let i = 0; i < list.length; i++) {
          if (this.#closed) return;
          try {
            await this.#executeRequest(list[i]!, { ...context, commandId: `compensate:${rejection.event.id}:${i}` });
          } catch (error) {
            if (!this.#closed) this.#emitError(error);
          }
        }
      })(),
    );
  }

  react<T extends E["type"]>(options: ReactorOptions<E, A, T>): Reactor {
    this.#checkOpen();
    if (this.#closing) throw closedError();
    if (typeof options !== "object" || options === null) throw invalidArgument("react needs { name, on, handle }");
    const { name, on, handle, retry, startAt } = options;
    if (typeof name !== "string" || name === "") throw invalidArgument("a reactor needs a non-empty `name`");
    if (!Array.isArray(on) || on.length === 0 || !on.every((t) => typeof t === "string" && t !== "")) {
      throw invalidArgument("a reactor's `on` must be a non-empty array of event types");
    }
    if (typeof handle !== "function") throw invalidArgument("a reactor needs a `handle(event)` function");
    if (startAt !== undefined && startAt !== "beginning" && startAt !== "end") {
      throw invalidArgument('`startAt` must be "beginning" or "end"');
    }
    if (this.#reactors.has(name)) throw invalidArgument(`a reactor named ${JSON.stringify(name)} is already running`);
    const initialMs = wholeNumber("retry.initialMs", retry?.initialMs ?? 250);
    const maxMs = wholeNumber("retry.maxMs", retry?.maxMs ?? 30_000);
    const runtime = new ReactorRuntime(
      this.#reactorHost(),
      {
        name,
        on: [...on],
        handle: handle as (event: AnnalsEvent) => unknown,
        initialMs: Math.max(1, initialMs),
        maxMs: Math.max(initialMs, maxMs),
        startAt: startAt ?? "beginning",
      },
      () => {
        if (this.#reactors.get(name) === runtime) this.#reactors.delete(name);
      },
    );
    this.#reactors.set(name, runtime);
    runtime.start();
    return runtime;
  }

  #reactorHost(): ReactorHost {
    const record = (name: string) => `${REACTOR_PREFIX}${name}`;
    return {
      storeName: this.#settings.name,
      limit: () => this.#confirmedHead,
      generation: () => this.#generation,
      isClosed: () => this.#closed,
      read: (after, to, limit, type) => this.#read(type === undefined ? { after, to, limit } : { after, to, limit, type }),
      loadCheckpoint: async (name) => {
        // Reads by type and of any position follow: the whole log must be in the core.
        if (!this.#wasm.isComplete) await this.#whenComplete();
        // Another tab that ran this reactor may have handled events this one has not read yet.
        await this.catchUp().catch(() => undefined);
        const reply = (await this.#wasm.snapshot(record(name)).catch(rethrow)) as string | undefined;
        if (reply === undefined) return undefined;
        const snapshot = JSON.parse(reply) as SnapshotReply;
        return snapshot.version === 1 && snapshot.position <= this.#confirmedHead ? snapshot.position : undefined;
      },
      saveCheckpoint: async (name, position) => {
        const at = Math.min(position, this.#confirmedHead);
        try {
          await this.#wasm.putSnapshot(record(name), 1, at, JSON.stringify({ position: at }));
        } catch (error) {
          if (!this.#closed) this.#emitError(fromWasmError(error));
        }
      },
      execute: (request, options) => this.#executeRequest(request, options),
      reportError: (error) => {
        if (!this.#closed) this.#emitError(error);
      },
    };
  }

  // ---- maintenance ---------------------------------------------------------------------

  async compact(): Promise<CompactionReport> {
    this.#checkOpen();
    const raw = (await this.#track(this.#wasm.compact()).catch(rethrow)) as string;
    return JSON.parse(raw) as CompactionReport;
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    // Reactors finish the event in hand (its commands and checkpoint) before the store closes.
    await Promise.allSettled([...this.#reactors.values()].map((r) => r.stop()));
    this.#closed = true;
    clearTimeout(this.#snapshotTimer);
    this.#flushChange();
    this.#channel?.close();
    this.#channel = undefined;
    for (const [id, request] of this.#syncRequests) {
      clearTimeout(request.timer);
      request.reject(closedError());
      this.#syncRequests.delete(id);
    }
    const target = globalThis as { removeEventListener?: (type: string, listener: () => void) => void };
    if (this.#onlineHandler && typeof target.removeEventListener === "function") {
      target.removeEventListener("online", this.#onlineHandler);
      target.removeEventListener("offline", this.#onlineHandler);
    }
    if (this.#lifecycle) {
      const { target, freeze, resume } = this.#lifecycle;
      target.removeEventListener("freeze", freeze);
      target.removeEventListener("resume", resume);
      this.#lifecycle = undefined;
    }
    this.#lockAbort?.abort();
    if (this.#settings.sync) this.#wasm.stopSync();
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
    await this.#snapshotting;
    // A database taken away takes no final snapshots (every write would fail with CLOSED).
    if (this.#snapshotsEnabled() && !this.#lost) {
      for (const rt of this.#projections.values()) {
        if (rt.position > rt.snapshotPosition) await this.#writeSnapshot(rt);
      }
    }
    if (this.#syncLoop) {
      // The loop ends after its current request; the Web Lock goes with it.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.#syncLoop, new Promise((resolve) => (timer = setTimeout(resolve, SYNC_STOP_MS)))]);
      clearTimeout(timer);
    }
    try {
      await this.#wasm.close();
    } catch (error) {
      rethrow(error);
    } finally {
      this.#wasm.free();
    }
  }
}

function invalidEvent(event: string): never {
  throw invalidArgument(`unknown event ${JSON.stringify(event)}: use "change", "error", "sync", "rejected" or "closed"`);
}
