// commands.ts over a fake log, with the core's real execute plan: execute decides on the
// stream's state and appends at the version it saw, a command id runs once, a moved stream
// is decided again (a bounded number of times), and a refused event runs the aggregate's
// compensation.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Commands, MAX_ATTEMPTS } from "../dist/commands.js";
import { AnnalsError } from "../dist/errors.js";
import { rules } from "./core.mjs";

const commandEventId = (commandId, index) => rules.commandEventIds(commandId, index + 1)[index];

/** A confirmed-only log with expected-version checks, as the core does them. */
function fakeLog() {
  const log = {
    events: [],
    appends: 0,
    /** Called before each append: lets a test move the stream under execute. */
    beforeAppend: () => undefined,
    /** Calls of `commandResult` (the core's answer for a known command id). */
    lookups: 0,
    read({ stream, type, after = 0, to = Infinity }) {
      return log.events.filter(
        (e) => (stream === undefined || e.stream === stream) && (type === undefined || e.type === type) && e.position > after && e.position <= to,
      );
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
    commandResult(stream, commandId) {
      log.lookups += 1;
      const events = log.read({ stream }).filter((e) => e.meta?.commandId === commandId);
      return events.length === 0 ? undefined : JSON.stringify({ events, version: events[events.length - 1].version });
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
    planCommand: (requestJson) => rules.planCommand(requestJson),
    commandResult: (stream, commandId) => log.commandResult(stream, commandId),
    appendJson: (batchJson) => log.append(JSON.parse(batchJson)),
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
  assert.equal(log.lookups, 1, "only the known command id asked the core for its earlier result");
});

test("the batch is the core's plan: every event's id derived from the command id, the app's meta kept, the first event expecting the version", async () => {
  const pair = { ...counter, decide: () => [{ type: "A", data: 1, meta: { user: "ana" } }, { type: "B" }] };
  const { commands, log } = setup({ pair });
  const seen = [];
  const append = log.append;
  log.append = (batch) => (seen.push(batch), append(batch));
  log.write("p-1", "Before");
  await commands.execute("pair", "p-1", { type: "Go" }, { commandId: "cmd-2", correlationId: "flow" });
  assert.deepEqual(seen, [
    [
      {
        id: commandEventId("cmd-2", 0),
        stream: "p-1",
        type: "A",
        data: 1,
        meta: { user: "ana", aggregate: "pair", commandId: "cmd-2", correlationId: "flow", causationId: "cmd-2" },
        expectedVersion: 1,
      },
      {
        id: commandEventId("cmd-2", 1),
        stream: "p-1",
        type: "B",
        data: null,
        meta: { aggregate: "pair", commandId: "cmd-2", correlationId: "flow", causationId: "cmd-2" },
      },
    ],
  ]);
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

test("decided events must have a string type and JSON data", async () => {
  const { commands, log } = setup({
    untyped: { ...counter, decide: () => [{ data: 1 }] },
    big: { ...counter, decide: () => [{ type: "A", data: 1n }] },
  });
  await assert.rejects(commands.execute("untyped", "u", { type: "X" }), (error) => error.code === "INVALID_EVENT" && /string `type`/.test(error.message));
  await assert.rejects(commands.execute("big", "b", { type: "X" }), (error) => error.code === "INVALID_EVENT" && /BigInt/.test(error.message));
  assert.equal(log.appends, 0);
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
