// What the panel's views share for one source (the app's store, or an opened bundle): the
// selected position, the selected projection, and the events switched off (what-if).

import type { DebugAccess } from "../debug.js";
import type { EventShape, Store } from "../types.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyStore = Store<EventShape, any, any>;

/** A value views watch. */
export class Signal<T> {
  #value: T;
  #listeners = new Set<(value: T) => void>();

  constructor(value: T) {
    this.#value = value;
  }

  get value(): T {
    return this.#value;
  }

  set(value: T): void {
    if (Object.is(value, this.#value)) return;
    this.#value = value;
    for (const listener of [...this.#listeners]) listener(value);
  }

  subscribe(listener: (value: T) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}

/** The events switched off in the timeline, by id: `stateAt(..., { skip })`. */
export class WhatIf {
  #off = new Map<string, number>();
  readonly changed = new Signal(0);

  /** How many events are off. */
  get count(): number {
    return this.#off.size;
  }

  isOff(id: string): boolean {
    return this.#off.has(id);
  }

  /** Switches the event with `id` (at `position`, for the badge's list) off or back on. */
  set(id: string, position: number, off: boolean): void {
    if (off) this.#off.set(id, position);
    else this.#off.delete(id);
    this.changed.set(this.changed.value + 1);
  }

  /** Every event back on. */
  clear(): void {
    if (this.#off.size === 0) return;
    this.#off.clear();
    this.changed.set(this.changed.value + 1);
  }

  /** The ids to skip (in position order). */
  skip(): string[] {
    return [...this.#off.entries()].sort((a, b) => a[1] - b[1]).map(([id]) => id);
  }

  /** The positions switched off, ascending. */
  positions(): number[] {
    return [...this.#off.values()].sort((a, b) => a - b);
  }
}

/** One source the panel shows. */
export interface Source {
  /** `"app"` for the store the panel was mounted on, `"bundle"` for an opened bug bundle. */
  kind: "app" | "bundle";
  label: string;
  store: AnyStore;
  access: DebugAccess;
  /** The selected position (0: the initial state). */
  position: Signal<number>;
  /** True while the selection follows the head as events arrive. */
  follow: Signal<boolean>;
  projection: Signal<string>;
  whatIf: WhatIf;
}

/** Clamps a typed position into `0..=head`. */
export function clampPosition(position: number, head: number): number {
  if (!Number.isFinite(position)) return head;
  return Math.max(0, Math.min(head, Math.floor(position)));
}
