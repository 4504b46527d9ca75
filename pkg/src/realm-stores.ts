// One IndexedDB store per name in this JavaScript realm (a tab, a worker). React's
// StrictMode mounts, unmounts and mounts again; Vite's hot reload runs a module again: both
// call `openStore` again for a store that is still open (or still opening, or closing). So:
//
// - the same definitions (the same projection and aggregate functions and versions, equal
//   other options) share the open store: each call gets its own handle, `close()` releases
//   that handle, and the last release closes the store;
// - other definitions (a module ran again with an edited reducer) take over: the earlier
//   store closes (as if its handles' `close()` were called), then the new one opens;
// - a store that is closing is waited for, so that the next open reads its final snapshots.
//
// Memory stores stay apart (`entry.ts` gives them no key): a plain one starts empty each
// time, and each open of a `sharedMemory` one stands for another tab.

import { DEBUG, debugAccess, type DebugAccess } from "./debug.js";
import { AnnalsError } from "./errors.js";
import type {
  AnnalsEvent,
  AppendedEvent,
  Change,
  ClosedInfo,
  CompactionReport,
  StorageReport,
  EventQuery,
  EventShape,
  ExecuteOptions,
  ExportBundleOptions,
  ExportEventsOptions,
  ImportEventsOptions,
  ImportReport,
  ExecuteResult,
  NewEvent,
  Reactor,
  ReactorOptions,
  Rejection,
  StateAtOptions,
  Store,
  StreamLifecycleEvent,
  StreamLifecycleOptions,
  SyncReport,
  RebuildProgress,
  SyncStatus,
} from "./types.js";

type AnyStore = Store<EventShape, Record<string, unknown>, Record<string, unknown>>;
type Listener = (...args: never[]) => void;

/** What decides whether a second open may share the first one's store. */
export interface Definitions {
  projections: Record<string, unknown>;
  aggregates: Record<string, unknown>;
  /** The `events` validators, compared by identity (a schema may be recursive). */
  events: Record<string, unknown>;
  /** The other options, canonical JSON (functions by identity). */
  settings: string;
}

interface Entry {
  readonly key: string;
  readonly definitions: Definitions;
  readonly handles: Set<StoreHandle>;
  readonly opening: Promise<AnyStore>;
  store: AnyStore | undefined;
  /** Set once the last handle is released or a later open takes over: the store closes. */
  ending: Promise<void> | undefined;
}

const entries = new Map<string, Entry>();
/** Stores actually opened (not shared) per key, for diagnostics and tests. */
const opened = new Map<string, number>();

/** What this realm holds: per key, the handles sharing its store and how many times one was opened. */
export function realmStores(): { key: string; handles: number; ending: boolean; opened: number }[] {
  return [...opened.entries()].map(([key, count]) => {
    const entry = entries.get(key);
    return { key, handles: entry?.handles.size ?? 0, ending: entry?.ending !== undefined, opened: count };
  });
}

function closedError(): AnnalsError {
  return new AnnalsError("CLOSED", "the store is closed");
}

const functionIds = new WeakMap<object, number>();
let nextFunctionId = 0;

/** JSON with sorted keys; a function becomes its identity, so equal text means the same functions. */
function canonical(value: unknown): string {
  if (typeof value === "function") {
    let id = functionIds.get(value);
    if (id === undefined) {
      id = ++nextFunctionId;
      functionIds.set(value, id);
    }
    return `"\u0000fn${id}"`;
  }
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (typeof value === "object" && value !== null) {
    // An option left undefined is the same as one left out.
    const keys = Object.keys(value)
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "undefined";
}

/** The definitions of `openStore` options: see {@link Definitions}. */
export function definitionsOf(options: Record<string, unknown>): Definitions {
  const { name: _name, projections, aggregates, events, ...settings } = options;
  return {
    projections: (projections ?? {}) as Record<string, unknown>,
    aggregates: (aggregates ?? {}) as Record<string, unknown>,
    events: typeof events === "object" && events !== null ? (events as Record<string, unknown>) : {},
    settings: canonical(settings),
  };
}

/** Same entries by identity, or by equal canonical form (the same functions, versions, initial states). */
function sameMap(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((k) => Object.hasOwn(b, k) && (a[k] === b[k] || canonical(a[k]) === canonical(b[k])));
}

function sameDefinitions(a: Definitions, b: Definitions): boolean {
  return (
    a.settings === b.settings &&
    sameMap(a.projections, b.projections) &&
    sameMap(a.aggregates, b.aggregates) &&
    Object.keys(a.events).length === Object.keys(b.events).length &&
    Object.keys(a.events).every((k) => Object.hasOwn(b.events, k) && a.events[k] === b.events[k])
  );
}

/** Closes the entry's store (once), releasing every handle of it. */
function end(entry: Entry): Promise<void> {
  if (entry.ending !== undefined) return entry.ending;
  entry.ending = (async () => {
    const store = await entry.opening.catch(() => undefined);
    await store?.close();
  })().finally(() => {
    if (entries.get(entry.key) === entry) entries.delete(entry.key);
  });
  // After `ending` is set: each release sees the store closing and starts nothing more.
  for (const handle of [...entry.handles]) void handle.release();
  return entry.ending;
}

/**
 * Opens the store `key` through `open`, or shares the one this realm has open with the same
 * definitions (see the top of this file). Resolves to a handle of its own.
 */
export function openInRealm(key: string, definitions: Definitions, open: () => Promise<AnyStore>): Promise<AnyStore> {
  const current = entries.get(key);
  let entry: Entry;
  if (
    current !== undefined &&
    current.ending === undefined &&
    current.store?.closed !== true &&
    sameDefinitions(current.definitions, definitions)
  ) {
    entry = current;
  } else {
    const previous = current;
    const opening = (async () => {
      // A store still closing writes its last snapshots first; one taken over closes now.
      if (previous !== undefined) await end(previous).catch(() => undefined);
      const store = await open();
      opened.set(key, (opened.get(key) ?? 0) + 1);
      return store;
    })();
    entry = { key, definitions, handles: new Set(), opening, store: undefined, ending: undefined };
    entries.set(key, entry);
    opening.then(
      (store) => {
        entry.store = store;
      },
      () => {
        if (entries.get(key) === entry) entries.delete(key);
      },
    );
  }
  // Counted now, before any await: a close of an earlier handle that lands meanwhile (as in
  // StrictMode's unmount) does not close the store this call is about to share.
  const handle = new StoreHandle(entry);
  entry.handles.add(handle);
  return entry.opening.then(
    () => {
      if (entry.ending !== undefined) handle.release();
      return handle as unknown as AnyStore;
    },
    (error: unknown) => {
      entry.handles.delete(handle);
      throw error;
    },
  );
}

/**
 * One `openStore` call's view of a shared store: everything is the store's, but `close()`
 * releases this handle only (with its subscriptions, listeners and reactors), and a released
 * handle refuses calls with `CLOSED` like a closed store.
 */
class StoreHandle implements AnyStore {
  readonly #entry: Entry;
  #released = false;
  #closing: Promise<void> | undefined;
  readonly #offs = new Set<() => void>();
  readonly #reactors = new Set<Reactor>();

  constructor(entry: Entry) {
    this.#entry = entry;
  }

  get #store(): AnyStore {
    const store = this.#entry.store;
    if (store === undefined) throw closedError(); // only reachable through a failed open
    return store;
  }

  #check(): void {
    if (this.#released) throw closedError();
  }

  /** Runs an async call, turning a released handle into a `CLOSED` rejection. */
  #async<T>(call: (store: AnyStore) => Promise<T>): Promise<T> {
    if (this.#released) return Promise.reject(closedError());
    return call(this.#store);
  }

  #keep(off: () => void): () => void {
    const once = () => {
      if (this.#offs.delete(once)) off();
    };
    this.#offs.add(once);
    return once;
  }

  /** Lets go of the store: the last handle released closes it. */
  release(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    this.#released = true;
    for (const off of [...this.#offs]) off();
    // Counted down now, not after an await: an open right after this close (hot reload's
    // dispose, then the module again) must find the store closing and wait for it.
    this.#entry.handles.delete(this);
    const ending = this.#entry.handles.size === 0 || this.#entry.ending !== undefined ? end(this.#entry) : undefined;
    const reactors = [...this.#reactors].map((r) => r.stop());
    this.#closing = Promise.allSettled(reactors).then(() => ending);
    return this.#closing;
  }

  get name(): string {
    return this.#store.name;
  }
  get head(): number {
    return this.#store.head;
  }
  get confirmedHead(): number {
    return this.#store.confirmedHead;
  }
  get closed(): boolean {
    return this.#released || this.#store.closed;
  }
  get syncStatus(): SyncStatus {
    return this.#store.syncStatus;
  }

  append(event: NewEvent<EventShape>): Promise<AppendedEvent<EventShape>> {
    return this.#async((s) => s.append(event));
  }
  appendMany(events: readonly NewEvent<EventShape>[]): Promise<AppendedEvent<EventShape>[]> {
    return this.#async((s) => s.appendMany(events));
  }
  streamVersion(stream: string): Promise<number> {
    return this.#async((s) => s.streamVersion(stream));
  }
  deleteStream(stream: string, options?: StreamLifecycleOptions): Promise<AppendedEvent<StreamLifecycleEvent>> {
    return this.#async((s) => s.deleteStream(stream, options));
  }
  closeStream(stream: string, options?: StreamLifecycleOptions): Promise<AppendedEvent<StreamLifecycleEvent>> {
    return this.#async((s) => s.closeStream(stream, options));
  }
  eraseStream(stream: string, options?: StreamLifecycleOptions): Promise<AppendedEvent<StreamLifecycleEvent>> {
    return this.#async((s) => s.eraseStream(stream, options));
  }
  get(name: string): unknown {
    return this.#store.get(name);
  }
  subscribe(name: string, listener: (state: unknown) => void): () => void {
    this.#check();
    return this.#keep(this.#store.subscribe(name, listener));
  }
  stateAt(name: string, position: number, options?: StateAtOptions): Promise<unknown> {
    return this.#async((s) => s.stateAt(name, position, options));
  }
  freeze(position: number): Promise<void> {
    return this.#async((s) => s.freeze(position));
  }
  unfreeze(): void {
    this.#check();
    this.#store.unfreeze();
  }
  get frozenAt(): number | undefined {
    return this.#store.frozenAt;
  }
  fingerprint(name: string, position?: number): Promise<string> {
    return this.#async((s) => s.fingerprint(name, position));
  }
  exportBundle(options?: ExportBundleOptions): Promise<string> {
    return this.#async((s) => s.exportBundle(options));
  }
  exportEvents(options?: ExportEventsOptions): ReadableStream<string> {
    this.#check();
    return this.#store.exportEvents(options);
  }
  importEvents(source: Parameters<AnyStore["importEvents"]>[0], options?: ImportEventsOptions): Promise<ImportReport> {
    return this.#async((s) => s.importEvents(source, options));
  }
  get [DEBUG](): DebugAccess {
    this.#check();
    return debugAccess(this.#store);
  }
  events<T extends string = string>(query?: EventQuery<T>): Promise<AnnalsEvent<Extract<EventShape, { type: T }>>[]> {
    return this.#async((s) => s.events(query));
  }
  on(event: "change", listener: (change: Change<EventShape>) => void): () => void;
  on(event: "error", listener: (error: unknown) => void): () => void;
  on(event: "sync", listener: (status: SyncStatus) => void): () => void;
  on(event: "rejected", listener: (event: never, reason: string, actualVersion: number | undefined) => void): () => void;
  on(event: "closed", listener: (info: ClosedInfo) => void): () => void;
  on(event: "frozen", listener: (position: number | undefined) => void): () => void;
  on(event: "rebuild", listener: (progress: RebuildProgress) => void): () => void;
  on(event: "change" | "error" | "sync" | "rejected" | "closed" | "frozen" | "rebuild", listener: Listener): () => void {
    this.#check();
    return this.#keep((this.#store.on as (event: string, listener: Listener) => () => void)(event, listener));
  }
  sync(): Promise<SyncReport> {
    return this.#async((s) => s.sync());
  }
  rejected(): Promise<Rejection<EventShape>[]> {
    return this.#async((s) => s.rejected());
  }
  execute(aggregate: string, id: string, command: never, options?: ExecuteOptions): Promise<ExecuteResult<EventShape>> {
    return this.#async((s) => s.execute(aggregate as never, id, command, options));
  }
  react<T extends string>(options: ReactorOptions<EventShape, Record<string, unknown>, T>): Reactor {
    this.#check();
    const reactor = this.#store.react(options);
    this.#reactors.add(reactor);
    return reactor;
  }
  catchUp(): Promise<Change<EventShape>> {
    return this.#async((s) => s.catchUp());
  }
  compact(): Promise<CompactionReport> {
    return this.#async((s) => s.compact());
  }
  storage(): Promise<StorageReport> {
    return this.#async((s) => s.storage());
  }
  close(): Promise<void> {
    return this.release();
  }
}
