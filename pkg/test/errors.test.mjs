// Bad input: each case is an AnnalsError with the right code, writes nothing, and leaves the
// store usable.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { openStore } from "annals";

import { openTestStore, rejectsWith, uniqueName } from "./helpers.mjs";

const cyclic = { a: 1 };
cyclic.self = cyclic;
const cyclicArray = [];
cyclicArray.push(cyclicArray);

const base = { stream: "s", type: "T" };

const invalidEvents = {
  "a function in data": { ...base, data: { f() {} } },
  "a function as data": { ...base, data: () => 1 },
  "a symbol in data": { ...base, data: { s: Symbol("x") } },
  "a BigInt in data": { ...base, data: { n: 10n } },
  "a BigInt in meta": { ...base, meta: { n: 1n } },
  "NaN in data": { ...base, data: { n: Number.NaN } },
  "Infinity in data": { ...base, data: [Number.POSITIVE_INFINITY] },
  "-Infinity in data": { ...base, data: { deep: { n: Number.NEGATIVE_INFINITY } } },
  "a cycle in data": { ...base, data: cyclic },
  "a cyclic array in data": { ...base, data: cyclicArray },
  "no type": { stream: "s", data: 1 },
  "an empty type": { stream: "s", type: "" },
  "a blank type": { stream: "s", type: "   " },
  "a numeric type": { stream: "s", type: 7 },
  "a null type": { stream: "s", type: null },
  "no stream": { type: "T" },
  "an empty stream": { stream: "", type: "T" },
  "an object stream": { stream: { id: 1 }, type: "T" },
  "an event over 1 MiB": { ...base, data: "x".repeat(1024 * 1024 + 1) },
  "a stream name over the limit": { stream: "s".repeat(2000), type: "T" },
  "an id that is not a UUID": { ...base, id: "order-1" },
  "a numeric id": { ...base, id: 12 },
  "an unknown field": { ...base, expectedversion: 1 },
  "an envelope field": { ...base, position: 3 },
  'expectedVersion "never"': { ...base, expectedVersion: "never" },
  "a negative expectedVersion": { ...base, expectedVersion: -1 },
  "a fractional expectedVersion": { ...base, expectedVersion: 1.5 },
  "meta that is not an object": { ...base, meta: "note" },
  "meta that is an array": { ...base, meta: [1] },
  "null instead of an event": null,
  "a number instead of an event": 42,
  "a string instead of an event": "TodoAdded",
  "an array instead of an event": [base],
};

async function storeWithOneEvent() {
  const store = await openTestStore();
  await store.append({ stream: "s", type: "T", data: "kept" });
  return store;
}

async function assertUntouched(store) {
  assert.equal(store.head, 1);
  assert.equal(store.get("count"), 1);
  const events = await store.events();
  assert.equal(events.length, 1);
  assert.equal(events[0].data, "kept");
}

describe("invalid events are INVALID_EVENT and write nothing", () => {
  for (const [name, event] of Object.entries(invalidEvents)) {
    test(`append: ${name}`, async () => {
      const store = await storeWithOneEvent();
      const changes = [];
      store.on("change", (c) => changes.push(c));
      await rejectsWith(() => store.append(event), "INVALID_EVENT", name);
      await assertUntouched(store);
      assert.deepEqual(changes, []);
      // Still usable.
      const next = await store.append({ stream: "s", type: "T" });
      assert.equal(next.position, 2);
      await store.close();
    });
  }

  test("appendMany: one bad event in the middle rejects the whole batch", async () => {
    for (const [name, event] of Object.entries(invalidEvents)) {
      const store = await storeWithOneEvent();
      await rejectsWith(
        () => store.appendMany([{ stream: "a", type: "Good" }, event, { stream: "b", type: "Good" }]),
        "INVALID_EVENT",
        name,
      );
      await assertUntouched(store);
      await store.close();
    }
  });

  test("appendMany needs an array", async () => {
    const store = await storeWithOneEvent();
    for (const notArray of [undefined, null, { stream: "s", type: "T" }, "events"]) {
      await rejectsWith(() => store.appendMany(notArray), "INVALID_EVENT", String(notArray));
    }
    await assertUntouched(store);
    await store.close();
  });

  test("errors name the problem", async () => {
    const store = await storeWithOneEvent();
    const fn = await rejectsWith(() => store.append({ ...base, data: { handler() {} } }), "INVALID_EVENT");
    assert.match(fn.message, /event 0 \(T\): data\.handler is a function/);
    const big = await rejectsWith(() => store.append({ ...base, data: { n: 2n } }), "INVALID_EVENT");
    assert.match(big.message, /BigInt/);
    const cycle = await rejectsWith(() => store.append({ ...base, data: cyclic }), "INVALID_EVENT");
    assert.match(cycle.message, /circular|cyclic/i);
    const type = await rejectsWith(() => store.appendMany([base, { stream: "s" }]), "INVALID_EVENT");
    assert.match(type.message, /event 1: `type` is required/);
    const size = await rejectsWith(() => store.append({ ...base, data: "x".repeat(2 * 1024 * 1024) }), "INVALID_EVENT");
    assert.match(size.message, /limit is 1048576 bytes/);
    await store.close();
  });

  test("a 1 MiB event just under the limit is accepted", async () => {
    const store = await openTestStore();
    const data = "x".repeat(1024 * 1024 - 100);
    const event = await store.append({ ...base, data });
    assert.equal(event.data.length, data.length);
    await store.close();
  });
});

describe("a closed store", () => {
  test("refuses every operation with CLOSED and keeps its last state readable", async () => {
    const store = await storeWithOneEvent();
    await store.close();
    assert.equal(store.closed, true);
    await rejectsWith(() => store.append(base), "CLOSED", "append");
    await rejectsWith(() => store.appendMany([base]), "CLOSED", "appendMany");
    await rejectsWith(() => store.events(), "CLOSED", "events");
    await rejectsWith(() => store.stateAt("count", 1), "CLOSED", "stateAt");
    await rejectsWith(() => store.compact(), "CLOSED", "compact");
    await rejectsWith(() => store.catchUp(), "CLOSED", "catchUp");
    // Reads of what the store already knew keep working (for UIs tearing down).
    assert.equal(store.get("count"), 1);
    assert.equal(store.head, 1);
    await store.close(); // twice is fine
  });

  test("close waits for appends in flight", async () => {
    const store = await openTestStore();
    const pending = store.appendMany([base, base, base]);
    const closing = store.close();
    const events = await pending;
    await closing;
    assert.equal(events.length, 3);
    assert.equal(store.get("count"), 3);
  });
});

describe("bad arguments are INVALID_ARGUMENT", () => {
  test("when opening", async () => {
    const cases = {
      "no options": undefined,
      "no name": { storage: "memory" },
      "an empty name": { name: "", storage: "memory" },
      "an unknown storage": { name: "x", storage: "disk" },
      "indexeddb in node": { name: "x", storage: "indexeddb" },
      "a projection without apply": { name: "x", storage: "memory", projections: { p: { initial: 0 } } },
      "a negative projection version": {
        name: "x",
        storage: "memory",
        projections: { p: { initial: 0, apply: (s) => s, version: -1 } },
      },
      "a fractional projection version": {
        name: "x",
        storage: "memory",
        projections: { p: { initial: 0, apply: (s) => s, version: 1.5 } },
      },
      "a zero maxEventBytes": { name: "x", storage: "memory", maxEventBytes: 0 },
      "a non-numeric snapshotEvery": { name: "x", storage: "memory", snapshotEvery: "often" },
    };
    for (const [name, options] of Object.entries(cases)) {
      await rejectsWith(() => openStore(options), "INVALID_ARGUMENT", name);
    }
  });

  test("unknown projections and bad positions", async () => {
    const store = await storeWithOneEvent();
    await rejectsWith(() => store.get("nope"), "INVALID_ARGUMENT", "get");
    await rejectsWith(() => store.subscribe("nope", () => {}), "INVALID_ARGUMENT", "subscribe");
    await rejectsWith(() => store.subscribe("count"), "INVALID_ARGUMENT", "subscribe without listener");
    await rejectsWith(() => store.stateAt("nope", 0), "INVALID_ARGUMENT", "stateAt name");
    await rejectsWith(() => store.stateAt("count", 2), "INVALID_ARGUMENT", "stateAt past head");
    await rejectsWith(() => store.stateAt("count", -1), "INVALID_ARGUMENT", "stateAt negative");
    await rejectsWith(() => store.stateAt("count", 0.5), "INVALID_ARGUMENT", "stateAt fraction");
    await rejectsWith(() => store.stateAt("count", "1"), "INVALID_ARGUMENT", "stateAt string");
    await rejectsWith(() => store.on("nope", () => {}), "INVALID_ARGUMENT", "on");
    // "closed" is an event (IndexedDB stores only ever emit it); a memory store takes the listener.
    assert.equal(typeof store.on("closed", () => {}), "function");
    await assertUntouched(store);
    await store.close();
  });

  test("a store name in use elsewhere stays separate from plain memory stores", async () => {
    const name = uniqueName();
    const shared = await openStore({ name, storage: "memory", sharedMemory: true });
    await shared.append(base);
    const plain = await openStore({ name, storage: "memory" });
    assert.equal(plain.head, 0);
    await shared.close();
    await plain.close();
  });
});
