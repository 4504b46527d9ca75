// commands.ts over a fake log: execute decides on the stream's state and appends at the
// version it saw, a command id runs once, a moved stream is decided again (a bounded number
// of times), and a refused event runs the aggregate's compensation.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Commands, MAX_ATTEMPTS } from "../dist/commands.js";
import { AnnalsError } from "../dist/errors.js";
import { commandEventId } from "../dist/ids.js";

/** A confirmed-only log with expected-version checks, as the core does them. */
function fakeLog() {
  const log = {
    events: [],
    appends: 0,
    /** Called before each append: lets a test move the stream under execute. */
    beforeAppend: () => undefined,
    read({ stream, after = 0, to = Infinity }) {
      return log.events.filter((e) => (stream === undefined || e.stream === stream) && e.position > after && e.position <= to);
    },
    write(stream, type, data = {}, meta = {}) {
      const version = log.events.filter((e) => e.stream === stream).length + 1;
      const e = { id: `x${log.events.length + 1}`, position: log.events.length + 1, stream, version, type, data, meta, time: 0, pending: false };
      log.events.push(e);
      return e;
    },
    async append(batch) {
      log.appends += 1;
      log.beforeAppend();
      const [first] = batch;
      const actual = log.events.filter((e) => e.stream === first.stream).length;
      if (first.expectedVersion !== undefined && first.expectedVersion !== actual) {
        throw new AnnalsError("WRONG_EXPECTED_VERSION", "moved", { stream: first.stream, expectedVersion: first.expectedVersion, actualVersion: actual });
      }
      return batch.map((e) => ({ ...log.write(e.stream, e.type, e.data, e.meta), id: e.id }));
    },
  };
  return log;
}

function setup(aggregates, log = fakeLog()) {
  const errors = [];
  const tracked = [];
  const abort = new AbortController();
  const host = {
    head: () => log.events.length,
    confirmedHead: () => log.events.length,
    generation: () => 0,
    isClosed: () => abort.signal.aborted,
    checkOpen: () => {
      if (abort.signal.aborted) throw new AnnalsError("CLOSED", "closed");
    },
    isComplete: () => true,
    whenComplete: async () => undefined,
    read: (query) => log.read(query),
    append: (batch) => log.append(batch),
    catchUp: async () => undefined,
    track: (promise) => (tracked.push(promise), promise),
    reportError: (error) => errors.push(error),
  };
  return { commands: new Commands(host, new Map(Object.entries(aggregates)), abort.signal), log, errors, tracked, abort };
}

/** A counter: `Add` adds events while the total stays under `max`. */
const counter = {
  initial: { total: 0 },
  evolve: (state, e) => ({ total: state.total + e.data.n }),
  decide: (command, state) => {
    if (state.total + command.n > 10) throw new Error(`total would pass 10 (is ${state.total})`);
    return [{ type: "Added", data: { n: command.n } }];
  },
};

test("execute appends what decide returned, at the version decide saw, with ids derived from the command id", async () => {
  const { commands, log } = setup({ counter });
  log.write("c-1", "Added", { n: 2 });
  const result = await commands.execute("counter", "c-1", { type: "Add", n: 3 }, { commandId: "cmd-1" });
  assert.equal(result.commandId, "cmd-1");
  assert.equal(result.version, 2);
  const [appended] = result.events;
  assert.equal(appended.id, commandEventId("cmd-1", 0));
  assert.deepEqual(appended.meta, { aggregate: "counter", commandId: "cmd-1", correlationId: "cmd-1", causationId: "cmd-1" });
});

test("a command id already in the stream returns the earlier result and appends nothing", async () => {
  const { commands, log } = setup({ counter });
  const first = await commands.execute("counter", "c-1", { type: "Add", n: 1 }, { commandId: "once" });
  const again = await commands.execute("counter", "c-1", { type: "Add", n: 1 }, { commandId: "once" });
  assert.equal(log.appends, 1);
  assert.deepEqual(again.events.map((e) => e.position), first.events.map((e) => e.position));
  assert.equal(again.version, 1);
});

test("a throw in decide rejects the command with COMMAND_REJECTED and the app's message", async () => {
  const { commands, log } = setup({ counter });
  await assert.rejects(
    commands.execute("counter", "c-1", { type: "Add", n: 11 }),
    (error) => error instanceof AnnalsError && error.code === "COMMAND_REJECTED" && /total would pass 10/.test(error.message),
  );
  assert.equal(log.appends, 0);
});

test("a stream moved by another writer is decided again on its new state", async () => {
  const { commands, log } = setup({ counter });
  let moved = false;
  log.beforeAppend = () => {
    if (!moved) {
      moved = true;
      log.write("c-1", "Added", { n: 8 });
    }
  };
  await assert.rejects(commands.execute("counter", "c-1", { type: "Add", n: 3 }), (error) => error.code === "COMMAND_REJECTED");
  assert.equal(log.appends, 1, "the second decision saw the other writer's 8 and refused");
});

test(`execute gives up after ${MAX_ATTEMPTS} attempts when the stream keeps moving`, async () => {
  const { commands, log } = setup({ counter: { ...counter, decide: () => [{ type: "Added", data: { n: 0 } }] } });
  log.beforeAppend = () => log.write("c-1", "Added", { n: 0 });
  await assert.rejects(commands.execute("counter", "c-1", { type: "Add" }), (error) => error.code === "WRONG_EXPECTED_VERSION");
  assert.equal(log.appends, MAX_ATTEMPTS);
});

test("an unknown aggregate is refused with the names of the known ones", async () => {
  const { commands } = setup({ counter });
  await assert.rejects(commands.execute("todo", "t-1", { type: "X" }), /no aggregate named "todo" \(known: "counter"\)/);
});

test("decide must return an array of objects", async () => {
  const { commands } = setup({ bad: { ...counter, decide: () => "events" }, worse: { ...counter, decide: () => [1] } });
  await assert.rejects(commands.execute("bad", "b", { type: "X" }), /decide must return an array of events/);
  await assert.rejects(commands.execute("worse", "w", { type: "X" }), (error) => error.code === "INVALID_EVENT");
});

test("a refused event runs onRejected's commands, caused by the refused event", async () => {
  const undo = [];
  const aggregate = {
    ...counter,
    decide: (command) => (command.type === "Undo" ? (undo.push(command), [{ type: "Undone", data: { n: 0 } }]) : counter.decide(command, { total: 0 })),
    onRejected: (rejection) => [{ aggregate: "counter", id: rejection.id, command: { type: "Undo", of: rejection.commandId } }],
  };
  const { commands, log, tracked } = setup({ counter: aggregate });
  commands.compensate({
    event: { id: "refused-1", stream: "c-1", meta: { aggregate: "counter", commandId: "cmd-9", correlationId: "corr" } },
    reason: "conflict",
  });
  await Promise.all(tracked);
  assert.deepEqual(undo, [{ type: "Undo", of: "cmd-9" }]);
  const [undone] = log.events;
  assert.deepEqual(undone.meta, { aggregate: "counter", commandId: "compensate:refused-1:0", correlationId: "corr", causationId: "refused-1" });
});

test("an event no aggregate command produced needs no compensation", () => {
  const { commands, tracked, errors } = setup({ counter: { ...counter, onRejected: () => assert.fail("not called") } });
  commands.compensate({ event: { id: "e", stream: "c-1", meta: {} }, reason: "conflict" });
  assert.deepEqual([tracked, errors], [[], []]);
});

test("after abort, execute fails with CLOSED", async () => {
  const { commands, abort } = setup({ counter });
  abort.abort();
  await assert.rejects(commands.execute("counter", "c-1", { type: "Add", n: 1 }), (error) => error.code === "CLOSED");
});
