// Projections: get, subscribe, time travel, checkpoints, snapshots, version bumps, and
// several "tabs" (stores sharing one memory log, told about each other's appends through a
// BroadcastChannel, as tabs sharing an IndexedDB database are).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { openStore } from "annals";

import { makeEvents, next, openTestStore, uniqueName } from "./helpers.mjs";

/** A fold of `events` from scratch, as a reference. */
function reference(projection, events) {
  return events.reduce((state, event) => projection.apply(state, event), structuredClone(projection.initial));
}

/** A projection that counts its `apply` calls. */
function counted(version = 1) {
  const projection = {
    calls: 0,
    version,
    initial: { total: 0, sum: 0, byStream: {} },
    apply(state, event) {
      projection.calls += 1;
      return {
        total: state.total + 1,
        sum: state.sum + event.data.i,
        byStream: { ...state.byStream, [event.stream]: (state.byStream[event.stream] ?? 0) + 1 },
      };
    },
  };
  return projection;
}

describe("projections", () => {
  test("get is synchronous and current after each append", async () => {
    const store = await openTestStore();
    assert.equal(store.get("count"), 0);
    assert.deepEqual(store.get("byStream"), {});
    const pending = store.append({ stream: "a", type: "T" });
    assert.equal(store.get("count"), 0); // not before the append resolves
    await pending;
    assert.equal(store.get("count"), 1);
    await store.appendMany(makeEvents(9));
    assert.equal(store.get("count"), 10);
    assert.deepEqual(store.get("byStream"), { a: 1, "s-0": 3, "s-1": 3, "s-2": 3 });
    await store.close();
  });

  test("subscribers get the new state once per batch until they unsubscribe", async () => {
    const store = await openTestStore();
    const seen = [];
    const off = store.subscribe("count", (n) => seen.push(n));
    const other = [];
    store.subscribe("byStream", (s) => other.push(s));
    await store.appendMany(makeEvents(100));
    await store.append({ stream: "a", type: "T" });
    off();
    await store.append({ stream: "a", type: "T" });
    assert.deepEqual(seen, [100, 101]);
    assert.equal(other.length, 3);
    await store.close();
  });

  test("a throwing subscriber or reducer does not break the store", async () => {
    const errors = [];
    const store = await openStore({
      name: uniqueName(),
      storage: "memory",
      projections: {
        fragile: {
          initial: 0,
          apply: (n, e) => {
            if (e.type === "Boom") throw new Error("reducer bug");
            return n + 1;
          },
        },
      },
    });
    store.on("error", (e) => errors.push(e));
    store.subscribe("fragile", () => {
      throw new Error("listener bug");
    });
    const events = await store.appendMany([
      { stream: "a", type: "T" },
      { stream: "a", type: "Boom" },
      { stream: "a", type: "T" },
    ]);
    assert.equal(events.length, 3);
    assert.equal(store.get("fragile"), 2); // the throwing event was skipped
    assert.equal(errors.length, 2);
    assert.match(errors[0].message, /projection "fragile" threw on event 2 \(Boom\)/);
    assert.equal(errors[0].cause.message, "reducer bug");
    assert.equal(errors[1].message, "listener bug");
    assert.equal(errors[0].code, "PROJECTION_FAILED");
    await store.append({ stream: "a", type: "T" });
    assert.equal(store.get("fragile"), 3);
    // Travelling back folds the throwing event again: the bug was told once already.
    assert.equal(await store.stateAt("fragile", 3), 2);
    assert.equal(errors.filter((e) => e.code === "PROJECTION_FAILED").length, 1);
    await store.close();
  });

  test("initial stays untouched by mutating reducers", async () => {
    const initial = { items: [] };
    const store = await openStore({
      name: uniqueName(),
      storage: "memory",
      projections: {
        mutating: {
          initial,
          apply(state, event) {
            state.items.push(event.data.i); // mutates in place, returns the same object
            return state;
          },
        },
      },
      checkpointEvery: 10,
    });
    await store.appendMany(makeEvents(25));
    assert.deepEqual(initial, { items: [] });
    assert.equal(store.get("mutating").items.length, 25);
    // Checkpoints are copies: later mutation does not leak into the past.
    assert.deepEqual((await store.stateAt("mutating", 0)).items, []);
    assert.deepEqual((await store.stateAt("mutating", 10)).items, Array.from({ length: 10 }, (_, i) => i));
    assert.deepEqual((await store.stateAt("mutating", 12)).items, Array.from({ length: 12 }, (_, i) => i));
    assert.equal(store.get("mutating").items.length, 25);
    await store.close();
  });
});

describe("time travel", () => {
  test("stateAt equals a fold from scratch at every probed position", async () => {
    const projection = counted();
    const store = await openStore({ name: uniqueName(), storage: "memory", projections: { p: projection } });
    for (let i = 0; i < 5; i++) await store.appendMany(makeEvents(500, { from: i * 500, streams: 7 }));
    const all = await store.events();
    assert.equal(all.length, 2500);
    for (const position of [0, 1, 2, 499, 999, 1000, 1001, 1500, 1999, 2000, 2001, 2499, 2500]) {
      assert.deepEqual(
        await store.stateAt("p", position),
        reference(projection, all.slice(0, position)),
        `position ${position}`,
      );
    }
    await store.close();
  });

  test("stateAt replays from the nearest checkpoint, and never changes the log", async () => {
    const projection = counted();
    const store = await openStore({
      name: uniqueName(),
      storage: "memory",
      projections: { p: projection },
      checkpointEvery: 100,
    });
    await store.appendMany(makeEvents(1000));
    const head = store.head;
    const current = store.get("p");
    projection.calls = 0;
    const at = await store.stateAt("p", 950);
    assert.equal(at.total, 950);
    assert.equal(projection.calls, 50); // from the checkpoint at 900
    projection.calls = 0;
    await store.stateAt("p", 900);
    assert.equal(projection.calls, 0);
    assert.equal(store.head, head);
    assert.equal(store.get("p"), current);
    assert.equal((await store.events()).length, 1000);
    // The returned state is the caller's: changing it changes nothing inside.
    at.total = -1;
    assert.equal((await store.stateAt("p", 950)).total, 950);
    await store.close();
  });

  test("checkpoints stay bounded on long logs", async () => {
    const projection = counted();
    const store = await openStore({
      name: uniqueName(),
      storage: "memory",
      projections: { p: projection },
      checkpointEvery: 10,
    });
    // In batches of 1,000: one append takes at most maxBatch (1,000) events.
    for (let from = 0; from < 5000; from += 1000) await store.appendMany(makeEvents(1000, { from }));
    const all = await store.events();
    for (const position of [5, 640, 1285, 4999]) {
      assert.deepEqual(await store.stateAt("p", position), reference(projection, all.slice(0, position)));
    }
    await store.close();
  });
});

describe("snapshots (memory stores shared by name)", () => {
  test("reopening loads the snapshot written at close and replays only the tail", async () => {
    const name = uniqueName("snap");
    const options = { name, storage: "memory", sharedMemory: true, snapshotEvery: 100 };

    const first = counted();
    const a = await openStore({ ...options, projections: { p: first } });
    await a.appendMany(makeEvents(250));
    const state = a.get("p");
    await a.close();

    // Snapshot at 250 (written on close): nothing to replay.
    const second = counted();
    const b = await openStore({ ...options, projections: { p: second } });
    assert.equal(b.head, 250);
    assert.equal(second.calls, 0);
    assert.deepEqual(b.get("p"), state);
    await b.appendMany(makeEvents(30, { from: 250 }));
    assert.equal(second.calls, 30);

    // Time travel before the snapshot rebuilds from the log.
    const all = await b.events();
    assert.deepEqual(await b.stateAt("p", 100), reference(second, all.slice(0, 100)));
    assert.deepEqual(await b.stateAt("p", 260), reference(second, all.slice(0, 260)));
    await b.close();

    // A bumped version ignores the old snapshot and rebuilds from the log.
    const bumped = counted(2);
    const c = await openStore({ ...options, projections: { p: bumped } });
    assert.equal(bumped.calls, 280);
    assert.deepEqual(c.get("p"), reference(bumped, all));
    await c.close();

    // ...and its own snapshot is used next time.
    const again = counted(2);
    const d = await openStore({ ...options, projections: { p: again } });
    assert.equal(again.calls, 0);
    assert.deepEqual(d.get("p"), reference(again, all));
    await d.close();

    // Going back to version 1 does not trust the version-2 snapshot either.
    const back = counted(1);
    const e = await openStore({ ...options, projections: { p: back } });
    assert.equal(back.calls, 280);
    await e.close();
  });

  test("snapshots are written periodically, after the batch, without closing", async () => {
    const name = uniqueName("periodic");
    const options = { name, storage: "memory", sharedMemory: true, snapshotEvery: 100 };
    const writer = await openStore({ ...options, projections: { p: counted() } });
    await writer.appendMany(makeEvents(150));
    await new Promise((resolve) => setTimeout(resolve, 10)); // the snapshot is written in the background
    await writer.appendMany(makeEvents(20, { from: 150 }));

    // A second "tab" opens while the first is still open: snapshot at 150, tail of 20.
    const reader = counted();
    const tab = await openStore({ ...options, projections: { p: reader } });
    assert.equal(tab.head, 170);
    assert.equal(reader.calls, 20);
    assert.deepEqual(tab.get("p"), writer.get("p"));
    await tab.close();
    await writer.close();
  });

  test("projections added later start from scratch while others use their snapshot", async () => {
    const name = uniqueName("added");
    const options = { name, storage: "memory", sharedMemory: true };
    const a = await openStore({ ...options, projections: { old: counted() } });
    await a.appendMany(makeEvents(40));
    await a.close();
    const old = counted();
    const added = counted();
    const b = await openStore({ ...options, projections: { old, added } });
    assert.equal(old.calls, 0);
    assert.equal(added.calls, 40);
    assert.deepEqual(b.get("old"), b.get("added"));
    await b.close();
  });
});

describe("several tabs", () => {
  test("an append in one tab reaches the other tab's projections and subscribers", async () => {
    const name = uniqueName("tabs");
    const options = { name, storage: "memory", sharedMemory: true };
    const projections = () => ({ count: { initial: 0, apply: (n) => n + 1 } });
    const one = await openStore({ ...options, projections: projections() });
    const two = await openStore({ ...options, projections: projections() });

    const arrived = next((cb) => two.subscribe("count", cb));
    await one.appendMany(makeEvents(3));
    assert.equal(await arrived, 3);
    assert.equal(two.head, 3);

    const change = next((cb) => one.on("change", cb));
    await two.append({ stream: "x", type: "T" });
    const seen = await change;
    assert.deepEqual(
      seen.events.map((e) => e.position),
      [4],
    );
    assert.equal(one.get("count"), 4);
    await one.close();
    await two.close();
  });

  test("concurrent appends from two tabs get unique positions and converge", async () => {
    const name = uniqueName("race");
    const options = { name, storage: "memory", sharedMemory: true };
    const projections = () => ({
      log: { initial: [], apply: (list, e) => [...list, `${e.position}:${e.data.tab}:${e.data.n}`] },
    });
    const one = await openStore({ ...options, projections: projections() });
    const two = await openStore({ ...options, projections: projections() });
    const writes = [];
    for (let n = 0; n < 20; n++) {
      writes.push(one.append({ stream: `s-${n % 3}`, type: "T", data: { tab: 1, n } }));
      writes.push(two.append({ stream: `s-${n % 3}`, type: "T", data: { tab: 2, n } }));
    }
    const events = await Promise.all(writes);
    const positions = events.map((e) => e.position).sort((a, b) => a - b);
    assert.deepEqual(
      positions,
      Array.from({ length: 40 }, (_, i) => i + 1),
    );
    await one.catchUp();
    await two.catchUp();
    assert.equal(one.head, 40);
    assert.equal(two.head, 40);
    assert.deepEqual(one.get("log"), two.get("log"));
    assert.equal(one.get("log").length, 40);
    // Stream versions stay gapless across tabs.
    for (const stream of ["s-0", "s-1", "s-2"]) {
      const versions = (await one.events({ stream })).map((e) => e.version);
      assert.deepEqual(
        versions,
        versions.map((_, i) => i + 1),
      );
    }
    await one.close();
    await two.close();
  });

  test("expected versions are checked against the other tab's writes", async () => {
    const name = uniqueName("conflict");
    const options = { name, storage: "memory", sharedMemory: true };
    const one = await openStore(options);
    const two = await openStore(options);
    await one.append({ stream: "order-1", type: "Placed", expectedVersion: "no_stream" });
    // `two` has not caught up yet; the append still sees the stored version.
    let error;
    try {
      await two.append({ stream: "order-1", type: "Placed", expectedVersion: "no_stream" });
    } catch (e) {
      error = e;
    }
    assert.equal(error?.code, "WRONG_EXPECTED_VERSION");
    assert.equal(error.actualVersion, 1);
    assert.equal(two.head, 1); // and it learned about the other tab's event on the way
    await one.close();
    await two.close();
  });
});
