// Evolving events: upcasters (replayed, read by events()/stateAt/changes, renamed types,
// schema versions stamped on append), the unknown-event policies (skip, warn once per type
// and version, fail), the upgrade that folds what an older build skipped, and projection
// rebuilds in the background (progress, other projections serving, resume after a cut).
// `sharedMemory: true` stores stand for tabs and for reopening.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { openStore } from "annals";

import { eventually, rejectsWith, uniqueName } from "./helpers.mjs";
import { skipWithoutServer, startServer } from "./server.mjs";

/** The todo upcasters of version 3 of an app: v1 -> v2 adds a priority; v2 -> v3 renames TodoAdded to TodoCreated (title -> text). */
const upcastersV3 = {
  TodoAdded: {
    1: (data) => ({ ...data, priority: 0 }),
    2: { type: "TodoCreated", upcast: ({ title, ...rest }) => ({ ...rest, text: title }) },
  },
};

/** A todo list as version 3 of the app folds it. */
const todosV3 = {
  initial: {},
  apply(state, event) {
    switch (event.type) {
      case "TodoCreated":
        return { ...state, [event.stream]: { text: event.data.text, priority: event.data.priority } };
      default:
        return state;
    }
  },
};

function shared(name, options = {}) {
  return openStore({ name, storage: "memory", sharedMemory: true, ...options });
}

/** Collects the store's errors. */
function errorsOf(store) {
  const errors = [];
  store.on("error", (error) => errors.push(error));
  return errors;
}

/** Resolves when `predicate(progress)` holds for a "rebuild" progress of `store`. */
function rebuildProgress(store, predicate, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error("no such rebuild progress"));
    }, ms);
    const off = store.on("rebuild", (progress) => {
      if (!predicate(progress)) return;
      clearTimeout(timer);
      off();
      resolve(progress);
    });
  });
}

describe("upcasters", () => {
  test("a log of v1 events replays through the chain into v3 state (renamed type), on open and on new appends", async () => {
    const name = uniqueName("upcast-replay");
    const v1 = await shared(name);
    await v1.appendMany([
      { stream: "t1", type: "TodoAdded", data: { title: "milk" } },
      { stream: "t2", type: "TodoAdded", data: { title: "eggs" } },
    ]);
    await v1.close();

    const v3 = await shared(name, { upcasters: upcastersV3, projections: { todos: todosV3 } });
    assert.deepEqual(v3.get("todos"), { t1: { text: "milk", priority: 0 }, t2: { text: "eggs", priority: 0 } });
    // A v2 TodoAdded (given by the app) starts at the second upcaster; a TodoCreated is current.
    await v3.append({ stream: "t3", type: "TodoAdded", schemaVersion: 2, data: { title: "jam", priority: 2 } });
    const created = await v3.append({ stream: "t4", type: "TodoCreated", data: { text: "tea", priority: 1 } });
    assert.equal(created.schemaVersion, 3, "a new TodoCreated is appended at its current version");
    assert.equal(created.upcastFrom, undefined);
    assert.deepEqual(v3.get("todos").t3, { text: "jam", priority: 2 });
    assert.deepEqual(v3.get("todos").t4, { text: "tea", priority: 1 });
    await v3.close();
  });

  test("events(), events({ type }) through a rename, stateAt and change events are upcast; the stored version shows as upcastFrom", async () => {
    const name = uniqueName("upcast-reads");
    const v1 = await shared(name);
    await v1.append({ stream: "t1", type: "TodoAdded", data: { title: "milk" } });
    await v1.append({ stream: "x", type: "Other", data: {} });
    const v3 = await shared(name, { upcasters: upcastersV3, projections: { todos: todosV3 } });
    const changes = [];
    v3.on("change", (change) => changes.push(...change.events));

    const [first, other] = await v3.events();
    assert.equal(first.type, "TodoCreated");
    assert.equal(first.schemaVersion, 3);
    assert.deepEqual(first.data, { text: "milk", priority: 0 });
    assert.deepEqual(first.upcastFrom, { type: "TodoAdded", schemaVersion: 1 });
    assert.equal(other.type, "Other");
    assert.equal(other.upcastFrom, undefined);

    // A read by the new name finds the events stored under the old one (and a limit holds).
    await v1.append({ stream: "t2", type: "TodoAdded", data: { title: "eggs" } });
    await v3.catchUp();
    assert.deepEqual((await v3.events({ type: "TodoCreated" })).map((e) => e.stream), ["t1", "t2"]);
    assert.deepEqual((await v3.events({ type: "TodoCreated", limit: 1 })).map((e) => e.stream), ["t1"]);
    assert.deepEqual(await v3.events({ type: "TodoAdded" }), [], "no event reads as TodoAdded any more");

    // The change that brought t2 in was upcast.
    const t2 = changes.find((e) => e.stream === "t2");
    assert.equal(t2.type, "TodoCreated");
    assert.deepEqual(t2.data, { text: "eggs", priority: 0 });

    assert.deepEqual(await v3.stateAt("todos", 1), { t1: { text: "milk", priority: 0 } });
    // The old build still reads them as stored: the bytes did not change.
    const stored = await v1.events();
    assert.equal(stored[0].type, "TodoAdded");
    assert.deepEqual(stored[0].data, { title: "milk" });
    await v3.close();
    await v1.close();
  });

  test("the devtools see upcast events with the stored version; bundles carry the events as stored", async () => {
    const name = uniqueName("upcast-devtools");
    const store = await shared(name, { upcasters: upcastersV3, projections: { todos: todosV3 } });
    const appended = await store.append({ stream: "t1", type: "TodoAdded", data: { title: "milk" } });
    assert.equal(appended.type, "TodoCreated", "append resolves to the event as read");
    const again = await store.append({ id: appended.id, stream: "t1", type: "TodoAdded", data: { title: "milk" } });
    assert.equal(again.type, "TodoCreated", "a duplicate id resolves to the stored event, upcast");
    const [seen] = store[Symbol.for("annals.debug")].range(0, 1);
    assert.equal(seen.type, "TodoCreated");
    assert.deepEqual(seen.data, { text: "milk", priority: 0 });
    assert.deepEqual(seen.upcastFrom, { type: "TodoAdded", schemaVersion: 1 });
    const [, line] = (await store.exportBundle()).split("\n");
    const stored = JSON.parse(line);
    assert.equal(stored.type, "TodoAdded");
    assert.deepEqual(stored.data, { title: "milk" });
    await store.close();
  });

  test("events decided by commands are stamped with their type's current version too (not upcast again)", async () => {
    const store = await openStore({
      name: uniqueName("upcast-execute"),
      storage: "memory",
      upcasters: upcastersV3,
      aggregates: {
        todo: {
          initial: null,
          evolve: (s, e) => (e.type === "TodoCreated" ? e.data : s),
          decide: (command) => [{ type: "TodoCreated", data: { text: command.text, priority: 5 } }],
        },
      },
    });
    const { events } = await store.execute("todo", "t1", { type: "Create", text: "milk" });
    assert.equal(events[0].schemaVersion, 3);
    const [stored] = await store.events();
    assert.equal(stored.schemaVersion, 3);
    assert.equal(stored.upcastFrom, undefined);
    assert.deepEqual(stored.data, { text: "milk", priority: 5 });
    await store.close();
  });

  test("the chain is checked at open: a gap, a duplicate, an ambiguous end, a malformed upcaster", async () => {
    const f = (d) => d;
    let error = await rejectsWith(openStore({ name: uniqueName(), storage: "memory", upcasters: { A: { 1: f, 3: f } } }), "INVALID_ARGUMENT");
    assert.match(error.message, /A.*2.*3/);
    error = await rejectsWith(openStore({ name: uniqueName(), storage: "memory", upcasters: { A: { 1: f, "01": f } } }), "INVALID_ARGUMENT");
    assert.match(error.message, /duplicate/);
    error = await rejectsWith(
      openStore({ name: uniqueName(), storage: "memory", upcasters: { A: { 1: { type: "B", upcast: f }, 2: f } } }),
      "INVALID_ARGUMENT",
    );
    assert.match(error.message, /ambiguous/);
    error = await rejectsWith(openStore({ name: uniqueName(), storage: "memory", upcasters: { A: { 1: "nope" } } }), "INVALID_ARGUMENT");
    assert.match(error.message, /A 1 -> 2/);
    await rejectsWith(openStore({ name: uniqueName(), storage: "memory", upcasters: { A: { zero: f } } }), "INVALID_ARGUMENT");
    await rejectsWith(openStore({ name: uniqueName(), storage: "memory", unknownEvents: "ignore" }), "INVALID_ARGUMENT");
    await rejectsWith(openStore({ name: uniqueName(), storage: "memory", rebuild: { slice: 0 } }), "INVALID_ARGUMENT");
  });
});

/** Version 2 of an app: Note events are at schema version 2 (v1 -> v2 adds tags). */
const upcastersV2 = { Note: { 1: (data) => ({ ...data, tags: [] }) } };
/** Version 3: v2 -> v3 adds a colour. */
const upcastersV3Notes = { Note: { ...upcastersV2.Note, 2: (data) => ({ ...data, color: "none" }) } };
const notes = {
  initial: [],
  apply: (state, event) => (event.type === "Note" ? [...state, `${event.data.text}:${event.data.color ?? "-"}`] : state),
};

describe("unknown events", () => {
  for (const policy of ["warn", "skip"]) {
    test(`"${policy}": an event of a version this build does not know is left out${policy === "warn" ? " and reported once per type and version" : " silently"}; it is kept`, async () => {
      const name = uniqueName(`unknown-${policy}`);
      const newer = await shared(name, { upcasters: upcastersV3Notes });
      const older = await shared(name, { upcasters: upcastersV2, unknownEvents: policy, projections: { notes } });
      const errors = errorsOf(older);
      await newer.append({ stream: "n", type: "Note", schemaVersion: 2, data: { text: "a", tags: [] } });
      await newer.append({ stream: "n", type: "Note", data: { text: "b", tags: [], color: "red" } }); // stamped 3
      await newer.append({ stream: "n", type: "Note", data: { text: "c", tags: [], color: "blue" } });
      await newer.append({ stream: "n", type: "Other", schemaVersion: 7, data: {} });
      await older.catchUp();
      assert.deepEqual(older.get("notes"), ["a:-"]);
      const unknown = errors.filter((e) => e.code === "UNKNOWN_EVENT");
      if (policy === "warn") {
        assert.equal(unknown.length, 2, "once for Note v3, once for Other v7");
        assert.match(unknown[0].message, /Note, schema version 3/);
        assert.match(unknown[1].message, /Other, schema version 7/);
      } else {
        assert.equal(unknown.length, 0);
      }
      // Folding again (stateAt, more events) reports nothing new.
      await older.stateAt("notes", 4);
      await newer.append({ stream: "n", type: "Note", data: { text: "d", tags: [], color: "red" } });
      await older.catchUp();
      assert.equal(errors.filter((e) => e.code === "UNKNOWN_EVENT").length, unknown.length);
      // Kept as they are.
      const kept = await older.events();
      assert.equal(kept.length, 5);
      assert.equal(kept[1].schemaVersion, 3);
      await older.close();
      await newer.close();
    });
  }

  test("unknown events met while the store opens are reported to listeners added once it is open", async () => {
    const name = uniqueName("unknown-at-open");
    const newer = await shared(name, { upcasters: upcastersV3Notes });
    await newer.append({ stream: "n", type: "Note", data: { text: "a", tags: [], color: "red" } });
    const older = await shared(name, { upcasters: upcastersV2, projections: { notes } });
    const errors = errorsOf(older);
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(older.get("notes"), []);
    assert.deepEqual(errors.map((e) => e.code), ["UNKNOWN_EVENT"]);
    await older.close();
    await newer.close();
  });

  test('"fail": the projection stops before the unknown event (state before it), reported once', async () => {
    const name = uniqueName("unknown-fail");
    const newer = await shared(name, { upcasters: upcastersV3Notes });
    const older = await shared(name, { upcasters: upcastersV2, unknownEvents: "fail", projections: { notes } });
    const errors = errorsOf(older);
    await newer.append({ stream: "n", type: "Note", schemaVersion: 2, data: { text: "a", tags: [] } });
    await newer.append({ stream: "n", type: "Note", data: { text: "b", tags: [], color: "red" } });
    await newer.append({ stream: "n", type: "Note", schemaVersion: 2, data: { text: "c", tags: [] } });
    await older.catchUp();
    assert.deepEqual(older.get("notes"), ["a:-"]);
    await older.append({ stream: "n", type: "Note", data: { text: "d" } });
    assert.deepEqual(older.get("notes"), ["a:-"], "nothing past the unknown event is folded");
    assert.deepEqual(await older.stateAt("notes", 4), ["a:-"]);
    assert.equal(errors.filter((e) => e.code === "UNKNOWN_EVENT").length, 1);
    await older.close();
    // A build that knows it folds on (from the snapshot the older build left before it).
    const upgraded = await shared(name, { upcasters: upcastersV3Notes, unknownEvents: "fail", projections: { notes } });
    assert.deepEqual(upgraded.get("notes"), ["a:-", "b:red", "c:none", "d:none"]);
    await upgraded.close();
    await newer.close();
  });

  test("a v2 client receives a v3 event, skips it with a warning, snapshots, then upgrades: its state includes it", async () => {
    const name = uniqueName("unknown-upgrade");
    const newer = await shared(name, { upcasters: upcastersV3Notes });
    const older = await shared(name, { upcasters: upcastersV2, projections: { notes }, snapshotEvery: 1 });
    const errors = errorsOf(older);
    await newer.append({ stream: "n", type: "Note", schemaVersion: 1, data: { text: "a" } });
    await newer.append({ stream: "n", type: "Note", data: { text: "b", tags: [], color: "red" } });
    await older.catchUp();
    await older.append({ stream: "n", type: "Note", data: { text: "c", tags: [] } });
    assert.deepEqual(older.get("notes"), ["a:-", "c:-"]);
    assert.equal(errors.filter((e) => e.code === "UNKNOWN_EVENT").length, 1);
    await older.close(); // writes its snapshot at the head, past the skipped event

    // Reopened by the same (older) build: the snapshot serves, the event is still left out.
    const again = await shared(name, { upcasters: upcastersV2, projections: { notes } });
    assert.deepEqual(again.get("notes"), ["a:-", "c:-"]);
    await again.close();

    const upgraded = await shared(name, { upcasters: upcastersV3Notes, projections: { notes } });
    assert.deepEqual(upgraded.get("notes"), ["a:none", "b:red", "c:none"]);
    await upgraded.close();
    await newer.close();
  });

  test("with `events` schemas, a type without one is unknown (left out, reported once)", async () => {
    const anything = { "~standard": { version: 1, vendor: "test", validate: (value) => ({ value }) } };
    const store = await openStore({ name: uniqueName("unknown-type"), storage: "memory", events: { Note: anything }, projections: { notes } });
    const errors = errorsOf(store);
    await store.append({ stream: "n", type: "Note", data: { text: "a" } });
    await store.append({ stream: "n", type: "Poll", data: { q: "?" } });
    await store.append({ stream: "n", type: "Poll", data: { q: "!" } });
    assert.deepEqual(store.get("notes"), ["a:-"]);
    const unknown = errors.filter((e) => e.code === "UNKNOWN_EVENT");
    assert.equal(unknown.length, 1);
    assert.match(unknown[0].message, /Poll has no schema/);
    assert.equal((await store.events()).length, 3, "kept");
    await store.close();
  });

  describe("by sync", { skip: skipWithoutServer }, () => {
    test("a v2 client receives a v3 event from the server, warns, and once upgraded folds it", async () => {
      const server = await startServer();
      const storeName = uniqueName("evolve-sync");
      const sync = { url: server.url, store: storeName, token: server.token, longPollSeconds: 1 };
      try {
        const newer = await openStore({ name: uniqueName("newer"), storage: "memory", upcasters: upcastersV3Notes, sync });
        await newer.append({ stream: "n", type: "Note", schemaVersion: 1, data: { text: "a" } });
        await newer.append({ stream: "n", type: "Note", data: { text: "b", tags: [], color: "red" } });
        await newer.sync();
        const local = uniqueName("older");
        const older = await openStore({ name: local, storage: "memory", sharedMemory: true, upcasters: upcastersV2, projections: { notes }, sync });
        const errors = errorsOf(older);
        await eventually(() => older.confirmedHead === 2, 5000, "pulled");
        assert.deepEqual(older.get("notes"), ["a:-"]);
        assert.equal(errors.filter((e) => e.code === "UNKNOWN_EVENT").length, 1);
        assert.equal((await older.events())[1].schemaVersion, 3, "kept as the newer client wrote it");
        await older.close();
        const upgraded = await openStore({ name: local, storage: "memory", sharedMemory: true, upcasters: upcastersV3Notes, projections: { notes }, sync });
        assert.deepEqual(upgraded.get("notes"), ["a:none", "b:red"]);
        await upgraded.close();
        await newer.close();
      } finally {
        await server.stop();
      }
    });
  });

  test("an event whose upcaster throws is read as stored and handled as unknown", async () => {
    const store = await openStore({
      name: uniqueName("upcast-throws"),
      storage: "memory",
      upcasters: { Note: { 1: (data) => ({ ...data, tags: data.tags.map((t) => t.trim()) }) } },
      projections: { notes },
    });
    const errors = errorsOf(store);
    await store.append({ stream: "n", type: "Note", schemaVersion: 1, data: { text: "a", tags: [" x "] } });
    await store.append({ stream: "n", type: "Note", schemaVersion: 1, data: { text: "b" } }); // no tags: it throws
    assert.deepEqual(store.get("notes"), ["a:-"]);
    const unknown = errors.filter((e) => e.code === "UNKNOWN_EVENT");
    assert.equal(unknown.length, 1);
    assert.match(unknown[0].message, /upcaster Note 1 -> 2 threw/);
    const [, b] = await store.events();
    assert.deepEqual(b.data, { text: "b" });
    assert.equal(b.upcastFrom, undefined);
    await store.close();
  });

  test("plain snapshots (without the envelope) still load", async () => {
    const name = uniqueName("snapshot-plain");
    const a = await shared(name, { projections: { notes } });
    await a.append({ stream: "n", type: "Note", data: { text: "a" } });
    await a.close();
    let applied = 0;
    const counting = { ...notes, apply: (s, e) => (applied++, notes.apply(s, e)) };
    const b = await shared(name, { projections: { notes: counting } });
    assert.deepEqual(b.get("notes"), ["a:-"]);
    assert.equal(applied, 0, "from the snapshot");
    await b.close();
  });
});

/** A reducer that counts events and sums `data.i`. */
const counter = (version) => ({
  version,
  initial: { n: 0, sum: 0 },
  apply: (s, e) => ({ n: s.n + 1, sum: s.sum + (e.data?.i ?? 0) }),
});

async function fill(store, n) {
  for (let from = 0; from < n; from += 1_000) {
    const batch = Array.from({ length: Math.min(1_000, n - from) }, (_, k) => ({ stream: `s${(from + k) % 7}`, type: "Counted", data: { i: from + k } }));
    await store.appendMany(batch);
  }
}

const sumTo = (n) => (n * (n - 1)) / 2;

describe("projection rebuilds", () => {
  test("a changed version rebuilds in the background: progress, the others serve, appends go on, get shows the fold so far", async () => {
    const name = uniqueName("rebuild");
    const N = 30_000;
    const first = await shared(name, { projections: { a: counter(1), b: counter(1) } });
    await fill(first, N);
    await first.close();

    const rebuild = { background: 1_000, slice: 1_000, saveEvery: 5_000 };
    const store = await shared(name, { projections: { a: counter(2), b: counter(1) }, rebuild });
    const progress = [];
    store.on("rebuild", (p) => progress.push(p));
    const done = rebuildProgress(store, (p) => p.done === p.total && p.total > N);
    // Open resolved before the rebuild: b is ready, a has folded nothing yet.
    assert.deepEqual(store.get("b"), { n: N, sum: sumTo(N) });
    assert.ok(store.get("a").n < N, "a is still rebuilding");
    // Appends work meanwhile, and b follows them at once.
    await store.append({ stream: "late", type: "Counted", data: { i: N } });
    assert.equal(store.get("b").n, N + 1);
    // Time travel works meanwhile (it folds what the rebuild has not reached).
    assert.deepEqual(await store.stateAt("a", N + 1), { n: N + 1, sum: sumTo(N + 1) });
    assert.deepEqual(await store.stateAt("a", 10), { n: 10, sum: sumTo(10) });
    await done;
    assert.deepEqual(store.get("a"), { n: N + 1, sum: sumTo(N + 1) });
    assert.ok(progress.length >= 10, `progress reported per slice (${progress.length})`);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i].done >= progress[i - 1].done);
    assert.ok(progress.every((p) => p.name === "a"));
    assert.equal(progress[0].done, 0, "the first progress (heard by listeners added after open) starts at 0");
    // After it, a folds new events like any projection.
    await store.append({ stream: "later", type: "Counted", data: { i: 0 } });
    assert.equal(store.get("a").n, N + 2);
    await store.close();

    // The next open takes the finished rebuild's snapshot: no rebuild.
    const reopened = await shared(name, { projections: { a: counter(2), b: counter(1) }, rebuild });
    const more = [];
    reopened.on("rebuild", (p) => more.push(p));
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(more, []);
    assert.equal(reopened.get("a").n, N + 2);
    await reopened.close();
  });

  test("a rebuild cut by a close resumes from its partial snapshot on the next open", async () => {
    const name = uniqueName("rebuild-resume");
    const N = 40_000;
    const first = await shared(name, { projections: { a: counter(1) } });
    await fill(first, N);
    await first.close();

    const rebuild = { background: 1_000, slice: 1_000, saveEvery: 4_000 };
    const cut = await shared(name, { projections: { a: counter(2) }, rebuild });
    const reached = await rebuildProgress(cut, (p) => p.done >= 12_000);
    assert.ok(reached.done < N);
    await cut.close();

    const resumed = await shared(name, { projections: { a: counter(2) }, rebuild });
    const progress = [];
    resumed.on("rebuild", (p) => progress.push(p));
    const resumedAt = resumed.get("a").n;
    assert.ok(resumedAt >= 12_000, `resumed from the partial snapshot (${resumedAt})`);
    await rebuildProgress(resumed, (p) => p.done === p.total);
    assert.deepEqual(resumed.get("a"), { n: N, sum: sumTo(N) });
    assert.equal(progress[0].done, resumedAt, "the first progress says where it resumed");
    await resumed.close();
  });

  test("a small log rebuilds before open resolves (no background)", async () => {
    const name = uniqueName("rebuild-small");
    const first = await shared(name, { projections: { a: counter(1) } });
    await fill(first, 100);
    await first.close();
    const store = await shared(name, { projections: { a: counter(2) } });
    assert.deepEqual(store.get("a"), { n: 100, sum: sumTo(100) });
    await store.close();
  });
});
