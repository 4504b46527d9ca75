// The store: the TypeScript side of annals. The wasm core keeps the log (append rules,
// storage, reads); this module serialises batches, folds events into projections, keeps
// checkpoints and snapshots, and tells other tabs about new events.

import { AnnalsError, fromWasmError } from "./errors.js";
import type {
  AnnalsEvent,
  Change,
  CompactionReport,
  EventQuery,
  EventShape,
  NewEvent,
  OpenOptions,
  Projection,
  Store,
} from "./types.js";

/** The surface of the wasm `WasmStore` this module uses. */
export interface WasmStoreHandle {
  readonly head: number;
  append(batchJson: string): Promise<unknown>;
  catchUp(): Promise<unknown>;
  read(queryJson: string): string;
  range(after: number, to: number): string;
  putSnapshot(name: string, version: number, position: number, stateJson: string): Promise<unknown>;
  snapshot(name: string): Promise<unknown>;
  deleteSnapshot(name: string): Promise<unknown>;
  compact(): Promise<unknown>;
  close(): Promise<unknown>;
  free(): void;
}

export type WasmOpen = (name: string, storage: string, optionsJson: string) => Promise<WasmStoreHandle>;

const DEFAULT_INTERVAL = 1_000;
/** Checkpoints kept per projection; past it, every other one goes and the interval doubles. */
const MAX_CHECKPOINTS = 64;
/** Events read from the core at a time when replaying. */
const REPLAY_CHUNK = 10_000;

interface AppendReply {
  previousHead: number;
  head: number;
  events: AnnalsEvent[];
  results: number[];
  duplicates: AnnalsEvent[];
}

interface ChangeReply {
  previousHead: number;
  head: number;
  events: AnnalsEvent[];
}

interface SnapshotReply {
  version: number;
  position: number;
  state: unknown;
}

interface Checkpoint {
  position: number;
  /** JSON, so that later mutation of a state cannot change it. */
  json: string;
}

type AnyProjection = Projection<unknown, EventShape>;

class ProjectionRuntime {
  state: unknown;
  /** The last position folded into `state`. */
  position = 0;
  /** Position of the last snapshot stored (or loaded). */
  snapshotPosition = 0;
  readonly subscribers = new Set<(state: unknown) => void>();
  /** Ascending by position. */
  checkpoints: Checkpoint[] = [];
  checkpointEvery: number;

  constructor(
    readonly name: string,
    readonly def: AnyProjection,
    readonly version: number,
    checkpointEvery: number,
  ) {
    this.checkpointEvery = checkpointEvery;
    this.state = this.initial();
  }

  /** A fresh copy of `initial`, so that a mutating reducer cannot change it. */
  initial(): unknown {
    const initial = this.def.initial;
    if (initial === null || typeof initial !== "object") return initial;
    try {
      return structuredClone(initial);
    } catch {
      return JSON.parse(JSON.stringify(initial)) as unknown;
    }
  }

  /** Records a checkpoint (keeping the list sorted and bounded). */
  addCheckpoint(position: number, json: string): void {
    const list = this.checkpoints;
    let i = list.length;
    while (i > 0 && list[i - 1]!.position > position) i--;
    if (i > 0 && list[i - 1]!.position === position) {
      list[i - 1] = { position, json };
      return;
    }
    list.splice(i, 0, { position, json });
    if (list.length > MAX_CHECKPOINTS) {
      this.checkpointEvery *= 2;
      const every = this.checkpointEvery;
      this.checkpoints = list.filter((c) => c.position % every === 0);
      if (this.checkpoints.length > MAX_CHECKPOINTS) this.checkpoints.splice(0, this.checkpoints.length - MAX_CHECKPOINTS);
    }
  }

  /** The checkpoint nearest at or before `position`. */
  checkpointAtOrBefore(position: number): Checkpoint | undefined {
    const list = this.checkpoints;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.position <= position) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 ? list[lo - 1] : undefined;
  }
}

function invalidArgument(message: string): AnnalsError {
  return new AnnalsError("INVALID_ARGUMENT", message);
}

function closedError(): AnnalsError {
  return new AnnalsError("CLOSED", "the store is closed");
}

function describeKey(key: string): string {
  return key === "" ? "the batch" : `the value at key ${JSON.stringify(key)}`;
}

/** Throws INVALID_EVENT on anything JSON cannot carry faithfully. */
function eventReplacer(key: string, value: unknown): unknown {
  switch (typeof value) {
    case "function":
      throw new AnnalsError("INVALID_EVENT", `${describeKey(key)} is a function; events must be JSON`);
    case "symbol":
      throw new AnnalsError("INVALID_EVENT", `${describeKey(key)} is a symbol; events must be JSON`);
    case "bigint":
      throw new AnnalsError(
        "INVALID_EVENT",
        `${describeKey(key)} is a BigInt; events must be JSON (store it as a string)`,
      );
    case "number":
      if (!Number.isFinite(value)) {
        throw new AnnalsError("INVALID_EVENT", `${describeKey(key)} is ${String(value)}; events must be JSON`);
      }
      return value;
    default:
      return value;
  }
}

/** One JSON.stringify for the whole batch. */
export function serializeBatch(events: readonly unknown[]): string {
  for (let i = 0; i < events.length; i++) {
    const event = events[i];
    if (typeof event !== "object" || event === null || Array.isArray(event)) {
      throw new AnnalsError("INVALID_EVENT", `event ${i}: an event must be an object with \`stream\` and \`type\``);
    }
  }
  try {
    return JSON.stringify(events, eventReplacer);
  } catch (error) {
    if (error instanceof AnnalsError) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new AnnalsError("INVALID_EVENT", `the events are not JSON-serialisable: ${reason}`, { cause: error });
  }
}

function serializeQuery(query: unknown): string {
  if (query === undefined || query === null) return "{}";
  if (typeof query !== "object" || Array.isArray(query)) {
    throw invalidArgument("a query must be an object such as { after: 0, limit: 100 }");
  }
  return JSON.stringify(query, (key: string, value: unknown) => {
    if (typeof value === "number" && !Number.isFinite(value)) {
      throw invalidArgument(`query \`${key}\` must be a finite number, got ${String(value)}`);
    }
    if (typeof value === "bigint" || typeof value === "function" || typeof value === "symbol") {
      throw invalidArgument(`query \`${key}\` must be a number or a string`);
    }
    return value;
  });
}

function wholeNumber(name: string, value: unknown, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > max) {
    throw invalidArgument(`\`${name}\` must be an integer from 0 to ${max}, got ${String(value)}`);
  }
  return value;
}

function rethrow(error: unknown): never {
  throw fromWasmError(error);
}

interface Settings {
  name: string;
  storage: "indexeddb" | "memory";
  shared: boolean;
  snapshotEvery: number;
}

export class AnnalsStore<E extends EventShape, S> implements Store<E, S> {
  readonly #wasm: WasmStoreHandle;
  readonly #settings: Settings;
  readonly #projections = new Map<string, ProjectionRuntime>();
  readonly #changeListeners = new Set<(change: Change<E>) => void>();
  readonly #errorListeners = new Set<(error: unknown) => void>();
  readonly #inflight = new Set<Promise<unknown>>();
  #head = 0;
  #closed = false;
  #closing: Promise<void> | undefined;
  #channel: BroadcastChannel | undefined;
  #snapshotting: Promise<void> | undefined;
  #catchUpTail: Promise<unknown> = Promise.resolve();
  #catchUpQueued: Promise<Change<E>> | undefined;

  private constructor(wasm: WasmStoreHandle, settings: Settings) {
    this.#wasm = wasm;
    this.#settings = settings;
  }

  /** Opens the store: the core, then each projection from its snapshot plus the tail of the log. */
  static async open<E extends EventShape, S>(
    wasmOpen: WasmOpen,
    options: OpenOptions<E, S>,
  ): Promise<AnnalsStore<E, S>> {
    if (typeof options !== "object" || options === null) {
      throw invalidArgument("openStore needs an options object such as { name: \"todos\" }");
    }
    const { name } = options;
    if (typeof name !== "string" || name.trim() === "") {
      throw invalidArgument("`name` must be a non-empty string");
    }
    const hasIndexedDb = typeof indexedDB !== "undefined";
    const storage = options.storage ?? (hasIndexedDb ? "indexeddb" : "memory");
    if (storage !== "indexeddb" && storage !== "memory") {
      throw invalidArgument(`\`storage\` must be "indexeddb" or "memory", got ${String(storage)}`);
    }
    if (storage === "indexeddb" && !hasIndexedDb) {
      throw invalidArgument('IndexedDB is not available here: use storage: "memory"');
    }
    const shared = options.sharedMemory === true;
    const snapshotEvery = wholeNumber("snapshotEvery", options.snapshotEvery ?? DEFAULT_INTERVAL);
    const checkpointEvery = wholeNumber("checkpointEvery", options.checkpointEvery ?? DEFAULT_INTERVAL);
    if (snapshotEvery === 0 || checkpointEvery === 0) {
      throw invalidArgument("`snapshotEvery` and `checkpointEvery` must be positive");
    }
    const runtimes: ProjectionRuntime[] = [];
    const projections = (options.projections ?? {}) as Record<string, unknown>;
    if (typeof projections !== "object" || projections === null) {
      throw invalidArgument("`projections` must be an object of { initial, apply, version? }");
    }
    for (const [key, def] of Object.entries(projections)) {
      if (typeof def !== "object" || def === null || typeof (def as AnyProjection).apply !== "function") {
        throw invalidArgument(`projection "${key}" needs an \`apply(state, event)\` function`);
      }
      const version = wholeNumber(`projections.${key}.version`, (def as AnyProjection).version ?? 1, 0xffff_ffff);
      runtimes.push(new ProjectionRuntime(key, def as AnyProjection, version, checkpointEvery));
    }

    const core: Record<string, unknown> = {};
    if (options.maxEventBytes !== undefined) core.maxEventBytes = wholeNumber("maxEventBytes", options.maxEventBytes);
    if (options.origin !== undefined) {
      if (typeof options.origin !== "string") throw invalidArgument("`origin` must be a string");
      core.origin = options.origin;
    }
    if (shared) core.sharedMemory = true;

    const wasm = await wasmOpen(name, storage, JSON.stringify(core)).catch(rethrow);
    const store = new AnnalsStore<E, S>(wasm, { name, storage, shared, snapshotEvery });
    try {
      await store.#load(runtimes);
    } catch (error) {
      await wasm.close().catch(() => undefined);
      wasm.free();
      throw fromWasmError(error);
    }
    store.#listenToOtherTabs();
    return store;
  }

  get name(): string {
    return this.#settings.name;
  }

  get head(): number {
    return this.#head;
  }

  get closed(): boolean {
    return this.#closed;
  }

  // ---- opening -------------------------------------------------------------------------

  async #load(runtimes: ProjectionRuntime[]): Promise<void> {
    const head = this.#wasm.head;
    for (const rt of runtimes) {
      this.#projections.set(rt.name, rt);
      const reply = (await this.#wasm.snapshot(rt.name)) as string | undefined;
      if (reply === undefined) continue;
      const snapshot = JSON.parse(reply) as SnapshotReply;
      // A snapshot of another version, or ahead of the log (a reset store), is not trusted.
      if (snapshot.version !== rt.version || snapshot.position > head) continue;
      rt.state = snapshot.state;
      rt.position = snapshot.position;
      rt.snapshotPosition = snapshot.position;
      if (snapshot.position > 0) rt.addCheckpoint(snapshot.position, JSON.stringify(snapshot.state));
    }
    let from = head;
    for (const rt of runtimes) from = Math.min(from, rt.position);
    for (let after = from; after < head; after += REPLAY_CHUNK) {
      const to = Math.min(after + REPLAY_CHUNK, head);
      const events = JSON.parse(this.#wasm.range(after, to)) as AnnalsEvent[];
      for (const rt of runtimes) this.#fold(rt, events);
    }
    this.#head = head;
    this.#scheduleSnapshots();
  }

  #listenToOtherTabs(): void {
    const { storage, shared, name } = this.#settings;
    if (typeof BroadcastChannel === "undefined" || (storage === "memory" && !shared)) return;
    const channel = new BroadcastChannel(`annals:${name}`);
    channel.onmessage = (message: MessageEvent) => {
      const data = message.data as { head?: unknown } | null;
      if (this.#closed || typeof data?.head !== "number" || data.head <= this.#head) return;
      this.catchUp().catch((error: unknown) => {
        if (!this.#closed) this.#emitError(error);
      });
    };
    // Node: a channel must not keep the process alive.
    (channel as { unref?: () => void }).unref?.();
    this.#channel = channel;
  }

  // ---- folding -------------------------------------------------------------------------

  /** Folds the events after the projection's position into its state, taking checkpoints. */
  #fold(rt: ProjectionRuntime, events: readonly AnnalsEvent[]): boolean {
    let state = rt.state;
    let changed = false;
    for (const event of events) {
      if (event.position <= rt.position) continue;
      try {
        state = rt.def.apply(state, event);
      } catch (error) {
        this.#emitError(
          new Error(`projection "${rt.name}" threw on event ${event.position} (${event.type}); the event was skipped`, {
            cause: error,
          }),
        );
      }
      rt.position = event.position;
      changed = true;
      if (event.position % rt.checkpointEvery === 0) this.#checkpoint(rt, event.position, state);
    }
    rt.state = state;
    return changed;
  }

  #checkpoint(rt: ProjectionRuntime, position: number, state: unknown): void {
    let json: string | undefined;
    try {
      json = JSON.stringify(state);
    } catch (error) {
      this.#emitError(new Error(`projection "${rt.name}": its state is not JSON-serialisable`, { cause: error }));
    }
    if (json !== undefined) rt.addCheckpoint(position, json);
  }

  /**
   * Takes in what the core reported: events `previousHead + 1 ..= head`. Events this store
   * already has are skipped; a gap (an answer that arrived out of order) is read from the core.
   */
  #feed(previousHead: number, head: number, events: AnnalsEvent[]): Change<E> | undefined {
    const from = this.#head;
    if (head <= from) return undefined;
    let batch = events;
    if (previousHead > from) {
      const missing = JSON.parse(this.#wasm.range(from, previousHead)) as AnnalsEvent[];
      batch = missing.concat(events);
    } else if (previousHead < from) {
      batch = events.filter((e) => e.position > from);
    }
    const changed: ProjectionRuntime[] = [];
    for (const rt of this.#projections.values()) {
      if (this.#fold(rt, batch)) changed.push(rt);
    }
    this.#head = head;
    for (const rt of changed) {
      for (const listener of [...rt.subscribers]) this.#safely(() => listener(rt.state));
    }
    const change: Change<E> = { previousHead: from, head, events: batch as AnnalsEvent<E>[] };
    for (const listener of [...this.#changeListeners]) this.#safely(() => listener(change));
    this.#scheduleSnapshots();
    return change;
  }

  #safely(f: () => void): void {
    try {
      f();
    } catch (error) {
      this.#emitError(error);
    }
  }

  #emitError(error: unknown): void {
    if (this.#errorListeners.size === 0) {
      console.error("annals:", error);
      return;
    }
    for (const listener of [...this.#errorListeners]) {
      try {
        listener(error);
      } catch (inner) {
        console.error("annals: an error listener threw", inner);
      }
    }
  }

  // ---- snapshots -----------------------------------------------------------------------

  #snapshotsEnabled(): boolean {
    // A private memory store is gone once closed: nobody could read its snapshots.
    return this.#settings.storage === "indexeddb" || this.#settings.shared;
  }

  #scheduleSnapshots(): void {
    if (this.#snapshotting || this.#closed || !this.#snapshotsEnabled()) return;
    const every = this.#settings.snapshotEvery;
    const due = [...this.#projections.values()].filter((rt) => rt.position - rt.snapshotPosition >= every);
    if (due.length === 0) return;
    this.#snapshotting = (async () => {
      await Promise.resolve(); // after the batch, never inside the append that caused it
      for (const rt of due) {
        if (this.#closed) return;
        await this.#writeSnapshot(rt);
      }
    })().finally(() => {
      this.#snapshotting = undefined;
    });
  }

  async #writeSnapshot(rt: ProjectionRuntime): Promise<void> {
    const position = rt.position;
    if (position <= rt.snapshotPosition) return;
    let json: string | undefined;
    try {
      json = JSON.stringify(rt.state);
    } catch (error) {
      this.#emitError(new Error(`projection "${rt.name}": its state is not JSON-serialisable`, { cause: error }));
      return;
    }
    if (json === undefined) return;
    try {
      await this.#wasm.putSnapshot(rt.name, rt.version, position, json);
      rt.snapshotPosition = position;
      rt.addCheckpoint(position, json);
    } catch (error) {
      this.#emitError(fromWasmError(error));
    }
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

  append(event: NewEvent<E>): Promise<AnnalsEvent<E>> {
    return this.#appendBatch([event]).then((events) => events[0]!);
  }

  appendMany(events: readonly NewEvent<E>[]): Promise<AnnalsEvent<E>[]> {
    if (!Array.isArray(events)) {
      return Promise.reject(new AnnalsError("INVALID_EVENT", "appendMany takes an array of events"));
    }
    return this.#appendBatch(events);
  }

  #appendBatch(events: readonly unknown[]): Promise<AnnalsEvent<E>[]> {
    try {
      this.#checkOpen();
      if (events.length === 0) return Promise.resolve([]);
      const json = serializeBatch(events);
      return this.#track(this.#sendBatch(json));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async #sendBatch(json: string): Promise<AnnalsEvent<E>[]> {
    let raw: string;
    try {
      raw = (await this.#wasm.append(json)) as string;
    } catch (error) {
      // A failed append may still have read what other tabs wrote: take it in, so that an app
      // handling a conflict sees the state it conflicted with.
      this.#absorb();
      rethrow(error);
    }
    const reply = JSON.parse(raw) as AppendReply;
    this.#feed(reply.previousHead, reply.head, reply.events);
    if (reply.head > reply.previousHead) this.#channel?.postMessage({ head: reply.head });
    const byPosition = new Map<number, AnnalsEvent>();
    for (const e of reply.events) byPosition.set(e.position, e);
    for (const e of reply.duplicates) byPosition.set(e.position, e);
    return reply.results.map((position) => {
      const found = byPosition.get(position);
      if (found) return found as AnnalsEvent<E>;
      const [event] = JSON.parse(this.#wasm.range(position - 1, position)) as AnnalsEvent[];
      return event as AnnalsEvent<E>;
    });
  }

  /** Feeds whatever the core knows beyond this store's head (synchronously). */
  #absorb(): void {
    try {
      const head = this.#wasm.head;
      if (head > this.#head) {
        this.#feed(this.#head, head, JSON.parse(this.#wasm.range(this.#head, head)) as AnnalsEvent[]);
      }
    } catch (error) {
      if (!this.#closed) this.#emitError(fromWasmError(error));
    }
  }

  catchUp(): Promise<Change<E>> {
    if (this.#closed) return Promise.reject(closedError());
    if (this.#catchUpQueued) return this.#catchUpQueued;
    const run = this.#catchUpTail.then(async () => {
      this.#catchUpQueued = undefined;
      if (this.#closed) throw closedError();
      const reply = JSON.parse((await this.#wasm.catchUp().catch(rethrow)) as string) as ChangeReply;
      return (
        this.#feed(reply.previousHead, reply.head, reply.events) ?? {
          previousHead: this.#head,
          head: this.#head,
          events: [],
        }
      );
    });
    this.#catchUpQueued = run;
    this.#catchUpTail = run.catch(() => undefined);
    return this.#track(run);
  }

  // ---- reading -------------------------------------------------------------------------

  #projection(name: string): ProjectionRuntime {
    const rt = this.#projections.get(name);
    if (!rt) {
      const known = [...this.#projections.keys()].map((k) => `"${k}"`).join(", ") || "none";
      throw invalidArgument(`no projection named ${JSON.stringify(name)} (known: ${known})`);
    }
    return rt;
  }

  get<K extends keyof S & string>(name: K): S[K] {
    return this.#projection(name).state as S[K];
  }

  subscribe<K extends keyof S & string>(name: K, listener: (state: S[K]) => void): () => void {
    if (typeof listener !== "function") throw invalidArgument("subscribe needs a listener function");
    const rt = this.#projection(name);
    const entry = (state: unknown) => listener(state as S[K]);
    rt.subscribers.add(entry);
    return () => {
      rt.subscribers.delete(entry);
    };
  }

  async stateAt<K extends keyof S & string>(name: K, position: number): Promise<S[K]> {
    this.#checkOpen();
    const rt = this.#projection(name);
    const target = wholeNumber("position", position);
    if (target > this.#head) {
      throw invalidArgument(`position ${target} is past the head ${this.#head}`);
    }
    // The nearest base at or before the target: the current state, a checkpoint, a snapshot.
    let base: Checkpoint | undefined;
    if (target === rt.position) {
      const json = JSON.stringify(rt.state);
      if (json !== undefined) base = { position: target, json };
    }
    base ??= rt.checkpointAtOrBefore(target);
    const basePosition = base?.position ?? 0;
    if (target - basePosition > rt.checkpointEvery) {
      const reply = (await this.#wasm.snapshot(rt.name).catch(rethrow)) as string | undefined;
      if (reply !== undefined) {
        const snapshot = JSON.parse(reply) as SnapshotReply;
        if (snapshot.version === rt.version && snapshot.position <= target && snapshot.position > basePosition) {
          base = { position: snapshot.position, json: JSON.stringify(snapshot.state) };
        }
      }
    }
    let state: unknown = base ? JSON.parse(base.json) : rt.initial();
    // Replay, leaving checkpoints behind so that scrubbing back and forth stays cheap.
    for (let after = base?.position ?? 0; after < target; after += REPLAY_CHUNK) {
      this.#checkOpen();
      const to = Math.min(after + REPLAY_CHUNK, target);
      const events = JSON.parse(this.#rangeJson(after, to)) as AnnalsEvent[];
      for (const event of events) {
        try {
          state = rt.def.apply(state, event);
        } catch (error) {
          this.#emitError(
            new Error(`projection "${rt.name}" threw on event ${event.position} (${event.type}); the event was skipped`, {
              cause: error,
            }),
          );
        }
        if (event.position % rt.checkpointEvery === 0 && event.position < target) {
          this.#checkpoint(rt, event.position, state);
        }
      }
    }
    return state as S[K];
  }

  #rangeJson(after: number, to: number): string {
    try {
      return this.#wasm.range(after, to);
    } catch (error) {
      rethrow(error);
    }
  }

  async events<T extends E["type"] = E["type"]>(query?: EventQuery<T>): Promise<AnnalsEvent<Extract<E, { type: T }>>[]> {
    this.#checkOpen();
    const json = serializeQuery(query);
    let raw: string;
    try {
      raw = this.#wasm.read(json);
    } catch (error) {
      rethrow(error);
    }
    return JSON.parse(raw) as AnnalsEvent<Extract<E, { type: T }>>[];
  }

  on(event: "change", listener: (change: Change<E>) => void): () => void;
  on(event: "error", listener: (error: unknown) => void): () => void;
  on(event: "change" | "error", listener: ((change: Change<E>) => void) | ((error: unknown) => void)): () => void {
    if (typeof listener !== "function") throw invalidArgument("on needs a listener function");
    const set: Set<(value: never) => void> =
      event === "change" ? this.#changeListeners : event === "error" ? this.#errorListeners : invalidEvent(event);
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  // ---- maintenance ---------------------------------------------------------------------

  async compact(): Promise<CompactionReport> {
    this.#checkOpen();
    const raw = (await this.#track(this.#wasm.compact()).catch(rethrow)) as string;
    return JSON.parse(raw) as CompactionReport;
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    this.#channel?.close();
    this.#channel = undefined;
    await Promise.allSettled([...this.#inflight]);
    await this.#snapshotting;
    if (this.#snapshotsEnabled()) {
      for (const rt of this.#projections.values()) {
        if (rt.position > rt.snapshotPosition) await this.#writeSnapshot(rt);
      }
    }
    try {
      await this.#wasm.close();
    } catch (error) {
      rethrow(error);
    } finally {
      this.#wasm.free();
    }
  }
}

function invalidEvent(event: string): never {
  throw invalidArgument(`unknown event ${JSON.stringify(event)}: use "change" or "error"`);
}
