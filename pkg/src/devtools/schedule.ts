// Yielding to the event loop between chunks of work, so that a scan over a million events
// never holds the main thread. A MessageChannel message runs sooner than setTimeout(0)
// (which browsers clamp to 4 ms after a few nestings) and still lets input and painting in.

let channel: MessageChannel | undefined;
const waiting: (() => void)[] = [];

/** Resolves on a fresh task. */
export function yieldToMain(): Promise<void> {
  return new Promise((resolve) => {
    // Node (tests, server-side tools): setImmediate is its fresh task, and holds nothing open.
    const immediate = (globalThis as { setImmediate?: (callback: () => void) => unknown }).setImmediate;
    if (typeof immediate === "function") {
      immediate(resolve);
      return;
    }
    if (typeof MessageChannel === "undefined") {
      setTimeout(resolve, 0);
      return;
    }
    if (!channel) {
      channel = new MessageChannel();
      channel.port1.onmessage = () => waiting.shift()?.();
    }
    waiting.push(resolve);
    channel.port2.postMessage(null);
  });
}

/** `performance.now()` where it exists (every browser, Node), else `Date.now()`. */
export function now(): number {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}
