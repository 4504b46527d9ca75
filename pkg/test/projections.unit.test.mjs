// projections.ts over a fake core (a log in an array) and a fake clock, with the core's
// real rules (checkpoint plans, snapshot trust): opening from a trusted snapshot plus the
// tail, confirmed and optimistic folds, bounded checkpoints asked for once per batch, time
// travel, and snapshots written at a bounded pace that stop when the signal aborts.
import assert from "node:assert/strict";
import { afterEach, mock, test } from "node:test";

import { ProjectionRuntime } from "../dist/projection-runtime.js";
import { Projections } from "../dist/projections.js";
import { Upcasters } from "../dist/upcast.js";
import { rules } from "./core.mjs";

/** Checkpoints a plan keeps in these tests (the core's default is the same). */
const MAX_CHECKPOINTS = 64;

const event = (position, pending = false) => ({ id: `e${position}`, position, stream: "s", version: position, type: "Added", data: { n: position }, time: 0, pending });

/** A core holding `confirmed` confirmed and `pending` pending events. */
function fakeCore(confirmed, pending = 0) {
  const core = {
    log: Array.from({ length: confirmed + pending }, (_, i) => event(i + 1, i >= confirmed)),
    confirmedHead: confirmed,
    get head() {
      return core.log.length;
    },
    logGeneration: 0,
    loadedAfter: 0,
    snapshots: new Map(),
    writes: [],
    deletes: [],
    loadFrom: async () => undefined,
    readableTo: () => core.confirmedHead,
    loadStep: async () => true,
    range: (after, to) => JSON.stringify(core.log.filter((e) => e.position > after && e.position <= to)),
    snapshot: async (name) => core.snapshots.get(name),
    putSnapshot: async (name, version, position, json) => {
      core.writes.push({ name, position });
      core.snapshots.set(name, JSON.stringify({ version, position, state: JSON.parse(json) }));
    },
    deleteSnapshot: async (name) => {
      core.deletes.push(name);
      core.snapshots.delete(name);
    },
  };
  return core;
}

const sum = { initial: 0, apply: (total, e) => total + e.data.n };

/**
 * The core's rules, with the plans' calls counted (`calls.due`, `calls.record`, ...) and
 * the plans made listed (`plans`), each with whether it was freed.
 */
function countedRules() {
  const calls = {};
  const plans = [];
  const count = (name) => (calls[name] = (calls[name] ?? 0) + 1);
  class CountedPlan {
    freed = false;
    constructor(every, maxCount, maxBytes) {
      this.real = new rules.CheckpointPlan(every, maxCount, maxBytes);
      plans.push(this);
    }
    get every() {
      count("every");
      return this.real.every;
    }
    free() {
      this.freed = true;
      this.real.free();
    }
  }
  for (const name of ["due", "prepareReplay", "record", "baseFor", "wantsSnapshot", "positions", "reset"]) {
    CountedPlan.prototype[name] = function (...args) {
      count(name);
      return this.real[name](...args);
    };
  }
  const snapshotTrusted = (...args) => (count("snapshotTrusted"), rules.snapshotTrusted(...args));
  return { rules: { CheckpointPlan: CountedPlan, snapshotTrusted }, calls, plans };
}

function projections(core, { defs = { sum }, snapshots = true, snapshotEvery = 1000, checkpointEvery = 1000, version = 1, isClosed } = {}) {
  const errors = [];
  const abort = new AbortController();
  const counted = countedRules();
  const host = {
    core,
    rules: counted.rules,
    snapshots,
    snapshotEvery,
    head: () => core.head,
    confirmedHead: () => core.confirmedHead,
    generation: () => 0,
    isClosed: isClosed ?? (() => abort.signal.aborted),
    isLost: () => false,
    checkOpen: () => undefined,
    whenComplete: async () => undefined,
    track: (promise) => promise,
    reportError: (error) => errors.push(error),
    safely: (f) => f(),
    upcasters: new Upcasters(undefined),
    unknownEvents: "warn",
    rebuild: { background: Infinity, slice: 2000, saveEvery: 20000 },
    rebuildProgress: () => undefined,
  };
  const specs = Object.entries(defs).map(([name, def]) => ({ name, def, version }));
  return { p: new Projections(host, specs, checkpointEvery, abort.signal), errors, abort, calls: counted.calls, plans: counted.plans };
}

const total = (n) => (n * (n + 1)) / 2;

afterEach(() => mock.timers.reset());

test("opening folds the confirmed log, then the pending events into the optimistic state only", async () => {
  const core = fakeCore(10, 2);
  const { p } = projections(core);
  assert.deepEqual(await p.load(), { head: 12, confirmed: 10 });
  const rt = p.runtime("sum");
  assert.equal(rt.confirmed, total(10));
  assert.equal(rt.state, total(12));
});

test("a snapshot of the projection's version is the start; only the tail after it is folded", async () => {
  const core = fakeCore(10);
  core.snapshots.set("sum", JSON.stringify({ version: 1, position: 8, state: 1000 }));
  const { p } = projections(core);
  await p.load();
  assert.equal(p.runtime("sum").state, 1000 + 9 + 10);
});

test("a snapshot of another version, or ahead of the log, is not trusted", async () => {
  for (const snapshot of [{ version: 2, position: 8, state: 1000 }, { version: 1, position: 11, state: 1000 }]) {
    const core = fakeCore(10);
    core.snapshots.set("sum", JSON.stringify(snapshot));
    const { p } = projections(core);
    await p.load();
    assert.equal(p.runtime("sum").state, total(10), JSON.stringify(snapshot));
  }
});

test("a pending event folds into the optimistic state; its confirmation rebuilds it from the confirmed one", async () => {
  const core = fakeCore(2);
  const { p } = projections(core);
  await p.load();
  const rt = p.runtime("sum");
  p.fold({ confirmedEvents: [], pendingEvents: [event(3, true)] }, true);
  assert.deepEqual([rt.confirmed, rt.state], [3, 6]);
  p.fold({ confirmedEvents: [event(3)], pendingEvents: [] }, true);
  assert.deepEqual([rt.confirmed, rt.state], [6, 6]);
});

test("a reducer that throws skips the event and reports which one", async () => {
  const core = fakeCore(3);
  const picky = { initial: 0, apply: (n, e) => {
    if (e.position === 2) throw new Error("no");
    return n + 1;
  } };
  const { p, errors } = projections(core, { defs: { picky } });
  await p.load();
  assert.equal(p.runtime("picky").state, 2);
  assert.equal(errors.length, 1);
  assert.match(errors[0].message, /projection "picky" threw on event 2 \(Added\); the event was skipped/);
  assert.equal(errors[0].code, "PROJECTION_FAILED");
});

test("a reducer failure is reported once, however often the event is folded again", async () => {
  const core = fakeCore(3);
  const picky = { initial: 0, apply: (n, e) => {
    if (e.position === 2) throw new Error("no");
    return n + 1;
  } };
  const { p, errors } = projections(core, { defs: { picky } });
  await p.load();
  assert.equal(await p.stateAt("picky", 3), 2);
  assert.equal(await p.stateAt("picky", 2), 1);
  assert.equal(errors.length, 1);
});

test("an unknown projection is refused with the names of the known ones", () => {
  const { p } = projections(fakeCore(0));
  assert.throws(() => p.runtime("nope"), /no projection named "nope" \(known: "sum"\)/);
});

test("checkpoints stay bounded: past the limit every other one goes and the spacing doubles", () => {
  const plan = new rules.CheckpointPlan(10, MAX_CHECKPOINTS, 0);
  const rt = new ProjectionRuntime("sum", sum, 1, plan);
  for (let position = 10; position <= 10 * (MAX_CHECKPOINTS + 1); position += 10) rt.addCheckpoint(position, String(position));
  assert.ok(rt.checkpoints.size <= MAX_CHECKPOINTS, `${rt.checkpoints.size} checkpoints`);
  assert.equal(rt.checkpointEvery, 20);
  assert.ok([...rt.checkpoints.keys()].every((position) => position % 20 === 0));
  assert.deepEqual([...rt.checkpoints.keys()].sort((a, b) => a - b), [...plan.positions()], "the states kept are the plan's");
  assert.equal(rt.checkpointAtOrBefore(35).position, 20);
  assert.equal(rt.checkpointAtOrBefore(35).json, "20");
  assert.equal(rt.checkpointAtOrBefore(5), undefined);
  rt.release();
});

test("a folded batch asks the plan once where its checkpoints go and once what to keep, never per event", async () => {
  const core = fakeCore(0);
  const { p, calls } = projections(core, { checkpointEvery: 10 });
  await p.load();
  for (let position = 1; position <= 1_000; position++) core.log.push(event(position));
  core.confirmedHead = 1_000;
  const before = { ...calls };
  p.fold({ confirmedEvents: core.log.slice(0), pendingEvents: [] }, true);
  assert.equal(calls.due - (before.due ?? 0), 1, "one due for the batch");
  assert.equal(calls.record - (before.record ?? 0), 1, "one record for the batch");
  const rt = p.runtime("sum");
  assert.equal(rt.confirmed, total(1_000));
  assert.ok(rt.checkpoints.size <= MAX_CHECKPOINTS, `${rt.checkpoints.size} checkpoints`);
  assert.equal(rt.checkpoints.get(1_000), String(total(1_000)), "the state right after the position, as JSON");
});

test("a batch without a checkpoint due records nothing", async () => {
  const core = fakeCore(5);
  const { p, calls } = projections(core, { checkpointEvery: 10 });
  await p.load();
  core.log.push(event(6), event(7));
  core.confirmedHead = 7;
  p.fold({ confirmedEvents: core.log.slice(5), pendingEvents: [] }, true);
  assert.equal(calls.record ?? 0, 0);
  assert.equal(p.runtime("sum").checkpoints.size, 0);
});

test("opening a long log widens the spacing first rather than taking checkpoints only to drop them", async () => {
  const core = fakeCore(10_000);
  const { p } = projections(core, { checkpointEvery: 10 });
  await p.load();
  const rt = p.runtime("sum");
  // 10,000 events at one checkpoint per 10 would be 1,000: the spacing doubles until at
  // most 64 span the log (160), before the replay starts.
  assert.equal(rt.checkpointEvery, 160);
  assert.equal(rt.checkpoints.size, Math.floor(10_000 / 160));
  assert.ok([...rt.checkpoints.keys()].every((position) => position % 160 === 0));
  p.reset();
  assert.equal(rt.checkpointEvery, 10, "a reset goes back to the first spacing");
  assert.equal(rt.checkpoints.size, 0);
});

test("stateAt reads the stored snapshot only when the replay would be longer than one spacing", async () => {
  const counted = (core) => {
    const snapshot = core.snapshot;
    core.reads = 0;
    core.snapshot = (name) => (core.reads++, snapshot(name));
    return core;
  };
  const near = counted(fakeCore(100));
  const { p } = projections(near, { checkpointEvery: 1000 });
  await p.load();
  near.reads = 0;
  assert.equal(await p.stateAt("sum", 30), total(30));
  assert.equal(near.reads, 0, "30 events from the start, spacing 1000: no snapshot read");
  const far = counted(fakeCore(100));
  far.snapshots.set("sum", JSON.stringify({ version: 1, position: 50, state: 1_000 }));
  const opened = projections(far, { checkpointEvery: 10 });
  await opened.p.load();
  far.reads = 0;
  assert.equal(await opened.p.stateAt("sum", 45), total(45), "the snapshot is past the target: replayed from the start");
  assert.equal(far.reads, 1, "45 events with no checkpoint before them, spacing 10: the snapshot was looked at");
});

test("a trusted snapshot nearer than any checkpoint is where stateAt starts; another version's is not", async () => {
  const core = fakeCore(100);
  core.snapshots.set("sum", JSON.stringify({ version: 1, position: 50, state: 1_000 }));
  const { p } = projections(core, { checkpointEvery: 10 });
  await p.load();
  // No checkpoint before 50 (the projection opened there); a snapshot at 30 is stored.
  core.snapshots.set("sum", JSON.stringify({ version: 1, position: 30, state: 7 }));
  assert.equal(await p.stateAt("sum", 35), 7 + 31 + 32 + 33 + 34 + 35);
  core.snapshots.set("sum", JSON.stringify({ version: 2, position: 30, state: 7 }));
  // 34, not 35 again: the state just reached at 35 is remembered as a base (the fake
  // snapshot's, here).
  assert.equal(await p.stateAt("sum", 34), total(34));
});

test("when the store's signal aborts, every plan is freed and checkpoints stop", async () => {
  const core = fakeCore(20);
  const { p, abort, plans } = projections(core, { checkpointEvery: 10, defs: { sum, again: sum } });
  await p.load();
  assert.equal(plans.length, 2);
  abort.abort();
  assert.ok(plans.every((plan) => plan.freed));
  // A change still folding in as the store closes: folded, no checkpoint (the plan is gone).
  for (let position = 21; position <= 30; position++) core.log.push(event(position));
  core.confirmedHead = 30;
  p.fold({ confirmedEvents: core.log.slice(20), pendingEvents: [] }, true);
  assert.equal(p.runtime("sum").confirmed, total(30));
  assert.equal(p.runtime("sum").checkpoints.size, 0);
});

test("stateAt replays from the nearest checkpoint at or before the target, and refuses a position past the head", async () => {
  const core = fakeCore(50);
  const { p } = projections(core, { checkpointEvery: 10 });
  await p.load();
  assert.deepEqual(
    [...p.runtime("sum").checkpoints.keys()].sort((a, b) => a - b),
    [10, 20, 30, 40, 50],
  );
  const ranges = [];
  const range = core.range;
  core.range = (after, to) => (ranges.push([after, to]), range(after, to));
  assert.equal(await p.stateAt("sum", 25), total(25));
  assert.deepEqual(ranges, [[20, 25]], "replayed from the checkpoint at 20");
  await assert.rejects(p.stateAt("sum", 51), /position 51 is past the head 50/);
});

test("snapshots are written once snapshotEvery events wait, then no more often than every 100 ms", async () => {
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
  const core = fakeCore(10);
  const { p } = projections(core, { snapshotEvery: 10 });
  await p.load();
  p.schedule();
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(core.writes, [{ name: "sum", position: 10 }]);
  for (let position = 11; position <= 20; position++) core.log.push(event(position));
  core.confirmedHead = 20;
  p.fold({ confirmedEvents: core.log.slice(10), pendingEvents: [] }, true);
  await new Promise((resolve) => setImmediate(resolve));
  p.schedule();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(core.writes.length, 1, "too soon after the last one: it waits");
  mock.timers.tick(100);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(core.writes.at(-1), { name: "sum", position: 20 });
});

test("abort alone cancels a snapshot waiting for its turn (its timer goes)", async () => {
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
  const core = fakeCore(10);
  // The host never says closed: only the signal can stop the timer.
  const { p, abort } = projections(core, { snapshotEvery: 10, isClosed: () => false });
  await p.load();
  p.schedule();
  await new Promise((resolve) => setImmediate(resolve));
  for (let position = 11; position <= 20; position++) core.log.push(event(position));
  core.confirmedHead = 20;
  p.fold({ confirmedEvents: core.log.slice(10), pendingEvents: [] }, true);
  p.schedule();
  abort.abort();
  mock.timers.tick(1_000);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(core.writes.length, 1, "the waiting snapshot was never written");
});

test("a private memory store writes no snapshots", async () => {
  const core = fakeCore(10);
  const { p } = projections(core, { snapshots: false, snapshotEvery: 1 });
  await p.load();
  p.schedule();
  await p.finish();
  assert.deepEqual(core.writes, []);
});

test("finish writes the last snapshots; a reset drops the old ones", async () => {
  const core = fakeCore(5);
  const { p } = projections(core);
  await p.load();
  await p.finish();
  assert.deepEqual(core.writes, [{ name: "sum", position: 5 }]);
  p.reset();
  await p.finish();
  assert.deepEqual(core.deletes, ["sum"]);
  assert.equal(p.runtime("sum").state, 0);
});
