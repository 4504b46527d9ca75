// What the browser and Node entries share: the typed `openStore`, given how each loads the
// wasm module.

import { WasmStore } from "../wasm/annals.js";
import * as rules from "../wasm/annals.js";
import { debugAccess } from "./debug.js";
import { randomUuid } from "./ids.js";
import { definitionsOf, openInRealm } from "./realm-stores.js";
import { AnnalsStore } from "./store.js";
import type {
  AggregateMap,
  AggregatesFor,
  EventSchemas,
  EventShape,
  EventsFrom,
  EventsOf,
  OpenedBundle,
  OpenOptions,
  ProjectionMap,
  SchemaOpenOptions,
  StatesOf,
  Store,
  StoreOptions,
} from "./types.js";

/**
 * Opens (creating if needed) an annals store: the log, then each projection from its
 * snapshot plus the tail of the log; with `sync`, starts syncing (in one tab per store).
 *
 * Types: give them explicitly, `openStore<Event, { todos: Todos }, { todo: typeof todo }>(...)`,
 * or let them be inferred from typed projections and aggregates
 * (`const todos: Projection<Todos, Event> = ...`, `const todo: Aggregate<Todo, TodoCommand, Event> = ...`).
 * Inline reducers without types get their state type from `initial`.
 *
 * Opening an IndexedDB store again in the same tab (React StrictMode, hot reload) opens no
 * second copy: with the same projections, aggregates and options it shares the open one,
 * and each returned store's `close()` releases its share (the last one closes it); with
 * other definitions (an edited reducer after hot reload) the earlier store is closed first,
 * as if `close()` were called on it. A store still closing is waited for. Memory stores are
 * unaffected: a plain one starts empty each time, and each open of a `sharedMemory` one
 * stands for a tab of its own.
 */
export interface OpenStore {
  <M extends EventSchemas, S = Record<string, unknown>, A extends AggregatesFor<M> = {}>(
    options: SchemaOpenOptions<M, S, A>,
  ): Promise<Store<EventsFrom<M>, S, A>>;
  <E extends EventShape = EventShape, S = Record<string, unknown>, A extends AggregateMap = {}>(
    options: OpenOptions<E, S, A>,
  ): Promise<Store<E, S, A>>;
  <P extends ProjectionMap = {}, A extends AggregateMap = {}>(
    options: StoreOptions & { projections?: P; aggregates?: A },
  ): Promise<Store<EventsOf<P, A>, StatesOf<P>, A>>;
}

/**
 * `openStore` for an entry whose `load` initialises the wasm module. A failed load is
 * tried again on the next call.
 */
export function openStoreWith(load: () => Promise<unknown>): OpenStore {
  let ready: Promise<unknown> | undefined;
  const loadOnce = (): Promise<unknown> => {
    ready ??= load().catch((error: unknown) => {
      ready = undefined; // let a later call try again
      throw error;
    });
    return ready;
  };
  return (async (options: OpenOptions<EventShape, Record<string, unknown>, AggregateMap>): Promise<Store> => {
    const open = async (): Promise<Store> => {
      await loadOnce();
      return AnnalsStore.open(WasmStore.open, options, rules) as Promise<Store>;
    };
    const key = realmKey(options);
    if (key === undefined) return open();
    return openInRealm(key, definitionsOf(options as unknown as Record<string, unknown>), open);
  }) as OpenStore;
}

/**
 * Which store `options` open in this realm ("indexeddb:<name>"), or undefined when an open
 * stays on its own: a memory store (a plain one starts empty, a `sharedMemory` one is a tab
 * of its own) or options that are not valid (the open reports why).
 */
function realmKey(options: OpenOptions<EventShape, Record<string, unknown>, AggregateMap>): string | undefined {
  if (typeof options !== "object" || options === null || typeof options.name !== "string") return undefined;
  const storage = options.storage ?? (typeof indexedDB !== "undefined" ? "indexeddb" : "memory");
  return storage === "indexeddb" ? `indexeddb:${options.name}` : undefined;
}

/** What `openBundle` takes besides the bundle: the app's projections (and aggregates). */
export interface OpenBundleOptions<P extends ProjectionMap = ProjectionMap, A extends AggregateMap = {}> {
  projections?: P;
  aggregates?: A;
}

/**
 * Opens a bug bundle (`store.exportBundle()`'s NDJSON, as text, a Blob or a File) into a
 * fresh memory store folded by this app's projections: the same events at the same
 * positions, with their ids, times and origins. `differences` says which projections are
 * missing, extra or at another version, and where a reducer folds the bundle's events into
 * another state than the bundle recorded. Close the store when done.
 */
export type OpenBundle = <P extends ProjectionMap = ProjectionMap, A extends AggregateMap = {}>(
  bundle: string | Blob,
  options?: OpenBundleOptions<P, A>,
) => Promise<OpenedBundle<EventsOf<P, A>, StatesOf<P>>>;

/** `openBundle` over an entry's `openStore`. */
export function openBundleWith(openStore: OpenStore): OpenBundle {
  return (async (bundle: string | Blob, options: OpenBundleOptions = {}) => {
    // A store with the app's definitions whose only job is to open the bundle's replica.
    const host = await openStore({ name: `bundle-host:${randomUuid()}`, storage: "memory", ...options });
    try {
      return await debugAccess(host).openBundle(bundle);
    } finally {
      await host.close();
    }
  }) as OpenBundle;
}
