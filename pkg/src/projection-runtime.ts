// One projection's folded states and its checkpoints. The checkpoint list is bounded: past
// MAX_CHECKPOINTS every other one goes and the spacing doubles, so a long log keeps a
// fixed-size list whose entries are spread over all of it.

import type { Checkpoint } from "./wasm-contract.js";
import type { AnyProjection } from "./options.js";

/** Checkpoints kept per projection; past it, every other one goes and the interval doubles. */
export const MAX_CHECKPOINTS = 64;

/** A fresh deep copy of JSON-like data (structuredClone, else JSON). */
export function copyState(state: unknown): unknown {
  if (state === null || typeof state !== "object") return state;
  try {
    return structuredClone(state);
  } catch {
    return JSON.parse(JSON.stringify(state)) as unknown;
  }
}

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
  /** Ascending by position; confirmed states only. */
  checkpoints: Checkpoint[] = [];
  checkpointEvery: number;

  constructor(
    readonly name: string,
    readonly def: AnyProjection,
    readonly version: number,
    checkpointEvery: number,
  ) {
    this.checkpointEvery = checkpointEvery;
    this.confirmed = this.initial();
    this.state = this.confirmed;
  }

  /** A fresh copy of `initial`, so that a mutating reducer cannot change it. */
  initial(): unknown {
    return copyState(this.def.initial);
  }

  /** The confirmed log restarted: so does the projection. */
  reset(): void {
    this.confirmed = this.initial();
    this.state = this.confirmed;
    this.position = 0;
    this.snapshotPosition = 0;
    this.checkpoints = [];
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
