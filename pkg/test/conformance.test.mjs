// The conformance suite shared with the Rust tests (tests/conformance.rs): the same
// fixture cases, here against the wasm build, so that both runtimes follow one rule.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openStore } from "annals";

import { fixture, rules } from "./core.mjs";

const commandEventId = (commandId, index) => rules.commandEventIds(commandId, index + 1)[index];

test("command event ids: the core gives the shared vectors, and so does the batch it plans", async () => {
  const { cases } = await fixture("command_ids.json");
  for (const { commandId, index, eventId } of cases) {
    const ids = rules.commandEventIds(commandId, index + 1);
    assert.equal(ids.length, index + 1);
    assert.equal(ids[index], eventId, `core: ${JSON.stringify(commandId)} #${index}`);
    if (commandId === "") continue; // a plan needs a command id (the next test)
    const events = Array.from({ length: index + 1 }, () => ({ type: "E" }));
    const planned = JSON.parse(rules.planCommand(JSON.stringify({ stream: "s", commandId, expectedVersion: 0, events })));
    assert.equal(planned[index].id, eventId, `planCommand: ${JSON.stringify(commandId)} #${index}`);
  }
});

test("execute, the TS runtime's path, gives its events the shared vectors' ids", async () => {
  const { cases } = await fixture("command_ids.json");
  const small = cases.filter((c) => c.commandId !== "" && c.index < 16);
  assert.ok(small.length > 0);
  for (const [i, { commandId, index, eventId }] of small.entries()) {
    // A store per case: cases share command ids (so event ids), and an id names one event.
    const store = await openStore({
      name: `conformance-${process.pid}-${i}`,
      storage: "memory",
      aggregates: {
        many: { initial: null, evolve: (s) => s, decide: (command) => Array.from({ length: command.count }, () => ({ type: "E" })) },
      },
    });
    try {
      const result = await store.execute("many", `stream-${i}`, { type: "Emit", count: index + 1 }, { commandId });
      assert.equal(result.events[index].id, eventId, `execute: ${JSON.stringify(commandId)} #${index}`);
    } finally {
      await store.close();
    }
  }
});

test("checkpoint plans follow the shared cases", async () => {
  const { cases } = await fixture("checkpoints.json");
  for (const c of cases) {
    const plan = new rules.CheckpointPlan(c.every, c.maxCount, c.maxBytes);
    try {
      c.steps.forEach((step, i) => {
        const at = `${c.name}, step ${i}: ${JSON.stringify(step)}`;
        if (step.due) assert.deepEqual([...plan.due(...step.due)], step.expect, at);
        else if (step.record) {
          const positions = Float64Array.from(step.record, ([p]) => p);
          const bytes = Float64Array.from(step.record, ([, b]) => b);
          // The fixture gives costs in µs; the plan takes ms.
          const costs = Float64Array.from(step.record, ([, , c = 0]) => c / 1000);
          const takeMs = Float64Array.from(step.record, ([, , , t = 0]) => t / 1000);
          assert.deepEqual([...plan.record(positions, bytes, costs, takeMs)], step.dropped, at);
        } else if (step.positions) assert.deepEqual([...plan.positions()], step.positions, at);
        else if (step.every !== undefined) assert.equal(plan.every, step.every, at);
        else if (step.bytes !== undefined) assert.equal(plan.bytes, step.bytes, at);
        else if (step.baseFor !== undefined) assert.equal(plan.baseFor(step.baseFor) ?? null, step.expect, at);
        else if (step.wantsSnapshot) assert.equal(plan.wantsSnapshot(...step.wantsSnapshot), step.expect, at);
        else if (step.prepareReplay) plan.prepareReplay(...step.prepareReplay);
        else if (step.reset) plan.reset();
        else assert.fail(`unknown step ${at}`);
      });
    } finally {
      plan.free();
    }
  }
});

test("snapshot trust follows the shared cases", async () => {
  const { snapshotTrust } = await fixture("checkpoints.json");
  for (const c of snapshotTrust) {
    assert.equal(rules.snapshotTrusted(c.version, c.position, c.projectionVersion, c.confirmedHead), c.trusted, JSON.stringify(c));
  }
});

test("a command's batch: derived ids, the command's ids in meta, the first event expecting the version", () => {
  const planned = JSON.parse(
    rules.planCommand(
      JSON.stringify({
        stream: "todo-1",
        aggregate: "todo",
        commandId: "cmd-1",
        causationId: "event-9",
        expectedVersion: 3,
        events: [
          { type: "TodoRenamed", data: { title: "milk" }, meta: { user: "ana" } },
          { type: "TodoCompleted" },
        ],
      }),
    ),
  );
  assert.deepEqual(planned, [
    {
      id: commandEventId("cmd-1", 0),
      stream: "todo-1",
      type: "TodoRenamed",
      data: { title: "milk" },
      meta: { user: "ana", aggregate: "todo", commandId: "cmd-1", correlationId: "cmd-1", causationId: "event-9" },
      expectedVersion: 3,
    },
    {
      id: commandEventId("cmd-1", 1),
      stream: "todo-1",
      type: "TodoCompleted",
      data: null,
      meta: { aggregate: "todo", commandId: "cmd-1", correlationId: "cmd-1", causationId: "event-9" },
    },
  ]);
});

test("a bad command plan is an INVALID_ARGUMENT AnnalsError", () => {
  assert.throws(
    () => rules.planCommand(JSON.stringify({ stream: "", commandId: "c", expectedVersion: 0, events: [] })),
    (e) => e.name === "AnnalsError" && e.code === "INVALID_ARGUMENT",
  );
});

/** Appends a JSON batch through the core's own entry: its UTF-8 into the input buffer, then `append`. */
function appendRaw(store, json) {
  const bytes = new TextEncoder().encode(json);
  store.inputBuffer(bytes.length).set(bytes);
  return store.append(bytes.length, 0);
}

test("append reads the batch from the input buffer, and refuses a length past what it holds or bytes that are not UTF-8", async () => {
  const store = await rules.WasmStore.open(`input-buffer-${process.pid}`, "memory", "{}");
  try {
    await assert.rejects(store.append(64, 0), (e) => e.code === "INVALID_ARGUMENT" && /input buffer holds 0/.test(e.message));
    store.inputBuffer(4).set([0x5b, 0xff, 0xfe, 0x5d]);
    await assert.rejects(store.append(4, 0), (e) => e.code === "INVALID_EVENT" && /not UTF-8/.test(e.message));
    assert.equal(store.head, 0, "nothing was appended");
    await appendRaw(store, JSON.stringify([{ stream: "s", type: "T", data: "é" }]));
    assert.equal(JSON.parse(store.range(0, 1))[0].data, "é");
  } finally {
    await store.close();
    store.free();
  }
});

test("commandResult answers a known command id with the events it wrote, and undefined otherwise", async () => {
  const store = await rules.WasmStore.open(`command-result-${process.pid}`, "memory", "{}");
  try {
    const batch = rules.planCommand(
      JSON.stringify({ stream: "todo-1", commandId: "cmd-7", expectedVersion: 0, events: [{ type: "A" }, { type: "B" }] }),
    );
    await appendRaw(store, batch);
    await appendRaw(store, JSON.stringify([{ stream: "todo-1", type: "Other", data: 1 }]));
    assert.equal(store.commandResult("todo-1", "cmd-8"), undefined);
    assert.equal(store.commandResult("todo-2", "cmd-7"), undefined);
    const reply = JSON.parse(store.commandResult("todo-1", "cmd-7"));
    assert.deepEqual(
      reply.events.map((e) => [e.type, e.id, e.version]),
      [
        ["A", commandEventId("cmd-7", 0), 1],
        ["B", commandEventId("cmd-7", 1), 2],
      ],
    );
    assert.equal(reply.version, 2);
  } finally {
    await store.close();
    store.free();
  }
});
