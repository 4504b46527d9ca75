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
  /**
   * Present (true) when the event was erased (`eraseStream`: a later `$StreamErased` of its
   * stream): its `data` is `null` and it has no `meta`; its id, position, stream, version,
   * type, time and origin stay. Projections and aggregates see erased events as they are.
   */
  erased?: true;
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
      /** The schema version `data` follows, a whole number ≥ 1 (absent: 1); upcasters bring older ones to the current version when read. */
      schemaVersion?: number;
      meta?: Record<string, unknown>;
      /** Checked against the stream's version at append; default "any". */
      expectedVersion?: ExpectedVersion;
    } & DataField<InputData<E>>
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

/**
 * The event union the projections of a map (and the aggregates of a map) are typed for
 * (`EventShape` when untyped).
 */
export type EventsOf<P, A = {}> = [ProjectionEvents<P[keyof P]> | AggregateEvents<A[keyof A]>] extends [never]
  ? EventShape
  : ProjectionEvents<P[keyof P]> | AggregateEvents<A[keyof A]>;
type ProjectionEvents<X> = X extends Projection<infer _S, infer E> ? E : never;
type AggregateEvents<X> = X extends Aggregate<infer _S, infer _C, infer E> ? E : never;

/**
 * The events annals appends to a stream for its lifecycle: `$StreamDeleted`
 * (`deleteStream`), `$StreamClosed` (`closeStream`) and `$StreamErased` (`eraseStream`).
 * Projections see them in the log like any event.
 */
export type StreamLifecycleEvent =
  | { type: "$StreamDeleted"; data: Record<string, never> }
  | { type: "$StreamClosed"; data: Record<string, never> }
  | { type: "$StreamErased"; data: Record<string, never> };

/** What `deleteStream`, `closeStream` and `eraseStream` take. */
export interface StreamLifecycleOptions {
  /** Checked against the stream's version like an append's; default "any". */
  expectedVersion?: ExpectedVersion;
}

/** What `append` and `appendMany` resolve to: the stored event, and what the call left. */
export type AppendedEvent<E extends EventShape = EventShape> = AnnalsEvent<E> & {
  /** The version of the event's stream after the call: what the next append to it expects. */
  streamVersion: number;
  /** The event was in the log already (a retry of the same event): nothing was written. */
  duplicate?: true;
};

/** Everything `openStore` takes but the projections. */
export interface StoreOptions {
  /** The store's name (its IndexedDB database name). */
  name: string;
  /** Default: "indexeddb" where IndexedDB exists, else "memory". */
  storage?: "indexeddb" | "memory";
  /** Largest event accepted (stream + type + data + meta, in bytes). Default 1 MiB. */
  maxEventBytes?: number;
  /**
   * Most events in one `appendMany` (or `importEvents` batch, or command): a larger batch
   * fails with `TOO_LARGE` rather than holding every tab's writes for seconds. Default 1000,
   * what the sync server takes in one push.
   */
  maxBatch?: number;
  /** Recorded as `origin` on the events this store appends (a client id). */
  origin?: string;
  /**
   * Memory storage only: stores opened with the same name in this JavaScript realm share
   * one log and its snapshots, the way tabs share an IndexedDB database. The data lives as
   * long as the module. Default false (each memory store starts empty).
   */
  sharedMemory?: boolean;
  /**
   * Persist each projection's state after at least this many new events. Default 1000.
   * While events stream in, snapshots are at least 100 ms apart unless ten times this
   * many events wait; one is always written on close.
   */
  snapshotEvery?: number;
  /**
   * Events between in-memory checkpoints for time travel. By default the spacing starts at
   * 1024 and adapts to what each reducer costs, as measured: dense enough that a travel
   * folds at most a few ms of events, sparse enough that taking checkpoints costs at most a
   * tenth of folding, within 64 MiB of checkpoints per projection. Given, the spacing is
   * kept (it doubles only to keep at most 64 checkpoints).
   */
  checkpointEvery?: number;
  /**
   * Keep the store in sync with an annals server. Appends stay `pending` (in an outbox)
   * until the server confirms them; one tab per store syncs (Web Locks), the others see
   * what it pulls through the shared storage. Once a store has been opened synced it
   * stays synced.
   */
  sync?: SyncOptions;
  /**
   * Bounded local storage (needs `sync`): keep at least the newest `events` confirmed
   * events locally, and drop older ones once every projection's snapshot covers them (the
   * sync server keeps them all). The outbox and the snapshots are always kept. Reads and
   * `stateAt` below the kept range ask the server, or fail with `NOT_RETAINED` offline.
   */
  retain?: RetainOptions;
}

/** The `retain` option: how much of the confirmed log a synced store keeps locally. */
export interface RetainOptions {
  /** The newest confirmed events always kept (at least 1). */
  events: number;
}

/** What `store.storage()` reports. */
export interface StorageReport {
  /** Bytes the origin uses, as the browser estimates them (undefined where unknown, e.g. Node). */
  usage: number | undefined;
  /** Bytes the origin may use. */
  quota: number | undefined;
  /** Whether the browser keeps the origin's storage when space runs short (`navigator.storage.persist()`, asked on open). */
  persisted: boolean | undefined;
  /** The confirmed positions held locally: `from` to `to` (`events` of them; `dropped` before `from` were dropped by retention). */
  retained: { from: number; to: number; events: number; dropped: number };
  /** The `retain` option the store was opened with. */
  retain: RetainOptions | undefined;
}

/** The options of a store with events `E`, projection states `S` and aggregates `A`. */
export interface OpenOptions<E extends EventShape, S, A extends AggregateMap = {}> extends StoreOptions {
  projections?: ProjectionsFor<S, E>;
  /** The write model: aggregates by name, for {@link Store.execute}. */
  aggregates?: A;
}

/** A read of the log; `after` is exclusive, `to` inclusive. */
/**
 * A read. The bounds and filters choose the events (`after` exclusive, `to` inclusive);
 * `backwards` only orders them newest first, and `limit` counts from the end the order
 * starts at (the newest when backwards): the next page backwards is `to: oldest.position - 1`.
 * In a synced store the pending events are the newest.
 */
export interface EventQuery<T extends string = string> {
  after?: number;
  to?: number;
  limit?: number;
  stream?: string;
  /** With `stream`: its events from this version on (versions are 1-based). */
  fromVersion?: number;
  /** Newest first. */
  backwards?: boolean;
  type?: T;
  /** Events whose `meta.correlationId` is this: a whole command flow. */
  correlationId?: string;
}

/**
 * What changed: the store's log after `previousHead` is now `events` (positions
 * `previousHead + 1 ..= head`, in order). Usually that only adds events; in a synced store
 * a pull may confirm or move pending events (`rebased`: `events` are the newly confirmed
 * events followed by every pending event at its new position), and a changed server
 * epoch restarts the confirmed log (`reset`, with `previousHead` 0).
 */
export interface Change<E extends EventShape = EventShape> {
  previousHead: number;
  head: number;
  events: AnnalsEvent<E>[];
  /** The last confirmed position after the change (equal to `head` without sync). */
  confirmedHead: number;
  rebased: boolean;
  reset: boolean;
}

// ---- sync ----------------------------------------------------------------------------

/** Where and as whom to sync (DESIGN §5). */
export interface SyncOptions {
  /** The server's base URL, e.g. "http://localhost:8080". */
  url: string;
  /** The store's name on the server. */
  store: string;
  /**
   * Sent as `Authorization: Bearer <token>`. A function (sync or async) is called when sync
   * starts and again after each refused request (401/403), with backoff while the tokens it
   * gives keep being refused; sync resumes by itself with the first token that works.
   */
  token: string | SyncTokenProvider;
  /** Extra headers sent with every request; a function is called like `token`'s. */
  headers?: Record<string, string> | SyncHeadersProvider;
  /** Events per push request. Default 500. */
  pushBatch?: number;
  /** Events per pull request. Default 10000 (the server's largest page by default). */
  pullLimit?: number;
  /** Seconds a live pull waits on the server for new events. Default 25. */
  longPollSeconds?: number;
  /**
   * When the local database holds a copy of another server store (it was synced with
   * another `store` or `url`): `"fail"` (default) refuses to open with `STORE_MISMATCH`,
   * changing nothing; `"reset"` drops the local copy of the other store's events (they stay
   * on its server), its snapshots and cursor, keeps the events never pushed, and starts
   * over as a copy of this store.
   */
  onMismatch?: "fail" | "reset";
}

/** What a token function hears: why it is called. */
export interface SyncTokenRequest {
  /** `"start"` when sync starts in this tab, `"refused"` after the server refused the last token. */
  reason: "start" | "refused";
  /** The refusal's code and message (`UNAUTHORIZED` or `FORBIDDEN`) when `reason` is `"refused"`. */
  error?: SyncStatusError;
}

/** Gives the token to sync with (`sync.token` as a function). */
export type SyncTokenProvider = (request: SyncTokenRequest) => string | Promise<string>;

/** Gives the extra headers to sync with (`sync.headers` as a function). */
export type SyncHeadersProvider = (
  request: SyncTokenRequest,
) => Record<string, string> | Promise<Record<string, string>>;

/** Why sync fails now, with a message that names the likely cause and the fix. */
export interface SyncStatusError {
  /**
   * `UNAUTHORIZED`/`FORBIDDEN`: the token was refused (the server answered; `online` stays
   * true). `OFFLINE`: no answer (the device is offline, or nothing listens at `sync.url`).
   * `CORS_REFUSED`, `NOT_SYNC_SERVER`, `UPGRADE_REQUIRED`: a setup mistake the message
   * explains. Also `REFUSED`, `SERVER`, and store errors.
   */
  code: string;
  message: string;
}

/** What the app sees of sync (`store.syncStatus`, `on("sync")`). */
export interface SyncStatus {
  /** The last request reached the server, and the platform says it is online. */
  online: boolean;
  /** A sync step is running. */
  syncing: boolean;
  /** Events waiting for the server. */
  pending: number;
  /** The last confirmed position pulled. */
  lastPulled: number;
  lastError: string | null;
  /** `OFFLINE`, `UNAUTHORIZED`, `FORBIDDEN`, `REFUSED`, `SERVER`, ... */
  lastErrorCode: string | null;
  /** `lastErrorCode` and `lastError` together, or null while sync works. */
  error: SyncStatusError | null;
  /** This tab is the one that syncs the store. */
  leader: boolean;
}

/** What `store.sync()` did. */
export interface SyncReport {
  pushed: number;
  pulled: number;
  rejected: number;
  /** Times the server's epoch changed and the log was pulled again from the start. */
  restarts: number;
}

/** A pending event as it was pushed (and refused). */
export type RejectedEvent<E extends EventShape = EventShape> = E extends EventShape
  ? {
      id: string;
      stream: string;
      type: E["type"];
      data: E["data"];
      meta?: Record<string, unknown>;
      time: number;
      expectedVersion?: ExpectedVersion;
    }
  : never;

/** A pending event the server refused: removed from the outbox, kept in `store.rejected()`. */
export interface Rejection<E extends EventShape = EventShape> {
  event: RejectedEvent<E>;
  reason: string;
  /** For a version conflict: the stream's version on the server. */
  actualVersion?: number;
}

// ---- the write model (CQRS command side) --------------------------------------------

/** The shape of commands: a discriminated union on `type`. */
export interface CommandShape {
  type: string;
}

/** An event `decide` returns: `{ type, data, meta? }`; the stream is the aggregate's. */
export type DecidedEvent<E extends EventShape = EventShape> = E extends EventShape
  ? { type: E["type"]; meta?: Record<string, unknown> } & DataField<InputData<E>>
  : never;

/** A command for an aggregate instance: what process managers and compensations return. */
export interface CommandRequest<C extends CommandShape = CommandShape> {
  /** The aggregate's name (a key of `aggregates`). */
  aggregate: string;
  /** The aggregate instance: its stream. */
  id: string;
  command: C;
}

/** A sync rejection of an event that a command produced, as `onRejected` gets it. */
export interface CommandRejection<E extends EventShape = EventShape> extends Rejection<E> {
  aggregate: string;
  /** The aggregate instance (the event's stream). */
  id: string;
  commandId: string;
}

/**
 * An aggregate as a decider: `decide` turns a command and the current state into events
 * (or throws to refuse it: `COMMAND_REJECTED`, nothing written); `evolve` folds the
 * aggregate's own events into its state. `decide` must not mutate the state it gets.
 */
export interface Aggregate<S, C extends CommandShape = CommandShape, E extends EventShape = EventShape> {
  initial: S;
  evolve: (state: S, event: AnnalsEvent<E>) => S;
  decide: (command: C, state: S) => readonly DecidedEvent<E>[];
  /**
   * The server refused one of this aggregate's pending events (synced stores): return
   * compensating commands, run like any command (in the tab that syncs).
   */
  onRejected?: (rejection: CommandRejection<E>) => readonly CommandRequest[] | void;
}

/** Any map of aggregates. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AggregateMap = Record<string, Aggregate<any, any, any>>;

/** The command union of an aggregate. */
export type CommandOf<X> = X extends Aggregate<infer _S, infer C, infer _E> ? C : never;

/** A command for any aggregate of the map `A`, typed per aggregate. */
export type CommandFor<A> = {
  [K in keyof A & string]: { aggregate: K; id: string; command: CommandOf<A[K]> };
}[keyof A & string];

/** Ids tying a command's events to their flow (all default to a new command id). */
export interface ExecuteOptions {
  /** Idempotency key: executing a command id again returns the first result. Default: a new UUID. */
  commandId?: string;
  /** The flow this command belongs to. Default: the command id. */
  correlationId?: string;
  /** The event or command that caused this one. Default: the command id. */
  causationId?: string;
}

/** What `execute` did. */
export interface ExecuteResult<E extends EventShape = EventShape> {
  commandId: string;
  /** The events appended (none when `decide` returned none). */
  events: AnnalsEvent<E>[];
  /** The stream's version after the command. */
  version: number;
}

/** A process manager: runs `handle` once per matching event, in log order. */
export interface ReactorOptions<E extends EventShape, A, T extends E["type"] = E["type"]> {
  /** Names the checkpoint; keep it stable across releases. */
  name: string;
  /** The event types to handle. */
  on: readonly T[];
  /** The commands to execute for `event` (caused by it, same correlation). */
  handle: (
    event: AnnalsEvent<Extract<E, { type: T }>>,
  ) => readonly CommandFor<A>[] | void | Promise<readonly CommandFor<A>[] | void>;
  /** Backoff after a failure: from `initialMs` (default 250) doubling to `maxMs` (default 30000). */
  retry?: { initialMs?: number; maxMs?: number };
  /**
   * Where a reactor without a checkpoint starts: `"beginning"` (default) handles every
   * past event too, `"end"` only events appended from now on.
   */
  startAt?: "beginning" | "end";
}

/** A running process manager. */
export interface Reactor {
  readonly name: string;
  /** The last position handled (its checkpoint). */
  readonly position: number;
  /** Resolves once every event up to the current (confirmed) head is handled. */
  idle(): Promise<void>;
  /** Stops after the event in hand. */
  stop(): Promise<void>;
}

export interface CompactionReport {
  segmentsBefore: number;
  segmentsAfter: number;
  events: number;
}

/** Why a store closed by itself (`on("closed")`): its IndexedDB connection was taken away. */
export interface ClosedInfo {
  /**
   * `"deleted"`: the database was deleted (by another tab, or the app). `"upgraded"`: another
   * tab opened it at a newer version (a newer build of the app): reload this one. `"lost"`:
   * the browser closed it (for example, site data was cleared).
   */
  reason: "deleted" | "upgraded" | "lost";
  /**
   * Events that were waiting for the server. After `"deleted"` or `"lost"` they are gone from
   * disk but were kept from memory: the next `openStore` of this name in this tab syncs, then
   * appends them again by id (so none is lost, and none is stored twice).
   */
  unsynced: number;
}

// ---- time-travel debugging ----------------------------------------------------------

/** Options of {@link Store.stateAt}. */
export interface StateAtOptions {
  /** Ids of events to leave out of the fold (what-if). Unknown ids are ignored. */
  skip?: readonly string[];
}

// ---- import and export (NDJSON) ------------------------------------------------------

/** The first line of an events export (`exportEvents`, `annals-server export`). */
export interface EventsHeader {
  format: "annals-events";
  /** The format's version (1). */
  formatVersion: number;
  /** The store's name. */
  store: string;
  /** Event lines that follow. */
  count: number;
  /** ms since the epoch. */
  exportedAt: number;
}

/** Options of {@link Store.exportEvents}. */
export interface ExportEventsOptions {
  /** Write events as this build reads them (the store's upcasters applied) instead of as stored. Default false. */
  upcast?: boolean;
}

/** Options of {@link Store.importEvents}. */
export interface ImportEventsOptions {
  /** Check every line and count what would be imported; write nothing. */
  dryRun?: boolean;
  /** Events per append (one transaction each). Default 1,000. */
  batchSize?: number;
  /** Called after each batch: event lines done so far, and the total when the header (or the array) tells it. */
  onProgress?: (progress: { done: number; total?: number }) => void;
}

/** What {@link Store.importEvents} did (or, with `dryRun`, would do). */
export interface ImportReport {
  /** Events appended (new ids). */
  imported: number;
  /** Events whose id the store already had (or that came earlier in the source): nothing written. */
  duplicates: number;
  /** Event lines read (the header and blank lines not counted). */
  lines: number;
}

/** Options of {@link Store.exportBundle}. */
export interface ExportBundleOptions {
  /** Fingerprints in the header every this many positions (and at the head). Default: about 64 spread over the log. */
  fingerprintEvery?: number;
}

/** The first line of a bug bundle (NDJSON). */
export interface BundleHeader {
  format: "annals-bundle";
  /** The bundle format's version (1). */
  formatVersion: number;
  /** The annals package version that wrote it. */
  annals: string;
  store: string;
  /** ms since the epoch. */
  exportedAt: number;
  /** Events in the bundle (= the head when exported). */
  events: number;
  /** The last confirmed position when exported. */
  confirmedHead: number;
  projections: { name: string; version: number }[];
  fingerprintEvery: number;
  /** By projection: `[position, fingerprint]` pairs, ascending, the head last. */
  fingerprints: Record<string, [number, string][]>;
}

/** How an opened bundle differs from the app that opened it. */
export interface BundleDifference {
  projection: string;
  /**
   * `"missing"`: in the bundle, not in the app. `"extra"`: in the app, not in the bundle.
   * `"version"`: versions differ. `"fingerprint"`: the app's reducer folds the bundle's
   * events into another state (`position`: the first such position among the header's).
   */
  kind: "missing" | "extra" | "version" | "fingerprint";
  message: string;
  position?: number;
}

/** What {@link openBundle} gives: a fresh memory store holding the bundle's events. */
export interface OpenedBundle<E extends EventShape = EventShape, S = Record<string, unknown>> {
  store: Store<E, S>;
  header: BundleHeader;
  /** Empty when the app's projections reproduce every fingerprint of the header. */
  differences: BundleDifference[];
}

/** One JSON path's change between two states (see `diff`). */
export interface DiffEntry {
  /** Keys and indexes from the root, e.g. `["cards", "c1", "title"]`. */
  path: (string | number)[];
  /** Absent for `added`. */
  before?: unknown;
  /** Absent for `removed`. */
  after?: unknown;
}

/** What `diff(a, b)` finds: every leaf-most path added, removed or changed from `a` to `b`. */
export interface StateDiff {
  added: DiffEntry[];
  removed: DiffEntry[];
  changed: DiffEntry[];
}

export interface Store<E extends EventShape = EventShape, S = Record<string, unknown>, A = {}> {
  readonly name: string;
  /** The last position folded into the projections (the head of this store's view of the log). */
  readonly head: number;
  /** The last confirmed position (equal to `head` without sync). */
  readonly confirmedHead: number;
  readonly closed: boolean;
  /** Sync state; without sync: not online, nothing pending. */
  readonly syncStatus: SyncStatus;
  /**
   * Appends one event. Resolves to the stored event with its stream's version after the
   * call (`streamVersion`). Appending an event with an id already in the log is a retry if
   * it is the same event (stream, type, schema version, data and meta, compared as JSON text):
   * it resolves to the stored event with `duplicate: true` and writes nothing; anything else
   * under a known id fails with `DUPLICATE_ID` (`error.event` is the stored event).
   * The new event (here, in projections and in `on("change")`) holds the `data` and `meta`
   * objects passed, not copies (unless JSON would not give them back as they are): treat
   * them as immutable once appended.
   */
  append(event: NewEvent<E>): Promise<AppendedEvent<E>>;
  /**
   * Appends events in one transaction: all are written or none is. A batch is wholly a
   * retry or wholly new (known ids mixed with new events: `DUPLICATE_ID`); one id twice is
   * `INVALID_EVENT`; more than `maxBatch` events is `TOO_LARGE`.
   */
  appendMany(events: readonly NewEvent<E>[]): Promise<AppendedEvent<E>[]>;
  /**
   * The stream's version (its number of events, pending ones included; 0 when it has none),
   * from the store's index: nothing is read. Waits for a lazily opened log to load.
   */
  streamVersion(stream: string): Promise<number>;
  /**
   * Soft-deletes the stream: appends a `$StreamDeleted` event to it (synced, and seen by
   * projections, like any event). `events({ stream })` then returns only what is appended
   * after it; `streamVersion` keeps counting, and an append expecting `"no_stream"` starts
   * the stream again. Resolves to the stored `$StreamDeleted` event.
   */
  deleteStream(stream: string, options?: StreamLifecycleOptions): Promise<AppendedEvent<StreamLifecycleEvent>>;
  /**
   * Closes the stream for good: appends a `$StreamClosed` event, after which every append
   * to it fails with `STREAM_DELETED`, on every replica and at the server (a push to it is
   * rejected, reported on `on("rejected")`). Its events stay readable.
   */
  closeStream(stream: string, options?: StreamLifecycleOptions): Promise<AppendedEvent<StreamLifecycleEvent>>;
  /**
   * Erases the stream: appends a `$StreamErased` event, and every earlier event of the
   * stream loses its `data` (then `null`) and `meta` and reads as `erased: true`, keeping
   * its id, position, version and type. Here at once (stored events, pending ones and the
   * snapshots that folded them; projections fold again), at the sync server when it takes
   * the push, and on every replica as it pulls the erasure. A closed stream can be erased;
   * the stream takes new events after it as before. See the README's "Erasure" for what it
   * guarantees and what it cannot reach.
   */
  eraseStream(stream: string, options?: StreamLifecycleOptions): Promise<AppendedEvent<StreamLifecycleEvent>>;
  /** The projection's current state (optimistic: confirmed events plus pending ones). Synchronous. */
  get<K extends keyof S & string>(name: K): S[K];
  /** Calls `listener` with the new state after every batch of events. Returns the unsubscribe function. */
  subscribe<K extends keyof S & string>(name: K, listener: (state: S[K]) => void): () => void;
  /**
   * The projection's state right after `position` (time travel). With `skip`, the events
   * with those ids are left out of the fold (what-if). The log, sync and other tabs are
   * never changed by it.
   */
  stateAt<K extends keyof S & string>(name: K, position: number, options?: StateAtOptions): Promise<S[K]>;
  /**
   * Shows the past: `get`, `subscribe` (and so the app's UI and React hooks) give each
   * projection's state right after `position` until {@link Store.unfreeze}. Meanwhile
   * `append`, `appendMany` and `execute` fail with `FROZEN`; events that arrive by sync or
   * from other tabs are still stored and show on unfreeze. Freezing again moves the view.
   */
  freeze(position: number): Promise<void>;
  /** Back to the present: subscribers hear the current states. */
  unfreeze(): void;
  /** The position the store is frozen at, or undefined while it shows the present. */
  readonly frozenAt: number | undefined;
  /**
   * A short hash (16 hex digits) of the projection's state right after `position` (default:
   * the head), over its canonical JSON (object keys sorted): equal states give equal
   * fingerprints on any replica, and any change of the state changes it.
   */
  fingerprint<K extends keyof S & string>(name: K, position?: number): Promise<string>;
  /**
   * A bug bundle: NDJSON text whose first line is a {@link BundleHeader} (with the
   * projections' fingerprints every `fingerprintEvery` positions) and whose other lines are
   * the events as stored. `openBundle` reproduces the same states from it.
   */
  exportBundle(options?: ExportBundleOptions): Promise<string>;
  /**
   * The log as NDJSON: a header line ({@link EventsHeader}), then one event per line as
   * stored (or upcast, with `{ upcast: true }`), positions 1 to the head when the export
   * starts. A stream of whole lines read a page at a time, so memory stays bounded.
   */
  exportEvents(options?: ExportEventsOptions): ReadableStream<string>;
  /**
   * Appends the events of an export (NDJSON text, a `Blob`/`File`, a `ReadableStream` of
   * text or bytes) or of a bug bundle, or an array of events, in batches, keeping their ids,
   * times, origins and schema versions: known ids are duplicates that write nothing. A bad
   * line rejects with its line number, nothing of its batch written (earlier batches stay).
   */
  importEvents(
    source: string | Blob | ReadableStream<string | Uint8Array> | AsyncIterable<string | Uint8Array> | readonly unknown[],
    options?: ImportEventsOptions,
  ): Promise<ImportReport>;
  /** Reads events from the log. */
  events<T extends E["type"] = E["type"]>(
    query?: EventQuery<T>,
  ): Promise<AnnalsEvent<Extract<E, { type: T }>>[]>;
  /**
   * `"change"`: after every change of the log (local appends, other tabs, sync).
   * `"error"`: a reducer threw, a background snapshot failed, a reactor failed.
   * `"sync"`: the sync status changed. `"rejected"`: the server refused a pending event
   * (reported in every tab). `"closed"`: the store closed by itself because its database was
   * deleted or upgraded elsewhere (not after `close()`); later calls fail with `CLOSED`.
   */
  on(event: "change", listener: (change: Change<E>) => void): () => void;
  on(event: "error", listener: (error: unknown) => void): () => void;
  on(event: "sync", listener: (status: SyncStatus) => void): () => void;
  on(
    event: "rejected",
    listener: (event: RejectedEvent<E>, reason: string, actualVersion: number | undefined) => void,
  ): () => void;
  on(event: "closed", listener: (info: ClosedInfo) => void): () => void;
  /** `"frozen"`: the store was frozen at a position (or unfrozen: `undefined`). */
  on(event: "frozen", listener: (position: number | undefined) => void): () => void;
  /** Pushes and pulls now (asking the tab that syncs, if another one does). */
  sync(): Promise<SyncReport>;
  /** The pending events the server refused (the latest 1000), oldest first. */
  rejected(): Promise<Rejection<E>[]>;
  /**
   * Executes a command on the aggregate instance `id` (its stream): folds the stream into
   * the aggregate's state, runs `decide`, and appends its events at the version `decide`
   * saw, deciding again (up to 5 times) if another writer moved the stream meanwhile.
   */
  execute<K extends keyof A & string>(
    aggregate: K,
    id: string,
    command: CommandOf<A[K]>,
    options?: ExecuteOptions,
  ): Promise<ExecuteResult<E>>;
  /** Starts a process manager (one tab runs it, where Web Locks exist). */
  react<T extends E["type"]>(options: ReactorOptions<E, A, T>): Reactor;
  /** Reads what other tabs appended now (it also happens on their broadcast). */
  catchUp(): Promise<Change<E>>;
  /** Merges small storage segments (and, with `retain`, drops what the policy lets go). */
  compact(): Promise<CompactionReport>;
  /** The browser's usage, quota and persistence for this origin, and the confirmed range held locally. */
  storage(): Promise<StorageReport>;
  /** Writes final snapshots, waits for writes in flight, and closes. Later calls fail with CLOSED. */
  close(): Promise<void>;
}

// ---- event schemas: typed, validated events (Standard Schema) -------------------------

import type { StandardSchemaV1 } from "./standard-schema.js";
export type { StandardSchemaV1 } from "./standard-schema.js";
export type { EventIssue } from "./errors.js";

/**
 * Validators of each event type's `data` (the `events` option): any Standard Schema v1
 * validator (zod >= 3.24, valibot >= 1, arktype, ...), e.g.
 * `{ TodoAdded: z.object({ id: z.string(), title: z.string() }) }`.
 */
export type EventSchemas = Record<string, StandardSchemaV1>;

/** Where an event type made from a schema keeps the schema's input type (a type only: never at run time). */
declare const inputOf: unique symbol;

/**
 * What `append` and `decide` take as an event's `data`: the schema's input type for events
 * made by {@link EventsFrom} (a default may be left out), else `data`'s type.
 */
export type InputData<E extends EventShape> = typeof inputOf extends keyof E
  ? NonNullable<E[typeof inputOf & keyof E]> extends { data: infer I }
    ? I
    : E["data"]
  : E["data"];

/**
 * The events of schemas `M`: a union on `type` whose `data` is the validator's output (what
 * is stored and folded); appends and `decide` take the validator's input (see {@link InputData}).
 */
export type EventsFrom<M extends EventSchemas> = {
  [K in keyof M & string]: {
    type: K;
    data: StandardSchemaV1.InferOutput<M[K]>;
    readonly [inputOf]?: { data: StandardSchemaV1.InferInput<M[K]> };
  };
}[keyof M & string];

/** Aggregates whose events are typed from schemas `M`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AggregatesFor<M extends EventSchemas> = Record<string, Aggregate<any, any, EventsFrom<M>>>;

/** `openStore`'s options with `events`: projections and aggregates typed from the schemas. */
export interface SchemaOpenOptions<M extends EventSchemas, S, A extends AggregatesFor<M> = {}> extends StoreOptions {
  /**
   * Validators of each event type's `data` (any Standard Schema validator: zod, valibot,
   * arktype, ...). Every appended or decided event of such a type is validated before
   * anything is written (async validators too); a refusal is `INVALID_EVENT` with the
   * validator's issues and nothing of the batch is written. What is stored is the
   * validator's output. Types without a schema are appended as they are.
   */
  events: M;
  projections?: ProjectionsFor<S, EventsFrom<M>>;
  /** The write model: aggregates by name, for {@link Store.execute}. */
  aggregates?: A;
}

// ---- evolving events: upcasters, unknown events, rebuilds ---------------------------
// (Declaration merging: these add to the interfaces above.)

export interface EventEnvelope {
  /**
   * Present when an upcaster changed the event as it was read: the type and schema version
   * it is stored as (the stored bytes never change; `type`, `data` and `schemaVersion` are
   * what this build's upcasters made of it).
   */
  upcastFrom?: { type: string; schemaVersion: number };
  /** The schema version of `data` (absent: 1). */
  schemaVersion?: number;
}

/** An upcaster from schema version v to v + 1 that keeps the type: returns the new `data`. Pure and synchronous. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Upcaster = (data: any, event: Readonly<AnnalsEvent>) => unknown;

/** An upcaster from schema version v to v + 1 under a new type name (the chain continues under it at v + 1). */
export interface RenamingUpcaster {
  type: string;
  upcast: Upcaster;
}

/** Per stored event type, per schema version v: what turns an event at v into v + 1. */
export type Upcasters = Record<string, Record<number, Upcaster | RenamingUpcaster>>;

/** What a projection does with an event this build cannot read (see {@link StoreOptions.unknownEvents}). */
export type UnknownEventPolicy = "skip" | "warn" | "fail";

/** Options of projection rebuilds (see {@link StoreOptions.rebuild}). */
export interface RebuildOptions {
  /** A rebuild folds in the background when more than this many events are to fold. Default 10000; 0: always. */
  background?: number;
  /** The most events folded in one slice before yielding to the page (slices are sized to take about 12 ms). Default 2000. */
  slice?: number;
  /** A resumable (partial) snapshot every this many events folded. Default 20000. */
  saveEvery?: number;
}

/** A rebuild's progress (`on("rebuild")`): `done` of `total` confirmed events folded. */
export interface RebuildProgress {
  name: string;
  done: number;
  total: number;
}

export interface StoreOptions {
  /**
   * Upcasters by stored type and schema version: `{ TodoAdded: { 1: (data) => ({ ...data,
   * priority: 0 }), 2: { type: "TodoCreated", upcast: (data) => data } } }`. Applied whenever
   * events are read (folds, `events()`, `stateAt`, changes, the devtools); checked at open
   * (a gap, a duplicate, a loop or an ambiguous end is `INVALID_ARGUMENT`).
   */
  upcasters?: Upcasters;
  /**
   * An event whose type has no schema (when `events` is given) or whose `schemaVersion` is
   * above what its upcasters reach: `"warn"` (default) leaves it out of the projections and
   * reports `UNKNOWN_EVENT` on `on("error")` once per type and version; `"skip"` leaves it out
   * silently; `"fail"` stops each projection just before it (reported once). It is kept and
   * synced unchanged, and folded by a build that knows it.
   */
  unknownEvents?: UnknownEventPolicy;
  /** How projections whose `version` changed are rebuilt (in the background on large logs). */
  rebuild?: RebuildOptions;
}

export interface Store<E extends EventShape = EventShape, S = Record<string, unknown>, A = {}> {
  /**
   * `"rebuild"`: a projection rebuilding in the background (its `version` changed, or a
   * rebuild cut by a reload resumes) has folded `done` of `total` events; the last call has
   * `done === total`. Meanwhile `get(name)` gives the state folded so far.
   */
  on(event: "rebuild", listener: (progress: RebuildProgress) => void): () => void;
}
