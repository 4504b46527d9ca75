// The store: the public facade of annals. The wasm core keeps the log (append rules,
// storage, reads, the sync client); each module beside this one does one job behind a small
// host interface, so that a change has one obvious home: projections, writes, tabs, leader,
// commands, reactor, lifecycle, completion, orphans, options. This class owns only what they
// share (the heads, the log's generation, open or closed) and one AbortController: `close()`
// aborts it, and each module tears itself down on its signal.

import { DEBUG, type DebugAccess } from "./debug.js";
import { Debugging, type Replica } from "./debugging.js";
import { exportEvents, importEvents, type TransferHost } from "./import-export.js";
import { AnnalsError, fromWasmError } from "./errors.js";
import { Commands } from "./commands.js";
import { LogCompletion } from "./completion.js";
import { StoreEvents, type AnyListener } from "./events.js";
import { Leader } from "./leader.js";
import { followLifecycle, pageLifecycleTarget } from "./lifecycle.js";
import {
  invalidArgument,
  type OpenPlan,
  parseOpenOptions,
  parseReactorOptions,
  REACTOR_PREFIX,
  serializeQuery,
  type Settings,
} from "./options.js";
import { adoptOrphans, keepOrphans } from "./orphans.js";
import { Projections } from "./projections.js";
import { ReactorRuntime, type ReactorHost, webLocks } from "./reactor.js";
import { Retention, requestPersistence } from "./retention.js";
import { openBroadcastChannel, Tabs } from "./tabs.js";
import { type Evolution, parseEvolution } from "./upcast.js";
import type {
  AggregateMap,
  AnnalsEvent,
  AppendedEvent,
  CommandOf,
  Change,
  ClosedInfo,
  CompactionReport,
  EventQuery,
  EventShape,
  ExecuteOptions,
  ExecuteResult,
  ExportBundleOptions,
  ExportEventsOptions,
  ImportEventsOptions,
  ImportReport,
  NewEvent,
  OpenOptions,
  RebuildProgress,
  Reactor,
  ReactorOptions,
  RejectedEvent,
  Rejection,
  StateAtOptions,
  StorageReport,
  Store,
  StreamLifecycleEvent,
  StreamLifecycleOptions,
  SyncReport,
  SyncStatus,
} from "./types.js";
import type { ChangeMessage, OutboxEvent, SnapshotReply, WasmOpen, WasmRules, WasmStoreHandle } from "./wasm-contract.js";
import { Writes } from "./writes.js";
import { type WriterLock, writerLockFor } from "./writer-lock.js";

// Kept exported from here: callers imported them from this module before the split.
export { serializeBatch } from "./options.js";
export type { WasmOpen, WasmRules, WasmStoreHandle } from "./wasm-contract.js";

function closedError(): AnnalsError {
  return new AnnalsError("CLOSED", "the store is closed");
}

function isNotRetained(error: unknown): boolean {
  return error instanceof AnnalsError && error.code === "NOT_RETAINED";
}

function rethrow(error: unknown): never {
  throw fromWasmError(error);
}

/** Events as stored, as the core's `append` takes them back (ids, times, origins and schema versions kept). */
function storedBatch(events: readonly AnnalsEvent[]): string {
  return JSON.stringify(
    events.map((e) => ({
      id: e.id,
      stream: e.stream,
      type: e.type,
      schemaVersion: e.schemaVersion,
      data: e.data,
      meta: e.meta,
      time: e.time,
      origin: e.origin,
    })),
  );
}

/** Event reads through renames: events read per page while filtering by an upcast type. */
const RENAMED_TYPE_PAGE = 1_000;
/** A debugging replica's batch limit (a whole bundle is one append; the core counts in 32 bits). */
const REPLICA_MAX_BATCH = 2 ** 31 - 1;

export class AnnalsStore<E extends EventShape, S, A = {}> implements Store<E, S, A> {
  readonly #wasm: WasmStoreHandle;
  readonly #rules: WasmRules;
  readonly #settings: Settings;
  /** The options this store was opened with, and how: for the memory replicas debugging opens. */
  readonly #options: OpenOptions<EventShape, unknown, AggregateMap>;
  readonly #wasmOpen: WasmOpen;
  /** Upcasters, the unknown-event policy and rebuild settings (upcast.ts). */
  readonly #evolution: Evolution;
  /** Time travel: the position `get` and subscribers show, or undefined for the present. */
  #frozenAt: number | undefined;
  /** Aborted by close: every module stops on it. */
  readonly #abort = new AbortController();
  readonly #events = new StoreEvents();
  readonly #projections: Projections;
  readonly #writes: Writes<E>;
  readonly #commands: Commands;
  readonly #tabs: Tabs;
  readonly #leader: Leader;
  readonly #completion: LogCompletion;
  readonly #debugging: Debugging;
  readonly #retention: Retention;
  readonly #reactors = new Map<string, ReactorRuntime>();
  /** Work that close waits for (appends, catch-ups, compensations, snapshot deletes). */
  readonly #inflight = new Set<Promise<unknown>>();
  /** Ids of rejected events already reported in this tab. */
  readonly #reportedRejections = new Set<string>();
  /**
   * Rejections heard before `openStore` returned (the core announces those stored but not
   * yet announced, e.g. before a crash, as sync starts): held until the app could listen.
   */
  #heldRejections: [Rejection, boolean][] | undefined = [];
  #head = 0;
  #confirmedHead = 0;
  /** Counts restarts of the confirmed log (server epoch changes). */
  #generation = 0;
  #loading = true;
  #closed = false;
  /** The database was taken away (deleted, upgraded elsewhere): nothing more can be written. */
  #lost = false;
  #closing: Promise<void> | undefined;
  /** The IndexedDB store's writer lock (writer-lock.ts), where the platform has Web Locks. */
  #writer: WriterLock | undefined;

  private constructor(
    wasm: WasmStoreHandle,
    rules: WasmRules,
    plan: OpenPlan,
    wasmOpen: WasmOpen,
    options: OpenOptions<EventShape, unknown, AggregateMap>,
    evolution: Evolution,
  ) {
    this.#wasm = wasm;
    this.#evolution = evolution;
    this.#rules = rules;
    this.#wasmOpen = wasmOpen;
    this.#options = options;
    this.#settings = plan.settings;
    const signal = this.#abort.signal;
    const reportError = (error: unknown) => this.#events.error(error);
    const heads = { head: () => this.#head, confirmedHead: () => this.#confirmedHead };
    const isClosed = () => this.#closed;
    const track = <T>(promise: Promise<T>) => this.#track(promise);
    const { storage, shared } = plan.settings;
    this.#completion = new LogCompletion({ core: wasm, isClosed, reportError });
    this.#projections = new Projections(
      {
        core: wasm,
        rules,
        // A private memory store is gone once closed: nobody could read its snapshots (but
        // retention keeps what they cover only).
        snapshots: storage === "indexeddb" || shared || plan.settings.retain !== undefined,
        snapshotEvery: plan.settings.snapshotEvery,
        ...heads,
        generation: () => this.#generation,
        isClosed,
        isLost: () => this.#lost,
        checkOpen: () => this.#checkOpen(),
        whenComplete: () => this.#completion.whenComplete(),
        track,
        reportError,
        safely: (f) => this.#events.safely(f),
        upcasters: evolution.upcasters,
        unknownEvents: evolution.unknownEvents,
        rebuild: evolution.rebuild,
        rebuildProgress: (progress: RebuildProgress) => this.#events.emit("rebuild", progress),
        fetchDropped: (after, to, what) => this.#retention.fetch(after, to, what),
      },
      plan.projections,
      plan.checkpointEvery,
      signal,
    );
    this.#writes = new Writes<E>({
      core: wasm,
      schemas: plan.schemas,
      upcasters: evolution.upcasters,
      ...heads,
      isClosed,
      track,
      appended: () => this.#leader.wake(),
    });
    this.#commands = new Commands(
      {
        schemas: plan.schemas,
        ...heads,
        generation: () => this.#generation,
        isClosed,
        checkOpen: () => this.#checkOpen(),
        isComplete: () => wasm.isComplete,
        whenComplete: () => this.#completion.whenComplete(),
        dropped: () => wasm.dropped,
        read: (query) => this.#read(query),
        planCommand: (requestJson) => rules.planCommand(requestJson),
        commandResult: (stream, commandId) => wasm.commandResult(stream, commandId),
        appendJson: (batchJson) => this.#writes.appendJson(this.#stampJson(batchJson)),
        catchUp: () => this.catchUp(),
        track,
        reportError,
      },
      plan.aggregates,
      signal,
    );
    this.#retention = new Retention(
      {
        core: wasm,
        sync: plan.settings.sync,
        projections: () => this.#projections.specs(),
        upcast: (events) => evolution.upcasters.upcastEvents(events),
        isClosed,
        track,
        reportError,
        cut: () => this.#tabs.announceChange(),
      },
      plan.settings.retain,
      signal,
    );
    this.#tabs = new Tabs(
      {
        ...heads,
        dropped: () => wasm.dropped,
        isClosed,
        onPeerHeads: (kind, head, confirmed) => this.#onPeerHeads(kind, head, confirmed),
        onRemoteStatus: (status) => this.#leader.setRemoteStatus(status),
        leaderStatus: () => this.#leader.leaderStatus,
        onRemoteRejection: (rejection) => this.#reportRejection(rejection, false),
        syncHere: () => (this.#leader.isLeader ? this.#syncHere() : undefined),
        fingerprints: (name, positions) => this.#debugging.peerFingerprints(name, positions),
        reportError,
      },
      signal,
    );
    this.#debugging = new Debugging({
      name: plan.settings.name,
      sync: plan.settings.sync,
      annalsVersion: () => rules.annalsVersion(),
      head: () => this.#head,
      confirmedHead: () => this.#confirmedHead,
      checkOpen: () => this.#checkOpen(),
      whenComplete: () => this.#completion.whenComplete(),
      projections: () => this.#projections.specs(),
      checkProjection: (name) => void this.#projections.runtime(name),
      fingerprints: (name, positions, skip) => this.#projections.fingerprints(name, positions, skip),
      checkpointStats: (name) => this.#projections.checkpointStats(name),
      range: (after, to) => this.#range(after, to),
      storedRange: (after, to) => this.#storedRange(after, to),
      dropped: () => this.#wasm.dropped,
      fetchStored: (after, to, what) => this.#retention.fetch(after, to, what, true),
      askTabs: (name, positions, timeoutMs) => this.#tabs.askFingerprints(name, positions, timeoutMs),
      openReplica: (name) => this.#openReplica(name),
    });
    this.#leader = new Leader(
      {
        storeName: plan.settings.name,
        core: wasm,
        ...heads,
        isClosed,
        broadcastStatus: (status) => this.#tabs.postStatus(status),
        onRejected: (json) => this.#onLeaderRejected(json),
        onStatus: (status) => this.#events.emit("sync", status),
        reportError,
      },
      plan.settings.sync,
      signal,
    );
  }

  /** Opens the store: the core (`wasmOpen`; `rules`, the same module's), then each projection from its snapshot plus the tail of the log. */
  static async open<E extends EventShape, S, A>(
    wasmOpen: WasmOpen,
    options: OpenOptions<E, S, AggregateMap>,
    rules: WasmRules,
  ): Promise<AnnalsStore<E, S, A>> {
    const plan = parseOpenOptions(options as OpenOptions<EventShape, unknown, AggregateMap>, typeof indexedDB !== "undefined");
    const schemas = (plan as { schemas?: { keys(): Iterable<string> } }).schemas;
    const evolution = parseEvolution(options, schemas === undefined ? undefined : [...schemas.keys()]);
    const { name, storage, shared, sync } = plan.settings;
    // IndexedDB: the tab holding the writer lock writes without first reading the others' writes.
    const writer = storage === "indexeddb" ? writerLockFor(name, webLocks()) : undefined;
    const wasm = await wasmOpen(name, storage, JSON.stringify(plan.core), writer).catch((error: unknown) => {
      writer?.close();
      return rethrow(error);
    });
    const store = new AnnalsStore<E, S, A>(
      wasm,
      rules,
      plan,
      wasmOpen,
      options as OpenOptions<EventShape, unknown, AggregateMap>,
      evolution,
    );
    store.#writer = writer;
    writer?.prime();
    try {
      wasm.setListener((json, error) => store.#onChange(json, error));
      wasm.setOnClosed((reason) => store.#connectionLost(reason));
      await store.#load();
    } catch (error) {
      store.#closed = true;
      store.#abort.abort();
      await wasm.close().catch(() => undefined);
      wasm.free();
      writer?.close();
      throw fromWasmError(error);
    }
    const signal = store.#abort.signal;
    const channel = storage === "memory" && !shared ? undefined : openBroadcastChannel(name);
    if (channel) store.#tabs.start(channel, sync !== undefined);
    store.#leader.start();
    // A frozen page runs no script: whatever it holds (locks, a half-read catch-up) would
    // stop the other tabs until it is thawed. It lets go on freeze and takes up on resume.
    followLifecycle(
      pageLifecycleTarget(),
      {
        freeze: () => {
          if (store.#closed) return;
          store.#tabs.hold();
          store.#leader.pause();
          store.#writer?.pause();
          for (const reactor of store.#reactors.values()) reactor.pause();
        },
        resume: () => {
          if (store.#closed) return;
          store.#tabs.release();
          store.#leader.resume();
          store.#writer?.resume();
          for (const reactor of store.#reactors.values()) reactor.resume();
        },
      },
      signal,
    );
    if (storage === "indexeddb") {
      // The browser may evict an origin's storage when space runs short, unless asked not to.
      void requestPersistence();
      await adoptOrphans({
        name,
        synced: sync !== undefined,
        isLeader: () => store.#leader.isLeader,
        isClosed: () => store.#closed,
        sync: () => store.sync(),
        appendMany: (events) => store.appendMany(events as unknown as NewEvent<E>[]),
        reportError: (error) => store.#events.error(error),
      });
    }
    // The app adds its listeners as `openStore` resolves: rejections come after that.
    setTimeout(() => store.#releaseRejections(), 0);
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
      this.#events.error(fromWasmError(error));
    }
    if (why !== "upgraded") {
      const { kept, persisted } = keepOrphans(this.#settings.name, unsynced);
      if (persisted < kept) {
        this.#events.error(
          new AnnalsError(
            "QUOTA_EXCEEDED",
            `${kept - persisted} of the ${kept} unsynced events of the deleted database "${this.#settings.name}" did not fit in localStorage: ` +
              "they are kept in this tab's memory only, and are lost if it closes before a store of that name opens again",
          ),
        );
      }
    }
    this.#lost = true;
    this.#closed = true;
    this.close().catch((error: unknown) => this.#events.error(error));
    const info: ClosedInfo = { reason: why, unsynced: unsynced.length };
    this.#events.emit("closed", info);
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

  async #load(): Promise<void> {
    const { head, confirmed } = await this.#projections.load();
    this.#head = head;
    this.#confirmedHead = confirmed;
    this.#loading = false;
    this.#projections.schedule();
    this.#completion.start();
    // Projections whose version changed rebuild in the background (other projections serve).
    this.#projections.startRebuilds();
  }

  // ---- changes -------------------------------------------------------------------------

  /** Another tab's heads differ from this one's: read what it wrote. */
  #onPeerHeads(kind: "here" | "change", head: number, confirmed: number): void {
    this.catchUp()
      .then(() => {
        // Another tab appended: the syncing tab pushes it now.
        if (this.#head > this.#confirmedHead) this.#leader.wake();
        // An answer to this tab's hello that is behind: this tab wrote before it knew of
        // the other one (and so told nobody); tell it now.
        if (kind === "here" && (head !== this.#head || confirmed !== this.#confirmedHead)) {
          this.#tabs.announceChange();
        }
      })
      .catch((error: unknown) => {
        if (!this.#closed) this.#events.error(error);
      });
  }

  /** A planned batch (a command's) with its events' schema versions stamped (see `Upcasters.stamp`). */
  #stampJson(batchJson: string): string {
    const { upcasters } = this.#evolution;
    if (!upcasters.stamps) return batchJson;
    const batch = JSON.parse(batchJson) as unknown[];
    const stamped = upcasters.stamp(batch);
    return stamped === batch ? batchJson : JSON.stringify(stamped);
  }

  /** Events `after + 1 ..= to` as the core has them now, as this build reads them (upcast). */
  #range(after: number, to: number): AnnalsEvent[] {
    return this.#evolution.upcasters.upcastEvents(this.#storedRange(after, to));
  }

  /** Events `after + 1 ..= to` as stored (bundles carry them so). */
  #storedRange(after: number, to: number): AnnalsEvent[] {
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
      erasedFrom: 0,
      confirmedEvents: this.#range(from, confirmed),
      pendingEvents: this.#range(confirmed, head),
    };
  }

  /** A change that folds the whole log again, as after a reset (an erasure). */
  #refoldMessage(seq: number): ChangeMessage {
    const confirmed = this.#wasm.confirmedHead;
    const head = this.#wasm.head;
    return {
      seq,
      reset: true,
      rebased: true,
      previousHead: 0,
      head,
      confirmed,
      erasedFrom: 0,
      confirmedEvents: this.#range(0, confirmed),
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
        const { upcasters } = this.#evolution;
        if (message.own) {
          // This tab's append: its events are the batch's objects (at the current schema
          // versions), stamped; the core's copy is read only if the batch is not at hand.
          const own = this.#writes.ownEvents(message);
          const events = own === undefined ? this.#range(message.previousHead, message.head) : upcasters.active ? upcasters.upcastEvents(own) : own;
          if (message.head > message.confirmed) message.pendingEvents = events;
          else message.confirmedEvents = events;
        } else if (upcasters.active) {
          message.confirmedEvents = upcasters.upcastEvents(message.confirmedEvents);
          message.pendingEvents = upcasters.upcastEvents(message.pendingEvents);
        }
      } else {
        const failure = fromWasmError(error);
        if (isNotRetained(failure)) return this.#catchUpPastCut();
        this.#events.error(failure);
        message = this.#resyncMessage();
      }
      this.#apply(message);
    } catch (failure) {
      if (isNotRetained(failure)) return this.#catchUpPastCut();
      this.#events.error(failure);
    }
  }

  /**
   * Another tab cut the log (retention) past what this one had folded: the events in
   * between are gone here. The projections start again from the snapshot the cut was made
   * against (or the server's log) and fold on in the background; the heads are the core's.
   */
  #catchUpPastCut(): void {
    this.#generation += 1;
    this.#commands.reset();
    this.#head = this.#wasm.head;
    this.#confirmedHead = this.#wasm.confirmedHead;
    this.#projections.restartFromSnapshots();
    this.#leader.statusChanged();
  }

  #apply(message: ChangeMessage): void {
    let c = message;
    const inStep = c.reset || (c.rebased ? c.previousHead === this.#confirmedHead : c.previousHead === this.#head);
    if (!inStep) c = this.#resyncMessage();
    // An erasure took data out of events already folded: every projection and aggregate
    // folds again from its initial state (the snapshots that held the data are gone). Read
    // from the core's message: a resync that replaced it does not say so.
    if (message.erasedFrom > 0 && !c.reset) {
      if (this.#wasm.dropped > 0) {
        // Cut by retention: the states are folded again in the background, the dropped
        // part of the log from the sync server.
        this.#generation += 1;
        this.#commands.reset();
        this.#projections.restartFromServer();
      } else {
        c = this.#refoldMessage(c.seq);
      }
    }
    const hadPending = this.#head > this.#confirmedHead;
    if (!c.reset && !c.rebased && hadPending && c.confirmedEvents.length > 0) {
      // Confirmed events behind pending ones: fold the whole outbox again.
      c = { ...c, rebased: true, previousHead: this.#confirmedHead, pendingEvents: this.#range(c.confirmed, c.head) };
    }
    if (c.reset) {
      this.#generation += 1;
      this.#commands.reset();
      this.#projections.reset();
    }
    const touched = c.reset || c.rebased || c.confirmedEvents.length > 0 || c.pendingEvents.length > 0;
    this.#projections.fold(c, c.reset || c.rebased || !hadPending);
    const pendingBefore = this.#head - this.#confirmedHead;
    this.#confirmedHead = c.confirmed;
    this.#head = c.head;
    const events =
      c.pendingEvents.length === 0
        ? c.confirmedEvents
        : c.confirmedEvents.length === 0
          ? c.pendingEvents
          : c.confirmedEvents.concat(c.pendingEvents);
    const change: Change<E> = {
      previousHead: c.previousHead,
      head: c.head,
      events: events as AnnalsEvent<E>[],
      confirmedHead: c.confirmed,
      rebased: c.rebased,
      reset: c.reset,
    };
    this.#writes.observe(c.seq, events, change);
    // Other tabs read it from the shared storage.
    this.#tabs.announceChange();
    if (touched) {
      this.#projections.notify();
      this.#events.emit("change", change);
    }
    this.#projections.schedule();
    this.#retention.schedule();
    if (c.confirmed !== c.previousHead || c.reset || c.rebased) {
      for (const reactor of this.#reactors.values()) reactor.wake();
    }
    if (pendingBefore !== c.head - c.confirmed) this.#leader.statusChanged();
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

  /** FROZEN while the store shows the past: writing then would act on a state the app does not show. */
  #frozenError(): AnnalsError | undefined {
    const at = this.#frozenAt;
    if (at === undefined) return undefined;
    return new AnnalsError(
      "FROZEN",
      `the store is frozen at position ${at} (time travel): it shows the past and takes no writes; call unfreeze() to return to the present`,
    );
  }

  append(event: NewEvent<E>): Promise<AppendedEvent<E>> {
    const frozen = this.#frozenError();
    if (frozen) return Promise.reject(frozen);
    return this.#writes.append([event]).then((events) => events[0]!);
  }

  deleteStream(stream: string, options?: StreamLifecycleOptions): Promise<AppendedEvent<StreamLifecycleEvent>> {
    return this.#appendLifecycle("$StreamDeleted", stream, options);
  }

  closeStream(stream: string, options?: StreamLifecycleOptions): Promise<AppendedEvent<StreamLifecycleEvent>> {
    return this.#appendLifecycle("$StreamClosed", stream, options);
  }

  eraseStream(stream: string, options?: StreamLifecycleOptions): Promise<AppendedEvent<StreamLifecycleEvent>> {
    return this.#appendLifecycle("$StreamErased", stream, options);
  }

  /** A lifecycle event is an ordinary append: the core's append rules decide what it does. */
  #appendLifecycle(
    type: StreamLifecycleEvent["type"],
    stream: string,
    options: StreamLifecycleOptions | undefined,
  ): Promise<AppendedEvent<StreamLifecycleEvent>> {
    if (typeof stream !== "string") return Promise.reject(invalidArgument("`stream` must be a string"));
    const expectedVersion = options?.expectedVersion;
    const event = { stream, type, data: {}, ...(expectedVersion === undefined ? {} : { expectedVersion }) };
    return this.append(event as unknown as NewEvent<E>) as unknown as Promise<AppendedEvent<StreamLifecycleEvent>>;
  }

  appendMany(events: readonly NewEvent<E>[]): Promise<AppendedEvent<E>[]> {
    const frozen = this.#frozenError();
    if (frozen) return Promise.reject(frozen);
    if (!Array.isArray(events)) {
      return Promise.reject(new AnnalsError("INVALID_EVENT", "appendMany takes an array of events"));
    }
    return this.#writes.append(events);
  }

  catchUp(): Promise<Change<E>> {
    return this.#writes.catchUp();
  }

  // ---- reading -------------------------------------------------------------------------

  get<K extends keyof S & string>(name: K): S[K] {
    return this.#projections.runtime(name).shown as S[K];
  }

  subscribe<K extends keyof S & string>(name: K, listener: (state: S[K]) => void): () => void {
    return this.#projections.subscribe(name, listener as (state: unknown) => void);
  }

  stateAt<K extends keyof S & string>(name: K, position: number, options?: StateAtOptions): Promise<S[K]> {
    try {
      if (options !== undefined && (typeof options !== "object" || options === null)) {
        throw invalidArgument("stateAt's options must be an object such as { skip: [eventId] }");
      }
      return this.#projections.stateAt(name, position, options?.skip) as Promise<S[K]>;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  // ---- time-travel debugging -----------------------------------------------------------

  get frozenAt(): number | undefined {
    return this.#frozenAt;
  }

  async freeze(position: number): Promise<void> {
    this.#checkOpen();
    await this.#projections.freeze(position);
    this.#frozenAt = position;
    // Process managers write: they wait for the present.
    for (const reactor of this.#reactors.values()) reactor.pause();
    this.#events.emit("frozen", position);
  }

  unfreeze(): void {
    if (this.#frozenAt === undefined) return;
    this.#frozenAt = undefined;
    this.#projections.unfreeze();
    if (!this.#closed) for (const reactor of this.#reactors.values()) reactor.resume();
    this.#events.emit("frozen", undefined);
  }

  async fingerprint<K extends keyof S & string>(name: K, position?: number): Promise<string> {
    const [fingerprint] = await this.#projections.fingerprints(name, [position ?? this.#head]);
    return fingerprint!;
  }

  exportBundle(options?: ExportBundleOptions): Promise<string> {
    return this.#debugging.exportBundle(options);
  }

  exportEvents(options?: ExportEventsOptions): ReadableStream<string> {
    return exportEvents(this.#transferHost(), options);
  }

  importEvents(source: Parameters<Store["importEvents"]>[0], options?: ImportEventsOptions): Promise<ImportReport> {
    try {
      return importEvents(this.#transferHost(), source, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** What import-export.ts sees of this store. */
  #transferHost(): TransferHost {
    return {
      name: this.#settings.name,
      checkOpen: () => this.#checkOpen(),
      frozenError: () => this.#frozenError(),
      whenComplete: () => this.#completion.whenComplete(),
      head: () => this.#head,
      rangeJson: (after, to) => (to > after ? this.#wasm.range(after, to) : "[]"),
      dropped: () => this.#wasm.dropped,
      fetchStored: (after, to, what) => this.#retention.fetch(after, to, what, true),
      upcast: (events) => this.#evolution.upcasters.upcastEvents(events),
      positionsOf: (ids) => this.#wasm.positionsOf(ids),
      appendJson: (batchJson) => this.#writes.appendJson(batchJson),
      maxEventBytes: this.#options.maxEventBytes,
    };
  }

  /** A fresh memory store with this store's projections (and aggregates), for debugging. */
  async #openReplica(name: string): Promise<Replica> {
    const { projections, aggregates, origin, maxEventBytes, upcasters, unknownEvents } = this.#options;
    const options: OpenOptions<EventShape, unknown, AggregateMap> = { name, storage: "memory" };
    if (projections !== undefined) options.projections = projections;
    // The replica reads events as this store does.
    if (upcasters !== undefined) options.upcasters = upcasters;
    if (unknownEvents !== undefined) options.unknownEvents = unknownEvents;
    const events = (this.#options as { events?: unknown }).events;
    if (events !== undefined) (options as { events?: unknown }).events = events;
    if (aggregates !== undefined) options.aggregates = aggregates;
    if (origin !== undefined) options.origin = origin;
    if (maxEventBytes !== undefined) options.maxEventBytes = maxEventBytes;
    // A replica takes a whole bundle (or server page) in one append: it is this tab's
    // own memory store, so a long batch holds up no other tab.
    options.maxBatch = REPLICA_MAX_BATCH;
    const replica = await AnnalsStore.open(this.#wasmOpen, options, this.#rules);
    return {
      store: replica as unknown as Store,
      projections: () => replica.#projections.specs(),
      appendStored: (events) => replica.#appendStored(events),
      fingerprints: (projection, positions) => replica.#projections.fingerprints(projection, positions),
    };
  }

  /** Appends events as stored elsewhere: their ids, times and origins are kept. */
  #appendStored(events: readonly AnnalsEvent[]): Promise<unknown> {
    return events.length === 0 ? Promise.resolve() : this.#writes.appendJson(storedBatch(events));
  }

  /** What `annals/devtools` sees of this store (see debug.ts). */
  get [DEBUG](): DebugAccess {
    return this.#debugging.access();
  }

  #read(query: unknown): AnnalsEvent[] {
    const { upcasters } = this.#evolution;
    const type = (query as { type?: unknown } | null | undefined)?.type;
    if (typeof type === "string" && upcasters.renames(type)) return this.#readRenamed(query as Record<string, unknown>, type);
    return upcasters.upcastEvents(this.#readStored(serializeQuery(query)));
  }

  #readStored(json: string): AnnalsEvent[] {
    let raw: string;
    try {
      raw = this.#wasm.read(json);
    } catch (error) {
      rethrow(error);
    }
    return JSON.parse(raw) as AnnalsEvent[];
  }

  /**
   * A read by a type that renames involve (stored under other names, or renamed away):
   * the log is read page by page without the type, and filtered once upcast.
   */
  #readRenamed(query: Record<string, unknown>, type: string): AnnalsEvent[] {
    const { type: _type, limit, ...rest } = query;
    serializeQuery(query); // the same checks as any query
    const max = typeof limit === "number" ? limit : Infinity;
    const out: AnnalsEvent[] = [];
    // Pages in the query's order: backwards, each page ends below the last one read.
    const backwards = rest.backwards === true;
    let after = typeof rest.after === "number" ? rest.after : 0;
    let to = typeof rest.to === "number" ? rest.to : undefined;
    while (out.length < max) {
      const bound = backwards ? (to === undefined ? {} : { to }) : { after };
      const page = this.#readStored(serializeQuery({ ...rest, ...bound, limit: RENAMED_TYPE_PAGE }));
      if (page.length === 0) break;
      for (const event of this.#evolution.upcasters.upcastEvents(page)) {
        if (event.type === type && out.length < max) out.push(event);
      }
      const last = page[page.length - 1]!.position;
      if (backwards) {
        if (last <= after + 1) break;
        to = last - 1;
      } else {
        after = last;
      }
    }
    return out;
  }

  async streamVersion(stream: string): Promise<number> {
    this.#checkOpen();
    if (typeof stream !== "string") throw invalidArgument("`stream` must be a string");
    if (!this.#wasm.isComplete) {
      await this.#completion.whenComplete();
      this.#checkOpen();
    }
    try {
      return this.#wasm.streamVersion(stream);
    } catch (error) {
      rethrow(error);
    }
  }

  async events<T extends E["type"] = E["type"]>(query?: EventQuery<T>): Promise<AnnalsEvent<Extract<E, { type: T }>>[]> {
    this.#checkOpen();
    if (!this.#wasm.isComplete) {
      await this.#completion.whenComplete();
      this.#checkOpen();
    }
    try {
      return this.#read(query) as AnnalsEvent<Extract<E, { type: T }>>[];
    } catch (error) {
      // Below what retention kept: the dropped part comes from the sync server.
      if (!(error instanceof AnnalsError) || error.code !== "NOT_RETAINED") throw error;
      const events = await this.#retention.read(query ?? {}, (q) => this.#read(q));
      this.#checkOpen();
      return events as AnnalsEvent<Extract<E, { type: T }>>[];
    }
  }

  on(event: "change", listener: (change: Change<E>) => void): () => void;
  on(event: "error", listener: (error: unknown) => void): () => void;
  on(event: "sync", listener: (status: SyncStatus) => void): () => void;
  on(
    event: "rejected",
    listener: (event: RejectedEvent<E>, reason: string, actualVersion: number | undefined) => void,
  ): () => void;
  on(event: "closed", listener: (info: ClosedInfo) => void): () => void;
  on(event: "frozen", listener: (position: number | undefined) => void): () => void;
  on(event: "rebuild", listener: (progress: RebuildProgress) => void): () => void;
  on(event: "change" | "error" | "sync" | "rejected" | "closed" | "frozen" | "rebuild", listener: AnyListener): () => void {
    return this.#events.on(event, listener);
  }

  // ---- sync ----------------------------------------------------------------------------

  get syncStatus(): SyncStatus {
    return this.#leader.status;
  }

  async sync(): Promise<SyncReport> {
    this.#checkOpen();
    if (!this.#settings.sync) throw invalidArgument("this store was opened without `sync` options");
    if (this.#leader.isLeader) return this.#syncHere();
    const report = await this.#tabs.ask();
    await this.catchUp();
    return report;
  }

  async #syncHere(): Promise<SyncReport> {
    // Not tracked: close() must not wait for a request to a server that does not answer.
    const raw = (await this.#wasm.syncNow().catch(rethrow)) as string;
    return JSON.parse(raw) as SyncReport;
  }

  async rejected(): Promise<Rejection<E>[]> {
    this.#checkOpen();
    const raw = (await this.#wasm.rejected().catch(rethrow)) as string;
    return JSON.parse(raw) as Rejection<E>[];
  }

  #onLeaderRejected(json: string): void {
    let rejection: Rejection;
    try {
      rejection = JSON.parse(json) as Rejection;
    } catch (error) {
      this.#events.error(error);
      return;
    }
    this.#reportRejection(rejection, true);
  }

  #releaseRejections(): void {
    const held = this.#heldRejections ?? [];
    this.#heldRejections = undefined;
    if (this.#closed) return;
    for (const [rejection, here] of held) this.#reportRejection(rejection, here);
  }

  /** Reports a rejection once per tab; the tab that synced it broadcasts it and compensates. */
  #reportRejection(rejection: Rejection, here: boolean): void {
    if (this.#heldRejections) {
      this.#heldRejections.push([rejection, here]);
      return;
    }
    const id = rejection?.event?.id;
    if (typeof id !== "string" || this.#reportedRejections.has(id)) return;
    this.#reportedRejections.add(id);
    if (this.#reportedRejections.size > 10_000) {
      const oldest = this.#reportedRejections.values().next().value;
      if (oldest !== undefined) this.#reportedRejections.delete(oldest);
    }
    if (here) this.#tabs.postRejection(rejection);
    this.#events.emit("rejected", rejection.event as RejectedEvent<E>, rejection.reason, rejection.actualVersion);
    if (here) this.#commands.compensate(rejection);
  }

  // ---- the write model -----------------------------------------------------------------

  execute<K extends keyof A & string>(
    aggregate: K,
    id: string,
    command: CommandOf<A[K]>,
    options: ExecuteOptions = {},
  ): Promise<ExecuteResult<E>> {
    const frozen = this.#frozenError();
    if (frozen) return Promise.reject(frozen);
    return this.#commands.execute(aggregate, id, command, options) as Promise<ExecuteResult<E>>;
  }

  react<T extends E["type"]>(options: ReactorOptions<E, A, T>): Reactor {
    this.#checkOpen();
    if (this.#closing) throw closedError();
    const spec = parseReactorOptions(options);
    const { name } = spec;
    if (this.#reactors.has(name)) throw invalidArgument(`a reactor named ${JSON.stringify(name)} is already running`);
    const runtime = new ReactorRuntime(this.#reactorHost(), spec, () => {
      if (this.#reactors.get(name) === runtime) this.#reactors.delete(name);
    });
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
        if (!this.#wasm.isComplete) await this.#completion.whenComplete();
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
          if (!this.#closed) this.#events.error(fromWasmError(error));
        }
      },
      execute: (request, options) => this.#commands.executeRequest(request, options),
      reportError: (error) => {
        if (!this.#closed) this.#events.error(error);
      },
    };
  }

  // ---- maintenance ---------------------------------------------------------------------

  async compact(): Promise<CompactionReport> {
    this.#checkOpen();
    const raw = (await this.#track(this.#wasm.compact()).catch(rethrow)) as string;
    await this.#retention.apply().catch(rethrow);
    return JSON.parse(raw) as CompactionReport;
  }

  async storage(): Promise<StorageReport> {
    this.#checkOpen();
    return this.#retention.report();
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    // Reactors finish the event in hand (its commands and checkpoint) before the store closes.
    await Promise.allSettled([...this.#reactors.values()].map((r) => r.stop()));
    this.#closed = true;
    // Every module stops: timers, the channel, the sync lock and loop, lifecycle listeners.
    this.#abort.abort();
    // In-flight appends and catch-ups finish, then the last snapshots are written.
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
    await this.#projections.finish();
    // The sync loop ends after its current request; the Web Lock goes with it.
    await this.#leader.stopped();
    try {
      await this.#wasm.close();
    } catch (error) {
      rethrow(error);
    } finally {
      this.#wasm.free();
      this.#writer?.close();
    }
  }
}
