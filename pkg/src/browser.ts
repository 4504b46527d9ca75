// The browser entry (also the default for bundlers): loads the wasm next to this module.
// `new URL(..., import.meta.url)` is the pattern Vite and other bundlers follow to ship the
// .wasm file as an asset, with no plugin.

import init, { WasmStore } from "../wasm/annals.js";
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

export { AnnalsError, ReactorError, isAnnalsError } from "./errors.js";
export { causedBy } from "./reactor.js";
export type { AnnalsErrorCode, AnnalsErrorDetails } from "./errors.js";
export type * from "./types.js";

let ready: Promise<unknown> | undefined;

function loadWasm(): Promise<unknown> {
  ready ??= init({ module_or_path: new URL("../wasm/annals_bg.wasm", import.meta.url) }).catch((error: unknown) => {
    ready = undefined; // let a later call try again
    throw error;
  });
  return ready;
}

/**
 * Opens (creating if needed) an annals store: the log, then each projection from its
 * snapshot plus the tail of the log; with `sync`, starts syncing (in one tab per store).
 *
 * Types: give them explicitly, `openStore<Event, { todos: Todos }, { todo: typeof todo }>(...)`,
 * or let them be inferred from typed projections and aggregates
 * (`const todos: Projection<Todos, Event> = ...`, `const todo: Aggregate<Todo, TodoCommand, Event> = ...`).
 * Inline reducers without types get their state type from `initial`.
 */
export function openStore<E extends EventShape = EventShape, S = Record<string, unknown>, A extends AggregateMap = {}>(
  options: OpenOptions<E, S, A>,
): Promise<Store<E, S, A>>;
export function openStore<P extends ProjectionMap = {}, A extends AggregateMap = {}>(
  options: StoreOptions & { projections?: P; aggregates?: A },
): Promise<Store<EventsOf<P, A>, StatesOf<P>, A>>;
export async function openStore(options: OpenOptions<EventShape, Record<string, unknown>, AggregateMap>): Promise<Store> {
  await loadWasm();
  return AnnalsStore.open(WasmStore.open, options);
}
