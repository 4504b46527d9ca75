// The store's listener sets ("change", "error", "sync", "rejected", "closed", "frozen", "rebuild") and how they
// are called: a throwing listener is reported as an error and never stops the others.

import { invalidArgument } from "./options.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyListener = (...args: any[]) => void;

export type StoreEventName = "change" | "error" | "sync" | "rejected" | "closed" | "frozen" | "rebuild";

const NAMES: readonly StoreEventName[] = ["change", "error", "sync", "rejected", "closed", "frozen", "rebuild"];

export class StoreEvents {
  readonly #sets = new Map<StoreEventName, Set<AnyListener>>(NAMES.map((name) => [name, new Set()]));

  /** Adds a listener; returns what removes it. */
  on(event: string, listener: AnyListener): () => void {
    if (typeof listener !== "function") throw invalidArgument("on needs a listener function");
    const set = this.#sets.get(event as StoreEventName);
    if (!set) {
      throw invalidArgument(`unknown event ${JSON.stringify(event)}: use "change", "error", "sync", "rejected", "closed", "frozen" or "rebuild"`);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  /** Calls every listener of `event` (a copy of the set: listeners may remove themselves). */
  emit(event: Exclude<StoreEventName, "error">, ...args: unknown[]): void {
    for (const listener of [...this.#sets.get(event)!]) this.safely(() => listener(...args));
  }

  /** Reports an error to the "error" listeners, or to the console when there is none. */
  error(error: unknown): void {
    const listeners = this.#sets.get("error")!;
    if (listeners.size === 0) {
      console.error("annals:", error);
      return;
    }
    for (const listener of [...listeners]) {
      try {
        listener(error);
      } catch (inner) {
        console.error("annals: an error listener threw", inner);
      }
    }
  }

  /** Runs app code (a listener, a subscriber); what it throws is reported, not thrown. */
  safely(f: () => void): void {
    try {
      f();
    } catch (error) {
      this.error(error);
    }
  }
}
