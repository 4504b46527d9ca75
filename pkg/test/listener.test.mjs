// The core's change listener feeds the projections: confirmed and optimistic states,
// change events, subscribers, and synced stores whose appends stay pending (no server
// here: the sync URL points at a closed port).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { openStore } from "annals";

import { makeEvents, next, openTestStore, rejectsWith, uniqueName } from "./helpers.mjs";

/** A sync target nobody listens on: every request fails at once with OFFLINE. */
const NOWHERE = { url: "http://127.0.0.1:9", store: "nowhere", token: "t" };

function listProjection() {
  return { initial: [], apply: (list, e) => [...list, `${e.data?.n}${e.pending ? "?" : ""}`] };
}

describe("the change listener", () => {
  test("appendMany is one change: one change event, one call per subscriber", async () => {
    const store = await openTestStore();
    const changes = [];
    const counts = [];
    store.on("change", (c) => changes.push(c));
    store.subscribe("count", (n) => counts.push(n));
    await store.appendMany(makeEvents(5));
    await store.appendMany(makeEvents(2, { from: 5 }));
    assert.deepEqual(counts, [5, 7]);
    assert.equal(changes.length, 2);
    assert.deepEqual(
      changes.map((c) => [c.previousHead, c.head, c.confirmedHead, c.rebased, c.reset, c.events.length]),
      [
        [0, 5, 5, false, false, 5],
        [5, 7, 7, false, false, 2],
      ],
    );
    assert.ok(changes[1].events.every((e) => e.pending === false));
    assert.equal(store.confirmedHead, 7);
    await store.close();
  });

  test("appends resolve to their own events, also when several are in flight", async () => {
    const store = await openTestStore();
    const batches = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        store.appendMany([
          { stream: `s-${i}`, type: "A", data: { i } },
          { stream: `s-${i}`, type: "B", data: { i } },
        ]),
      ),
    );
    for (const [i, batch] of batches.entries()) {
      assert.deepEqual(
        batch.map((e) => [e.stream, e.type, e.data.i, e.version]),
        [
          [`s-${i}`, "A", i, 1],
          [`s-${i}`, "B", i, 2],
        ],
      );
    }
    await store.close();
  });

  test("catchUp returns what other tabs appended as one change", async () => {
    const name = uniqueName("catchup");
    const one = await openStore({ name, storage: "memory", sharedMemory: true });
    const two = await openStore({ name, storage: "memory", sharedMemory: true });
    await one.appendMany(makeEvents(2));
    await one.append({ stream: "x", type: "T" });
    const change = await two.catchUp();
    assert.equal(change.head, 3);
    assert.ok(change.previousHead <= 2);
    assert.deepEqual(
      change.events.map((e) => e.position),
      Array.from({ length: 3 - change.previousHead }, (_, i) => change.previousHead + i + 1),
    );
    const none = await two.catchUp();
    assert.deepEqual([none.previousHead, none.head, none.events.length], [3, 3, 0]);
    await one.close();
    await two.close();
  });
});

describe("a synced store before the server confirms", () => {
  async function openSynced(options = {}) {
    return openStore({
      name: uniqueName("synced"),
      storage: "memory",
      projections: { list: listProjection(), count: { initial: 0, apply: (n) => n + 1 } },
      sync: NOWHERE,
      ...options,
    });
  }

  test("appends are pending: the optimistic state has them, the confirmed head does not move", async () => {
    const store = await openSynced();
    const events = await store.appendMany([
      { stream: "a", type: "T", data: { n: 1 } },
      { stream: "a", type: "T", data: { n: 2 } },
    ]);
    assert.ok(events.every((e) => e.pending));
    assert.deepEqual(
      events.map((e) => e.position),
      [1, 2],
    );
    assert.equal(store.head, 2);
    assert.equal(store.confirmedHead, 0);
    assert.deepEqual(store.get("list"), ["1?", "2?"]);
    assert.equal(store.get("count"), 2);
    assert.equal(store.syncStatus.pending, 2);
    assert.equal(store.syncStatus.leader, true); // no Web Locks in Node: every synced store syncs
    const read = await store.events();
    assert.ok(read.every((e) => e.pending));
    // Time travel goes through pending events too.
    assert.deepEqual(await store.stateAt("list", 1), ["1?"]);
    assert.deepEqual(await store.stateAt("list", 0), []);
    assert.deepEqual(await store.rejected(), []);
    await store.close();
  });

  test("mutating reducers never change the confirmed state through the optimistic one", async () => {
    const name = uniqueName("mutating");
    const projection = () => ({
      mutating: {
        initial: { items: [] },
        apply(state, event) {
          state.items.push(event.data.n);
          return state;
        },
      },
    });
    const store = await openStore({ name, storage: "memory", sharedMemory: true, projections: projection(), sync: NOWHERE });
    await store.append({ stream: "a", type: "T", data: { n: 1 } });
    await store.append({ stream: "a", type: "T", data: { n: 2 } });
    assert.deepEqual(store.get("mutating").items, [1, 2]);
    assert.deepEqual(await store.stateAt("mutating", 0), { items: [] });
    await store.close();
    // Snapshots hold confirmed state only: reopening folds the pending events again, once.
    const again = await openStore({ name, storage: "memory", sharedMemory: true, projections: projection(), sync: NOWHERE });
    assert.deepEqual(again.get("mutating").items, [1, 2]);
    assert.equal(again.head, 2);
    assert.equal(again.confirmedHead, 0);
    await again.close();
  });

  test("sync() fails with OFFLINE and the status tells why", async () => {
    const store = await openSynced();
    const statuses = [];
    store.on("sync", (s) => statuses.push(s));
    await store.append({ stream: "a", type: "T", data: { n: 1 } });
    await rejectsWith(store.sync(), "OFFLINE");
    const status = store.syncStatus;
    assert.equal(status.online, false);
    assert.equal(status.lastErrorCode, "OFFLINE");
    assert.equal(status.pending, 1);
    assert.ok(statuses.length > 0);
    assert.equal(store.syncStatus, store.syncStatus, "the status object is stable while nothing changes");
    await store.close();
  });

  test("a local store reports a quiet sync status and refuses sync()", async () => {
    const store = await openTestStore();
    await store.append({ stream: "a", type: "T" });
    assert.deepEqual(store.syncStatus, {
      online: false,
      syncing: false,
      pending: 0,
      lastPulled: 1,
      lastError: null,
      lastErrorCode: null,
      error: null,
      leader: false,
    });
    await rejectsWith(store.sync(), "INVALID_ARGUMENT");
    await store.close();
  });

  test("another tab sees pending events and the pending count", async () => {
    const name = uniqueName("synced-tabs");
    const options = { name, storage: "memory", sharedMemory: true, projections: { list: listProjection() }, sync: NOWHERE };
    const one = await openStore(options);
    const two = await openStore(options);
    const arrived = next((cb) => two.subscribe("list", cb));
    await one.append({ stream: "a", type: "T", data: { n: 1 } });
    assert.deepEqual(await arrived, ["1?"]);
    assert.equal(two.syncStatus.pending, 1);
    assert.equal(two.confirmedHead, 0);
    await two.append({ stream: "a", type: "T", data: { n: 2 } });
    await one.catchUp();
    assert.deepEqual(one.get("list"), ["1?", "2?"]);
    await one.close();
    await two.close();
  });

  test("bad sync options are INVALID_ARGUMENT", async () => {
    for (const sync of [
      null,
      "http://x",
      { store: "s", token: "t" },
      { url: "not a url", store: "s", token: "t" },
      { url: "http://x", store: "", token: "t" },
      { url: "http://x", store: "s" },
      { url: "http://x", store: "s", token: "t", pushBatch: 0 },
      { url: "http://x", store: "s", token: "t", unknown: 1 },
    ]) {
      await rejectsWith(() => openStore({ name: uniqueName(), storage: "memory", sync }), "INVALID_ARGUMENT", JSON.stringify(sync));
    }
  });

  describe("the events of this tab's own appends", () => {
    const batch = () => [
      { stream: "a", type: "Noted", data: { n: 1, list: [1, "two", null, { deep: true }] } },
      { id: "0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70", stream: "b", type: "Noted", data: "text", meta: { correlationId: "c-1" } },
      { stream: "a", type: "Versioned", schemaVersion: 2, data: null },
      { stream: "c", type: "NoData" },
    ];

    async function appended(options) {
      const store = await openStore({ name: uniqueName(), storage: "memory", ...options });
      const changes = [];
      store.on("change", (c) => changes.push(c));
      await store.append({ stream: "a", type: "First", data: 0 });
      const events = batch();
      const returned = await store.appendMany(events);
      const stored = await store.events({ after: 1 });
      await store.close();
      return { events, returned, seen: changes[1].events, stored };
    }

    for (const [kind, options] of [
      ["a local store (confirmed)", {}],
      ["a synced store (pending)", { sync: NOWHERE }],
    ]) {
      test(`are the batch's objects, stamped exactly as stored: ${kind}`, async () => {
        const { events, returned, seen, stored } = await appended(options);
        assert.equal(seen.length, 4);
        // Field for field and in the same order as the core's copy read back.
        assert.equal(JSON.stringify(seen), JSON.stringify(stored));
        assert.deepStrictEqual(seen, stored);
        assert.ok(seen.every((e) => e.pending === (kind !== "a local store (confirmed)")));
        // Not copies: the app's own payloads (treat them as immutable once appended).
        assert.equal(seen[0].data, events[0].data);
        assert.equal(seen[1].meta, events[1].meta);
        assert.deepStrictEqual(returned.map((e) => e.position), [2, 3, 4, 5]);
        assert.equal(returned[0].data, events[0].data);
      });
    }

    test("come with another tab's events that the same write took in, all in order", async () => {
      const name = uniqueName();
      const a = await openStore({ name, storage: "memory", sharedMemory: true });
      const b = await openStore({ name, storage: "memory", sharedMemory: true });
      const changes = [];
      a.on("change", (c) => changes.push(c));
      await b.append({ stream: "b", type: "FromB", data: 1 });
      const mine = { stream: "a", type: "FromA", data: { n: 2 } };
      await a.append(mine);
      const last = changes.at(-1);
      assert.deepStrictEqual([last.previousHead, last.head], [0, 2]);
      assert.deepStrictEqual(last.events, await a.events());
      assert.deepStrictEqual(last.events.map((e) => e.type), ["FromB", "FromA"]);
      await a.close();
      await b.close();
    });

    test("are the core's copies when JSON would not give the batch back as it is", async () => {
      const store = await openStore({ name: uniqueName(), storage: "memory" });
      const changes = [];
      store.on("change", (c) => changes.push(c));
      const withUndefined = { stream: "a", type: "T", data: { kept: 1, dropped: undefined } };
      const withNullPrototype = { stream: "a", type: "T", data: Object.assign(Object.create(null), { x: 1 }) };
      const withMinusZero = { stream: "a", type: "T", data: { zero: -0 } };
      for (const event of [withUndefined, withNullPrototype, withMinusZero]) {
        const [returned] = await store.appendMany([event]);
        const seen = changes.at(-1).events[0];
        assert.notEqual(seen.data, event.data);
        assert.deepStrictEqual(seen, (await store.events({ after: returned.position - 1 }))[0]);
      }
      assert.deepStrictEqual(changes[0].events[0].data, { kept: 1 });
      assert.ok(Object.is(changes[2].events[0].data.zero, 0));
      await store.close();
    });
  });
});
