// The write model: aggregates as deciders, execute, retries on lost races, command ids,
// causation and correlation.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";

import { causedBy, openStore } from "annals";

import { rules } from "./core.mjs";
import { rejectsWith, uniqueName } from "./helpers.mjs";

/** The id the core derives for event `index` of command `commandId`. */
const commandEventId = (commandId, index) => rules.commandEventIds(commandId, index + 1)[index];

/** A seat that can be reserved once; counts its decide and evolve calls. */
function seatAggregate() {
  const calls = { decide: 0, evolve: 0 };
  return {
    calls,
    initial: { reservedBy: null, releases: 0 },
    evolve(state, event) {
      calls.evolve += 1;
      switch (event.type) {
        case "SeatReserved":
          return { ...state, reservedBy: event.data.by };
        case "SeatReleased":
          return { ...state, reservedBy: null, releases: state.releases + 1 };
        default:
          return state;
      }
    },
    decide(command, state) {
      calls.decide += 1;
      switch (command.type) {
        case "Reserve":
          if (state.reservedBy !== null) throw new Error(`seat already reserved by ${state.reservedBy}`);
          return [{ type: "SeatReserved", data: { by: command.by }, meta: { note: "app meta" } }];
        case "Release":
          if (state.reservedBy === null) return []; // nothing to do
          return [{ type: "SeatReleased", data: {} }];
        case "Bump":
          return [
            { type: "Bumped", data: { n: 1 } },
            { type: "Bumped", data: { n: 2 } },
          ];
        default:
          throw new Error(`unknown command ${command.type}`);
      }
    },
  };
}

/** A counter that always accepts `Add`. */
function counterAggregate() {
  const calls = { decide: 0 };
  return {
    calls,
    initial: 0,
    evolve: (n, e) => n + e.data.by,
    decide(command, n) {
      calls.decide += 1;
      if (command.type !== "Add") throw new Error("unknown command");
      return [{ type: "Added", data: { by: command.by, before: n } }];
    },
  };
}

async function openCommandStore(extra = {}) {
  const seat = seatAggregate();
  const counter = counterAggregate();
  const store = await openStore({
    name: uniqueName("cmd"),
    storage: "memory",
    projections: { count: { initial: 0, apply: (n) => n + 1 } },
    aggregates: { seat, counter },
    ...extra,
  });
  return { store, seat, counter };
}

describe("execute", () => {
  test("decides against the stream's state and appends at the version decide saw", async () => {
    const { store } = await openCommandStore();
    const result = await store.execute("seat", "seat-1", { type: "Reserve", by: "ana" });
    assert.equal(result.events.length, 1);
    assert.equal(result.version, 1);
    const [event] = result.events;
    assert.equal(event.stream, "seat-1");
    assert.equal(event.type, "SeatReserved");
    assert.deepEqual(event.data, { by: "ana" });
    assert.deepEqual(event.meta, {
      note: "app meta",
      aggregate: "seat",
      commandId: result.commandId,
      correlationId: result.commandId,
      causationId: result.commandId,
    });
    assert.match(result.commandId, /^[0-9a-f-]{36}$/);
    assert.equal(store.get("count"), 1);

    const released = await store.execute("seat", "seat-1", { type: "Release" });
    assert.equal(released.version, 2);
    const again = await store.execute("seat", "seat-1", { type: "Release" });
    assert.deepEqual(again.events, []);
    assert.equal(again.version, 2);

    const bumped = await store.execute("seat", "seat-2", { type: "Bump" });
    assert.deepEqual(
      bumped.events.map((e) => [e.version, e.data.n]),
      [
        [1, 1],
        [2, 2],
      ],
    );
    assert.equal(bumped.version, 2);
    await store.close();
  });

  test("a refusal is COMMAND_REJECTED with the app's message, and writes nothing", async () => {
    const { store } = await openCommandStore();
    await store.execute("seat", "seat-1", { type: "Reserve", by: "ana" });
    const changes = [];
    store.on("change", (c) => changes.push(c));
    const error = await rejectsWith(store.execute("seat", "seat-1", { type: "Reserve", by: "bob" }), "COMMAND_REJECTED");
    assert.equal(error.message, "seat already reserved by ana");
    assert.equal(error.cause.message, "seat already reserved by ana");
    assert.equal(store.head, 1);
    assert.deepEqual(changes, []);
    await rejectsWith(store.execute("seat", "seat-1", { type: "Dance" }), "COMMAND_REJECTED");
    assert.equal(store.head, 1);
    await store.close();
  });

  test("the state is kept incrementally: each event is evolved once", async () => {
    const { store, seat } = await openCommandStore();
    for (let i = 0; i < 20; i++) {
      await store.execute("seat", "seat-1", { type: i % 2 === 0 ? "Reserve" : "Release", by: `u${i}` });
    }
    // Other streams' events are never read for this one.
    for (let i = 0; i < 10; i++) await store.append({ stream: "elsewhere", type: "Noise" });
    await store.execute("seat", "seat-1", { type: "Reserve", by: "last" });
    assert.equal(seat.calls.evolve, 20);
    assert.equal(seat.calls.decide, 21);
    await store.close();
  });

  test("a command id executes once: the second time returns the first result", async () => {
    const { store, counter } = await openCommandStore();
    const first = await store.execute("counter", "c-1", { type: "Add", by: 2 }, { commandId: "cmd-42" });
    const second = await store.execute("counter", "c-1", { type: "Add", by: 2 }, { commandId: "cmd-42" });
    assert.deepEqual(second, first);
    assert.equal(counter.calls.decide, 1);
    assert.equal(store.head, 1);
    // Event ids derive from the command id.
    assert.equal(first.events[0].id, commandEventId("cmd-42", 0));
    await store.close();
  });

  test("bad arguments are INVALID_ARGUMENT", async () => {
    const { store } = await openCommandStore();
    await rejectsWith(store.execute("nope", "x", { type: "Add" }), "INVALID_ARGUMENT", "aggregate");
    await rejectsWith(store.execute("counter", "", { type: "Add" }), "INVALID_ARGUMENT", "id");
    await rejectsWith(store.execute("counter", "x", { by: 1 }), "INVALID_ARGUMENT", "command");
    await rejectsWith(store.execute("counter", "x", { type: "Add", by: 1 }, { commandId: 7 }), "INVALID_ARGUMENT", "commandId");
    await rejectsWith(
      () => openStore({ name: uniqueName(), storage: "memory", aggregates: { bad: { initial: 0, evolve: (s) => s } } }),
      "INVALID_ARGUMENT",
      "no decide",
    );
    assert.equal(store.head, 0);
    await store.close();
  });
});

describe("execute in two tabs", () => {
  async function twoTabs() {
    const name = uniqueName("cmd-tabs");
    const open = () => {
      const seat = seatAggregate();
      const counter = counterAggregate();
      return openStore({ name, storage: "memory", sharedMemory: true, aggregates: { seat, counter } }).then((store) => ({
        store,
        seat,
        counter,
      }));
    };
    return [await open(), await open()];
  }

  test("a lost race decides again on the new state: the loser is refused, never appended blindly", async () => {
    const [one, two] = await twoTabs();
    await one.store.execute("seat", "seat-1", { type: "Reserve", by: "ana" });
    // `two` has not heard of it yet: it decides on a free seat, loses at append, catches
    // up, and decides again.
    const error = await rejectsWith(two.store.execute("seat", "seat-1", { type: "Reserve", by: "bob" }), "COMMAND_REJECTED");
    assert.match(error.message, /reserved by ana/);
    assert.equal(two.seat.calls.decide, 2);
    const events = await two.store.events({ stream: "seat-1" });
    assert.deepEqual(
      events.map((e) => e.data.by),
      ["ana"],
    );
    await one.store.close();
    await two.store.close();
  });

  test("a lost race that still makes sense succeeds on the new state", async () => {
    const [one, two] = await twoTabs();
    await one.store.execute("counter", "c-1", { type: "Add", by: 5 });
    const result = await two.store.execute("counter", "c-1", { type: "Add", by: 1 });
    assert.equal(two.counter.calls.decide, 2);
    assert.equal(result.version, 2);
    assert.deepEqual(result.events[0].data, { by: 1, before: 5 });
    await one.store.close();
    await two.store.close();
  });

  test("concurrent commands from both tabs all land, each on the state before it", async () => {
    const [one, two] = await twoTabs();
    const runs = [];
    for (let i = 0; i < 6; i++) {
      runs.push(one.store.execute("counter", "c-1", { type: "Add", by: 1 }));
      runs.push(two.store.execute("counter", "c-1", { type: "Add", by: 1 }));
    }
    const settled = await Promise.allSettled(runs);
    const ok = settled.filter((s) => s.status === "fulfilled");
    for (const failed of settled.filter((s) => s.status === "rejected")) {
      // Only the bounded retries may give up, and only with a version conflict.
      assert.equal(failed.reason.code, "WRONG_EXPECTED_VERSION");
    }
    const events = await one.store.events({ stream: "c-1" });
    assert.equal(events.length, ok.length);
    assert.deepEqual(
      events.map((e) => e.data.before),
      events.map((_, i) => i),
      "every command decided on the state right before its event",
    );
    await one.store.close();
    await two.store.close();
  });
});

describe("causation and correlation", () => {
  test("commands caused by an event join its flow; events({ correlationId }) finds the flow", async () => {
    const { store } = await openCommandStore();
    const start = await store.execute("seat", "seat-1", { type: "Reserve", by: "ana" }, { commandId: "order-1" });
    const cause = start.events[0];
    assert.deepEqual(causedBy(cause), { correlationId: "order-1", causationId: cause.id });
    const next = await store.execute("counter", "reservations", { type: "Add", by: 1 }, causedBy(cause));
    const [effect] = next.events;
    assert.equal(effect.meta.correlationId, "order-1");
    assert.equal(effect.meta.causationId, cause.id);
    assert.notEqual(effect.meta.commandId, "order-1");
    const third = await store.execute("counter", "reservations", { type: "Add", by: 1 }, causedBy(effect));
    assert.equal(third.events[0].meta.causationId, effect.id);
    // Unrelated traffic.
    await store.execute("seat", "seat-9", { type: "Reserve", by: "zed" });
    await store.append({ stream: "x", type: "Plain" });

    const flow = await store.events({ correlationId: "order-1" });
    assert.deepEqual(
      flow.map((e) => e.id),
      [cause.id, effect.id, third.events[0].id],
    );
    // An event without a correlation id starts its own flow.
    const plain = (await store.events({ stream: "x" }))[0];
    assert.deepEqual(causedBy(plain), { correlationId: plain.id, causationId: plain.id });
    await store.close();
  });
});

describe("command event ids", () => {
  test("the SHA-256 behind them matches node:crypto", () => {
    // "annals:command:" + id + ":0" is 17 bytes plus the id: 38, 39 and 47 bytes of id put
    // the message at 55, 56 and 64 bytes, SHA-256's padding edges.
    for (const text of ["", "abc", "a".repeat(38), "a".repeat(39), "a".repeat(47), "żółć 日本語 🎉".repeat(20)]) {
      const digest = createHash("sha256").update(`annals:command:${text}:0`).digest();
      digest[6] = (digest[6] & 0x0f) | 0x80;
      digest[8] = (digest[8] & 0x3f) | 0x80;
      const hex = digest.subarray(0, 16).toString("hex");
      const uuid = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
      assert.equal(commandEventId(text, 0), uuid, text);
    }
  });

  test("are UUIDv8, deterministic and distinct", () => {
    const id = commandEventId("cmd", 0);
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(commandEventId("cmd", 0), id);
    assert.notEqual(commandEventId("cmd", 1), id);
    assert.notEqual(commandEventId("cmd2", 0), id);
  });
});
