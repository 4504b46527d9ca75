// The projections of one store: opening them from snapshots plus the log's tail, folding
// each change into confirmed and optimistic states, time travel (`stateAt`) from the nearest
// checkpoint or snapshot, and writing snapshots at a bounded pace. It sees the core only to
// read ranges and snapshots, and asks the core's rules where checkpoints go and which
// snapshot is trusted (once per batch, never per event); heads, the log's generation and
// errors come from its host.

import { AnnalsError, fromWasmError } from "./errors.js";
import { invalidArgument, type ProjectionSpec, wholeNumber } from "./options.js";
import { copyState, ProjectionRuntime, restoreState, STEP_BACK_TRAIL, type SkippedEvent, TakenCheckpoints } from "./projection-runtime.js";
import type { AnnalsEvent, RebuildProgress, UnknownEventPolicy } from "./types.js";
import type { Upcasters } from "./upcast.js";
import type { ChangeMessage, Checkpoint, SnapshotReply, WasmRules, WasmStoreHandle } from "./wasm-contract.js";

/** Periodic snapshots are at least this far apart in time... */
const SNAPSHOT_SPACING_MS = 100;
/** ...unless this many times `snapshotEvery` events wait. */
const SNAPSHOT_BURST = 10;
/** Reducer failures remembered so that each is reported once (a bound, not a goal). */
const MAX_REMEMBERED_FAILURES = 10_000;
/** Checkpoints kept per projection when the app sets `checkpointEvery` (the spacing then doubles past it). */
const FIXED_MAX_CHECKPOINTS = 64;
/** Events read from the core at a time when replaying. */
export const REPLAY_CHUNK = 2_000;
/** Unknown (type, version) pairs remembered as reported (a bound, not a goal). */
const MAX_REMEMBERED_UNKNOWN = 10_000;
/** Skipped (type, version) pairs a snapshot records per projection (a bound, not a goal). */
const MAX_SKIPPED_KINDS = 256;

/** The key of a snapshot's envelope (a state with skipped events, or a partial rebuild). */
const ENVELOPE = "annals:snapshot";

/** A stored snapshot's state, unwrapped from its envelope when it has one. */
interface StoredState {
  state: unknown;
  /** Written by a rebuild that had not reached the head yet: the open resumes it. */
  partial: boolean;
  /** Confirmed events the projection left out (unknown to the build that wrote it). */
  skipped: SkippedEvent[];
}

/**
 * A snapshot's state as stored: the state itself, or (when it left events out or is a
 * partial rebuild) `{ "annals:snapshot": 1, partial?, skipped?, state }`. Snapshots written
 * before the envelope existed are plain states and load as they are.
 */
function unwrapSnapshot(stored: unknown): StoredState {
  if (typeof stored === "object" && stored !== null && !Array.isArray(stored)) {
    const envelope = stored as Record<string, unknown>;
    if (envelope[ENVELOPE] === 1 && "state" in envelope) {
      return {
        state: envelope.state,
        partial: envelope.partial === true,
        skipped: Array.isArray(envelope.skipped) ? (envelope.skipped as SkippedEvent[]) : [],
      };
    }
  }
  return { state: stored, partial: false, skipped: [] };
}

/** The JSON a snapshot stores for `json` (the state's JSON). */
function wrapSnapshot(json: string, partial: boolean, skipped: readonly SkippedEvent[]): string {
  if (!partial && skipped.length === 0) return json;
  const parts = [`{"${ENVELOPE}":1`];
  if (partial) parts.push(`,"partial":true`);
  if (skipped.length > 0) parts.push(`,"skipped":${JSON.stringify(skipped)}`);
  parts.push(`,"state":${json}}`);
  return parts.join("");
}

function unknownKey(type: string, schemaVersion: number): string {
  return `${type}\u0000${schemaVersion}`;
}

/** How projections are rebuilt when their `version` changes (see `RebuildOptions`). */
export interface RebuildSettings {
  /** In the background when more events than this are to fold. */
  background: number;
  /** Events per slice. */
  slice: number;
  /** A partial snapshot every this many events. */
  saveEvery: number;
}

/** What one slice of a background rebuild aims to cost (ms), so that the page stays responsive. */
const REBUILD_SLICE_MS = 12;
/** Subscribers of a rebuilding projection hear its partial state at most this often (ms). */
const REBUILD_NOTIFY_MS = 100;

/** Lets the page run between two slices of a rebuild. */
function yieldToPage(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** The part of the core projections read and write. */
export type ProjectionCore = Pick<
  WasmStoreHandle,
  | "head"
  | "confirmedHead"
  | "logGeneration"
  | "loadedAfter"
  | "loadFrom"
  | "readableTo"
  | "loadStep"
  | "range"
  | "snapshot"
  | "putSnapshot"
  | "deleteSnapshot"
  | "positionsOf"
  | "dropped"
>;

/** The core's rules projections follow: checkpoint plans and snapshot trust. */
export type ProjectionRules = Pick<WasmRules, "CheckpointPlan" | "snapshotTrusted" | "fingerprint">;

/** What projections need from their store. */
export interface ProjectionsHost {
  readonly core: ProjectionCore;
  readonly rules: ProjectionRules;
  /** Write snapshots (false for a private memory store: nobody could read them). */
  readonly snapshots: boolean;
  readonly snapshotEvery: number;
  /** The heads the store has folded to. */
  head(): number;
  confirmedHead(): number;
  /** Changes when the confirmed log restarts. */
  generation(): number;
  isClosed(): boolean;
  /** The database was taken away: writes would fail. */
  isLost(): boolean;
  /** Throws CLOSED once the store is closed. */
  checkOpen(): void;
  /** Resolves once the core holds the whole log. */
  whenComplete(): Promise<void>;
  /** Lets close wait for a write. */
  track<T>(promise: Promise<T>): Promise<T>;
  reportError(error: unknown): void;
  /** Runs a subscriber; what it throws is reported. */
  safely(f: () => void): void;
  /** Events as this build reads them. */
  readonly upcasters: Upcasters;
  /** What to do with events this build cannot read. */
  readonly unknownEvents: UnknownEventPolicy;
  readonly rebuild: RebuildSettings;
  /** A background rebuild's progress. */
  rebuildProgress(progress: RebuildProgress): void;
  /**
   * Confirmed events `after + 1 ..= to` that retention dropped here (`core.dropped`), from
   * the sync server, as this build reads them; `NOT_RETAINED` when it cannot be asked.
   */
  fetchDropped(after: number, to: number, what: string): Promise<AnnalsEvent[]>;
}

export class Projections {
  readonly #host: ProjectionsHost;
  readonly #runtimes = new Map<string, ProjectionRuntime>();
  /**
   * Failures already reported, by projection and event id (or "json"): an optimistic
   * refold, a rebase or `stateAt` applies the same event again, and the app should hear of
   * a reducer bug once, not on every change.
   */
  readonly #reported = new Set<string>();
  /** Unknown events already reported, by type and schema version. */
  readonly #unknownReported = new Set<string>();
  /** While folding confirmed events of one runtime: where unknown ones left out are recorded. */
  #skippedSink: Map<string, SkippedEvent> | undefined;
  /** Set by a fold that stopped before an unknown event (`"fail"`): its position. */
  #stoppedAt: number | undefined;
  /** Events `1 ..= to` that retention dropped, fetched once by `statesAt` while it runs. */
  #prefetched: { to: number; events: AnnalsEvent[] } | undefined;
  /** Until the store is open (`startRebuilds`): reports are held for the app's listeners. */
  #opening = true;
  readonly #heldReports: AnnalsError[] = [];
  /** Background rebuilds running. */
  readonly #rebuilds = new Set<Promise<void>>();
  /** The runtimes whose rebuild loop runs. */
  readonly #rebuildLoops = new Set<ProjectionRuntime>();
  #snapshotting: Promise<void> | undefined;
  #lastSnapshotAt = -Infinity;
  #snapshotTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(host: ProjectionsHost, specs: readonly ProjectionSpec[], checkpointEvery: number, signal: AbortSignal) {
    this.#host = host;
    // `checkpointEvery` 0: the plan starts at the core's spacing and adapts it to the
    // measured costs (bounded by the core's byte budget). An app's own spacing is kept as
    // given (thinned by count and bytes only): the costs are not reported then.
    const adaptive = checkpointEvery === 0;
    for (const spec of specs) {
      const plan = new host.rules.CheckpointPlan(checkpointEvery, adaptive ? 0 : FIXED_MAX_CHECKPOINTS, 0);
      this.#runtimes.set(spec.name, new ProjectionRuntime(spec.name, spec.def, spec.version, plan, adaptive));
    }
    signal.addEventListener("abort", () => {
      clearTimeout(this.#snapshotTimer);
      this.#snapshotTimer = undefined;
      for (const rt of this.#runtimes.values()) rt.release();
    });
  }

  names(): string[] {
    return [...this.#runtimes.keys()];
  }

  /** Each projection's name and version. */
  specs(): { name: string; version: number }[] {
    return [...this.#runtimes.values()].map((rt) => ({ name: rt.name, version: rt.version }));
  }

  /** The runtime named `name`, or INVALID_ARGUMENT naming the known ones. */
  runtime(name: string): ProjectionRuntime {
    const rt = this.#runtimes.get(name);
    if (!rt) {
      const known = [...this.#runtimes.keys()].map((k) => `"${k}"`).join(", ") || "none";
      throw invalidArgument(`no projection named ${JSON.stringify(name)} (known: ${known})`);
    }
    return rt;
  }

  subscribe(name: string, listener: (state: unknown) => void): () => void {
    if (typeof listener !== "function") throw invalidArgument("subscribe needs a listener function");
    const rt = this.runtime(name);
    const entry = (state: unknown) => listener(state);
    rt.subscribers.add(entry);
    return () => {
      rt.subscribers.delete(entry);
    };
  }

  // ---- opening -------------------------------------------------------------------------

  /** Loads every projection; returns the heads they were folded to. */
  async load(): Promise<{ head: number; confirmed: number }> {
    const runtimes = [...this.#runtimes.values()];
    // Another writer may reset the log while it loads (then it is loaded again, from the start).
    for (;;) {
      const heads = await this.#loadOnce(runtimes);
      if (heads) return heads;
      for (const rt of runtimes) rt.reset();
    }
  }

  /** Each projection from its snapshot plus the events after it; undefined if the log was reset meanwhile. */
  async #loadOnce(runtimes: ProjectionRuntime[]): Promise<{ head: number; confirmed: number } | undefined> {
    const core = this.#host.core;
    const generation = core.logGeneration;
    let confirmed = core.confirmedHead;
    /** Projections to rebuild (a changed version, a cut rebuild, events a newer build knows). */
    const rebuild = new Set<ProjectionRuntime>();
    for (const rt of runtimes) {
      rt.rebuilding = false;
      const reply = (await core.snapshot(rt.name)) as string | undefined;
      if (reply === undefined) continue;
      const snapshot = JSON.parse(reply) as SnapshotReply;
      confirmed = core.confirmedHead;
      if (snapshot.version !== rt.version) {
        rebuild.add(rt);
        continue;
      }
      if (!this.#trusted(rt, snapshot, confirmed)) continue;
      const stored = unwrapSnapshot(snapshot.state);
      // Events the build that wrote it could not read, and this one can: fold them again.
      if (!this.#stillUnknown(stored)) {
        rebuild.add(rt);
        continue;
      }
      // A copy, as a restored checkpoint is (see `restoreState`): reducers fold on it.
      rt.confirmed = copyState(stored.state);
      rt.position = snapshot.position;
      rt.snapshotPosition = snapshot.position;
      for (const e of stored.skipped) rt.skipped.set(unknownKey(e.type, e.schemaVersion), e);
      if (stored.partial) rebuild.add(rt);
      if (snapshot.position > 0) rt.addCheckpoint(snapshot.position, JSON.stringify(stored.state));
    }
    // Rebuilds of many events go on in the background once the store is open.
    for (const rt of rebuild) {
      if (confirmed - rt.position > this.#host.rebuild.background) rt.rebuilding = true;
    }
    // The events the snapshots do not cover come from storage first, part by part: the
    // next part is read while this one is folded. Nothing else changes the core meanwhile
    // (it completes the log before it takes in other writers' changes), but for a reset
    // seen while loading.
    let from = core.confirmedHead;
    for (const rt of runtimes) if (!rt.rebuilding) from = Math.min(from, rt.position);
    // A projection whose snapshot does not cover what retention dropped (a new one, a
    // changed version) folds that part from the server's log first.
    if (from < core.dropped) {
      for (const rt of runtimes) if (!rt.rebuilding) await this.#foldDropped(rt);
      if (core.logGeneration !== generation) return undefined;
      from = Math.max(from, core.dropped);
    }
    await core.loadFrom(from);
    if (core.logGeneration !== generation) return undefined;
    confirmed = core.confirmedHead;
    const head = core.head;
    const folding = runtimes.filter((rt) => !rt.rebuilding);
    // Checkpoints at the spacing the replay will end with, not many taken only to be dropped.
    for (const rt of runtimes) rt.prepareReplay(rt.position, confirmed);
    for (let after = from; after < confirmed; ) {
      const readable = Math.min(core.readableTo(after), confirmed);
      let next: Promise<unknown> | undefined;
      if (readable < confirmed) {
        next = core.loadStep();
        await Promise.resolve(); // the step has asked IndexedDB for the next part
      }
      for (; after < readable; ) {
        const to = Math.min(after + REPLAY_CHUNK, readable);
        const events = this.#range(after, to);
        for (const rt of folding) this.#foldConfirmed(rt, events);
        after = to;
      }
      if (next) await next;
      if (core.logGeneration !== generation || core.confirmedHead !== confirmed) return undefined;
    }
    const pending = this.#range(confirmed, head);
    for (const rt of runtimes) {
      rt.state =
        pending.length > 0 && !rt.rebuilding ? this.#foldOptimistic(rt, copyState(rt.confirmed), pending) : rt.confirmed;
    }
    return { head, confirmed };
  }

  // ---- rebuilds ------------------------------------------------------------------------

  /** Starts the background rebuilds `load` left (once the store is open). */
  startRebuilds(): void {
    this.#opening = false;
    if (this.#heldReports.length > 0) {
      const held = this.#heldReports.splice(0);
      // After `openStore` resolves and the app adds its listeners.
      setTimeout(() => {
        if (!this.#host.isClosed()) for (const error of held) this.#host.reportError(error);
      }, 0);
    }
    for (const rt of this.#runtimes.values()) {
      if (rt.rebuilding) this.#startRebuild(rt);
    }
  }

  /** Runs the background rebuild of `rt` (one loop per runtime: a running one goes on). */
  #startRebuild(rt: ProjectionRuntime): void {
    if (this.#rebuildLoops.has(rt)) return;
    this.#rebuildLoops.add(rt);
    const run = this.#rebuild(rt)
      .catch((error: unknown) => {
        if (!this.#host.isClosed()) this.#host.reportError(error);
      })
      .finally(() => this.#rebuildLoops.delete(rt));
    this.#rebuilds.add(run);
    void run.finally(() => this.#rebuilds.delete(run));
  }

  /**
   * Every projection starts again from its initial state and folds the whole log in the
   * background, the part retention dropped from the sync server (an erasure took data out
   * of events a store cut by retention no longer holds: its states must be folded again,
   * and the log here starts at the cut). The snapshots go, as on a reset.
   */
  restartFromServer(): void {
    this.#restart();
    this.#dropSnapshots();
    this.#startRestarted();
  }

  /**
   * Every projection starts again from the stored snapshots (or the server's log) and
   * folds on in the background: this tab had not folded up to where another tab cut the
   * log (retention), so the events in between are no longer here.
   */
  restartFromSnapshots(): void {
    this.#restart();
    this.#startRestarted();
  }

  #restart(): void {
    for (const rt of this.#runtimes.values()) {
      rt.reset();
      rt.rebuilding = true;
    }
  }

  #startRestarted(): void {
    if (this.#opening) return; // startRebuilds runs them once the store is open
    for (const rt of this.#runtimes.values()) this.#startRebuild(rt);
  }

  /**
   * Folds the log into a rebuilding projection in slices of `rebuild.slice` events,
   * yielding to the page between them, reporting progress, and writing a partial snapshot
   * every `rebuild.saveEvery` events (a reload resumes from it). Appends and the other
   * projections go on meanwhile; the store's changes are left to this loop (it reads up to
   * the head the store has folded to). At the head, the pending events are folded on top
   * and the projection joins the others.
   */
  async #rebuild(rt: ProjectionRuntime): Promise<void> {
    const host = this.#host;
    const { slice, saveEvery } = host.rebuild;
    const progress = (done: number, total: number) => host.rebuildProgress({ name: rt.name, done, total });
    let announced = false;
    // Slices sized by what folding costs: about REBUILD_SLICE_MS each, at most `slice` events.
    let size = Math.min(slice, 256);
    let notifiedAt = -Infinity;
    while (!host.isClosed()) {
      // Yield first: `openStore` resolves, and the app subscribes, before any slice.
      await yieldToPage();
      if (host.isClosed()) return;
      const total = host.confirmedHead();
      if (!announced) {
        // Where it starts (0, or a partial snapshot's position): the app has subscribed by now.
        announced = true;
        progress(rt.position, total);
      }
      if (rt.blockedAt !== undefined || rt.position >= total) break;
      if (rt.position < host.core.dropped) {
        await this.#foldDropped(rt);
        continue;
      }
      // A lazily opened log may not hold these events yet: the background load brings them.
      const readable = rt.position < host.core.loadedAfter ? rt.position : Math.min(host.core.readableTo(rt.position), total);
      if (readable <= rt.position) {
        await host.whenComplete();
        continue;
      }
      const before = rt.position;
      const started = performance.now();
      this.#foldConfirmed(rt, this.#range(before, Math.min(before + size, readable)));
      const ms = performance.now() - started;
      const folded = rt.position - before;
      if (folded > 0) size = Math.max(64, Math.min(slice, Math.round((folded * REBUILD_SLICE_MS) / Math.max(ms, 0.1))));
      // At the head: it joins the others now, before anything else can run.
      if (rt.blockedAt === undefined && rt.position >= host.confirmedHead()) break;
      rt.state = rt.confirmed;
      // Subscribers (a UI) hear the state folded so far at a bounded pace.
      const now = performance.now();
      if (!rt.frozen && now - notifiedAt >= REBUILD_NOTIFY_MS) {
        notifiedAt = now;
        this.#notifyOne(rt);
      }
      progress(rt.position, total);
      if (host.snapshots && rt.position - rt.snapshotPosition >= saveEvery && !host.isClosed()) {
        await this.#writeSnapshot(rt);
      }
    }
    if (host.isClosed()) return;
    // At the head (synchronously with the store's heads): the pending events on top.
    rt.rebuilding = false;
    const head = host.head();
    const confirmed = host.confirmedHead();
    const pending = head > confirmed ? this.#range(confirmed, head) : [];
    rt.state = pending.length > 0 ? this.#foldOptimistic(rt, copyState(rt.confirmed), pending) : rt.confirmed;
    if (!rt.frozen) this.#notifyOne(rt);
    progress(rt.position, confirmed);
    // The stored snapshot may be a partial one: the next open must not take it for a rebuild.
    if (host.snapshots) await this.#writeSnapshot(rt, true);
  }

  /** Whether `name` is rebuilding in the background. */
  isRebuilding(name: string): boolean {
    return this.runtime(name).rebuilding;
  }

  // ---- folding -------------------------------------------------------------------------

  /** The confirmed log restarted: every projection starts again, and the old snapshots go. */
  reset(): void {
    for (const rt of this.#runtimes.values()) rt.reset();
    this.#dropSnapshots();
  }

  /**
   * Folds a change into every projection. `fresh`: the optimistic state is rebuilt from the
   * confirmed one (a reset, a rebase, or nothing was pending); else the pending events are
   * folded on top of it.
   */
  fold(change: ChangeMessage, fresh: boolean): void {
    for (const rt of this.#runtimes.values()) {
      // A rebuild reads these events itself when it gets to them.
      if (rt.rebuilding) continue;
      if (change.confirmedEvents.length > 0) this.#foldConfirmed(rt, change.confirmedEvents);
      if (fresh) {
        rt.state =
          change.pendingEvents.length > 0
            ? this.#foldOptimistic(rt, copyState(rt.confirmed), change.pendingEvents)
            : rt.confirmed;
      } else {
        rt.state = this.#foldOptimistic(rt, rt.state, change.pendingEvents);
      }
    }
  }

  /** Tells every subscriber its projection's state (not while frozen: what they see stays). */
  notify(): void {
    for (const rt of this.#runtimes.values()) {
      if (!rt.frozen) this.#notifyOne(rt);
    }
  }

  #notifyOne(rt: ProjectionRuntime): void {
    const shown = rt.shown;
    for (const listener of [...rt.subscribers]) this.#host.safely(() => listener(shown));
  }

  #applyEvent(rt: ProjectionRuntime, state: unknown, event: AnnalsEvent): unknown {
    let next: unknown;
    try {
      next = rt.def.apply(state, event);
    } catch (error) {
      this.#reportOnce(
        `${rt.name}\u0000${event.id}`,
        `projection "${rt.name}" threw on event ${event.position} (${event.type}); the event was skipped`,
        error,
      );
      return state;
    }
    if (next === undefined) {
      // Most often a `switch` without `default: return state` meeting a type it does not know.
      this.#reportOnce(
        `${rt.name}\u0000${event.id}`,
        `projection "${rt.name}" returned undefined for event ${event.position} (${event.type}); the previous state was kept (a reducer must return a state: end its switch with \`default: return state\`)`,
        undefined,
      );
      return state;
    }
    return next;
  }

  /**
   * Whether `event` is folded (0), left out (1: this build cannot read it; recorded for the
   * snapshot when folding confirmed events) or stops the fold (2: `unknownEvents: "fail"`).
   * Reported as `UNKNOWN_EVENT` once per type and schema version (not for `"skip"`).
   */
  #admit(event: AnnalsEvent): 0 | 1 | 2 {
    const host = this.#host;
    const why = host.upcasters.unknown(event);
    if (why === undefined) return 0;
    const policy = host.unknownEvents;
    const version = event.schemaVersion ?? 1;
    const key = unknownKey(event.type, version);
    if (policy !== "skip" && !this.#unknownReported.has(key)) {
      if (this.#unknownReported.size >= MAX_REMEMBERED_UNKNOWN) this.#unknownReported.clear();
      this.#unknownReported.add(key);
      const what =
        policy === "fail"
          ? "the projections stop before it until a build that knows it opens"
          : "the projections leave it out (a build that knows it folds it)";
      const error = new AnnalsError(
        "UNKNOWN_EVENT",
        `event ${event.position} (${event.type}, schema version ${version}) is unknown to this build: ${why}; it is kept and synced unchanged, and ${what}`,
      );
      // While the store opens, the app has no listener yet: it hears it once open.
      if (this.#opening) this.#heldReports.push(error);
      else host.reportError(error);
    }
    if (policy === "fail") {
      this.#stoppedAt = event.position;
      return 2;
    }
    // Recorded for the snapshot (a build that can read it refolds), unless its upcaster threw:
    // that is a bug of this build's, fixed with a new projection version.
    const sink = this.#skippedSink;
    if (sink && !event.pending && !sink.has(key) && sink.size < MAX_SKIPPED_KINDS && !host.upcasters.threw(event)) {
      sink.set(key, { type: event.type, schemaVersion: version, position: event.position });
    }
    return 1;
  }

  /** Whether every event a snapshot's projection left out is still unknown to this build. */
  #stillUnknown(stored: StoredState): boolean {
    return stored.skipped.every((e) => this.#host.upcasters.unknown(e) !== undefined);
  }

  /** Reports a projection's failure as `PROJECTION_FAILED`, once per `key`. */
  #reportOnce(key: string, message: string, cause: unknown): void {
    if (this.#reported.has(key)) return;
    if (this.#reported.size >= MAX_REMEMBERED_FAILURES) this.#reported.clear();
    this.#reported.add(key);
    this.#host.reportError(new AnnalsError("PROJECTION_FAILED", message, { cause }));
  }

  /** Folds confirmed events after the projection's position into its confirmed state, taking checkpoints. */
  /**
   * Folds what retention dropped and `rt` has not folded yet: from the stored snapshot when
   * it is further on (another tab wrote it, and cut the log against it), else from the
   * server's log.
   */
  async #foldDropped(rt: ProjectionRuntime): Promise<void> {
    // The policy may cut further while the server is asked: fold until `rt` reaches the cut.
    for (;;) {
      const dropped = this.#host.core.dropped;
      if (rt.position >= dropped || rt.blockedAt !== undefined) return;
      await this.#fromSnapshot(rt);
      if (rt.position >= dropped) continue;
      const before = rt.position;
      const what = `projection "${rt.name}" (folded up to position ${rt.position})`;
      const events = await this.#host.fetchDropped(rt.position, dropped, what);
      this.#foldConfirmed(rt, events);
      if (rt.position === before) return; // nothing came: the read after it says why
    }
  }

  /** Takes the stored snapshot of `rt` when it is trusted and further on than `rt`. */
  async #fromSnapshot(rt: ProjectionRuntime): Promise<void> {
    const core = this.#host.core;
    const reply = (await core.snapshot(rt.name)) as string | undefined;
    if (reply === undefined) return;
    const snapshot = JSON.parse(reply) as SnapshotReply;
    if (snapshot.version !== rt.version || snapshot.position <= rt.position) return;
    if (!this.#trusted(rt, snapshot, core.confirmedHead)) return;
    const stored = unwrapSnapshot(snapshot.state);
    if (!this.#stillUnknown(stored)) return;
    rt.confirmed = copyState(stored.state);
    rt.position = snapshot.position;
    rt.snapshotPosition = snapshot.position;
    for (const e of stored.skipped) rt.skipped.set(unknownKey(e.type, e.schemaVersion), e);
    rt.addCheckpoint(snapshot.position, JSON.stringify(stored.state));
  }

  #foldConfirmed(rt: ProjectionRuntime, events: readonly AnnalsEvent[]): void {
    if (rt.blockedAt !== undefined) return;
    let from = 0;
    while (from < events.length && events[from]!.position <= rt.position) from++;
    if (from === events.length) return;
    const to = events[events.length - 1]!.position;
    const taken = new TakenCheckpoints();
    this.#stoppedAt = undefined;
    this.#skippedSink = rt.skipped;
    try {
      rt.confirmed = this.#foldTaking(rt, rt.confirmed, events, from, rt.position, to, taken);
    } finally {
      this.#skippedSink = undefined;
    }
    const stopped = this.#stoppedAt;
    this.#stoppedAt = undefined;
    if (stopped !== undefined) {
      rt.blockedAt = stopped;
      rt.position = stopped - 1;
    } else {
      rt.position = to;
    }
    rt.keep(taken);
  }

  /**
   * Folds `events[from..]` (the events after `after`) into `state`, taking a checkpoint
   * (its JSON, what folding cost per event and what taking it cost) right after each
   * position the plan names in `after + 1 ..= dueTo`. Until the reducer's cost is known,
   * the plan is asked again after the first checkpoint, so that one long batch already
   * gets the spacing its cost calls for. States from `visitFrom` on are kept as visited
   * (time travel stepping back).
   */
  #foldTaking(
    rt: ProjectionRuntime,
    state: unknown,
    events: readonly AnnalsEvent[],
    from: number,
    after: number,
    dueTo: number,
    taken: TakenCheckpoints,
    visitFrom = Infinity,
  ): unknown {
    let due = rt.checkpointsDue(after, dueTo);
    const measuring = rt.adaptive;
    let replanned = !measuring || rt.measured;
    let next = 0;
    let nextDue = due.length > 0 ? due[0]! : Infinity;
    let since = nextDue === Infinity ? 0 : performance.now();
    let folded = 0;
    const plain = this.#host.upcasters.plain;
    for (let i = from; i < events.length; i++) {
      const event = events[i]!;
      const admit = plain && event.schemaVersion === undefined ? 0 : this.#admit(event);
      if (admit === 2) break;
      if (admit === 0) state = this.#applyEvent(rt, state, event);
      folded++;
      if (event.position >= visitFrom) {
        const json = this.#json(rt, state);
        if (json !== undefined) rt.visit(event.position, json);
      }
      if (event.position < nextDue) continue;
      if (event.position === nextDue) {
        // What folding cost per event and what taking the checkpoint cost: the core's plan
        // sets the spacing from them (dense for costly reducers, sparse for cheap ones).
        const took = performance.now();
        const json = this.#json(rt, state);
        const done = performance.now();
        const cost = measuring ? (took - since) / folded : 0;
        if (json !== undefined) taken.add(event.position, json, cost, measuring ? done - took : 0);
        since = done;
        folded = 0;
        if (!replanned && json !== undefined && cost > 0) {
          replanned = true;
          rt.keep(taken);
          taken.clear();
          due = rt.checkpointsDue(event.position, dueTo);
          next = 0;
          nextDue = due.length > 0 ? due[0]! : Infinity;
          continue;
        }
      }
      while (next < due.length && due[next]! <= event.position) next++;
      nextDue = next < due.length ? due[next]! : Infinity;
    }
    return state;
  }

  /** Folds pending events into an optimistic state (never the confirmed one). */
  #foldOptimistic(rt: ProjectionRuntime, state: unknown, events: readonly AnnalsEvent[]): unknown {
    if (rt.blockedAt !== undefined) return state;
    const plain = this.#host.upcasters.plain;
    for (const event of events) {
      const admit = plain && event.schemaVersion === undefined ? 0 : this.#admit(event);
      if (admit === 2) break;
      if (admit === 0) state = this.#applyEvent(rt, state, event);
    }
    this.#stoppedAt = undefined;
    return state;
  }

  /** The state as JSON, or undefined (reported) if it cannot be. */
  #json(rt: ProjectionRuntime, state: unknown): string | undefined {
    try {
      return JSON.stringify(state);
    } catch (error) {
      this.#reportOnce(`${rt.name}\u0000json`, `projection "${rt.name}": its state is not JSON-serialisable`, error);
      return undefined;
    }
  }

  /** Whether a stored snapshot may stand for the projection's state (the core's rule). */
  #trusted(rt: ProjectionRuntime, snapshot: SnapshotReply, confirmedHead: number): boolean {
    return this.#host.rules.snapshotTrusted(snapshot.version, snapshot.position, rt.version, confirmedHead);
  }

  // ---- time travel ---------------------------------------------------------------------

  /** The state of `name` right after `position`, without the events of `skip` (ids). */
  async stateAt(name: string, position: number, skip?: readonly string[]): Promise<unknown> {
    this.#host.checkOpen();
    const rt = this.runtime(name);
    const target = this.#target(position);
    return this.#stateAt(rt, target, await this.#skipped(skip));
  }

  /** JSON states of `name` right after each of `positions` (any order), one fold pass per gap. */
  async statesAt(name: string, positions: readonly number[], skip?: readonly string[]): Promise<string[]> {
    this.#host.checkOpen();
    const rt = this.runtime(name);
    if (!Array.isArray(positions)) throw invalidArgument("`positions` must be an array of positions");
    const targets = positions.map((p) => this.#target(p));
    const skipped = await this.#skipped(skip);
    const byPosition = new Map<number, string>();
    const sorted = [...new Set(targets)].sort((a, b) => a - b);
    // Many states below what retention kept (a bundle's fingerprints): the dropped part is
    // asked of the server once, not once per state.
    const below = Math.min(sorted[sorted.length - 1] ?? 0, this.#host.core.dropped);
    if (sorted.length > 1 && below > 0 && sorted[0]! < below) {
      this.#prefetched = { to: below, events: await this.#host.fetchDropped(0, below, `the states of "${name}"`) };
    }
    try {
      for (const target of sorted) {
        const json = this.#json(rt, await this.#stateAt(rt, target, skipped));
        byPosition.set(target, json ?? "null");
      }
    } finally {
      this.#prefetched = undefined;
    }
    return targets.map((t) => byPosition.get(t)!);
  }

  /** Dropped events `after + 1 ..= to`: from what `statesAt` fetched, else from the server. */
  #fetchDropped(after: number, to: number, what: string): Promise<AnnalsEvent[]> {
    const prefetched = this.#prefetched;
    if (prefetched && to <= prefetched.to && prefetched.events.length >= prefetched.to) {
      return Promise.resolve(prefetched.events.slice(after, to));
    }
    return this.#host.fetchDropped(after, to, what);
  }

  /** Fingerprints of `name` right after each of `positions` (the core's canonical hash). */
  async fingerprints(name: string, positions: readonly number[], skip?: readonly string[]): Promise<string[]> {
    const states = await this.statesAt(name, positions, skip);
    const rules = this.#host.rules;
    return states.map((json) => {
      try {
        return rules.fingerprint(json);
      } catch (error) {
        rethrow(error);
      }
    });
  }

  /**
   * Shows every projection as it was right after `position` (`get` and subscribers) until
   * `unfreeze`; folding goes on underneath.
   */
  async freeze(position: number): Promise<void> {
    this.#host.checkOpen();
    const target = this.#target(position);
    const runtimes = [...this.#runtimes.values()];
    const states: unknown[] = [];
    for (const rt of runtimes) states.push(await this.#stateAt(rt, target, undefined));
    this.#host.checkOpen();
    runtimes.forEach((rt, i) => {
      rt.frozen = { state: states[i] };
      this.#notifyOne(rt);
    });
  }

  /** Back to the present: subscribers hear the current states. */
  unfreeze(): void {
    for (const rt of this.#runtimes.values()) {
      if (!rt.frozen) continue;
      rt.frozen = undefined;
      this.#notifyOne(rt);
    }
  }

  checkpointStats(name: string): { count: number; bytes: number; budgetBytes: number } {
    return this.runtime(name).stats();
  }

  #target(position: number): number {
    const target = wholeNumber("position", position);
    const head = this.#host.head();
    if (target > head) throw invalidArgument(`position ${target} is past the head ${head}`);
    return target;
  }

  /** The positions of the events to leave out, ascending (ids the log does not hold are ignored). */
  async #skipped(skip: readonly string[] | undefined): Promise<number[] | undefined> {
    if (skip === undefined) return undefined;
    if (!Array.isArray(skip) || skip.some((id) => typeof id !== "string")) {
      throw invalidArgument("`skip` must be an array of event ids");
    }
    if (skip.length === 0) return undefined;
    const host = this.#host;
    await host.whenComplete();
    host.checkOpen();
    let found: ArrayLike<number>;
    try {
      found = host.core.positionsOf([...skip]);
    } catch (error) {
      rethrow(error);
    }
    const positions = Array.from(found).filter((p) => p > 0);
    return positions.length === 0 ? undefined : positions.sort((a, b) => a - b);
  }

  /**
   * The state right after `target` without the events at `skipped` positions: from the
   * nearest base before both (the confirmed state, a checkpoint, a visited state, the
   * stored snapshot, a what-if state of the same events off), replaying the rest and
   * leaving checkpoints behind so that scrubbing back and forth stays cheap (what-if states
   * apart from the log's).
   */
  async #stateAt(rt: ProjectionRuntime, target: number, skipping: number[] | undefined): Promise<unknown> {
    const host = this.#host;
    const relevant = skipping?.filter((p) => p <= target);
    const skipped = relevant && relevant.length > 0 ? relevant : undefined;
    const limit = skipped ? Math.min(target, skipped[0]! - 1) : target;
    if (limit === host.head() && !rt.rebuilding) {
      const json = JSON.stringify(rt.state);
      return json === undefined ? undefined : JSON.parse(json);
    }
    let base: Checkpoint | undefined;
    if (limit >= rt.position) {
      const json = JSON.stringify(rt.confirmed);
      if (json !== undefined) base = { position: rt.position, json };
    }
    base ??= rt.checkpointAtOrBefore(limit);
    const basePosition = base?.position ?? 0;
    if (rt.wantsSnapshot(limit, basePosition)) {
      const reply = (await host.core.snapshot(rt.name).catch(rethrow)) as string | undefined;
      if (reply !== undefined) {
        const snapshot = JSON.parse(reply) as SnapshotReply;
        const stored = unwrapSnapshot(snapshot.state);
        if (
          snapshot.position <= limit &&
          snapshot.position > basePosition &&
          this.#trusted(rt, snapshot, host.confirmedHead()) &&
          this.#stillUnknown(stored)
        ) {
          base = { position: snapshot.position, json: JSON.stringify(stored.state) };
        }
      }
    }
    if ((base?.position ?? 0) < host.core.loadedAfter) await host.whenComplete();
    host.checkOpen();
    const generation = host.generation();
    // A what-if state reached before with the same events off may be nearer still.
    const whatIfKey = skipped ? skipping!.join(",") : undefined;
    if (whatIfKey !== undefined) {
      const nearer = rt.whatIfAtOrBefore(whatIfKey, target);
      if (nearer && nearer.position > (base?.position ?? 0)) base = nearer;
    }
    let state: unknown = base ? restoreState(base.json) : rt.initial();
    const skips = skipped ? new Set(skipped) : undefined;
    // A rebuilding projection keeps checkpoints only where its rebuild has been.
    const confirmedTo = rt.rebuilding ? rt.position : host.confirmedHead();
    const remembers = target <= host.confirmedHead();
    // Stepping back past the visited states: keep the ones just before the target too.
    const trailFrom =
      remembers && whatIfKey === undefined && rt.steppingBack(target) ? Math.max(target - STEP_BACK_TRAIL, 1) : Infinity;
    // Below what retention kept: that part of the log comes from the sync server.
    const start = base?.position ?? 0;
    let dropped = host.core.dropped;
    let early: AnnalsEvent[] = [];
    // The policy may cut further while the server is asked: ask again for what it dropped.
    while (start + early.length < Math.min(target, dropped)) {
      const from = start + early.length;
      const fetched = await this.#fetchDropped(from, Math.min(target, dropped), `stateAt("${rt.name}", ${target})`);
      host.checkOpen();
      if (fetched.length === 0) {
        // Nothing came: the core's read says what is missing (NOT_RETAINED).
        this.#range(from, Math.min(target, dropped));
        break;
      }
      early = early.concat(fetched);
      dropped = host.core.dropped;
    }
    host.checkOpen();
    this.#stoppedAt = undefined;
    for (let after = start; after < target; after += REPLAY_CHUNK) {
      const to = Math.min(after + REPLAY_CHUNK, target);
      // Fetched events are gapless from `start + 1`; the rest is held here.
      const events =
        after < dropped && early.length > 0
          ? early.slice(after - start, Math.min(to, dropped) - start).concat(this.#range(Math.min(to, dropped), to))
          : this.#range(after, to);
      if (skips) {
        state = this.#foldWhatIf(rt, state, events, skips, whatIfKey!, generation === host.generation() ? Math.min(target - 1, confirmedTo) : after);
      } else {
        const checkpointsTo = generation === host.generation() ? Math.min(to, target - 1, confirmedTo) : after;
        const taken = new TakenCheckpoints();
        state = this.#foldTaking(rt, state, events, 0, after, checkpointsTo, taken, generation === host.generation() ? trailFrom : Infinity);
        rt.keep(taken);
      }
      // `unknownEvents: "fail"`: nothing after the unknown event.
      if (this.#stoppedAt !== undefined) break;
    }
    this.#stoppedAt = undefined;
    if (remembers && generation === host.generation()) {
      // Stepping around a position just visited starts from it.
      const json = this.#json(rt, state);
      if (json !== undefined) {
        if (whatIfKey === undefined) rt.visit(target, json);
        else rt.keepWhatIf(whatIfKey, target, json);
      }
      if (whatIfKey === undefined) rt.lastTravel = target;
    }
    return state;
  }

  /**
   * Folds `events` without those at `skips`, keeping what-if checkpoints (of this set of
   * events off) where the plan spaces checkpoints, up to `keepTo`: the panel steps around a
   * what-if as cheaply as around the log itself.
   */
  #foldWhatIf(
    rt: ProjectionRuntime,
    state: unknown,
    events: readonly AnnalsEvent[],
    skips: ReadonlySet<number>,
    key: string,
    keepTo: number,
  ): unknown {
    if (events.length === 0) return state;
    const due = rt.checkpointsDue(events[0]!.position - 1, Math.min(events[events.length - 1]!.position, keepTo));
    let next = 0;
    const plain = this.#host.upcasters.plain;
    for (const event of events) {
      if (!skips.has(event.position)) {
        const admit = plain && event.schemaVersion === undefined ? 0 : this.#admit(event);
        if (admit === 2) break;
        if (admit === 0) state = this.#applyEvent(rt, state, event);
      }
      if (next < due.length && due[next] === event.position) {
        next++;
        const json = this.#json(rt, state);
        if (json !== undefined) rt.keepWhatIf(key, event.position, json);
      }
    }
    return state;
  }

  /** Events `after + 1 ..= to` as this build reads them (upcast). */
  #range(after: number, to: number): AnnalsEvent[] {
    if (to <= after) return [];
    let json: string;
    try {
      json = this.#host.core.range(after, to);
    } catch (error) {
      rethrow(error);
    }
    return this.#host.upcasters.upcastEvents(JSON.parse(json) as AnnalsEvent[]);
  }

  // ---- snapshots -----------------------------------------------------------------------

  /** Writes the snapshots that are due, spaced in time while events stream in. */
  schedule(): void {
    const host = this.#host;
    if (this.#snapshotting || host.isClosed() || !host.snapshots) return;
    const every = host.snapshotEvery;
    const due = [...this.#runtimes.values()].filter((rt) => !rt.rebuilding && rt.position - rt.snapshotPosition >= every);
    if (due.length === 0) return;
    // Each snapshot costs a serialisation and a transaction: they are spaced in time unless
    // far more than `snapshotEvery` events wait.
    const wait = this.#lastSnapshotAt + SNAPSHOT_SPACING_MS - Date.now();
    const urgent = due.some((rt) => rt.position - rt.snapshotPosition >= SNAPSHOT_BURST * every);
    if (wait > 0 && !urgent) {
      if (this.#snapshotTimer === undefined) {
        this.#snapshotTimer = setTimeout(() => {
          this.#snapshotTimer = undefined;
          this.schedule();
        }, wait);
        (this.#snapshotTimer as { unref?: () => void }).unref?.();
      }
      return;
    }
    this.#lastSnapshotAt = Date.now();
    this.#snapshotting = (async () => {
      await Promise.resolve(); // after the batch, never inside the append that caused it
      for (const rt of due) {
        if (host.isClosed()) return;
        await this.#writeSnapshot(rt);
      }
    })().finally(() => {
      this.#snapshotting = undefined;
    });
  }

  /** For close: waits for the snapshot being written, then writes the last ones. */
  async finish(): Promise<void> {
    // Rebuilds stop after their slice in hand (the store is closed); a partial snapshot resumes them.
    while (this.#rebuilds.size > 0) await Promise.allSettled([...this.#rebuilds]);
    await this.#snapshotting;
    // A database taken away takes no final snapshots (every write would fail with CLOSED).
    if (!this.#host.snapshots || this.#host.isLost()) return;
    for (const rt of this.#runtimes.values()) {
      if (rt.position > rt.snapshotPosition) await this.#writeSnapshot(rt);
    }
  }

  async #writeSnapshot(rt: ProjectionRuntime, again = false): Promise<void> {
    const position = rt.position;
    if (position <= rt.snapshotPosition && !(again && position > 0)) return;
    // A checkpoint taken at this position already holds the state as JSON.
    const json = rt.checkpoints.get(position) ?? this.#json(rt, rt.confirmed);
    if (json === undefined) return;
    const generation = this.#host.generation();
    const stored = wrapSnapshot(json, rt.rebuilding, [...rt.skipped.values()]);
    try {
      await this.#host.core.putSnapshot(rt.name, rt.version, position, stored);
      if (generation !== this.#host.generation()) return; // the log restarted meanwhile
      rt.snapshotPosition = position;
      rt.addCheckpoint(position, json);
    } catch (error) {
      const failure = fromWasmError(error);
      // Another tab cut the log past this position meanwhile (retention): the snapshot it
      // was cut against stays, and this one is of no use.
      if (failure instanceof AnnalsError && failure.code === "NOT_RETAINED") return;
      // A database taken away fails every write; the store already said so ("closed").
      if (generation === this.#host.generation() && !this.#host.isLost()) this.#host.reportError(failure);
    }
  }

  /** The confirmed log restarted: snapshots of the old one must not be loaded again. */
  #dropSnapshots(): void {
    const host = this.#host;
    if (!host.snapshots) return;
    const names = this.names();
    const previous = this.#snapshotting ?? Promise.resolve();
    this.#snapshotting = host
      .track(
        previous.then(async () => {
          for (const name of names) {
            await host.core.deleteSnapshot(name).catch((error: unknown) => {
              if (!host.isClosed()) host.reportError(fromWasmError(error));
            });
          }
        }),
      )
      .finally(() => {
        this.#snapshotting = undefined;
      });
  }
}

function rethrow(error: unknown): never {
  throw fromWasmError(error);
}
