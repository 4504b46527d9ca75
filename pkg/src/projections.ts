// The projections of one store: opening them from snapshots plus the log's tail, folding
// each change into confirmed and optimistic states, time travel (`stateAt`) from the nearest
// checkpoint or snapshot, and writing snapshots at a bounded pace. It sees the core only to
// read ranges and snapshots, and asks the core's rules where checkpoints go and which
// snapshot is trusted (once per batch, never per event); heads, the log's generation and
// errors come from its host.

import { AnnalsError, fromWasmError } from "./errors.js";
import { invalidArgument, type ProjectionSpec, wholeNumber } from "./options.js";
import { copyState, ProjectionRuntime, TakenCheckpoints } from "./projection-runtime.js";
import type { AnnalsEvent } from "./types.js";
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
    for (const rt of runtimes) {
      const reply = (await core.snapshot(rt.name)) as string | undefined;
      if (reply === undefined) continue;
      const snapshot = JSON.parse(reply) as SnapshotReply;
      confirmed = core.confirmedHead;
      if (!this.#trusted(rt, snapshot, confirmed)) continue;
      rt.confirmed = snapshot.state;
      rt.position = snapshot.position;
      rt.snapshotPosition = snapshot.position;
      if (snapshot.position > 0) rt.addCheckpoint(snapshot.position, JSON.stringify(snapshot.state));
    }
    // The events the snapshots do not cover come from storage first, part by part: the
    // next part is read while this one is folded. Nothing else changes the core meanwhile
    // (it completes the log before it takes in other writers' changes), but for a reset
    // seen while loading.
    let from = core.confirmedHead;
    for (const rt of runtimes) from = Math.min(from, rt.position);
    await core.loadFrom(from);
    if (core.logGeneration !== generation) return undefined;
    confirmed = core.confirmedHead;
    const head = core.head;
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
        const events = JSON.parse(core.range(after, to)) as AnnalsEvent[];
        for (const rt of runtimes) this.#foldConfirmed(rt, events);
        after = to;
      }
      if (next) await next;
      if (core.logGeneration !== generation || core.confirmedHead !== confirmed) return undefined;
    }
    const pending = head > confirmed ? (JSON.parse(core.range(confirmed, head)) as AnnalsEvent[]) : [];
    for (const rt of runtimes) {
      rt.state = pending.length > 0 ? this.#foldOptimistic(rt, copyState(rt.confirmed), pending) : rt.confirmed;
    }
    return { head, confirmed };
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

  /** Reports a projection's failure as `PROJECTION_FAILED`, once per `key`. */
  #reportOnce(key: string, message: string, cause: unknown): void {
    if (this.#reported.has(key)) return;
    if (this.#reported.size >= MAX_REMEMBERED_FAILURES) this.#reported.clear();
    this.#reported.add(key);
    this.#host.reportError(new AnnalsError("PROJECTION_FAILED", message, { cause }));
  }

  /** Folds confirmed events after the projection's position into its confirmed state, taking checkpoints. */
  #foldConfirmed(rt: ProjectionRuntime, events: readonly AnnalsEvent[]): void {
    let from = 0;
    while (from < events.length && events[from]!.position <= rt.position) from++;
    if (from === events.length) return;
    const to = events[events.length - 1]!.position;
    const taken = new TakenCheckpoints();
    rt.confirmed = this.#foldTaking(rt, rt.confirmed, events, from, rt.position, to, taken);
    rt.position = to;
    rt.keep(taken);
  }

  /**
   * Folds `events[from..]` (the events after `after`) into `state`, taking a checkpoint
   * (its JSON, what folding cost per event and what taking it cost) right after each
   * position the plan names in `after + 1 ..= dueTo`. Until the reducer's cost is known,
   * the plan is asked again after the first checkpoint, so that one long batch already
   * gets the spacing its cost calls for.
   */
  #foldTaking(
    rt: ProjectionRuntime,
    state: unknown,
    events: readonly AnnalsEvent[],
    from: number,
    after: number,
    dueTo: number,
    taken: TakenCheckpoints,
  ): unknown {
    let due = rt.checkpointsDue(after, dueTo);
    const measuring = rt.adaptive;
    let replanned = !measuring || rt.measured;
    let next = 0;
    let nextDue = due.length > 0 ? due[0]! : Infinity;
    let since = nextDue === Infinity ? 0 : performance.now();
    let folded = 0;
    for (let i = from; i < events.length; i++) {
      const event = events[i]!;
      state = this.#applyEvent(rt, state, event);
      folded++;
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
    for (const event of events) state = this.#applyEvent(rt, state, event);
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
    for (const target of [...new Set(targets)].sort((a, b) => a - b)) {
      const json = this.#json(rt, await this.#stateAt(rt, target, skipped));
      byPosition.set(target, json ?? "null");
    }
    return targets.map((t) => byPosition.get(t)!);
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
    if (limit === host.head()) {
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
        if (
          snapshot.position <= limit &&
          snapshot.position > basePosition &&
          this.#trusted(rt, snapshot, host.confirmedHead())
        ) {
          base = { position: snapshot.position, json: JSON.stringify(snapshot.state) };
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
    let state: unknown = base ? JSON.parse(base.json) : rt.initial();
    const skips = skipped ? new Set(skipped) : undefined;
    for (let after = base?.position ?? 0; after < target; after += REPLAY_CHUNK) {
      const to = Math.min(after + REPLAY_CHUNK, target);
      const events = JSON.parse(this.#rangeJson(after, to)) as AnnalsEvent[];
      if (skips) {
        state = this.#foldWhatIf(rt, state, events, skips, whatIfKey!, generation === host.generation() ? Math.min(target - 1, host.confirmedHead()) : after);
        continue;
      }
      const checkpointsTo = generation === host.generation() ? Math.min(to, target - 1, host.confirmedHead()) : after;
      const taken = new TakenCheckpoints();
      state = this.#foldTaking(rt, state, events, 0, after, checkpointsTo, taken);
      rt.keep(taken);
    }
    if (target <= host.confirmedHead() && generation === host.generation()) {
      // Stepping around a position just visited starts from it.
      const json = this.#json(rt, state);
      if (json !== undefined) {
        if (whatIfKey === undefined) rt.visit(target, json);
        else rt.keepWhatIf(whatIfKey, target, json);
      }
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
    for (const event of events) {
      if (!skips.has(event.position)) state = this.#applyEvent(rt, state, event);
      if (next < due.length && due[next] === event.position) {
        next++;
        const json = this.#json(rt, state);
        if (json !== undefined) rt.keepWhatIf(key, event.position, json);
      }
    }
    return state;
  }

  #rangeJson(after: number, to: number): string {
    try {
      return this.#host.core.range(after, to);
    } catch (error) {
      rethrow(error);
    }
  }

  // ---- snapshots -----------------------------------------------------------------------

  /** Writes the snapshots that are due, spaced in time while events stream in. */
  schedule(): void {
    const host = this.#host;
    if (this.#snapshotting || host.isClosed() || !host.snapshots) return;
    const every = host.snapshotEvery;
    const due = [...this.#runtimes.values()].filter((rt) => rt.position - rt.snapshotPosition >= every);
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
    await this.#snapshotting;
    // A database taken away takes no final snapshots (every write would fail with CLOSED).
    if (!this.#host.snapshots || this.#host.isLost()) return;
    for (const rt of this.#runtimes.values()) {
      if (rt.position > rt.snapshotPosition) await this.#writeSnapshot(rt);
    }
  }

  async #writeSnapshot(rt: ProjectionRuntime): Promise<void> {
    const position = rt.position;
    if (position <= rt.snapshotPosition) return;
    // A checkpoint taken at this position already holds the state as JSON.
    const json = rt.checkpoints.get(position) ?? this.#json(rt, rt.confirmed);
    if (json === undefined) return;
    const generation = this.#host.generation();
    try {
      await this.#host.core.putSnapshot(rt.name, rt.version, position, json);
      if (generation !== this.#host.generation()) return; // the log restarted meanwhile
      rt.snapshotPosition = position;
      rt.addCheckpoint(position, json);
    } catch (error) {
      // A database taken away fails every write; the store already said so ("closed").
      if (generation === this.#host.generation() && !this.#host.isLost()) this.#host.reportError(fromWasmError(error));
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
