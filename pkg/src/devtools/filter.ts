// The timeline's filter: which events match, and an index of the matching positions built
// by scanning the log in chunks that each take a few milliseconds, yielding between them,
// so that filtering a million events never blocks the page.

import type { AnnalsEvent } from "../types.js";
import { now, yieldToMain } from "./schedule.js";

/** What the user typed; empty fields match everything. */
export interface EventFilter {
  /** A part of the stream id (case-insensitive). */
  stream: string;
  /** A part of the event type (case-insensitive). */
  type: string;
  /** A part of anything else: the data, meta, id or origin as JSON (case-insensitive). */
  text: string;
}

export const NO_FILTER: EventFilter = { stream: "", type: "", text: "" };

export function isEmptyFilter(filter: EventFilter): boolean {
  return !filter.stream.trim() && !filter.type.trim() && !filter.text.trim();
}

/** The filter as a predicate over stored events. */
export function compileFilter(filter: EventFilter): (event: AnnalsEvent) => boolean {
  const stream = filter.stream.trim().toLowerCase();
  const type = filter.type.trim().toLowerCase();
  const text = filter.text.trim().toLowerCase();
  return (event) => {
    if (stream && !event.stream.toLowerCase().includes(stream)) return false;
    if (type && !event.type.toLowerCase().includes(type)) return false;
    if (text) {
      // The cheap fields first: most text searches are for an id or a stream.
      if (event.id.toLowerCase().includes(text) || (event.origin ?? "").toLowerCase().includes(text)) return true;
      if (event.stream.toLowerCase().includes(text) || event.type.toLowerCase().includes(text)) return true;
      let json: string;
      try {
        json = JSON.stringify([event.data, event.meta ?? null]);
      } catch {
        return false;
      }
      return json.toLowerCase().includes(text);
    }
    return true;
  };
}

/** Reads events `after + 1 ..= to` (the store's `debugAccess(store).range`). */
export type RangeReader = (after: number, to: number) => AnnalsEvent[];

export interface FilterIndexOptions {
  /** How long one chunk may run before the scan yields. Default 8 ms. */
  budgetMs?: number;
  /** Called after each chunk (the timeline redraws its count and rows). */
  onProgress?: () => void;
  /** Waits for the next task; default {@link yieldToMain}. */
  yield?: () => Promise<void>;
}

/**
 * The ascending positions of the events that match a predicate, up to `scanned`. The scan
 * runs in the background: {@link FilterIndex.extend} asks for more of the log,
 * {@link FilterIndex.truncate} forgets what a rebase moved, {@link FilterIndex.stop} ends it.
 */
export class FilterIndex {
  #positions = new Uint32Array(1024);
  #length = 0;
  #scanned = 0;
  #target = 0;
  #running = false;
  #stopped = false;
  #chunk = 200;
  readonly #read: RangeReader;
  readonly #matches: (event: AnnalsEvent) => boolean;
  readonly #budgetMs: number;
  readonly #onProgress: () => void;
  readonly #yield: () => Promise<void>;
  #idle: Promise<void> = Promise.resolve();
  #resolveIdle: (() => void) | undefined;

  constructor(read: RangeReader, matches: (event: AnnalsEvent) => boolean, options: FilterIndexOptions = {}) {
    this.#read = read;
    this.#matches = matches;
    this.#budgetMs = options.budgetMs ?? 8;
    this.#onProgress = options.onProgress ?? (() => {});
    this.#yield = options.yield ?? yieldToMain;
  }

  /** Matching events found so far. */
  get length(): number {
    return this.#length;
  }

  /** The last position examined. */
  get scanned(): number {
    return this.#scanned;
  }

  /** True while positions up to the last asked head are still being examined. */
  get scanning(): boolean {
    return this.#running;
  }

  /** The position of the `index`-th match (0-based). */
  at(index: number): number {
    return this.#positions[index]!;
  }

  /** The index of the first match at or after `position` (binary search): `length` if none. */
  indexOf(position: number): number {
    let lo = 0;
    let hi = this.#length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#positions[mid]! < position) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Scans on up to `head`; resolves when the index has caught up (or was stopped). */
  extend(head: number): Promise<void> {
    this.#target = Math.max(this.#target, head);
    if (!this.#running && !this.#stopped && this.#scanned < this.#target) {
      this.#running = true;
      this.#idle = new Promise((resolve) => (this.#resolveIdle = resolve));
      void this.#run();
    }
    return this.#idle;
  }

  /** Forgets the positions after `after` (a rebase or reset moved them) and the log's end. */
  truncate(after: number, head: number): void {
    // Reads are synchronous, so this never lands in the middle of one: the scan goes on from `after`.
    this.#length = this.indexOf(after + 1);
    this.#scanned = Math.min(this.#scanned, after);
    this.#target = head;
  }

  /** Ends the scan for good (the filter changed or the panel closed). */
  stop(): void {
    this.#stopped = true;
  }

  async #run(): Promise<void> {
    try {
      while (!this.#stopped && this.#scanned < this.#target) {
        const started = now();
        // Several reads per chunk until the budget is spent, each sized from the last.
        while (this.#scanned < this.#target && now() - started < this.#budgetMs) {
          const from = this.#scanned;
          const to = Math.min(this.#target, from + this.#chunk);
          const t0 = now();
          const events = this.#read(from, to);
          for (const event of events) {
            if (this.#matches(event)) this.#push(event.position);
          }
          this.#scanned = to;
          const took = now() - t0;
          // Aim a read at a quarter of the budget, growing at most 4-fold at a time (a
          // fast read while the code is warm says little of the next one); 50 to 50,000 events.
          const perEvent = took / Math.max(1, to - from);
          const aim = Math.floor(this.#budgetMs / 4 / Math.max(perEvent, 1e-4));
          this.#chunk = Math.max(50, Math.min(50_000, this.#chunk * 4, aim));
        }
        this.#onProgress();
        await this.#yield();
      }
    } finally {
      this.#running = false;
      // The last word: views that drew while the last chunk yielded see the scan ended.
      this.#onProgress();
      this.#resolveIdle?.();
      this.#resolveIdle = undefined;
    }
  }

  #push(position: number): void {
    if (this.#length > 0 && this.#positions[this.#length - 1]! >= position) return;
    if (this.#length === this.#positions.length) {
      const grown = new Uint32Array(this.#positions.length * 2);
      grown.set(this.#positions);
      this.#positions = grown;
    }
    this.#positions[this.#length++] = position;
  }
}
