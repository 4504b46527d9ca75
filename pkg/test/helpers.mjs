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
