// One projection's folded states and its checkpoints. Where checkpoints go, which stay as
// the log grows and which one serves a target are the core's rule (src/checkpoints.rs,
// through a `WasmCheckpointPlan` asked once per batch); this keeps only the states, as JSON
// by position: the positions the plan keeps.

import type { AnyProjection } from "./options.js";
import type { Checkpoint, WasmCheckpointPlan } from "./wasm-contract.js";

const NONE = new Float64Array(0);

/** A fresh deep copy of JSON-like data (structuredClone, else JSON). */
export function copyState(state: unknown): unknown {
  if (state === null || typeof state !== "object") return state;
  try {
    return structuredClone(state);
  } catch {
    return JSON.parse(JSON.stringify(state)) as unknown;
  }
}

/**
 * A state kept as JSON, made live again for a reducer to fold on. The parsed value is
 * structured-cloned: V8 falls off its fast path when a reducer spreads large objects that
 * `JSON.parse` built (measured in Chromium 156: a 1,000-key `{ ...state }` took about 150 µs
 * per event instead of 2), and that reducer's code then stays slow for every state it
 * meets; the clone's objects are ordinary ones. It costs about one more parse.
 */
export function restoreState(json: string): unknown {
  const parsed = JSON.parse(json) as unknown;
  return copyState(parsed);
}

/** Checkpoints taken while folding one batch, for one `record`. */
export class TakenCheckpoints {
  readonly positions: number[] = [];
  readonly states: string[] = [];
  /** ms of folding per event since the previous checkpoint of the batch (or its start); 0 if not measured. */
  readonly costs: number[] = [];
  /** ms that serialising each state took; 0 if not measured. */
  readonly takeMs: number[] = [];

  clear(): void {
    this.positions.length = 0;
    this.states.length = 0;
    this.costs.length = 0;
    this.takeMs.length = 0;
  }

  add(position: number, json: string, cost = 0, takeMs = 0): void {
    this.positions.push(position);
    this.states.push(json);
    this.costs.push(cost);
    this.takeMs.push(takeMs);
  }
}

/** A confirmed event a projection left out (unknown to this build): its type, schema version and position. */
export interface SkippedEvent {
  type: string;
  schemaVersion: number;
  position: number;
}

/** States recently reached by time travel, kept so that stepping around them stays cheap. */
const VISITED_STATES = 64;
/** The share of the checkpoint budget the visited states may hold at most. */
const VISITED_BUDGET_SHARE = 0.25;
/**
 * Stepping back past the visited states: how many states right before the target the refold
 * keeps as visited, so that the next steps back start one event away.
 */
export const STEP_BACK_TRAIL = 32;
/** What-if states kept for the one set of events off being looked at. */
const WHAT_IF_STATES = 256;

export class ProjectionRuntime {
  /** The state folded from confirmed events up to `position`. */
  confirmed: unknown;
  /**
   * The optimistic state: `confirmed` itself while nothing is pending, else a copy of it
   * with the pending events folded in.
   */
  state: unknown;
  /** The last confirmed position folded into `confirmed`. */
  position = 0;
  /** Position of the last snapshot stored (or loaded). */
  snapshotPosition = 0;
  readonly subscribers = new Set<(state: unknown) => void>();
  /** Confirmed states as JSON, by position: exactly the positions the plan keeps. */
  readonly #checkpoints = new Map<number, string>();
  /** States that time travel reached lately, by position (most recent last), as JSON. */
  readonly #visited = new Map<number, string>();
  /** What `#visited` holds, in bytes of JSON. */
  #visitedBytes = 0;
  /** The position time travel reached last (0: none yet). */
  lastTravel = 0;
  /** What-if states (folded with the events of `key` off), by position: one set of events off at a time. */
  #whatIf: { key: string; states: Map<number, string> } | undefined;
  /** What the app sees while the store is frozen (`freeze`), else undefined. */
  frozen: { state: unknown } | undefined;
  /**
   * Rebuilding in the background (its `version` changed, or a cut rebuild resumes): the
   * store's changes are not folded into it; the rebuild folds the log up to the head, then
   * the pending events.
   */
  rebuilding = false;
  /**
   * `unknownEvents: "fail"`: the position of the confirmed event this build cannot read;
   * nothing at or after it is folded (until a build that knows it opens).
   */
  blockedAt: number | undefined;
  /**
   * Confirmed events left out of `confirmed` because this build cannot read them, by type
   * and schema version (the first position of each): a snapshot records them, so that a
   * build that knows them folds them again.
   */
  readonly skipped = new Map<string, SkippedEvent>();
  /** The plan has heard what folding costs (it then places checkpoints by it). */
  #measured = false;
  /** Undefined once released (the store closed): then no checkpoint is taken or kept. */
  #plan: WasmCheckpointPlan | undefined;

  constructor(
    readonly name: string,
    readonly def: AnyProjection,
    readonly version: number,
    plan: WasmCheckpointPlan,
    /** Whether the plan hears what folding costs (and so places checkpoints by it). */
    readonly adaptive = false,
  ) {
    this.#plan = plan;
    this.confirmed = this.initial();
    this.state = this.confirmed;
  }

  /** A fresh copy of `initial`, so that a mutating reducer cannot change it. */
  initial(): unknown {
    return copyState(this.def.initial);
  }

  /** Whether the plan knows what this reducer costs yet. */
  get measured(): boolean {
    return this.#measured;
  }

  /** The kept checkpoints' states, by position. */
  get checkpoints(): ReadonlyMap<number, string> {
    return this.#checkpoints;
  }

  /** Events between checkpoints now (the plan doubles it as the log grows). */
  get checkpointEvery(): number {
    return this.#plan?.every ?? Infinity;
  }

  /** The state the app sees: the frozen one while frozen, else the optimistic one. */
  get shown(): unknown {
    return this.frozen ? this.frozen.state : this.state;
  }

  /** The confirmed log restarted: so does the projection, and its checkpoint spacing. */
  reset(): void {
    this.confirmed = this.initial();
    this.state = this.confirmed;
    this.position = 0;
    this.snapshotPosition = 0;
    this.blockedAt = undefined;
    this.skipped.clear();
    this.#checkpoints.clear();
    this.#visited.clear();
    this.#visitedBytes = 0;
    this.lastTravel = 0;
    this.#whatIf = undefined;
    this.#plan?.reset();
  }

  /** Remembers a confirmed state time travel reached (a few, the latest). */
  visit(position: number, json: string): void {
    const plan = this.#plan;
    if (!plan) return;
    const visited = this.#visited;
    this.#visitedBytes += json.length - (visited.get(position)?.length ?? 0);
    visited.delete(position);
    visited.set(position, json);
    const maxBytes = plan.maxBytes * VISITED_BUDGET_SHARE;
    while (visited.size > 1 && (visited.size > VISITED_STATES || this.#visitedBytes > maxBytes)) {
      const [oldest, state] = visited.entries().next().value!;
      visited.delete(oldest);
      this.#visitedBytes -= state.length;
    }
  }

  /**
   * Whether a query at `target` steps back from the last one (by at most the trail's
   * length): then its refold keeps the states before it (`STEP_BACK_TRAIL`).
   */
  steppingBack(target: number): boolean {
    return target < this.lastTravel && this.lastTravel - target <= STEP_BACK_TRAIL;
  }

  /** Keeps a what-if state of the events of `key` off (another key replaces the kept ones). */
  keepWhatIf(key: string, position: number, json: string): void {
    if (!this.#plan) return;
    if (this.#whatIf?.key !== key) this.#whatIf = { key, states: new Map() };
    const states = this.#whatIf.states;
    states.delete(position);
    states.set(position, json);
    if (states.size > WHAT_IF_STATES) {
      const oldest = states.keys().next().value;
      if (oldest !== undefined) states.delete(oldest);
    }
  }

  /** The kept what-if state of `key` nearest at or before `position`. */
  whatIfAtOrBefore(key: string, position: number): Checkpoint | undefined {
    if (this.#whatIf?.key !== key) return undefined;
    let best: Checkpoint | undefined;
    for (const [at, json] of this.#whatIf.states) {
      if (at <= position && at > (best?.position ?? 0)) best = { position: at, json };
    }
    return best;
  }

  /** What the checkpoints (and the visited states) hold now. */
  stats(): { count: number; bytes: number; budgetBytes: number } {
    let bytes = (this.#plan?.bytes ?? 0) + this.#visitedBytes;
    const whatIf = this.#whatIf?.states;
    if (whatIf) for (const json of whatIf.values()) bytes += json.length;
    const count = this.#checkpoints.size + this.#visited.size + (whatIf?.size ?? 0);
    return { count, bytes, budgetBytes: this.#plan?.maxBytes ?? 0 };
  }

  /** The positions in `after + 1 ..= to` at which to take a checkpoint while folding them. */
  checkpointsDue(after: number, to: number): Float64Array {
    return this.#plan && to > after ? this.#plan.due(after, to) : NONE;
  }

  /** Before replaying `from + 1 ..= to`: widens the spacing to what the replay ends with. */
  prepareReplay(from: number, to: number): void {
    if (to > from) this.#plan?.prepareReplay(from, to);
  }

  /** Keeps the checkpoints taken in one batch, and drops the states the plan lets go. */
  keep(taken: TakenCheckpoints): void {
    const plan = this.#plan;
    const count = taken.positions.length;
    if (!plan || count === 0) return;
    const bytes = new Float64Array(count);
    for (let i = 0; i < count; i++) {
      this.#checkpoints.set(taken.positions[i]!, taken.states[i]!);
      bytes[i] = taken.states[i]!.length;
      if (taken.costs[i]! > 0) this.#measured = true;
    }
    const dropped = plan.record(
      Float64Array.from(taken.positions),
      bytes,
      Float64Array.from(taken.costs),
      Float64Array.from(taken.takeMs),
    );
    for (const position of dropped) this.#checkpoints.delete(position);
  }

  /** Keeps one checkpoint (a snapshot's state). */
  addCheckpoint(position: number, json: string): void {
    const taken = new TakenCheckpoints();
    taken.add(position, json);
    this.keep(taken);
  }

  /** The kept checkpoint or visited state nearest at or before `position`. */
  checkpointAtOrBefore(position: number): Checkpoint | undefined {
    const at = this.#plan?.baseFor(position);
    const json = at === undefined ? undefined : this.#checkpoints.get(at);
    let best: Checkpoint | undefined = json === undefined ? undefined : { position: at!, json };
    for (const [visited, state] of this.#visited) {
      if (visited <= position && visited > (best?.position ?? 0)) best = { position: visited, json: state };
    }
    return best;
  }

  /** Whether replaying from `base` to `target` is far enough to look at the stored snapshot first. */
  wantsSnapshot(target: number, base: number): boolean {
    return this.#plan?.wantsSnapshot(target, base) ?? false;
  }

  /** The store closed: the plan's memory in the core goes, and with it the checkpoints. */
  release(): void {
    const plan = this.#plan;
    this.#plan = undefined;
    this.#checkpoints.clear();
    this.#visited.clear();
    this.#visitedBytes = 0;
    this.#whatIf = undefined;
    plan?.free();
  }
}
