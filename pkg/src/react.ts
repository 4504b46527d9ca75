// `annals/react`: React bindings. Synchronous reads (projections, the head, the sync status)
// go through `useSyncExternalStore`; asynchronous ones (time travel, event queries) are
// requests in which the latest one wins. React is an optional peer dependency: only apps
// that import this entry need it.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";

import type { AnnalsEvent, Change, EventQuery, EventShape, Store, SyncStatus } from "./types.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyStore = Store<any, any, any>;

/** What `useSyncStatus` needs of a store. */
export interface SyncStatusSource {
  readonly syncStatus: SyncStatus;
  on(event: "sync", listener: (status: SyncStatus) => void): () => void;
}

/** What `useHead`, `useStateAt` and `useEvents` listen to: the store's `"change"` event. */
export interface ChangeSource {
  on(event: "change", listener: (change: Change) => void): () => void;
}

const identity = <T>(value: T): T => value;

/**
 * The projection's state read through `selector`, kept while `isEqual` says it is the same:
 * the returned function is a stable `getSnapshot` for `useSyncExternalStore` even when the
 * selector is a new inline function on every render.
 */
function useSelection<T, U>(
  subscribe: (onChange: () => void) => () => void,
  getSource: () => T,
  selector: (source: T) => U,
  isEqual: (a: U, b: U) => boolean,
): U {
  // The selection of the last commit: a new selector that selects an equal value returns
  // this one, so that the component's result keeps its identity across renders.
  const committed = useRef<{ value: U } | null>(null);
  const getSelection = useMemo(() => {
    let memo: { source: T; value: U } | null = null;
    return (): U => {
      const source = getSource();
      if (memo !== null && Object.is(memo.source, source)) return memo.value;
      let value = selector(source);
      const previous = memo ?? committed.current;
      if (previous !== null && isEqual(previous.value, value)) value = previous.value;
      memo = { source, value };
      return value;
    };
  }, [getSource, selector, isEqual]);
  const value = useSyncExternalStore(subscribe, getSelection, getSelection);
  useEffect(() => {
    committed.current = { value };
  }, [value]);
  return value;
}

/**
 * The current (optimistic) state of the projection `name`, or the part of it that
 * `selector` picks. The component renders again only when the selected value changes by
 * `isEqual` (default `Object.is`), so a component that selects one entry of a large state
 * does not render when other entries change. The selector may be an inline function: a new
 * one each render causes no extra render and no loop. It must be pure and fast (it runs on
 * every change of the projection). Without a selector the state object is the store's own:
 * treat it as read-only (reducers that return new objects make every change visible).
 */
export function useProjection<S, K extends keyof S & string>(store: Store<any, S, any>, name: K): S[K]; // eslint-disable-line @typescript-eslint/no-explicit-any
export function useProjection<S, K extends keyof S & string, U>(
  store: Store<any, S, any>, // eslint-disable-line @typescript-eslint/no-explicit-any
  name: K,
  selector: (state: S[K]) => U,
  isEqual?: (a: U, b: U) => boolean,
): U;
export function useProjection<S, K extends keyof S & string, U>(
  store: Store<any, S, any>, // eslint-disable-line @typescript-eslint/no-explicit-any
  name: K,
  selector?: (state: S[K]) => U,
  isEqual?: (a: U, b: U) => boolean,
): U | S[K] {
  const subscribe = useCallback((onChange: () => void) => store.subscribe(name, () => onChange()), [store, name]);
  const getState = useCallback(() => store.get(name), [store, name]);
  return useSelection<S[K], U | S[K]>(
    subscribe,
    getState,
    (selector ?? identity) as (state: S[K]) => U | S[K],
    (isEqual ?? Object.is) as (a: U | S[K], b: U | S[K]) => boolean,
  );
}

/** The store's sync status (`store.syncStatus`), rendered again on every `"sync"` event. */
export function useSyncStatus(store: SyncStatusSource): SyncStatus {
  const subscribe = useCallback((onChange: () => void) => store.on("sync", () => onChange()), [store]);
  const snapshot = useCallback(() => store.syncStatus, [store]);
  return useSyncExternalStore(subscribe, snapshot, snapshot);
}

/** The store's head (`store.head`, the last position in its view of the log), rendered again when it moves. */
export function useHead(store: ChangeSource & { readonly head: number }): number {
  const subscribe = useCallback((onChange: () => void) => store.on("change", () => onChange()), [store]);
  const snapshot = useCallback(() => store.head, [store]);
  return useSyncExternalStore(subscribe, snapshot, snapshot);
}

// ---- asynchronous reads: the latest request wins -----------------------------------------

interface Answer<T> {
  /** The request key the value answers (undefined before the first answer). */
  key: string | undefined;
  /** The key of the latest request that settled, answered or failed. */
  settled: string | undefined;
  value: T | undefined;
  error: unknown;
  /** A request is in flight. */
  busy: boolean;
}

/**
 * Runs `read` when `key` changes and again after every change of the log that `affects` it.
 * Only the latest request's answer is kept: an older one arriving late is dropped, so the
 * value shown never goes back. The previous value stays while a newer one is loading.
 */
function useLatestRead<T>(
  store: ChangeSource,
  key: string,
  read: () => Promise<T>,
  affects: (change: Change, shown: T | undefined) => boolean,
): Answer<T> & { loading: boolean } {
  const [answer, setAnswer] = useState<Answer<T>>({
    key: undefined,
    settled: undefined,
    value: undefined,
    error: undefined,
    busy: true,
  });
  // `read` and `affects` depend on nothing but the store and what `key` describes, so the
  // ones of the render that set the key stay right until it changes.
  useEffect(() => {
    let active = true;
    let requests = 0;
    let shown: T | undefined;
    const request = () => {
      const id = ++requests;
      setAnswer((a) => (a.busy ? a : { ...a, busy: true }));
      let pending: Promise<T>;
      try {
        pending = read();
      } catch (error) {
        pending = Promise.reject(error);
      }
      pending.then(
        (value) => {
          if (!active || id !== requests) return; // a newer request is out: this answer is stale
          shown = value;
          setAnswer({ key, settled: key, value, error: undefined, busy: false });
        },
        (error: unknown) => {
          if (!active || id !== requests) return;
          setAnswer((a) => ({ ...a, settled: key, error, busy: false }));
        },
      );
    };
    request();
    const off = store.on("change", (change) => {
      if (affects(change, shown)) request();
    });
    return () => {
      active = false;
      off();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- `key` stands for what read and affects use
  }, [store, key]);
  // On the render where the key changed the effect has not asked yet: already loading.
  return { ...answer, loading: answer.busy || answer.settled !== key };
}

/** What `useStateAt` returns: the last answer, and whether a newer one is on its way. */
export interface StateAtResult<T> {
  /** The projection's state right after `position` (undefined until the first answer). */
  state: T | undefined;
  /** The position `state` belongs to: it lags the requested one while `loading`. */
  position: number | undefined;
  /** A request for the latest position (or a refresh after a change of the log) is in flight. */
  loading: boolean;
  /** Why the latest request failed (undefined after a success); `state` keeps the last good answer. */
  error: unknown;
}

/**
 * The projection `name` as it was right after `position` (`store.stateAt`), for a time-travel
 * slider. The answer comes asynchronously; while it loads the last one stays on screen, and
 * `state` and `position` always belong together (no tearing). Requests overlap freely when
 * the position moves fast: the latest one wins, an older answer arriving late is dropped.
 * It is asked again when a change of the log reaches positions up to `position` (an append
 * below it, a rebase, a reset).
 */
export function useStateAt<S, K extends keyof S & string>(
  store: Store<any, S, any>, // eslint-disable-line @typescript-eslint/no-explicit-any
  name: K,
  position: number,
): StateAtResult<S[K]> {
  const answer = useLatestRead<{ state: S[K]; position: number }>(
    store,
    JSON.stringify([name, position]),
    () => store.stateAt(name, position).then((state) => ({ state, position })),
    (change) => change.reset || change.rebased || change.previousHead < position,
  );
  return {
    state: answer.value?.state,
    position: answer.value?.position,
    loading: answer.loading,
    error: answer.error,
  };
}

/** What `useEvents` returns. */
export interface EventsResult<Ev> {
  /** The events of the last answer (empty until the first). */
  events: readonly Ev[];
  loading: boolean;
  /** Why the latest read failed (undefined after a success). */
  error: unknown;
}

/** What `useEvents` needs of a store. */
export interface EventsSource<E extends EventShape> extends ChangeSource {
  events<T extends E["type"]>(query?: EventQuery<T>): Promise<AnnalsEvent<Extract<E, { type: T }>>[]>;
}

/** Whether `change` can alter the answer to `query` (given the events shown now). */
export function changeAffectsQuery(query: EventQuery, change: Change, shown: readonly AnnalsEvent[] | undefined): boolean {
  if (change.reset || change.rebased) return true;
  const after = query.after ?? 0;
  const to = query.to ?? Number.POSITIVE_INFINITY;
  // A full page ends at its last event: what comes after it is on a later page.
  const full = query.limit !== undefined && shown !== undefined && shown.length >= query.limit;
  const last = full && shown.length > 0 ? shown[shown.length - 1]!.position : Number.POSITIVE_INFINITY;
  return change.events.some(
    (e) =>
      e.position > after &&
      e.position <= to &&
      e.position <= last &&
      (query.stream === undefined || e.stream === query.stream) &&
      (query.type === undefined || e.type === query.type) &&
      (query.correlationId === undefined || e.meta?.correlationId === query.correlationId),
  );
}

/**
 * The events matching `query` (`store.events(query)`), read again after each change of the
 * log that can alter the answer (a matching event in range, a rebase, a reset). The query
 * may be an inline object: it is compared by value. The latest read wins.
 */
export function useEvents<E extends EventShape, T extends E["type"] = E["type"]>(
  store: EventsSource<E>,
  query: EventQuery<T> = {},
): EventsResult<AnnalsEvent<Extract<E, { type: T }>>> {
  const answer = useLatestRead(
    store,
    JSON.stringify([query.after, query.to, query.limit, query.stream, query.type, query.correlationId]),
    () => store.events<T>(query),
    (change, shown) => changeAffectsQuery(query, change, shown),
  );
  return { events: answer.value ?? NO_EVENTS, loading: answer.loading, error: answer.error };
}

const NO_EVENTS: readonly never[] = Object.freeze([]);

// ---- the store context -------------------------------------------------------------------

const StoreContext = createContext<AnyStore | null>(null);

/** Props of {@link StoreProvider}: a store opened elsewhere, or a function that opens one. */
export type StoreProviderProps = {
  children?: ReactNode;
} & (
  | { store: AnyStore; open?: undefined; fallback?: undefined }
  | {
      store?: undefined;
      /**
       * Opens the store (e.g. `() => openStore(options)`). Called once when the provider
       * mounts, and the store is closed when it unmounts; a new function on a later render
       * does not reopen (give the provider a new `key` to open another store).
       */
      open: () => Promise<AnyStore>;
      /** Rendered while the store opens. Default: nothing. */
      fallback?: ReactNode;
    }
);

/**
 * Gives its children a store for {@link useStore}. With `store`, it only passes it down. With
 * `open`, it opens the store when it mounts (rendering `fallback` until it is open) and
 * closes it when it unmounts; a failed open is thrown to the nearest error boundary.
 * StrictMode's mount-unmount-mount opens one store: `openStore` shares a store that is
 * still open in this tab (see the README).
 */
export function StoreProvider(props: StoreProviderProps): ReactNode {
  const [opened, setOpened] = useState<{ store: AnyStore } | { error: unknown } | null>(null);
  const open = useRef(props.open);
  useEffect(() => {
    const openNow = open.current;
    if (openNow === undefined) return;
    let active = true;
    const opening = Promise.resolve().then(openNow);
    opening.then(
      (store) => {
        if (active) setOpened({ store });
      },
      (error: unknown) => {
        if (active) setOpened({ error });
      },
    );
    return () => {
      active = false;
      setOpened(null);
      // Closes what this mount opened, once it is open (StrictMode unmounts before that).
      opening.then((store) => store.close()).catch(() => undefined);
    };
  }, []);
  if (props.store !== undefined) return createElement(StoreContext.Provider, { value: props.store }, props.children);
  if (opened !== null && "error" in opened) throw opened.error;
  if (opened === null) return props.fallback ?? null;
  return createElement(StoreContext.Provider, { value: opened.store }, props.children);
}

/**
 * The store of the nearest {@link StoreProvider}. Give the store's type, e.g.
 * `useStore<Store<AppEvent, States>>()` (it is not checked at run time). Throws outside a provider.
 */
export function useStore<St extends AnyStore = Store>(): St {
  const store = useContext(StoreContext);
  if (store === null) throw new Error("useStore() is called outside a <StoreProvider>: wrap the app (or this part of it) in one");
  return store as St;
}
