// `annals/react`: React bindings on `useSyncExternalStore`. React is an optional peer
// dependency: only apps that import this entry need it.

import { useCallback, useSyncExternalStore } from "react";

import type { Store, SyncStatus } from "./types.js";

/** What `useSyncStatus` needs of a store. */
export interface SyncStatusSource {
  readonly syncStatus: SyncStatus;
  on(event: "sync", listener: (status: SyncStatus) => void): () => void;
}

/**
 * The current (optimistic) state of the projection `name`; the component renders again
 * whenever the store reports a change of it. The state object is the store's own: treat
 * it as read-only (reducers that return new objects make every change visible to React).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function useProjection<S, K extends keyof S & string>(store: Store<any, S, any>, name: K): S[K] {
  const subscribe = useCallback((onChange: () => void) => store.subscribe(name, () => onChange()), [store, name]);
  const snapshot = useCallback(() => store.get(name), [store, name]);
  return useSyncExternalStore(subscribe, snapshot, snapshot);
}

/** The store's sync status (`store.syncStatus`), rendered again on every `"sync"` event. */
export function useSyncStatus(store: SyncStatusSource): SyncStatus {
  const subscribe = useCallback((onChange: () => void) => store.on("sync", () => onChange()), [store]);
  const snapshot = useCallback(() => store.syncStatus, [store]);
  return useSyncExternalStore(subscribe, snapshot, snapshot);
}
