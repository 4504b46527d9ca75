// What the browser and Node entries share: the typed `openStore`, given how each loads the
// wasm module.

import { WasmStore } from "../wasm/annals.js";
import * as rules from "../wasm/annals.js";
import { AnnalsStore } from "./store.js";
import type {
  AggregateMap,
  EventShape,
  EventsOf,
  OpenOptions,
  ProjectionMap,
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
 */
export interface OpenStore {
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
    await loadOnce();
    return AnnalsStore.open(WasmStore.open, options, rules);
  }) as OpenStore;
}
