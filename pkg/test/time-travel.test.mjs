// Time-travel debugging from Node: what-if folds, freezing the app at a past position,
// fingerprints that compare replicas, bug bundles that reproduce states, diffs of states,
// and checkpoints that adapt to what a reducer costs within their memory budget.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";

import { AnnalsError, diff, openBundle, openStore } from "annals";

import { rejectsWith, uniqueName } from "./helpers.mjs";
import { skipWithoutServer, startServer } from "./server.mjs";

/** A board: cards by id, each with a title and a list; `CardRemoved` deletes one. */
const board = {
  initial: { cards: {} },
  apply: (state, e) => {
    switch (e.type) {
      case "CardAdded":
        return { cards: { ...state.cards, [e.data.id]: { title: e.data.title, list: "todo", at: e.time } } };
      case "CardMoved":
        return { cards: { ...state.cards, [e.data.id]: { ...state.cards[e.data.id], list: e.data.list } } };
      case "CardRemoved": {
        const { [e.data.id]: _gone, ...rest } = state.cards;
        return { cards: rest };
      }
      default:
        return state;
    }
  },
};
const count = { initial: 0, apply: (n) => n + 1 };

/** Appends `events` in batches of 1,000 (an append's default limit); returns the stored events. */
async function appendAll(store, events) {
  const stored = [];
  for (let i = 0; i < events.length; i += 1_000) stored.push(...(await store.appendMany(events.slice(i, i + 1_000))));
  return stored;
}

/** What annals/devtools reads of a store (pkg/src/debug.ts). */
const debugAccessFor = (store) => store[Symbol.for("annals.debug")];

function openBoard(extra = {}) {
  return openStore({ name: uniqueName("board"), storage: "memory", projections: { board, count }, ...extra });
}

/** Adds cards c1..cN, then moves c2 to "done". */
async function fill(store, n = 5) {
  const added = await store.appendMany(
    Array.from({ length: n }, (_, i) => ({ stream: `card-${i + 1}`, type: "CardAdded", data: { id: `c${i + 1}`, title: `card ${i + 1}` } })),
  );
  const moved = await store.append({ stream: "card-2", type: "CardMoved", data: { id: "c2", list: "done" } });
  return { added, moved };
}

describe("what-if: stateAt with events skipped", () => {
  test("leaves the skipped events out of the fold, and the log keeps them", async () => {
    const store = await openBoard();
    const { added, moved } = await fill(store);
    const state = await store.stateAt("board", store.head, { skip: [added[2].id, moved.id] });
    assert.deepEqual(Object.keys(state.cards).sort(), ["c1", "c2", "c4", "c5"]);
    assert.equal(state.cards.c2.list, "todo", "the move was switched off");
    assert.equal(await store.stateAt("count", 6, { skip: [added[0].id] }), 5);
    // Nothing changed: the log, the head and the current state.
    assert.equal(store.head, 6);
    assert.equal((await store.events()).length, 6);
    assert.equal(store.get("board").cards.c2.list, "done");
    assert.equal(Object.keys(store.get("board").cards).length, 5);
    await store.close();
  });

  test("a skip past the target or of an unknown id changes nothing; a bad skip is INVALID_ARGUMENT", async () => {
    const store = await openBoard();
    const { moved } = await fill(store);
    assert.deepEqual(await store.stateAt("board", 5, { skip: [moved.id] }), await store.stateAt("board", 5));
    assert.deepEqual(
      await store.stateAt("board", 6, { skip: ["0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70", "not-an-id"] }),
      await store.stateAt("board", 6),
    );
    await rejectsWith(store.stateAt("board", 6, { skip: "c1" }), "INVALID_ARGUMENT");
    await rejectsWith(store.stateAt("board", 6, { skip: [42] }), "INVALID_ARGUMENT");
    await rejectsWith(store.stateAt("board", 7), "INVALID_ARGUMENT");
    await store.close();
  });

  test("a what-if over a long log starts from a checkpoint before the skipped event", async () => {
    const store = await openStore({
      name: uniqueName("long"),
      storage: "memory",
      projections: { count, sum: { initial: 0, apply: (s, e) => s + e.data.n } },
    });
    const events = await appendAll(store, Array.from({ length: 5_000 }, (_, i) => ({ stream: "s", type: "N", data: { n: i + 1 } })));
    // Visit positions so checkpoints exist beyond the skipped event.
    for (const p of [1_000, 3_000, 4_900]) await store.stateAt("sum", p);
    assert.equal(await store.stateAt("sum", 4_900, { skip: [events[1_999].id] }), (4_900 * 4_901) / 2 - 2_000);
    assert.equal(await store.stateAt("sum", 4_900), (4_900 * 4_901) / 2);
    await store.close();
  });
});

test("stepping through a what-if starts from the what-if states reached before", async () => {
  let calls = 0;
  const sum = { initial: 0, apply: (s, e) => (calls++, s + e.data.n) };
  const store = await openStore({ name: uniqueName("whatif-steps"), storage: "memory", projections: { sum } });
  const events = await appendAll(store, Array.from({ length: 3_000 }, (_, i) => ({ stream: "s", type: "N", data: { n: i + 1 } })));
  const skip = [events[999].id];
  const expected = (p) => (p * (p + 1)) / 2 - 1_000;
  assert.equal(await store.stateAt("sum", 2_500, { skip }), expected(2_500));
  calls = 0;
  assert.equal(await store.stateAt("sum", 2_501, { skip }), expected(2_501));
  assert.equal(await store.stateAt("sum", 2_499, { skip }), expected(2_499));
  assert.ok(calls < 1_100, `${calls} events folded for two steps; from the switched-off event it would be about 3,000`);
  // Another set of events off starts afresh, and the log's own states are not what-if ones.
  assert.equal(await store.stateAt("sum", 2_500, { skip: [events[0].id] }), (2_500 * 2_501) / 2 - 1);
  assert.equal(await store.stateAt("sum", 2_500), (2_500 * 2_501) / 2);
  await store.close();
});

describe("stepping", () => {
  /** A store of 3,000 events folded by a sum that counts its calls, checkpoints every 1,000. */
  async function summing() {
    const calls = { n: 0 };
    const sum = { initial: 0, apply: (s, e) => (calls.n++, s + e.data.n) };
    const store = await openStore({ name: uniqueName("steps"), storage: "memory", projections: { sum }, checkpointEvery: 1_000 });
    await appendAll(store, Array.from({ length: 3_000 }, (_, i) => ({ stream: "s", type: "N", data: { n: i + 1 } })));
    return { store, calls };
  }
  const total = (p) => (p * (p + 1)) / 2;

  test("a step forward folds one event from the state just visited", async () => {
    const { store, calls } = await summing();
    assert.equal(await store.stateAt("sum", 2_500), total(2_500));
    for (let p = 2_501; p <= 2_600; p++) {
      calls.n = 0;
      assert.equal(await store.stateAt("sum", p), total(p));
      assert.equal(calls.n, 1, `step to ${p}`);
    }
    await store.close();
  });

  test("stepping back past the states visited refolds once and keeps the states before the target", async () => {
    const { store, calls } = await summing();
    assert.equal(await store.stateAt("sum", 2_500), total(2_500));
    for (let p = 2_501; p <= 2_600; p++) await store.stateAt("sum", p);
    // Back down: the states just visited are kept (64 of them), then one refold from the
    // checkpoint at 2,000 leaves the 32 states before its target, and so on.
    const folded = [];
    for (let p = 2_599; p >= 2_400; p--) {
      calls.n = 0;
      assert.equal(await store.stateAt("sum", p), total(p));
      folded.push(calls.n);
    }
    const refolds = folded.filter((n) => n > 0);
    assert.ok(refolds.length <= 7, `${refolds.length} of 200 steps back refolded (${refolds.join(", ")})`);
    assert.ok(refolds.every((n) => n <= 600), `each refold starts at the checkpoint at 2,000: ${refolds.join(", ")}`);
    await store.close();
  });

  test("a reducer that mutates its state cannot change the states kept for travel", async () => {
    // The anti-pattern time travel must survive: the state is changed in place.
    const mutating = {
      initial: { total: 0, seen: [] },
      apply: (s, e) => {
        s.total += e.data.n;
        s.seen.push(e.position);
        return s;
      },
    };
    const store = await openStore({ name: uniqueName("mutating"), storage: "memory", projections: { mutating }, checkpointEvery: 100 });
    await appendAll(store, Array.from({ length: 1_000 }, (_, i) => ({ stream: "s", type: "N", data: { n: i + 1 } })));
    for (const p of [150, 151, 149, 450, 120, 151, 999, 1]) {
      const state = await store.stateAt("mutating", p);
      assert.equal(state.total, total(p), `total at ${p}`);
      assert.equal(state.seen.length, p, `events seen at ${p}`);
      // What the app does to a state it was given changes nothing kept either.
      state.total = -1;
      state.seen.length = 0;
    }
    assert.equal(store.get("mutating").total, total(1_000));
    await store.close();
  });
});

describe("freeze", () => {
  test("the app sees the past; appends and commands fail with FROZEN naming the position", async () => {
    const store = await openStore({
      name: uniqueName("freeze"),
      storage: "memory",
      projections: { board, count },
      aggregates: {
        card: {
          initial: {},
          evolve: (s) => s,
          decide: (command) => [{ type: "CardAdded", data: { id: command.id, title: "x" } }],
        },
      },
    });
    await fill(store);
    const seen = [];
    store.subscribe("count", (n) => seen.push(n));
    const frozenEvents = [];
    store.on("frozen", (p) => frozenEvents.push(p));
    await store.freeze(2);
    assert.equal(store.frozenAt, 2);
    assert.equal(store.get("count"), 2);
    assert.deepEqual(Object.keys(store.get("board").cards), ["c1", "c2"]);
    assert.deepEqual(seen, [2], "subscribers (and so the UI) were told of the past state");
    const error = await rejectsWith(store.append({ stream: "x", type: "CardAdded", data: { id: "c9", title: "" } }), "FROZEN");
    assert.match(error.message, /frozen at position 2.*unfreeze\(\)/);
    await rejectsWith(store.appendMany([]), "FROZEN");
    await rejectsWith(store.execute("card", "card-9", { type: "Add", id: "c9" }), "FROZEN");
    assert.equal(store.head, 6, "nothing was written");
    store.unfreeze();
    assert.equal(store.frozenAt, undefined);
    assert.equal(store.get("count"), 6);
    assert.deepEqual(seen, [2, 6]);
    assert.deepEqual(frozenEvents, [2, undefined]);
    await store.append({ stream: "x", type: "CardAdded", data: { id: "c9", title: "" } });
    assert.equal(store.get("count"), 7);
    await store.close();
  });

  test("events from another tab are stored while frozen and show on unfreeze", async () => {
    const name = uniqueName("tabs");
    const here = await openStore({ name, storage: "memory", sharedMemory: true, projections: { count } });
    const there = await openStore({ name, storage: "memory", sharedMemory: true, projections: { count } });
    await here.appendMany([{ stream: "a", type: "T" }, { stream: "a", type: "T" }]);
    await here.freeze(1);
    await there.catchUp();
    await there.appendMany([{ stream: "b", type: "T" }, { stream: "b", type: "T" }, { stream: "b", type: "T" }]);
    await here.catchUp();
    assert.equal(here.head, 5, "stored");
    assert.equal(here.get("count"), 1, "but the app still sees position 1");
    here.unfreeze();
    assert.equal(here.get("count"), 5);
    await Promise.all([here.close(), there.close()]);
  });

  test("freezing past the head is INVALID_ARGUMENT and leaves the store as it was", async () => {
    const store = await openBoard();
    await fill(store);
    await rejectsWith(store.freeze(99), "INVALID_ARGUMENT");
    assert.equal(store.frozenAt, undefined);
    await store.append({ stream: "x", type: "CardAdded", data: { id: "c9", title: "" } });
    await store.close();
  });
});

describe("fingerprints", () => {
  test("equal on replicas with the same log, different after a one-event change, and past positions too", async () => {
    // The board records each event's time; replicas that appended separately differ there.
    const timeless = { ...board, apply: (s, e) => board.apply(s, { ...e, time: 0 }) };
    const a = await openBoard({ projections: { board: timeless, count } });
    const b = await openBoard({ projections: { board: timeless, count } });
    await fill(a);
    await fill(b);
    const fa = await a.fingerprint("board");
    assert.match(fa, /^[0-9a-f]{16}$/);
    assert.equal(await b.fingerprint("board"), fa, "same events, same state: same fingerprint (ids and times differ)");
    assert.equal(await a.fingerprint("board", 3), await b.fingerprint("board", 3));
    assert.notEqual(await a.fingerprint("board", 3), await a.fingerprint("board", 4));
    await b.append({ stream: "card-3", type: "CardMoved", data: { id: "c3", list: "doing" } });
    assert.notEqual(await b.fingerprint("board"), fa);
    assert.equal(await b.fingerprint("board", 6), fa);
    await Promise.all([a.close(), b.close()]);
  });

  test("key order does not matter: it hashes canonical JSON", async () => {
    const forwards = { initial: {}, apply: (s, e) => ({ ...s, [e.data.k]: e.data.v }) };
    const backwards = { initial: {}, apply: (s, e) => ({ [e.data.k]: e.data.v, ...s }) };
    const a = await openStore({ name: uniqueName("fa"), storage: "memory", projections: { kv: forwards } });
    const b = await openStore({ name: uniqueName("fb"), storage: "memory", projections: { kv: backwards } });
    const events = [
      { stream: "s", type: "Set", data: { k: "x", v: 1 } },
      { stream: "s", type: "Set", data: { k: "y", v: 2 } },
    ];
    await a.appendMany(events);
    await b.appendMany(events);
    assert.notEqual(JSON.stringify(a.get("kv")), JSON.stringify(b.get("kv")));
    assert.equal(await a.fingerprint("kv"), await b.fingerprint("kv"));
    await Promise.all([a.close(), b.close()]);
  });
});

describe("bug bundles", () => {
  test("export then open reproduces every state and fingerprint, with ids and times", async () => {
    const store = await openBoard();
    await fill(store, 300);
    const text = await store.exportBundle({ fingerprintEvery: 50 });
    const lines = text.trimEnd().split("\n");
    const header = JSON.parse(lines[0]);
    assert.equal(header.format, "annals-bundle");
    assert.equal(header.formatVersion, 1);
    assert.equal(header.annals, JSON.parse(await readFile(new URL("../package.json", import.meta.url), "utf8")).version);
    assert.equal(header.events, 301);
    assert.deepEqual(header.projections, [
      { name: "board", version: 1 },
      { name: "count", version: 1 },
    ]);
    assert.deepEqual(
      header.fingerprints.board.map(([p]) => p),
      [50, 100, 150, 200, 250, 300, 301],
    );
    assert.equal(lines.length, 302);
    assert.deepEqual(JSON.parse(lines[1]), (await store.events({ limit: 1 }))[0]);

    const opened = await openBundle(new Blob([text]), { projections: { board, count } });
    assert.deepEqual(opened.differences, []);
    assert.equal(opened.store.head, 301);
    assert.deepEqual(opened.store.get("board"), store.get("board"), "times are kept: the reducer reads e.time");
    assert.deepEqual(await opened.store.events(), await store.events());
    for (const p of [1, 150, 301]) {
      assert.equal(await opened.store.fingerprint("board", p), await store.fingerprint("board", p));
    }
    await Promise.all([store.close(), opened.store.close()]);
  });

  test("says which projections or versions differ from the app's, and where a reducer now folds otherwise", async () => {
    const store = await openBoard();
    await fill(store, 20);
    const text = await store.exportBundle({ fingerprintEvery: 5 });
    const changed = { initial: 0, apply: (n, e) => n + (e.position > 10 ? 2 : 1) };
    const opened = await openBundle(text, {
      projections: { count: changed, board: { ...board, version: 2 }, extra: { initial: null, apply: (s) => s } },
    });
    const byKind = Object.fromEntries(opened.differences.map((d) => [d.kind, d]));
    assert.deepEqual(Object.keys(byKind).sort(), ["extra", "fingerprint", "version"]);
    assert.equal(byKind.version.projection, "board");
    assert.match(byKind.version.message, /version 2 here but was version 1/);
    assert.equal(byKind.fingerprint.projection, "count");
    assert.equal(byKind.fingerprint.position, 15, "the first fingerprinted position after the reducer changed");
    assert.equal(byKind.extra.projection, "extra");
    const missing = await openBundle(text, { projections: { count } });
    assert.deepEqual(
      missing.differences.map((d) => [d.kind, d.projection]),
      [["missing", "board"]],
    );
    await Promise.all([store.close(), opened.store.close(), missing.store.close()]);
  });

  test("a damaged or foreign file is refused with the line that is wrong", async () => {
    const store = await openBoard();
    await fill(store, 3);
    const text = await store.exportBundle();
    const lines = text.trimEnd().split("\n");
    const cases = [
      ["{not json", /line 1 \(the header\) is not JSON/],
      ['{"type":"TodoAdded"}', /does not start an "annals-bundle"/],
      [[lines[0], lines[1], "{oops", lines[3]].join("\n"), /line 3 is not JSON/],
      [[lines[0], lines[2], lines[1]].join("\n"), /line 2 is not event 1/],
      [[lines[0], lines[1]].join("\n"), /announces 4 events but 1 follow/],
    ];
    for (const [bad, message] of cases) {
      const error = await rejectsWith(openBundle(bad, { projections: { count } }), "INVALID_ARGUMENT");
      assert.match(error.message, message);
    }
    const newer = text.replace('"formatVersion":1', '"formatVersion":9');
    await rejectsWith(openBundle(newer, { projections: { count } }), "FORMAT_TOO_NEW");
    await store.close();
  });
});

describe("diff", () => {
  test("lists the paths added, removed and changed", () => {
    const a = { cards: { c1: { title: "milk", list: "todo" }, c2: { title: "eggs" } }, tags: ["x", "y"], n: 1 };
    const b = { cards: { c1: { title: "milk", list: "done" }, c3: { title: "jam" } }, tags: ["x"], n: "1" };
    assert.deepEqual(diff(a, b), {
      added: [{ path: ["cards", "c3"], after: { title: "jam" } }],
      removed: [
        { path: ["cards", "c2"], before: { title: "eggs" } },
        { path: ["tags", 1], before: "y" },
      ],
      changed: [
        { path: ["cards", "c1", "list"], before: "todo", after: "done" },
        { path: ["n"], before: 1, after: "1" },
      ],
    });
    assert.deepEqual(diff(a, a), { added: [], removed: [], changed: [] });
    assert.deepEqual(diff([1], { 0: 1 }).changed, [{ path: [], before: [1], after: { 0: 1 } }]);
  });
});

describe("checkpoints adapt to the reducer", () => {
  test("an expensive reducer gets dense checkpoints; their memory is reported and bounded", async () => {
    /** About 1 ms per event: a busy loop stands for a costly reducer. */
    const slow = {
      initial: { n: 0 },
      apply: (s) => {
        const until = performance.now() + 0.2;
        while (performance.now() < until);
        return { n: s.n + 1 };
      },
    };
    const store = await openStore({ name: uniqueName("slow"), storage: "memory", projections: { slow, count } });
    await appendAll(store, Array.from({ length: 3_000 }, () => ({ stream: "s", type: "T" })));
    const access = debugAccessFor(store);
    const slowStats = access.checkpointStats("slow");
    const cheapStats = access.checkpointStats("count");
    assert.ok(slowStats.count > 3_000 / 64, `slow: ${slowStats.count} checkpoints over 3,000 events`);
    // Spacing follows measured costs, which a loaded machine inflates: compared, not counted
    // (quiet: 124 against 2).
    assert.ok(cheapStats.count * 10 <= slowStats.count, `cheap: ${cheapStats.count} checkpoints, slow: ${slowStats.count}`);
    assert.ok(slowStats.bytes <= slowStats.budgetBytes && slowStats.budgetBytes > 0);
    assert.deepEqual(await store.stateAt("slow", 1_234), { n: 1_234 });
    await store.close();
  });
});

describe("divergence against the server's log", { skip: skipWithoutServer }, () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test("a replica folded from the server's log has this replica's fingerprints", async () => {
    const store = await openBoard({ sync: { url: server.url, store: uniqueName("srv"), token: server.token, longPollSeconds: 1 } });
    await fill(store, 20);
    await store.sync();
    assert.equal(store.confirmedHead, 21);
    const replica = await debugAccessFor(store).serverReplica();
    assert.equal(replica.head, 21);
    assert.equal(await replica.fingerprint("board"), await store.fingerprint("board"));
    await Promise.all([replica.close(), store.close()]);
  });

  test("without sync options there is no server replica", async () => {
    const store = await openBoard();
    await rejectsWith(debugAccessFor(store).serverReplica(), "INVALID_ARGUMENT");
    assert.ok(new AnnalsError("FROZEN", "x") instanceof Error);
    await store.close();
  });
});
