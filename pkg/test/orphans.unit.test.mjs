// orphans.ts with a fake localStorage: the unsynced events of a database deleted under a
// store survive a reload (this module's memory is gone then; localStorage is not) up to a
// bound, are appended again once by the next store of that name, and are kept when that fails.
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { adoptOrphans, keepOrphans, keptOrphans, MAX_PERSISTED_CHARS, orphansKey } from "../dist/orphans.js";

/** localStorage as browsers have it, with a quota in characters. */
class FakeLocalStorage {
  items = new Map();
  constructor(quota = 5_000_000) {
    this.quota = quota;
  }
  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }
  setItem(key, value) {
    const others = [...this.items].filter(([k]) => k !== key).reduce((n, [k, v]) => n + k.length + v.length, 0);
    if (others + key.length + value.length > this.quota) {
      throw new DOMException("quota", "QuotaExceededError");
    }
    this.items.set(key, String(value));
  }
  removeItem(key) {
    this.items.delete(key);
  }
}

let n = 0;
function outboxEvent(data = "x") {
  n += 1;
  return { id: `0190000${String(n).padStart(5, "0")}-0000-7000-8000-000000000000`, stream: "s", type: "Added", data, time: 1 };
}

/** A page load: the module's memory is the previous page's in this process, so each test uses new names. */
let name;
beforeEach(() => {
  name = `orphans-${++n}`;
  globalThis.localStorage = new FakeLocalStorage();
});

/** A reopened store that records what it appends. */
function host({ fail = false } = {}) {
  const appended = [];
  return {
    appended,
    name,
    synced: false,
    isLeader: () => true,
    isClosed: () => false,
    sync: async () => undefined,
    appendMany: async (events) => {
      if (fail) throw new Error("quota");
      appended.push(...events);
    },
    reportError: (error) => appended.push({ error }),
  };
}

test("kept orphans are written to localStorage, in the form a later page reads", () => {
  const events = [outboxEvent("a"), { ...outboxEvent("b"), expectedVersion: 1, meta: { m: 1 } }];
  assert.deepEqual(keepOrphans(name, events), { kept: 2, persisted: 2 });
  assert.deepEqual(JSON.parse(globalThis.localStorage.getItem(orphansKey(name))), { v: 1, events });
});

test("after a reload, the next store of that name appends the orphans found in localStorage, once", async () => {
  // What an earlier page left (this page's memory has nothing of this name).
  const events = [outboxEvent("a"), { ...outboxEvent("b"), expectedVersion: 1, meta: { m: 1 } }];
  globalThis.localStorage.setItem(orphansKey(name), JSON.stringify({ v: 1, events }));
  const store = host();
  await adoptOrphans(store);
  assert.deepEqual(store.appended, [
    { id: events[0].id, stream: "s", type: "Added", data: "a" },
    { id: events[1].id, stream: "s", type: "Added", data: "b", meta: { m: 1 }, expectedVersion: 1 },
  ]);
  assert.equal(globalThis.localStorage.getItem(orphansKey(name)), null, "forgotten once appended");
  const next = host();
  await adoptOrphans(next);
  assert.deepEqual(next.appended, [], "appended once");
});

test("orphans kept twice (two deletions, two tabs) are merged by id, in order", () => {
  const [a, b, c] = [outboxEvent(), outboxEvent(), outboxEvent()];
  keepOrphans(name, [a, b]);
  keepOrphans(name, [b, c]);
  assert.deepEqual(keptOrphans(name).map((e) => e.id), [a.id, b.id, c.id]);
  assert.deepEqual(
    JSON.parse(globalThis.localStorage.getItem(orphansKey(name))).events.map((e) => e.id),
    [a.id, b.id, c.id],
  );
});

test("past the bound, the first events are kept across a reload and the rest in this tab only", () => {
  const big = "x".repeat(Math.floor(MAX_PERSISTED_CHARS / 3));
  const events = [outboxEvent(big), outboxEvent(big), outboxEvent(big), outboxEvent(big)];
  assert.deepEqual(keepOrphans(name, events), { kept: 4, persisted: 2 });
  const persisted = JSON.parse(globalThis.localStorage.getItem(orphansKey(name))).events;
  assert.deepEqual(persisted.map((e) => e.id), [events[0].id, events[1].id]);
  assert.equal(keptOrphans(name).length, 4, "this tab still has all of them");
});

test("a full localStorage keeps fewer (or none) and says so", () => {
  globalThis.localStorage = new FakeLocalStorage(300);
  const events = [outboxEvent("a".repeat(100)), outboxEvent("b".repeat(100)), outboxEvent("c".repeat(100))];
  const kept = keepOrphans(name, events);
  assert.equal(kept.kept, 3);
  assert.ok(kept.persisted < 3);
  globalThis.localStorage = new FakeLocalStorage(10);
  const other = `${name}-other`;
  assert.deepEqual(keepOrphans(other, [outboxEvent()]), { kept: 1, persisted: 0 });
});

test("without localStorage (Node, a sandboxed frame) orphans stay in this tab's memory", async () => {
  delete globalThis.localStorage;
  assert.deepEqual(keepOrphans(name, [outboxEvent()]), { kept: 1, persisted: 0 });
  Object.defineProperty(globalThis, "localStorage", {
    configurable: true,
    get() {
      throw new DOMException("denied", "SecurityError");
    },
  });
  try {
    const store = host();
    await adoptOrphans(store);
    assert.equal(store.appended.length, 1);
  } finally {
    delete globalThis.localStorage;
  }
});

test("orphans whose append fails are kept, across a reload too, and the error reported", async () => {
  const events = [outboxEvent()];
  keepOrphans(name, events);
  const failing = host({ fail: true });
  await adoptOrphans(failing);
  assert.equal(failing.appended.length, 1);
  assert.ok(failing.appended[0].error instanceof Error);
  assert.deepEqual(JSON.parse(globalThis.localStorage.getItem(orphansKey(name))).events, events);
  const store = host();
  await adoptOrphans(store);
  assert.equal(store.appended.length, 1);
});

test("an unreadable entry is ignored", async () => {
  globalThis.localStorage.setItem(orphansKey(name), "{not json");
  const store = host();
  await adoptOrphans(store);
  assert.deepEqual(store.appended, []);
});
