// The Node entry: reads the .wasm file from disk next to this module. Storage is memory
// (Node has no IndexedDB).

import { readFile } from "node:fs/promises";

import init, { WasmStore } from "../wasm/annals.js";
import { AnnalsStore } from "./store.js";
import type { EventShape, EventsOf, OpenOptions, ProjectionMap, StatesOf, Store, StoreOptions } from "./types.js";

export { AnnalsError, isAnnalsError } from "./errors.js";
export type { AnnalsErrorCode, AnnalsErrorDetails } from "./errors.js";
export type * from "./types.js";

let ready: Promise<unknown> | undefined;

function loadWasm(): Promise<unknown> {
  ready ??= readFile(new URL("../wasm/annals_bg.wasm", import.meta.url))
    .then((bytes) => init({ module_or_path: bytes }))
    .catch((error: unknown) => {
      ready = undefined; // let a later call try again
      throw error;
    });
  return ready;
}

/**
 * Opens (creating if needed) an annals store: the log, then each projection from its
 * snapshot plus the tail of the log.
 *
 * Types: give them explicitly, `openStore<Event, { todos: Todos }>(...)`, or let them be
 * inferred from typed projections (`const todos: Projection<Todos, Event> = ...`).
 * Inline reducers without types get their state type from `initial`.
 */
export function openStore<E extends EventShape = EventShape, S = Record<string, unknown>>(
  options: OpenOptions<E, S>,
): Promise<Store<E, S>>;
export function openStore<P extends ProjectionMap>(
  options: StoreOptions & { projections: P },
): Promise<Store<EventsOf<P>, StatesOf<P>>>;
export async function openStore(options: OpenOptions<EventShape, Record<string, unknown>>): Promise<Store> {
  await loadWasm();
  return AnnalsStore.open(WasmStore.open, options);
}
