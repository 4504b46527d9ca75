// Appending and reading: positions, versions, expected versions, idempotency, queries.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { AnnalsError, isAnnalsError, openStore } from "annals";

import { makeEvents, openTestStore, rejectsWith, uniqueName } from "./helpers.mjs";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("append", () => {
  test("returns the stored event with its envelope", async () => {
    const store = await openTestStore();
    assert.equal(store.head, 0);
    const before = Date.now();
    const event = await store.append({ stream: "todo-1", type: "TodoAdded", data: { title: "milk" } });
    assert.match(event.id, UUID);
    assert.equal(event.position, 1);
    assert.equal(event.version, 1);
    assert.equal(event.stream, "todo-1");
    assert.equal(event.type, "TodoAdded");
    assert.deepEqual(event.data, { title: "milk" });
    assert.equal(event.pending, false);
    assert.ok(event.time >= before - 1000 && event.time <= Date.now() + 1000);
    assert.equal("meta" in event, false);
    assert.equal(store.head, 1);
    assert.equal(store.get("count"), 1);
    await store.close();
  });

  test("appendMany assigns consecutive positions and per-stream versions", async () => {
    const store = await openTestStore();
    const events = await store.appendMany([
      { stream: "a", type: "T", data: 1 },
      { stream: "b", type: "T", data: 2 },
      { stream: "a", type: "T", data: 3 },
    ]);
    assert.deepEqual(
      events.map((e) => [e.position, e.stream, e.version, e.data]),
      [
        [1, "a", 1, 1],
        [2, "b", 1, 2],
        [3, "a", 2, 3],
      ],
    );
    const more = await store.append({ stream: "a", type: "T", data: 4 });
    assert.deepEqual([more.position, more.version], [4, 3]);
    assert.deepEqual(await store.appendMany([]), []);
    assert.equal(store.head, 4);
    assert.deepEqual(store.get("byStream"), { a: 3, b: 1 });
    await store.close();
  });

  test("ids are UUIDv7 and increase", async () => {
    const store = await openTestStore();
    const events = await store.appendMany(makeEvents(200));
    const ids = events.map((e) => e.id);
    assert.ok(ids.every((id) => UUID.test(id)));
    assert.deepEqual([...ids].sort(), ids);
    assert.equal(new Set(ids).size, ids.length);
    await store.close();
  });

  test("payloads come back exactly, meta and origin included", async () => {
    const store = await openTestStore({ origin: "client-7" });
    const data = {
      text: 'quotes " and \\ backslashes\nnew lines\ttabs \u0001 control',
      unicode: "żółć 日本語 🎉",
      nested: { list: [1, 2.5, -3e-7, null, true, false, [], {}], deep: { a: { b: { c: "d" } } } },
      big: 9007199254740991,
      empty: "",
      dropped: undefined,
    };
    const event = await store.append({ stream: "s", type: "T", data, meta: { user: "ana", n: 1 } });
    const expected = { ...data };
    delete expected.dropped;
    assert.deepEqual(event.data, expected);
    assert.deepEqual(event.meta, { user: "ana", n: 1 });
    assert.equal(event.origin, "client-7");
    const [read] = await store.events();
    // An append also tells the stream's version after it; a read is the event alone.
    const { streamVersion, ...stored } = event;
    assert.equal(streamVersion, 1);
    assert.deepEqual(read, stored);
    // Events without data store null.
    const bare = await store.append({ stream: "s", type: "Bare" });
    assert.equal(bare.data, null);
    await store.close();
  });

  test("batches of every size and script cross into the core exactly, one after another", async () => {
    const store = await openTestStore();
    // Over 1 MiB of JSON (the core lets such an input buffer go once read), then small ones:
    // ASCII, multi-byte text whose UTF-8 outgrows one byte a character, and ASCII again.
    const big = Array.from({ length: 600 }, (_, i) => ({ stream: "big", type: "T", data: { i, text: "x".repeat(2000) } }));
    const batches = [big, [{ stream: "s", type: "T", data: "plain" }], [{ stream: "s", type: "T", data: "żółć 日本語 🎉".repeat(50) }], [{ stream: "s", type: "T", data: "é" }], [{ stream: "s", type: "T", data: "plain again" }]];
    for (const batch of batches) await store.appendMany(batch);
    const stored = await store.events();
    assert.equal(stored.length, 604);
    assert.deepEqual(
      stored.map((e) => e.data),
      batches.flat().map((e) => e.data),
    );
    await store.close();
  });

  test("concurrent appends from one store are serialised", async () => {
    const store = await openTestStore();
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => store.append({ stream: `s-${i % 2}`, type: "T", data: i })),
    );
    assert.deepEqual(
      results.map((e) => e.position).sort((a, b) => a - b),
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    assert.equal(store.head, 50);
    assert.equal(store.get("count"), 50);
    assert.deepEqual(store.get("byStream"), { "s-0": 25, "s-1": 25 });
    // Versions within each stream are 1..25 without gaps.
    for (const stream of ["s-0", "s-1"]) {
      const versions = results.filter((e) => e.stream === stream).map((e) => e.version);
      assert.deepEqual(
        versions.sort((a, b) => a - b),
        Array.from({ length: 25 }, (_, i) => i + 1),
      );
    }
    await store.close();
  });

  test("on('change') reports each batch once, with its events", async () => {
    const store = await openTestStore();
    const changes = [];
    const off = store.on("change", (change) => changes.push(change));
    await store.appendMany(makeEvents(3));
    await store.append({ stream: "x", type: "T" });
    off();
    await store.append({ stream: "x", type: "T" });
    assert.equal(changes.length, 2);
    assert.deepEqual(
      changes.map((c) => [c.previousHead, c.head, c.events.map((e) => e.position)]),
      [
        [0, 3, [1, 2, 3]],
        [3, 4, [4]],
      ],
    );
    await store.close();
  });
});

describe("expected versions", () => {
  test("a number must equal the stream's version", async () => {
    const store = await openTestStore();
    await store.append({ stream: "a", type: "T", expectedVersion: 0 });
    await store.append({ stream: "a", type: "T", expectedVersion: 1 });
    const error = await rejectsWith(store.append({ stream: "a", type: "T", expectedVersion: 1 }), "WRONG_EXPECTED_VERSION");
    assert.equal(error.actualVersion, 2);
    assert.equal(error.expectedVersion, 1);
    assert.equal(error.stream, "a");
    assert.match(error.message, /expected 1, actual 2/);
    assert.ok(isAnnalsError(error, "WRONG_EXPECTED_VERSION"));
    await rejectsWith(store.append({ stream: "a", type: "T", expectedVersion: 5 }), "WRONG_EXPECTED_VERSION");
    assert.equal(store.head, 2);
    await store.close();
  });

  test('"any" (the default) never conflicts', async () => {
    const store = await openTestStore();
    await store.append({ stream: "a", type: "T", expectedVersion: "any" });
    await store.append({ stream: "a", type: "T" });
    await store.append({ stream: "a", type: "T", expectedVersion: "any" });
    assert.equal(store.head, 3);
    await store.close();
  });

  test('"no_stream" requires an empty stream', async () => {
    const store = await openTestStore();
    await store.append({ stream: "a", type: "T", expectedVersion: "no_stream" });
    const error = await rejectsWith(
      store.append({ stream: "a", type: "T", expectedVersion: "no_stream" }),
      "WRONG_EXPECTED_VERSION",
    );
    assert.equal(error.actualVersion, 1);
    assert.equal(error.expectedVersion, "no_stream");
    await store.close();
  });

  test('"exists" requires at least one event', async () => {
    const store = await openTestStore();
    const error = await rejectsWith(
      store.append({ stream: "a", type: "T", expectedVersion: "exists" }),
      "WRONG_EXPECTED_VERSION",
    );
    assert.equal(error.actualVersion, 0);
    assert.equal(error.expectedVersion, "exists");
    await store.append({ stream: "a", type: "T" });
    await store.append({ stream: "a", type: "T", expectedVersion: "exists" });
    assert.equal(store.head, 2);
    await store.close();
  });

  test("versions count the batch's own earlier events", async () => {
    const store = await openTestStore();
    const events = await store.appendMany([
      { stream: "a", type: "T", expectedVersion: "no_stream" },
      { stream: "a", type: "T", expectedVersion: 1 },
      { stream: "b", type: "T", expectedVersion: 0 },
      { stream: "a", type: "T", expectedVersion: "exists" },
    ]);
    assert.deepEqual(
      events.map((e) => e.version),
      [1, 2, 1, 3],
    );
    await store.close();
  });

  test("a conflict anywhere in a batch writes nothing at all", async () => {
    const store = await openTestStore();
    await store.append({ stream: "a", type: "T" });
    const seen = [];
    store.subscribe("count", (n) => seen.push(n));
    const changes = [];
    store.on("change", (c) => changes.push(c));
    const error = await rejectsWith(
      store.appendMany([
        { stream: "b", type: "T", data: "first" },
        { stream: "c", type: "T", data: "second" },
        { stream: "a", type: "T", expectedVersion: 7 },
        { stream: "d", type: "T", data: "fourth" },
      ]),
      "WRONG_EXPECTED_VERSION",
    );
    assert.equal(error.stream, "a");
    assert.equal(error.actualVersion, 1);
    assert.equal(store.head, 1);
    assert.equal((await store.events()).length, 1);
    assert.equal(store.get("count"), 1);
    assert.deepEqual(seen, []);
    assert.deepEqual(changes, []);
    // Still usable, and positions continue without a gap.
    const next = await store.append({ stream: "b", type: "T" });
    assert.equal(next.position, 2);
    await store.close();
  });
});

// Idempotency by id (exact retries, DUPLICATE_ID, whole-batch retries): idempotency.test.mjs.

describe("reads", () => {
  async function filled() {
    const store = await openTestStore();
    await store.appendMany([
      { stream: "a", type: "Added", data: 1 },
      { stream: "b", type: "Added", data: 2 },
      { stream: "a", type: "Renamed", data: 3 },
      { stream: "c", type: "Added", data: 4 },
      { stream: "a", type: "Added", data: 5 },
      { stream: "b", type: "Removed", data: 6 },
    ]);
    return store;
  }
  const positions = (events) => events.map((e) => e.position);

  test("by range", async () => {
    const store = await filled();
    assert.deepEqual(positions(await store.events()), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(positions(await store.events({ after: 2 })), [3, 4, 5, 6]);
    assert.deepEqual(positions(await store.events({ after: 2, to: 4 })), [3, 4]);
    assert.deepEqual(positions(await store.events({ after: 1, limit: 2 })), [2, 3]);
    assert.deepEqual(positions(await store.events({ limit: 0 })), []);
    assert.deepEqual(positions(await store.events({ after: 6 })), []);
    assert.deepEqual(positions(await store.events({ after: 100 })), []);
    assert.deepEqual(positions(await store.events({ to: 100 })), [1, 2, 3, 4, 5, 6]);
    await store.close();
  });

  test("by stream and by type", async () => {
    const store = await filled();
    assert.deepEqual(positions(await store.events({ stream: "a" })), [1, 3, 5]);
    assert.deepEqual(positions(await store.events({ stream: "a", after: 1, limit: 1 })), [3]);
    assert.deepEqual(positions(await store.events({ stream: "a", to: 3 })), [1, 3]);
    assert.deepEqual(positions(await store.events({ stream: "nope" })), []);
    assert.deepEqual(positions(await store.events({ type: "Added" })), [1, 2, 4, 5]);
    assert.deepEqual(positions(await store.events({ type: "Added", after: 2, limit: 1 })), [4]);
    assert.deepEqual(positions(await store.events({ stream: "a", type: "Added" })), [1, 5]);
    assert.deepEqual(positions(await store.events({ stream: "b", type: "Removed" })), [6]);
    const [renamed] = await store.events({ type: "Renamed" });
    assert.equal(renamed.stream, "a");
    assert.equal(renamed.version, 2);
    assert.equal(renamed.data, 3);
    await store.close();
  });

  test("bad queries are INVALID_ARGUMENT", async () => {
    const store = await filled();
    for (const query of [
      { after: -1 },
      { after: 1.5 },
      { after: Number.NaN },
      { to: Number.POSITIVE_INFINITY },
      { limit: -2 },
      { stream: 42 },
      { type: ["Added"] },
      { afterr: 1 },
      "after=1",
    ]) {
      await rejectsWith(store.events(query), "INVALID_ARGUMENT", JSON.stringify(query));
    }
    await store.close();
  });

  test("compaction keeps every event readable", async () => {
    const store = await openTestStore();
    for (let i = 0; i < 20; i++) await store.appendMany(makeEvents(5, { from: i * 5 }));
    const before = await store.events();
    const report = await store.compact();
    assert.equal(report.segmentsBefore, 20);
    assert.ok(report.segmentsAfter < report.segmentsBefore);
    assert.equal(report.events, 100);
    assert.deepEqual(await store.events(), before);
    assert.deepEqual(
      (await store.events({ stream: "s-1" })).map((e) => e.data.i),
      before.filter((e) => e.stream === "s-1").map((e) => e.data.i),
    );
    const next = await store.append({ stream: "s-0", type: "T" });
    assert.equal(next.position, 101);
    await store.close();
  });
});

describe("opening", () => {
  test("memory is the default storage outside a browser", async () => {
    const store = await openStore({ name: uniqueName() });
    await store.append({ stream: "a", type: "T" });
    assert.equal(store.head, 1);
    assert.equal(store.name.startsWith("test-"), true);
    await store.close();
  });

  test("each plain memory store starts empty", async () => {
    const name = uniqueName();
    const one = await openStore({ name, storage: "memory" });
    await one.append({ stream: "a", type: "T" });
    const two = await openStore({ name, storage: "memory" });
    assert.equal(two.head, 0);
    await one.close();
    await two.close();
  });

  test("maxEventBytes lowers the size limit", async () => {
    const store = await openTestStore({ maxEventBytes: 100 });
    await store.append({ stream: "a", type: "T", data: "x".repeat(50) });
    await rejectsWith(store.append({ stream: "a", type: "T", data: "x".repeat(200) }), "INVALID_EVENT");
    assert.equal(store.head, 1);
    await store.close();
  });

  test("AnnalsError is a real Error", () => {
    const error = new AnnalsError("CLOSED", "closed");
    assert.ok(error instanceof Error);
    assert.equal(error.name, "AnnalsError");
    assert.equal(error.code, "CLOSED");
    assert.ok(String(error.stack).includes("AnnalsError"));
  });
});
