// Shared helpers for the node tests (not a test file itself).
import assert from "node:assert/strict";

import { AnnalsError, openStore } from "annals";

let counter = 0;
/** A store name no other test uses (matters for `sharedMemory` stores). */
export function uniqueName(prefix = "test") {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}-${Date.now()}`;
}

/** A memory store with a `count` and a `byStream` projection. */
export function openTestStore(options = {}) {
  return openStore({
    name: uniqueName(),
    storage: "memory",
    projections: {
      count: { initial: 0, apply: (n) => n + 1 },
      byStream: {
        initial: {},
        apply: (s, e) => ({ ...s, [e.stream]: (s[e.stream] ?? 0) + 1 }),
      },
    },
    ...options,
  });
}

/** Asserts that `promiseOrFn` rejects (or throws) an AnnalsError with `code`; returns it. */
export async function rejectsWith(promiseOrFn, code, message) {
  let error;
  try {
    await (typeof promiseOrFn === "function" ? promiseOrFn() : promiseOrFn);
  } catch (e) {
    error = e;
  }
  assert.ok(error !== undefined, `${message ?? "call"}: expected ${code}, but it succeeded`);
  assert.ok(error instanceof AnnalsError, `${message ?? "call"}: expected an AnnalsError, got ${error}`);
  assert.ok(error instanceof Error);
  assert.equal(error.name, "AnnalsError");
  assert.equal(error.code, code, `${message ?? "call"}: ${error.message}`);
  return error;
}

/** Resolves with the next value `subscribe(callback)` delivers, or rejects after `ms`. */
export function next(subscribe, ms = 2000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`nothing arrived within ${ms} ms`));
    }, ms);
    const off = subscribe((value) => {
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

/** `n` events spread over `streams` streams. */
export function makeEvents(n, { streams = 3, type = "Counted", from = 0 } = {}) {
  return Array.from({ length: n }, (_, i) => ({
    stream: `s-${(from + i) % streams}`,
    type,
    data: { i: from + i },
  }));
}

/**
 * A stand-in for `navigator.locks` (Node has none): exclusive locks by name, granted in
 * request order, released when the callback's promise settles; `signal` aborts a request
 * still waiting. Installs `globalThis.navigator` if missing.
 */
export function installFakeLocks() {
  const queues = new Map();
  const grant = (name) => {
    const queue = queues.get(name);
    const entry = queue?.[0];
    if (!entry || entry.granted) return;
    entry.granted = true;
    Promise.resolve()
      .then(() => entry.callback({ name, mode: "exclusive" }))
      .then(entry.resolve, entry.reject)
      .finally(() => {
        queue.shift();
        if (queue.length === 0) queues.delete(name);
        else grant(name);
      });
  };
  const locks = {
    request(name, options, callback) {
      if (typeof options === "function") {
        callback = options;
        options = {};
      }
      return new Promise((resolve, reject) => {
        const entry = { callback, resolve, reject, granted: false };
        const signal = options?.signal;
        if (signal?.aborted) {
          reject(new DOMException("aborted", "AbortError"));
          return;
        }
        signal?.addEventListener("abort", () => {
          const queue = queues.get(name);
          const i = queue?.indexOf(entry) ?? -1;
          if (i >= 0 && !entry.granted) {
            queue.splice(i, 1);
            reject(new DOMException("aborted", "AbortError"));
          }
        });
        if (!queues.has(name)) queues.set(name, []);
        queues.get(name).push(entry);
        grant(name);
      });
    },
    held: (name) => queues.get(name)?.[0]?.granted === true,
  };
  globalThis.navigator ??= {};
  globalThis.navigator.locks = locks;
  return locks;
}

/** Waits until `check()` is truthy (polling), or fails after `ms`. */
export async function eventually(check, ms = 5000, what = "condition") {
  const until = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error(`${what}: not met within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
