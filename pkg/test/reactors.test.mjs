// Process managers: once per matching event, in order, checkpointed across reloads,
// retried with backoff when they fail, without blocking each other; compensations.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ReactorError, openStore } from "annals";

import { uniqueName } from "./helpers.mjs";

/** Counts completed todos per list; refuses negative amounts. */
function statsAggregate() {
  return {
    initial: { done: 0 },
    evolve: (s, e) => (e.type === "Counted" ? { done: s.done + e.data.by } : s),
    decide(command, s) {
      if (command.type !== "Count") throw new Error("unknown command");
      if (command.by < 0) throw new Error("cannot count backwards");
      return [{ type: "Counted", data: { by: command.by, before: s.done } }];
    },
  };
}

function options(name, extra = {}) {
  return {
    name,
    storage: "memory",
    sharedMemory: true,
    aggregates: { stats: statsAggregate() },
    ...extra,
  };
}

const completed = (id, list = "l1") => ({ stream: `todo-${id}`, type: "TodoCompleted", data: { id, list } });

/** A handler that records the events it sees and counts them on their list. */
function recorder(seen) {
  return (event) => {
    seen.push(event.data.id);
    return [{ aggregate: "stats", id: `stats-${event.data.list}`, command: { type: "Count", by: 1 } }];
  };
}

describe("process managers", () => {
  test("run once per matching event, in order, and execute their commands caused by it", async () => {
    const store = await openStore(options(uniqueName("pm")));
    const seen = [];
    await store.append(completed("a"));
    await store.append({ stream: "todo-x", type: "TodoAdded", data: { id: "x" } });
    const reactor = store.react({ name: "stats", on: ["TodoCompleted"], handle: recorder(seen) });
    await store.appendMany([completed("b"), completed("c", "l2")]);
    await reactor.idle();
    assert.deepEqual(seen, ["a", "b", "c"]);
    assert.equal(reactor.position, store.head);
    const counted = await store.events({ type: "Counted" });
    assert.deepEqual(
      counted.map((e) => [e.stream, e.data.before]),
      [
        ["stats-l1", 0],
        ["stats-l1", 1],
        ["stats-l2", 0],
      ],
    );
    const causes = await store.events({ type: "TodoCompleted" });
    for (const [i, e] of counted.entries()) {
      assert.equal(e.meta.causationId, causes[i].id);
      assert.equal(e.meta.correlationId, causes[i].id);
      assert.equal(e.meta.commandId, `stats:${causes[i].id}:0`);
    }
    // The causing events' flows include their effects.
    assert.equal((await store.events({ correlationId: causes[0].id })).length, 1);
    await store.close();
  });

  test("survive a reload without skipping or repeating an event", async () => {
    const name = uniqueName("pm-reload");
    const seen = [];
    const first = await openStore(options(name));
    first.react({ name: "stats", on: ["TodoCompleted"], handle: recorder(seen) });
    await first.appendMany([completed("a"), completed("b")]);
    const reactor = first.react({ name: "other", on: ["Nothing"], handle: () => [] });
    await reactor.idle();
    for (let i = 0; i < 50 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
    await first.close(); // waits for the reactor's event in hand

    // Events appended while no tab runs the reactor.
    const writer = await openStore(options(name));
    await writer.appendMany([completed("c"), completed("d")]);
    await writer.close();

    const second = await openStore(options(name));
    const again = second.react({ name: "stats", on: ["TodoCompleted"], handle: recorder(seen) });
    await again.idle();
    await second.append(completed("e"));
    await again.idle();
    assert.deepEqual(seen, ["a", "b", "c", "d", "e"]);
    const counted = await second.events({ type: "Counted" });
    assert.deepEqual(
      counted.map((e) => e.data.before),
      [0, 1, 2, 3, 4],
    );
    await second.close();
  });

  test("a crash between the commands and the checkpoint repeats no command", async () => {
    const name = uniqueName("pm-crash");
    const store = await openStore(options(name));
    const cause = await store.append(completed("a"));
    // What the reactor does for that event, done once already (as if the tab died before
    // writing its checkpoint).
    await store.execute(
      "stats",
      "stats-l1",
      { type: "Count", by: 1 },
      { commandId: `stats:${cause.id}:0`, correlationId: cause.id, causationId: cause.id },
    );
    const seen = [];
    const reactor = store.react({ name: "stats", on: ["TodoCompleted"], handle: recorder(seen) });
    await reactor.idle();
    assert.deepEqual(seen, ["a"]); // the handler runs again...
    assert.equal((await store.events({ type: "Counted" })).length, 1); // ...its command does not
    await store.close();
  });

  test("startAt: 'end' handles only new events", async () => {
    const store = await openStore(options(uniqueName("pm-end")));
    await store.append(completed("old"));
    const seen = [];
    const reactor = store.react({ name: "stats", on: ["TodoCompleted"], handle: recorder(seen), startAt: "end" });
    await reactor.idle();
    await store.append(completed("new"));
    await reactor.idle();
    assert.deepEqual(seen, ["new"]);
    await store.close();
  });

  test("a failing handler is retried with backoff and reported, without blocking other reactors", async () => {
    const store = await openStore(options(uniqueName("pm-fail")));
    const errors = [];
    store.on("error", (e) => errors.push(e));
    let failures = 0;
    const flakySeen = [];
    const steadySeen = [];
    const flaky = store.react({
      name: "flaky",
      on: ["TodoCompleted"],
      retry: { initialMs: 20, maxMs: 40 },
      handle(event) {
        if (event.data.id === "b" && failures < 3) {
          failures += 1;
          throw new Error(`boom ${failures}`);
        }
        flakySeen.push(event.data.id);
      },
    });
    const steady = store.react({ name: "steady", on: ["TodoCompleted"], handle: (e) => void steadySeen.push(e.data.id) });
    await store.appendMany([completed("a"), completed("b"), completed("c")]);
    await steady.idle();
    assert.deepEqual(steadySeen, ["a", "b", "c"]);
    assert.ok(flakySeen.length < 3, "the flaky reactor is still failing when the steady one is done");
    await flaky.idle();
    assert.deepEqual(flakySeen, ["a", "b", "c"]);
    assert.equal(errors.length, 3);
    for (const [i, error] of errors.entries()) {
      assert.ok(error instanceof ReactorError);
      assert.equal(error.code, "REACTOR_FAILED");
      assert.equal(error.reactor, "flaky");
      assert.equal(error.event.data.id, "b");
      assert.equal(error.attempt, i + 1);
      assert.ok(error.retryInMs >= 10 && error.retryInMs <= 40, String(error.retryInMs));
      assert.equal(error.cause.message, `boom ${i + 1}`);
    }
    await store.close();
  });

  test("a command refused by decide is reported and skipped, not retried", async () => {
    const store = await openStore(options(uniqueName("pm-refused")));
    const errors = [];
    store.on("error", (e) => errors.push(e));
    const reactor = store.react({
      name: "stats",
      on: ["TodoCompleted"],
      handle: (e) => [
        { aggregate: "stats", id: "s", command: { type: "Count", by: -1 } },
        { aggregate: "stats", id: "s", command: { type: "Count", by: e.data.id === "a" ? 1 : 2 } },
      ],
    });
    await store.appendMany([completed("a"), completed("b")]);
    await reactor.idle();
    assert.deepEqual(
      (await store.events({ type: "Counted" })).map((e) => e.data.by),
      [1, 2],
    );
    assert.equal(errors.length, 2);
    assert.equal(errors[0].cause.code, "COMMAND_REJECTED");
    assert.equal(errors[0].retryInMs, -1);
    await store.close();
  });

  test("stop ends a reactor; names are unique while running; bad options are refused", async () => {
    const store = await openStore(options(uniqueName("pm-stop")));
    const seen = [];
    const reactor = store.react({ name: "stats", on: ["TodoCompleted"], handle: recorder(seen) });
    assert.throws(() => store.react({ name: "stats", on: ["TodoCompleted"], handle: () => [] }), { code: "INVALID_ARGUMENT" });
    await reactor.idle();
    await reactor.stop();
    await store.append(completed("late"));
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(seen, []);
    for (const bad of [
      {},
      { name: "x", on: [], handle: () => [] },
      { name: "x", on: ["T"] },
      { name: "", on: ["T"], handle: () => [] },
      { name: "x", on: ["T"], handle: () => [], startAt: "middle" },
    ]) {
      assert.throws(() => store.react(bad), { code: "INVALID_ARGUMENT" }, JSON.stringify(bad));
    }
    await store.close();
  });
});
