// Sync through a real annals-server (see server.mjs: skipped unless one is configured):
// offline appends converge, pending events rebase behind what the server ordered first,
// refused events are reported and compensated, a new server epoch restarts the log.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { openStore } from "annals";

import { eventually, uniqueName } from "./helpers.mjs";
import { installOnlineSwitch, skipWithoutServer, startServer } from "./server.mjs";

const setOnline = installOnlineSwitch();

function projections() {
  return {
    list: { initial: [], apply: (list, e) => [...list, `${e.type}:${e.data?.who ?? ""}${e.pending ? "?" : ""}`] },
    count: { initial: 0, apply: (n) => n + 1 },
  };
}

describe("sync through annals-server", { skip: skipWithoutServer }, () => {
  let server;
  const stores = [];
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.stop();
  });

  async function client(storeName, extra = {}) {
    const store = await openStore({
      name: uniqueName("client"),
      storage: "memory",
      projections: projections(),
      sync: { url: server.url, store: storeName, token: server.token, longPollSeconds: 1 },
      ...extra,
    });
    stores.push(store);
    return store;
  }

  const settled = (store, head) => () =>
    store.confirmedHead === head && store.syncStatus.pending === 0 && !store.syncStatus.syncing;

  test("two clients that appended offline converge once online: nothing lost, nothing doubled", async () => {
    const name = uniqueName("converge");
    setOnline(false);
    const a = await client(name);
    const b = await client(name);
    await a.appendMany([1, 2, 3].map((n) => ({ stream: `a-${n}`, type: "Added", data: { who: `a${n}` } })));
    await b.appendMany([1, 2].map((n) => ({ stream: `b-${n}`, type: "Added", data: { who: `b${n}` } })));
    assert.equal(a.syncStatus.pending, 3);
    assert.equal(a.syncStatus.online, false);
    assert.deepEqual(a.get("list"), ["Added:a1?", "Added:a2?", "Added:a3?"]);

    const statuses = [];
    a.on("sync", (s) => statuses.push(s));
    setOnline(true);
    await eventually(settled(a, 5), 10_000, "a confirmed everything");
    await eventually(settled(b, 5), 10_000, "b confirmed everything");
    const logA = await a.events();
    const logB = await b.events();
    assert.deepEqual(logA, logB);
    assert.equal(new Set(logA.map((e) => e.id)).size, 5);
    assert.ok(logA.every((e) => !e.pending));
    assert.deepEqual(a.get("list"), b.get("list"));
    assert.equal(a.get("count"), 5);
    assert.ok(a.get("list").every((entry) => !entry.endsWith("?")));
    assert.ok(statuses.some((s) => s.online));
    const status = a.syncStatus;
    assert.equal(status.online, true);
    assert.equal(status.lastPulled, 5);
    assert.equal(status.lastErrorCode, null);
  });

  test("pending events move behind events the server ordered first; projections recompute", async () => {
    const name = uniqueName("rebase");
    setOnline(true);
    const b = await client(name);
    await b.appendMany([
      { stream: "b", type: "Added", data: { who: "b1" } },
      { stream: "b", type: "Added", data: { who: "b2" } },
    ]);
    await b.sync();
    setOnline(false);
    const a = await client(name);
    const [mine] = await a.appendMany([{ stream: "a", type: "Added", data: { who: "a1" } }]);
    assert.equal(mine.position, 1);
    const changes = [];
    a.on("change", (c) => changes.push(c));
    setOnline(true);
    await eventually(settled(a, 3), 10_000, "a confirmed everything");
    assert.deepEqual(a.get("list"), ["Added:b1", "Added:b2", "Added:a1"]);
    const [moved] = await a.events({ stream: "a" });
    assert.equal(moved.id, mine.id);
    assert.equal(moved.position, 3);
    assert.ok(changes.some((c) => c.rebased), "the pull rebased the pending event");
    // Every change left the optimistic state equal to a fold of the log as it was then.
    assert.deepEqual(await a.stateAt("list", 3), a.get("list"));
    assert.deepEqual(await a.stateAt("list", 2), ["Added:b1", "Added:b2"]);
  });

  test("a refused event is reported, listed, dropped from the state, and compensated", async () => {
    const name = uniqueName("reject");
    const seat = {
      initial: { by: null },
      evolve: (s, e) => (e.type === "SeatReserved" ? { by: e.data.who } : s),
      decide(command, s) {
        if (s.by) throw new Error(`taken by ${s.by}`);
        return [{ type: "SeatReserved", data: { who: command.who } }];
      },
      onRejected: (rejection) => [
        { aggregate: "booking", id: `booking-${rejection.event.data.who}`, command: { type: "Fail", seat: rejection.id } },
      ],
    };
    const booking = {
      initial: null,
      evolve: (s) => s,
      decide: (command) => [{ type: "BookingFailed", data: { who: command.seat } }],
    };
    const aggregates = { seat, booking };
    setOnline(true);
    const winner = await client(name, { aggregates });
    await winner.execute("seat", "seat-1", { type: "Reserve", who: "winner" });
    await winner.sync();
    setOnline(false);
    const loser = await client(name, { aggregates });
    const executed = await loser.execute("seat", "seat-1", { type: "Reserve", who: "loser" }, { commandId: "book-1" });
    assert.deepEqual(loser.get("list"), ["SeatReserved:loser?"]);
    const reported = new Promise((resolve) => loser.on("rejected", (...args) => resolve(args)));
    setOnline(true);
    const [event, reason, actualVersion] = await reported;
    assert.equal(event.id, executed.events[0].id);
    assert.equal(event.stream, "seat-1");
    assert.equal(event.type, "SeatReserved");
    assert.deepEqual(event.data, { who: "loser" });
    assert.equal(actualVersion, 1);
    assert.equal(typeof reason, "string");
    await eventually(settled(loser, 2), 10_000, "the compensation is confirmed");
    assert.deepEqual(loser.get("list"), ["SeatReserved:winner", "BookingFailed:seat-1"]);
    const [listed] = await loser.rejected();
    assert.equal(listed.event.id, event.id);
    assert.equal(listed.actualVersion, 1);
    const [compensation] = await loser.events({ type: "BookingFailed" });
    assert.equal(compensation.meta.causationId, event.id);
    assert.equal(compensation.meta.correlationId, "book-1");
    assert.equal(compensation.meta.commandId, `compensate:${event.id}:0`);
    await eventually(settled(winner, 2), 10_000, "the winner sees the compensation");
  });

  test("a new server epoch restarts the confirmed log and keeps pending events", async (t) => {
    if (!server.canRestart) return t.skip("needs ANNALS_SERVER_BIN");
    const name = uniqueName("epoch");
    setOnline(true);
    const a = await client(name);
    await a.appendMany([1, 2].map((n) => ({ stream: "s", type: "Added", data: { who: `old${n}` } })));
    await a.sync();
    assert.equal(a.confirmedHead, 2);
    setOnline(false);
    await server.restart(); // same port, empty database: a new epoch
    await a.append({ stream: "s", type: "Added", data: { who: "kept" } });
    const changes = [];
    a.on("change", (c) => changes.push(c));
    setOnline(true);
    await eventually(settled(a, 1), 15_000, "only the pending event is on the new server");
    assert.ok(changes.some((c) => c.reset));
    assert.deepEqual(a.get("list"), ["Added:kept"]);
    assert.equal(a.get("count"), 1);
  });
});
