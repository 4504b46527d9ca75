// Exact idempotency, reads from a version and backwards, stream versions, names and batch
// limits (issue 13): a retry is the same event; a reused id is DUPLICATE_ID with the stored
// event; a batch is wholly a retry or wholly new; every append tells its stream's version.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { eventually, openTestStore, rejectsWith, uniqueName } from "./helpers.mjs";
import { installOnlineSwitch, serverFixture, skipWithoutServer } from "./server.mjs";

const ID = "0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70";
const ID2 = "0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f71";

describe("exact idempotency", () => {
  test("a retry of the same event resolves to the stored one, marked, with the stream's version now", async () => {
    const store = await openTestStore();
    const first = await store.append({ id: ID, stream: "a", type: "T", data: { n: 1 }, meta: { by: "me" }, expectedVersion: "no_stream" });
    assert.equal(first.streamVersion, 1);
    assert.equal("duplicate" in first, false);
    await store.append({ stream: "a", type: "T", data: { n: 2 } });
    const changes = [];
    store.on("change", (c) => changes.push(c));
    // The same event after a lost answer: its stale expectation is not checked again.
    const retry = await store.append({ id: ID, stream: "a", type: "T", data: { n: 1 }, meta: { by: "me" }, expectedVersion: "no_stream" });
    assert.equal(retry.duplicate, true);
    assert.equal(retry.position, 1);
    assert.equal(retry.version, 1);
    assert.equal(retry.streamVersion, 2, "the stream's version after the call, not the event's");
    assert.deepEqual(changes, [], "nothing written");
    assert.equal(store.head, 2);
    // The next append can expect what the retry told.
    const next = await store.append({ stream: "a", type: "T", expectedVersion: retry.streamVersion });
    assert.equal(next.version, 3);
    // Ids are compared as UUIDs, whatever their case.
    const upper = await store.append({ id: ID.toUpperCase(), stream: "a", type: "T", data: { n: 1 }, meta: { by: "me" } });
    assert.equal(upper.duplicate, true);
    await store.close();
  });

  test("a returned event is a copy: listeners and projections never see streamVersion", async () => {
    const seen = [];
    const store = await openTestStore({ projections: { all: { initial: [], apply: (s, e) => (seen.push(e), [...s, e.position]) } } });
    const events = await store.appendMany([
      { stream: "a", type: "T" },
      { stream: "b", type: "T" },
      { stream: "a", type: "T" },
    ]);
    assert.deepEqual(
      events.map((e) => e.streamVersion),
      [2, 1, 2],
    );
    assert.equal(seen.length, 3);
    assert.ok(seen.every((e) => !("streamVersion" in e)));
    assert.deepEqual(await store.events(), events.map(({ streamVersion: _, ...e }) => e));
    await store.close();
  });

  test("the same id with anything else is DUPLICATE_ID carrying the stored event; nothing written", async () => {
    const store = await openTestStore();
    const stored = await store.append({ id: ID, stream: "a", type: "T", data: { n: 1, m: 2 }, meta: { by: "me" } });
    for (const [field, other] of [
      ["stream", { stream: "b", type: "T", data: { n: 1, m: 2 }, meta: { by: "me" } }],
      ["type", { stream: "a", type: "U", data: { n: 1, m: 2 }, meta: { by: "me" } }],
      ["data", { stream: "a", type: "T", data: { n: 9, m: 2 }, meta: { by: "me" } }],
      ["data", { stream: "a", type: "T", data: { m: 2, n: 1 }, meta: { by: "me" } }], // JSON text, key order included
      ["meta", { stream: "a", type: "T", data: { n: 1, m: 2 } }],
      ["schemaVersion", { stream: "a", type: "T", data: { n: 1, m: 2 }, meta: { by: "me" }, schemaVersion: 2 }],
    ]) {
      const error = await rejectsWith(store.append({ id: ID, ...other }), "DUPLICATE_ID", field);
      assert.match(error.message, new RegExp(`its ${field} differs`));
      const { streamVersion: _, ...plain } = stored;
      assert.deepEqual(error.event, plain, "the stored event");
      assert.deepEqual(error.ids, [ID]);
    }
    assert.equal(store.head, 1);
    await store.close();
  });

  test("a batch is wholly a retry or wholly new; one id twice is INVALID_EVENT", async () => {
    const store = await openTestStore();
    const batch = [
      { id: ID, stream: "a", type: "T", data: 1 },
      { id: ID2, stream: "b", type: "T", data: 2 },
    ];
    const first = await store.appendMany(batch);
    const again = await store.appendMany(batch);
    assert.deepEqual(
      again.map((e) => [e.position, e.duplicate, e.streamVersion]),
      [
        [1, true, 1],
        [2, true, 1],
      ],
    );
    assert.deepEqual(again.map((e) => e.id), first.map((e) => e.id));
    const mixed = await rejectsWith(store.appendMany([batch[0], { stream: "a", type: "T", data: "new" }]), "DUPLICATE_ID");
    assert.match(mixed.message, /mixes retries/);
    assert.deepEqual(mixed.ids, [ID]);
    assert.equal(mixed.event.position, 1);
    const twice = await rejectsWith(
      store.appendMany([
        { id: "0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f7a", stream: "c", type: "T" },
        { id: "0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f7a", stream: "c", type: "T" },
      ]),
      "INVALID_EVENT",
    );
    assert.match(twice.message, /an id names one event/);
    assert.equal(store.head, 2);
    assert.equal(store.get("count"), 2);
    await store.close();
  });
});

describe("reads", () => {
  async function filled() {
    const store = await openTestStore();
    // a: positions 1, 3, 5, 7 (versions 1-4); b: 2, 4, 6.
    await store.appendMany([
      { stream: "a", type: "T", data: 1 },
      { stream: "b", type: "T", data: 2 },
      { stream: "a", type: "U", data: 3 },
      { stream: "b", type: "T", data: 4 },
      { stream: "a", type: "T", data: 5 },
      { stream: "b", type: "U", data: 6 },
      { stream: "a", type: "T", data: 7 },
    ]);
    return store;
  }
  const positions = (events) => events.map((e) => e.position);

  test("a stream from a version, backwards, limits from the newest", async () => {
    const store = await filled();
    assert.deepEqual(positions(await store.events({ stream: "a", fromVersion: 3 })), [5, 7]);
    assert.deepEqual(positions(await store.events({ stream: "a", fromVersion: 2, limit: 2 })), [3, 5]);
    assert.deepEqual(positions(await store.events({ stream: "a", backwards: true })), [7, 5, 3, 1]);
    assert.deepEqual(positions(await store.events({ stream: "a", backwards: true, limit: 2 })), [7, 5]);
    // The next page: below the oldest position read.
    assert.deepEqual(positions(await store.events({ stream: "a", backwards: true, limit: 2, to: 4 })), [3, 1]);
    assert.deepEqual(positions(await store.events({ stream: "a", type: "T", backwards: true, limit: 2 })), [7, 5]);
    await store.close();
  });

  test("the whole log backwards; fromVersion needs a stream", async () => {
    const store = await filled();
    assert.deepEqual(positions(await store.events({ backwards: true, limit: 3 })), [7, 6, 5]);
    assert.deepEqual(positions(await store.events({ after: 4, backwards: true })), [7, 6, 5]);
    assert.deepEqual(positions(await store.events({ after: 1, to: 3, backwards: true })), [3, 2]);
    await rejectsWith(store.events({ fromVersion: 2 }), "INVALID_ARGUMENT");
    await rejectsWith(store.events({ stream: "a", backwards: "yes" }), "INVALID_ARGUMENT");
    await rejectsWith(store.events({ stream: "a", fromVersion: -1 }), "INVALID_ARGUMENT");
    await store.close();
  });

  test("streamVersion reads the index: 0 for a stream without events", async () => {
    const store = await filled();
    assert.equal(await store.streamVersion("a"), 4);
    assert.equal(await store.streamVersion("b"), 3);
    assert.equal(await store.streamVersion("none"), 0);
    await rejectsWith(store.streamVersion(7), "INVALID_ARGUMENT");
    await store.close();
    await rejectsWith(store.streamVersion("a"), "CLOSED");
  });
});

describe("names and limits", () => {
  test("names with edge whitespace, control characters or a leading $ are INVALID_EVENT naming the field", async () => {
    const store = await openTestStore();
    for (const [event, pattern] of [
      [{ stream: " a", type: "T" }, /`stream` must not start or end with whitespace/],
      [{ stream: "a", type: "T\t" }, /`type` must not start or end with whitespace/],
      [{ stream: "a\u0000b", type: "T" }, /`stream` must not contain control characters/],
      [{ stream: "a", type: "T\u001bU" }, /`type` must not contain control characters/],
      [{ stream: "$all", type: "T" }, /reserved for annals' own streams/],
      [{ stream: "a", type: "$Deleted" }, /reserved for annals' own types/],
    ]) {
      const error = await rejectsWith(store.append(event), "INVALID_EVENT", JSON.stringify(event));
      assert.match(error.message, pattern);
    }
    await store.append({ stream: "todo list 1", type: "Added" });
    await store.append({ stream: "a$b", type: "Added" });
    assert.equal(store.head, 2);
    await store.close();
  });

  test("a batch over maxBatch (default 1000) is TOO_LARGE and writes nothing", async () => {
    const store = await openTestStore();
    const batch = (n) => Array.from({ length: n }, (_, i) => ({ stream: `s${i % 7}`, type: "T", data: i }));
    assert.equal((await store.appendMany(batch(1000))).length, 1000);
    const error = await rejectsWith(store.appendMany(batch(1001)), "TOO_LARGE");
    assert.match(error.message, /at most 1000 events/);
    assert.equal(store.head, 1000);
    await store.close();
    const small = await openTestStore({ maxBatch: 2 });
    await small.appendMany(batch(2));
    await rejectsWith(small.appendMany(batch(3)), "TOO_LARGE");
    await small.close();
    await rejectsWith(openTestStore({ maxBatch: 0 }), "INVALID_ARGUMENT");
  });
});

describe("idempotency through annals-server", { skip: skipWithoutServer }, () => {
  const setOnline = installOnlineSwitch();
  const fixture = serverFixture("idem");
  const client = (storeName) => fixture.client(storeName);

  test("an id another client stored as another event is rejected and reported; the same event is a duplicate", async () => {
    const name = uniqueName("reused");
    setOnline(true);
    const first = await client(name);
    await first.append({ id: ID, stream: "a", type: "T", data: "first" });
    await first.sync();
    setOnline(false);
    const same = await client(name);
    const other = await client(name);
    await same.append({ id: ID, stream: "a", type: "T", data: "first" });
    await other.append({ id: ID, stream: "a", type: "T", data: "other" });
    const reported = new Promise((resolve) => other.on("rejected", (...args) => resolve(args)));
    setOnline(true);
    const [event, reason] = await reported;
    assert.equal(event.id, ID);
    assert.deepEqual(event.data, "other");
    assert.match(reason, /^DUPLICATE_ID: /);
    await other.sync();
    assert.equal(other.syncStatus.pending, 0, "the rejected event left the outbox");
    await same.sync();
    await eventually(() => same.syncStatus.pending === 0 && same.confirmedHead === 1, 10_000, "the duplicate is confirmed");
    const [stored] = await same.events();
    assert.equal(stored.data, "first");
    assert.equal(stored.pending, false);
    const [kept] = await other.events();
    assert.equal(kept.data, "first", "the other client holds the server's event");
  });
});
