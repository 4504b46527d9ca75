// The write path to the core: a batch is serialised once and crosses the boundary once; the
// events it returns are taken from the change the core reported for it (no second read).
// Catch-ups (reading what other tabs wrote) are queued so that one runs at a time and
// callers that come while one waits share it.

import { AnnalsError, fromWasmError } from "./errors.js";
import { type EventSchemaMap, serializeBatchAs, validateBatch } from "./options.js";
import type { AnnalsEvent, AppendedEvent, Change, EventShape } from "./types.js";
import type { Upcasters } from "./upcast.js";
import type { AppendReply, ChangeMessage, WasmStoreHandle } from "./wasm-contract.js";

const utf8 = new TextEncoder();

export type WritesCore = Pick<WasmStoreHandle, "append" | "catchUp" | "inputBuffer" | "range">;

/**
 * Writes `json` as UTF-8 into the core's input buffer and returns its length in bytes. Most
 * batches are ASCII, one byte a character; one that is not is written again into room for
 * the most it can take (three bytes a UTF-16 unit).
 */
function writeInput(core: WritesCore, json: string): number {
  const first = utf8.encodeInto(json, core.inputBuffer(json.length));
  if (first.read === json.length) return first.written;
  return utf8.encodeInto(json, core.inputBuffer(json.length * 3)).written;
}

/** What the write path needs from its store. */
export interface WritesHost {
  readonly core: WritesCore;
  /** The `events` option's validators by type (undefined: none). */
  readonly schemas?: EventSchemaMap | undefined;
  /** Stamps new events with their type's schema version; upcasts what the core hands back. */
  readonly upcasters?: Upcasters;
  head(): number;
  confirmedHead(): number;
  isClosed(): boolean;
  /** Lets close wait for the append. */
  track<T>(promise: Promise<T>): Promise<T>;
  /** An append went through: the syncing tab pushes it. */
  appended(): void;
}

/** The events of one change, by position (they are contiguous). */
interface Captured {
  first: number;
  events: AnnalsEvent[];
}

/**
 * Whether the core's events for `batch` are the batch's own objects plus its stamps: no
 * event brings a time, origin or erasure of its own (an import's copies do), so that the
 * core stamps every event alike.
 */
function stampable(batch: readonly unknown[]): boolean {
  for (const event of batch) {
    const e = event as { time?: unknown; origin?: unknown; erased?: unknown };
    if (e.time !== undefined || e.origin !== undefined || e.erased !== undefined) return false;
  }
  return true;
}

/** The event the core stores for `e`, stamped (the fields in the order the core writes them). */
function stamped(e: EventShape & { stream: string; schemaVersion?: unknown; meta?: unknown }, id: string, position: number, version: number, own: OwnStamps, pending: boolean): AnnalsEvent {
  const event: Record<string, unknown> = { id, position, stream: e.stream, version, type: e.type };
  // The core reads a field given as `null` as left out, and omits `schemaVersion` at 1.
  if (e.schemaVersion !== undefined && e.schemaVersion !== null && e.schemaVersion !== 1) event.schemaVersion = e.schemaVersion;
  event.data = e.data === undefined ? null : e.data;
  if (e.meta !== undefined && e.meta !== null) event.meta = e.meta;
  event.time = own.time;
  if (own.origin !== null) event.origin = own.origin;
  event.pending = pending;
  return event as unknown as AnnalsEvent;
}

type OwnStamps = NonNullable<ChangeMessage["own"]>;

function closedError(): AnnalsError {
  return new AnnalsError("CLOSED", "the store is closed");
}

/** Merges the changes seen during one catch-up into one. */
export function mergeChanges<E extends EventShape>(changes: Change<E>[], head: number, confirmedHead: number): Change<E> {
  const [first, ...rest] = changes;
  if (!first) return { previousHead: head, head, events: [], confirmedHead, rebased: false, reset: false };
  const merged: Change<E> = { ...first, events: [...first.events] };
  for (const change of rest) {
    if (change.reset) {
      merged.previousHead = 0;
      merged.events = [...change.events];
      merged.reset = true;
    } else {
      if (change.previousHead < merged.head) merged.rebased = true;
      merged.previousHead = Math.min(merged.previousHead, change.previousHead);
      merged.events = merged.events.filter((e) => e.position <= change.previousHead).concat(change.events);
    }
    merged.rebased ||= change.rebased;
    merged.head = change.head;
    merged.confirmedHead = change.confirmedHead;
  }
  return merged;
}

export class Writes<E extends EventShape> {
  readonly #host: WritesHost;
  #appendsInFlight = 0;
  /** The events of recent changes by `seq`, while appends are in flight. */
  readonly #captured = new Map<number, Captured>();
  /** The batches of tagged appends in flight (see `ownEvents`). */
  readonly #own = new Map<number, readonly unknown[]>();
  #lastTag = 0;
  #catchUpTail: Promise<unknown> = Promise.resolve();
  #catchUpQueued: Promise<Change<E>> | undefined;
  /** Changes seen by each catch-up in flight. */
  readonly #collectors = new Set<Change<E>[]>();
  /**
   * While a batch waits for async validators: resolves once it has been handed to the core
   * (or refused), so that later appends reach the core in the order they were made.
   */
  #validating: Promise<void> | undefined;

  constructor(host: WritesHost) {
    this.#host = host;
  }

  /** The core reported a change (called synchronously from its listener). */
  observe(seq: number, events: AnnalsEvent[], change: Change<E>): void {
    if (this.#appendsInFlight > 0 && seq >= 0) this.#captured.set(seq, { first: change.previousHead + 1, events });
    for (const collector of this.#collectors) collector.push(change);
  }

  /**
   * The events of a change that carries exactly one tagged append's batch: the batch's own
   * objects (`data` and `meta` are not copied), stamped as the core stored them.
   * Undefined if that append is not in flight here.
   */
  ownEvents(message: ChangeMessage): AnnalsEvent[] | undefined {
    const own = message.own;
    const batch = own && this.#own.get(own.tag);
    if (!own || !batch || batch.length !== own.ids.length) return undefined;
    const pending = message.head > message.confirmed;
    const first = message.previousHead + 1;
    return batch.map((e: unknown, i: number) => stamped(e as EventShape & { stream: string }, own.ids[i]!, first + i, own.versions[i]!, own, pending));
  }

  append(events: readonly unknown[]): Promise<AppendedEvent<E>[]> {
    try {
      if (this.#host.isClosed()) throw closedError();
      if (events.length === 0) return Promise.resolve([]);
      if (this.#host.upcasters) events = this.#host.upcasters.stamp(events);
      const schemas = this.#host.schemas;
      // Validation runs before the core's transaction opens (an await inside it would end
      // the IndexedDB transaction): the whole batch, sync and async validators alike.
      const checked = schemas === undefined ? events : validateBatch(events, schemas);
      if (!(checked instanceof Promise) && this.#validating === undefined) {
        return this.#host.track(this.#sendBatch(checked));
      }
      return this.#host.track(this.#sendInOrder(checked));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Sends a batch whose validation is async once it and every earlier batch are through. */
  #sendInOrder(checked: readonly unknown[] | Promise<readonly unknown[]>): Promise<AppendedEvent<E>[]> {
    const before = this.#validating;
    let handed!: () => void;
    const mine = new Promise<void>((resolve) => (handed = resolve));
    this.#validating = mine;
    const done = (): void => {
      handed();
      if (this.#validating === mine) this.#validating = undefined;
    };
    const ready = before === undefined ? Promise.resolve(checked) : Promise.all([checked, before]).then(([batch]) => batch);
    return ready.then(
      (batch) => {
        try {
          if (this.#host.isClosed()) throw closedError();
          return this.#sendBatch(batch);
        } finally {
          done();
        }
      },
      (error: unknown) => {
        // A refused batch must not hold up the next ones, but they wait for the earlier.
        if (before === undefined) done();
        else void before.then(done);
        throw error;
      },
    );
  }

  /** Sends an app's batch; when JSON gives its objects back exactly, they are its events. */
  #sendBatch(batch: readonly unknown[]): Promise<AppendedEvent<E>[]> {
    const { json, exact } = serializeBatchAs(batch);
    return this.#send(json, true, exact ? batch : undefined);
  }

  /**
   * Appends a non-empty batch already serialised (a command's, as the core planned it, or an
   * import's): resolves to the events as stored, without the app-facing reply fields.
   */
  appendJson(batchJson: string): Promise<AnnalsEvent<E>[]> {
    if (this.#host.isClosed()) return Promise.reject(closedError());
    return this.#host.track(this.#send(batchJson, false));
  }

  /**
   * With `reply`, the events carry `streamVersion` (and `duplicate` for a retry): `append`'s
   * answer. With `batch` (the objects `json` serialises), the change that carries them comes
   * as stamps, and its events are built from the batch (see `ownEvents`).
   */
  async #send(json: string, reply: true, batch?: readonly unknown[]): Promise<AppendedEvent<E>[]>;
  async #send(json: string, reply: false): Promise<AnnalsEvent<E>[]>;
  async #send(json: string, withReply: boolean, batch?: readonly unknown[]): Promise<AppendedEvent<E>[] | AnnalsEvent<E>[]> {
    let raw: string;
    this.#appendsInFlight += 1;
    let tag = 0;
    if (batch !== undefined && stampable(batch)) {
      this.#lastTag = this.#lastTag >= 0x7fffffff ? 1 : this.#lastTag + 1;
      tag = this.#lastTag;
      this.#own.set(tag, batch);
    }
    try {
      raw = (await this.#host.core.append(writeInput(this.#host.core, json), tag)) as string;
    } catch (error) {
      // A failed append may still have read what other tabs wrote: the listener took it in.
      this.#appendDone(null);
      throw fromWasmError(error);
    } finally {
      if (tag !== 0) this.#own.delete(tag);
    }
    const reply = JSON.parse(raw) as AppendReply;
    const captured = reply.seq === null ? undefined : this.#captured.get(reply.seq);
    this.#appendDone(reply.seq);
    this.#host.appended();
    const duplicates = new Map<number, AnnalsEvent>();
    for (const e of this.#upcast(reply.duplicates)) duplicates.set(e.position, e);
    const events = reply.results.map((position) => {
      const inChange = captured?.events[position - captured.first];
      if (inChange && inChange.position === position) return inChange;
      return (duplicates.get(position) ?? this.#range(position - 1, position)[0])!;
    });
    if (!withReply) return events as AnnalsEvent<E>[];
    return events.map((event, i) => {
      const streamVersion = reply.streamVersions[i]!;
      // A retry's stored event was read for this reply (an object of its own); a new
      // event is the change's object, shared with projections and listeners, so the
      // reply's field goes on a copy.
      if (duplicates.get(event.position) === event) {
        return Object.assign(event, { streamVersion, duplicate: true as const }) as AppendedEvent<E>;
      }
      return { ...event, streamVersion } as AppendedEvent<E>;
    });
  }

  #range(after: number, to: number): AnnalsEvent[] {
    return to > after ? this.#upcast(JSON.parse(this.#host.core.range(after, to)) as AnnalsEvent[]) : [];
  }

  #upcast(events: AnnalsEvent[]): AnnalsEvent[] {
    return this.#host.upcasters ? this.#host.upcasters.upcastEvents(events) : events;
  }

  #appendDone(seq: number | null): void {
    this.#appendsInFlight -= 1;
    if (this.#appendsInFlight === 0) {
      this.#captured.clear();
    } else if (seq !== null) {
      for (const key of this.#captured.keys()) {
        if (key <= seq) this.#captured.delete(key);
      }
    }
  }

  catchUp(): Promise<Change<E>> {
    const host = this.#host;
    if (host.isClosed()) return Promise.reject(closedError());
    if (this.#catchUpQueued) return this.#catchUpQueued;
    const run = this.#catchUpTail.then(async () => {
      this.#catchUpQueued = undefined;
      if (host.isClosed()) throw closedError();
      const seen: Change<E>[] = [];
      this.#collectors.add(seen);
      try {
        await host.core.catchUp().catch((error: unknown) => {
          throw fromWasmError(error);
        });
      } finally {
        this.#collectors.delete(seen);
      }
      return mergeChanges(seen, host.head(), host.confirmedHead());
    });
    this.#catchUpQueued = run;
    this.#catchUpTail = run.catch(() => undefined);
    return host.track(run);
  }
}
