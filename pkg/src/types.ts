/** What an append expects of its stream's version before it writes. */
export type ExpectedVersion = number | "any" | "no_stream" | "exists";

/**
 * The shape an app's events take: a discriminated union on `type`, for example
 * `{ type: "TodoAdded"; data: { title: string } } | { type: "TodoDone"; data: { id: string } }`.
 */
export interface EventShape {
  type: string;
  data: unknown;
}

/** What annals adds to every stored event. */
export interface EventEnvelope {
  /** UUIDv7, assigned at append unless the app gave one (idempotency key). */
  id: string;
  /** 1-based place in this replica's log. */
  position: number;
  /** Aggregate / stream id, e.g. "todo-42". */
  stream: string;
  /** 1-based place within its stream. */
  version: number;
  meta?: Record<string, unknown>;
  /** Milliseconds since the epoch when appended (informational only). */
  time: number;
  /** Id of the client that appended it, when known. */
  origin?: string;
  /** True until a sync server has confirmed it (always false without sync). */
  pending: boolean;
}

/** A stored event: the app's `{ type, data }` in annals' envelope. Narrow it with `switch (event.type)`. */
export type AnnalsEvent<E extends EventShape = EventShape> = EventEnvelope & E;

type DataField<D> = undefined extends D ? { data?: D } : { data: D };

/** An event to append. `data` may be left out only when the event type allows `undefined`. */
export type NewEvent<E extends EventShape = EventShape> = E extends EventShape
  ? {
      stream: string;
      type: E["type"];
      /** A UUID; appending an id that is already stored returns the stored event and writes nothing. */
      id?: string;
      meta?: Record<string, unknown>;
      /** Checked against the stream's version at append; default "any". */
      expectedVersion?: ExpectedVersion;
    } & DataField<E["data"]>
  : never;

/**
 * A read model: a reducer over the log. `apply` must return the new state (it may return
 * the same object after mutating it, but then subscribers and time travel cannot tell
 * states apart: prefer returning a new object). The state must be JSON-serialisable:
 * snapshots and checkpoints store it as JSON.
 */
export interface Projection<S, E extends EventShape = EventShape> {
  initial: S;
  apply: (state: S, event: AnnalsEvent<E>) => S;
  /** Bump it when `apply` changes meaning: old snapshots are ignored and the state is rebuilt. Default 1. */
  version?: number;
}

/** Projections by name, for state types `S` (one entry per projection). */
export type ProjectionsFor<S, E extends EventShape> = { [K in keyof S]: Projection<S[K], E> };

/** Any map of projections (what `openStore` infers types from). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ProjectionMap = Record<string, Projection<any, any>>;

/** The state type of each projection in a map. */
export type StatesOf<P> = {
  [K in keyof P]: P[K] extends Projection<infer S, infer _E> ? S : never;
};

/** The event union the projections of a map are typed for (`EventShape` when untyped). */
export type EventsOf<P> = [ProjectionEvents<P[keyof P]>] extends [never]
  ? EventShape
  : ProjectionEvents<P[keyof P]>;
type ProjectionEvents<X> = X extends Projection<infer _S, infer E> ? E : never;

/** Everything `openStore` takes but the projections. */
export interface StoreOptions {
  /** The store's name (its IndexedDB database name). */
  name: string;
  /** Default: "indexeddb" where IndexedDB exists, else "memory". */
  storage?: "indexeddb" | "memory";
  /** Largest event accepted (stream + type + data + meta, in bytes). Default 1 MiB. */
  maxEventBytes?: number;
  /** Recorded as `origin` on the events this store appends (a client id). */
  origin?: string;
  /**
   * Memory storage only: stores opened with the same name in this JavaScript realm share
   * one log and its snapshots, the way tabs share an IndexedDB database. The data lives as
   * long as the module. Default false (each memory store starts empty).
   */
  sharedMemory?: boolean;
  /** Persist each projection's state after at least this many new events. Default 1000. */
  snapshotEvery?: number;
  /** Keep an in-memory checkpoint for time travel every this many events. Default 1000. */
  checkpointEvery?: number;
}

/** The options of a store with events `E` and projection states `S`. */
export interface OpenOptions<E extends EventShape, S> extends StoreOptions {
  projections?: ProjectionsFor<S, E>;
}

/** A read of the log; `after` is exclusive, `to` inclusive. */
export interface EventQuery<T extends string = string> {
  after?: number;
  to?: number;
  limit?: number;
  stream?: string;
  type?: T;
}

/** What changed: the events `previousHead + 1 ..= head`, in order. */
export interface Change<E extends EventShape = EventShape> {
  previousHead: number;
  head: number;
  events: AnnalsEvent<E>[];
}

export interface CompactionReport {
  segmentsBefore: number;
  segmentsAfter: number;
  events: number;
}

export interface Store<E extends EventShape = EventShape, S = Record<string, unknown>> {
  readonly name: string;
  /** The last position folded into the projections (the head of this store's view of the log). */
  readonly head: number;
  readonly closed: boolean;
  /** Appends one event. Resolves to the stored event (the existing one for a known id). */
  append(event: NewEvent<E>): Promise<AnnalsEvent<E>>;
  /** Appends events in one transaction: all are written or none is. */
  appendMany(events: readonly NewEvent<E>[]): Promise<AnnalsEvent<E>[]>;
  /** The projection's current state. Synchronous. */
  get<K extends keyof S & string>(name: K): S[K];
  /** Calls `listener` with the new state after every batch of events. Returns the unsubscribe function. */
  subscribe<K extends keyof S & string>(name: K, listener: (state: S[K]) => void): () => void;
  /** The projection's state right after `position` (time travel). The log is not changed. */
  stateAt<K extends keyof S & string>(name: K, position: number): Promise<S[K]>;
  /** Reads events from the log. */
  events<T extends E["type"] = E["type"]>(
    query?: EventQuery<T>,
  ): Promise<AnnalsEvent<Extract<E, { type: T }>>[]>;
  /** `"change"`: after every batch of new events (local or from another tab). `"error"`: a reducer threw, or a background snapshot failed. */
  on(event: "change", listener: (change: Change<E>) => void): () => void;
  on(event: "error", listener: (error: unknown) => void): () => void;
  /** Reads what other tabs appended now (it also happens on their broadcast). */
  catchUp(): Promise<Change<E>>;
  /** Merges small storage segments. */
  compact(): Promise<CompactionReport>;
  /** Writes final snapshots, waits for writes in flight, and closes. Later calls fail with CLOSED. */
  close(): Promise<void>;
}
