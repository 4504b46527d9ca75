// Bounded local storage (issue 13, item 5): `retain: { events }` lets a synced store drop
// the confirmed events every projection's snapshot covers, keeping the newest ones and the
// outbox; reads and stateAt below the kept range come from the sync server, or fail with
// NOT_RETAINED naming the range offline; a store opened after the cut works; storage()
// reports the range kept.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { openBundle, openStore } from "annals";

import { rejectsWith, uniqueName } from "./helpers.mjs";
import { installOnlineSwitch, skipWithoutServer, startServer } from "./server.mjs";

const sum = { initial: 0, apply: (s, e) => (e.type === "Added" ? s + e.data.n : s), version: 1 };
const count = { initial: 0, apply: (s) => s + 1, version: 1 };
/** Decides an `Added` of 1 on any stream; its state counts the stream's events. */
const tally = { initial: 0, evolve: (s) => s + 1, decide: () => [{ type: "Added", data: { n: 1 } }] };

describe("retain: options", () => {
  test("needs sync, a whole number of events of at least 1, and nothing else", async () => {
    const sync = { url: "http://127.0.0.1:9", store: "s", token: "t" };
    const open = (options) => openStore({ name: uniqueName("retain"), storage: "memory", ...options });
    const local = await rejectsWith(open({ retain: { events: 10 } }), "INVALID_ARGUMENT");
    assert.match(local.message, /needs `sync`/);
    assert.match(local.message, /no other copy/);
    await rejectsWith(open({ sync, retain: { events: 0 } }), "INVALID_ARGUMENT");
    await rejectsWith(open({ sync, retain: { events: 2.5 } }), "INVALID_ARGUMENT");
    await rejectsWith(open({ sync, retain: 10 }), "INVALID_ARGUMENT");
    const bytes = await rejectsWith(open({ sync, retain: { events: 10, bytes: 1 } }), "INVALID_ARGUMENT");
    assert.match(bytes.message, /`bytes`/);
  });

  test("storage() reports the whole log kept when nothing was dropped (and no browser estimate in Node)", async () => {
    const store = await openStore({ name: uniqueName("report"), storage: "memory" });
    await store.appendMany([{ stream: "a", type: "T" }, { stream: "a", type: "T" }]);
    const report = await store.storage();
    assert.deepEqual(report.retained, { from: 1, to: 2, events: 2, dropped: 0 });
    assert.equal(report.retain, undefined);
    assert.equal(report.usage, undefined);
    assert.equal(report.quota, undefined);
    await store.close();
  });
});

describe("retain through annals-server", { skip: skipWithoutServer }, () => {
  const setOnline = installOnlineSwitch();
  let server;
  /** Every store opened here, closed at the end even when a test fails half-way. */
  const stores = [];
  before(async () => {
    // Exports and bundles of cut stores read the server a page at a time, 60 requests in a
    // third of a second in one test: past the default rate limit's burst (100), which is
    // not what these tests are about.
    server = await startServer({ args: ["--rate-limit-burst", "1000"] });
  });
  after(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.stop();
  });

  async function open(name, storeName, options = {}) {
    return track(openStore({
      name,
      storage: "memory",
      sharedMemory: true,
      projections: { sum, count },
      aggregates: { tally },
      snapshotEvery: 5,
      retain: { events: 10 },
      sync: { url: server.url, store: storeName, token: server.token, longPollSeconds: 1 },
      ...options,
    }));
  }

  async function track(opening) {
    const store = await opening;
    stores.push(store);
    return store;
  }

  /** Applies the policy until it cut (snapshots are written at their own pace). */
  async function cut(store) {
    for (let i = 0; i < 200; i++) {
      await store.compact();
      const { retained } = await store.storage();
      if (retained.dropped > 0) return retained;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error("retention never cut");
  }

  test("drops what the snapshots cover, keeps the newest events and the outbox; reads and stateAt below come from the server", async () => {
    setOnline(true);
    const name = uniqueName("retained");
    const storeName = uniqueName("srv");
    const store = await open(name, storeName);
    const batch = Array.from({ length: 50 }, (_, i) => ({ stream: `s-${i % 3}`, type: "Added", data: { n: i + 1 } }));
    await store.appendMany(batch);
    await store.sync();
    assert.equal(store.confirmedHead, 50);
    const before = await store.events();

    const retained = await cut(store);
    assert.equal(retained.to, 50);
    assert.ok(retained.dropped >= 1 && retained.dropped <= 40, `the newest 10 stay: dropped ${retained.dropped}`);
    assert.equal(retained.from, retained.dropped + 1);
    assert.equal(retained.events, 50 - retained.dropped);
    assert.equal(store.get("sum"), 1275, "the projections are unchanged");

    // Reads below the kept range page through the server's log: the same events as before.
    assert.deepEqual(await store.events(), before);
    assert.deepEqual(
      (await store.events({ after: 0, limit: 5 })).map((e) => e.position),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(
      (await store.events({ stream: "s-1" })).map((e) => e.data.n),
      before.filter((e) => e.stream === "s-1").map((e) => e.data.n),
    );
    assert.deepEqual(
      (await store.events({ backwards: true, limit: 3 })).map((e) => e.position),
      [50, 49, 48],
      "the newest ones are held",
    );
    assert.equal(await store.stateAt("sum", 20), 210, "time travel past the kept range");
    assert.equal(await store.stateAt("count", 3), 3);

    // A command decides on a stream held whole; one whose events were dropped cannot.
    const decided = await store.execute("tally", "fresh-stream", { type: "Add" });
    assert.equal(decided.events[0].version, 1);
    await rejectsWith(store.execute("tally", "s-1", { type: "Add" }), "NOT_RETAINED");

    // Appends count the dropped events in their streams' versions; the outbox is kept.
    const appended = await store.append({ stream: "s-0", type: "Added", data: { n: 1 }, expectedVersion: 17 });
    assert.equal(appended.version, 18);
    await rejectsWith(store.append({ stream: "s-0", type: "Added", data: { n: 1 }, expectedVersion: "no_stream" }), "WRONG_EXPECTED_VERSION");

    // Offline: the same reads name the range kept.
    const realFetch = globalThis.fetch;
    globalThis.fetch = async () => {
      throw new TypeError("fetch failed");
    };
    try {
      const offline = await rejectsWith(store.events(), "NOT_RETAINED");
      assert.match(offline.message, new RegExp(`positions ${retained.from} to 50`));
      assert.equal(offline.retainedFrom, retained.from);
      await rejectsWith(store.stateAt("sum", 2), "NOT_RETAINED");
      assert.equal((await store.events({ after: retained.dropped })).length, 50 - retained.dropped + 2, "what is held still reads");
    } finally {
      globalThis.fetch = realFetch;
    }
    await store.sync();
    assert.equal(store.syncStatus.pending, 0);
    assert.equal(store.get("sum"), 1277);
    await store.close();

    // A store opened after the cut starts from its snapshots and the kept events.
    const reopened = await open(name, storeName);
    assert.equal(reopened.get("sum"), 1277);
    assert.equal(reopened.get("count"), 52);
    assert.equal((await reopened.storage()).retained.dropped, retained.dropped);
    assert.equal(await reopened.streamVersion("s-0"), 18);
    assert.deepEqual((await reopened.events()).length, 52);
    const next = await reopened.append({ stream: "s-0", type: "Added", data: { n: 4 }, expectedVersion: 18 });
    assert.equal(next.version, 19);
    await reopened.sync();
    assert.equal(reopened.confirmedHead, 53);
    await reopened.close();
  });

  test("exports and bug bundles of a cut store carry the whole log, the dropped part from the server", async () => {
    setOnline(true);
    const store = await open(uniqueName("exported"), uniqueName("srv"));
    for (let start = 0; start < 2_500; start += 1_000) {
      const size = Math.min(1_000, 2_500 - start);
      await store.appendMany(Array.from({ length: size }, (_, i) => ({ stream: `s-${(start + i) % 3}`, type: "Added", data: { n: start + i + 1 } })));
    }
    await store.sync();
    const whole = await store.events();
    const { dropped } = await cut(store);
    assert.ok(dropped > 1_000, `more than a page dropped: ${dropped}`);
    const text = await new Response(store.exportEvents().pipeThrough(new TextEncoderStream())).text();
    const lines = text.trimEnd().split("\n").map((line) => JSON.parse(line));
    assert.equal(lines[0].count, 2_500);
    assert.deepEqual(
      lines.slice(1).map((e) => [e.position, e.id, e.data.n]),
      whole.map((e) => [e.position, e.id, e.data.n]),
    );
    const bundle = await store.exportBundle();
    const opened = await openBundle(bundle, { projections: { sum, count } });
    assert.equal(opened.store.get("sum"), (2_500 * 2_501) / 2);
    assert.deepEqual(opened.differences, []);
    await opened.store.close();
    // Offline, the dropped part cannot be had: NOT_RETAINED, not a partial file.
    const realFetch = globalThis.fetch;
    globalThis.fetch = async () => {
      throw new TypeError("fetch failed");
    };
    try {
      await rejectsWith(store.exportBundle(), "NOT_RETAINED");
      await rejectsWith(new Response(store.exportEvents().pipeThrough(new TextEncoderStream())).text(), "NOT_RETAINED");
    } finally {
      globalThis.fetch = realFetch;
    }
  });

  test("a cut that lands while the dropped part is fetched moves the line: reads, exports and bundles still carry the whole log", async () => {
    setOnline(true);
    const store = await open(uniqueName("moving"), uniqueName("srv"));
    let n = 0;
    async function grow() {
      await store.appendMany(Array.from({ length: 30 }, () => ({ stream: `s-${n % 3}`, type: "Added", data: { n: ++n } })));
      await store.sync();
    }
    await grow();
    await cut(store);
    const realFetch = globalThis.fetch;
    /** Runs `read` while the policy cuts again once its first server read is on the way. */
    async function cutDuring(read) {
      await grow();
      const before = (await store.storage()).retained.dropped;
      let cutting;
      globalThis.fetch = async (...args) => {
        // The reads of the dropped part ask with wait=0 (the sync loop long-polls).
        if (String(args[0]).includes("wait=0")) {
          cutting ??= (async () => {
            for (let i = 0; i < 200 && (await store.storage()).retained.dropped === before; i++) {
              await store.compact();
              await new Promise((resolve) => setTimeout(resolve, 10));
            }
          })();
          await cutting;
        }
        return realFetch(...args);
      };
      try {
        return await read();
      } finally {
        globalThis.fetch = realFetch;
        assert.ok((await store.storage()).retained.dropped > before, "the policy cut during the read");
      }
    }
    const positions = () => Array.from({ length: n }, (_, i) => i + 1);
    assert.deepEqual((await cutDuring(() => store.events())).map((e) => e.position), positions());
    const text = await cutDuring(() => new Response(store.exportEvents().pipeThrough(new TextEncoderStream())).text());
    assert.deepEqual(text.trimEnd().split("\n").slice(1).map((line) => JSON.parse(line).position), positions());
    const bundle = await cutDuring(() => store.exportBundle());
    const opened = await openBundle(bundle, { projections: { sum, count } });
    assert.equal(opened.store.get("count"), n);
    assert.deepEqual(opened.differences, []);
    await opened.store.close();
  });

  test("an erasure reaching a store cut by retention folds its projections again, the dropped part from the server", async () => {
    setOnline(true);
    const storeName = uniqueName("srv");
    // Erased events read with data null: the reducer counts what is left.
    const kept = { initial: 0, apply: (s, e) => (e.type === "Added" && !e.erased ? s + e.data.n : s), version: 1 };
    const store = await open(uniqueName("erased"), storeName, { projections: { kept } });
    await store.appendMany(Array.from({ length: 30 }, (_, i) => ({ stream: `s-${i % 2}`, type: "Added", data: { n: i + 1 } })));
    await store.sync();
    const { dropped } = await cut(store);
    assert.equal(store.get("kept"), 465);
    // Another replica, which keeps everything, erases stream s-0 (half of it was dropped here).
    const other = await track(
      openStore({ name: uniqueName("eraser"), storage: "memory", sync: { url: server.url, store: storeName, token: server.token } }),
    );
    await other.sync();
    await other.eraseStream("s-0");
    await other.sync();
    await store.sync();
    assert.ok(dropped > 0 && store.confirmedHead === 31);
    // The odd n (stream s-0) are gone: 2 + 4 + ... + 30.
    const expected = Array.from({ length: 15 }, (_, i) => 2 * (i + 1)).reduce((a, b) => a + b, 0);
    for (let i = 0; i < 200 && store.get("kept") !== expected; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(store.get("kept"), expected);
    assert.equal(await store.stateAt("kept", 30), expected, "its past states lose the erased data too");
  });

  test("a projection added after the cut folds the dropped part from the server when the store opens", async () => {
    setOnline(true);
    const name = uniqueName("added");
    const storeName = uniqueName("srv");
    const store = await open(name, storeName);
    await store.appendMany(Array.from({ length: 30 }, (_, i) => ({ stream: "s", type: "Added", data: { n: i + 1 } })));
    await store.sync();
    await cut(store);
    await store.close();
    const doubled = { initial: 0, apply: (s, e) => s + 2 * e.data.n, version: 1 };
    const later = await open(name, storeName, { projections: { sum, count, doubled } });
    assert.equal(later.get("doubled"), 930);
    await later.close();
  });
});
