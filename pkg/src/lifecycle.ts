// The Page Lifecycle's `freeze` and `resume` events (on `document`, browsers only). They are
// followed in one place so that everything a frozen page must let go of (the sync lock, the
// process managers' locks, acting on other tabs' messages) is listed together in the store.

/** Where the page lifecycle's events arrive (`document`). */
export interface LifecycleTarget {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

export interface LifecycleHandlers {
  freeze(): void;
  resume(): void;
}

/** `document`, if this platform has one that fires events. */
export function pageLifecycleTarget(): LifecycleTarget | undefined {
  const doc = (globalThis as { document?: Partial<LifecycleTarget> }).document;
  if (typeof doc?.addEventListener !== "function" || typeof doc.removeEventListener !== "function") return undefined;
  return doc as LifecycleTarget;
}

/** Calls `handlers` on freeze and resume until `signal` aborts. */
export function followLifecycle(target: LifecycleTarget | undefined, handlers: LifecycleHandlers, signal: AbortSignal): void {
  if (!target || signal.aborted) return;
  const freeze = () => handlers.freeze();
  const resume = () => handlers.resume();
  target.addEventListener("freeze", freeze);
  target.addEventListener("resume", resume);
  signal.addEventListener("abort", () => {
    target.removeEventListener("freeze", freeze);
    target.removeEventListener("resume", resume);
  });
}
