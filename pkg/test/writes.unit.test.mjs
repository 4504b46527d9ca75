// writes.ts over a fake core: an append's events come from the change the core reported
// for it (no second read), a closed store refuses appends, catch-ups are shared while one
// waits, and the changes one catch-up saw merge into one.
import assert from "node:assert/strict";
import { test } from "node:test";

import { mergeChanges, Writes } from "../dist/writes.js";

const event = (position) => ({ id: `e${position}`, position, stream: "s", version: position, type: "Noted", data: {}, time: 0, pending: false });

function setup() {
  let closed = false;
  let head = 0;
  const core = {
    ranges: 0,
    catchUps: 0,
    input: new Uint8Array(0),
    inputBuffer(len) {
      if (core.input.length < len) core.input = new Uint8Array(len);
      return core.input.subarray(0, len);
    },
    /** Appends like the core: reports the change (seq 7) to the listener, then answers. */
    async append(len) {
      const batch = JSON.parse(new TextDecoder().decode(core.input.subarray(0, len)));
      const events = batch.map((_, i) => event(head + i + 1));
      const change = { previousHead: head, head: head + events.length, events, confirmedHead: head + events.length, rebased: false, reset: false };
      head += events.length;
      writes.observe(7, events, change);
      return JSON.stringify({ results: events.map((e) => e.position), duplicates: [], streamVersions: events.map((e) => e.version), seq: 7 });
    },
    async catchUp() {
      core.catchUps += 1;
      await new Promise((resolve) => setTimeout(resolve, 5));
    },
    range() {
      core.ranges += 1;
      return "[]";
    },
  };
  let appended = 0;
  const writes = new Writes({
    core,
    head: () => head,
    confirmedHead: () => head,
    isClosed: () => closed,
    track: (promise) => promise,
    appended: () => (appended += 1),
  });
  return { writes, core, close: () => (closed = true), appended: () => appended };
}

test("an append returns the events of the change the core reported for it, without reading them again", async () => {
  const { writes, core, appended } = setup();
  const events = await writes.append([{ stream: "s", type: "Noted" }, { stream: "s", type: "Noted" }]);
  assert.deepEqual(events.map((e) => e.position), [1, 2]);
  assert.equal(core.ranges, 0);
  assert.equal(appended(), 1, "the syncing tab is told");
});

test("an empty batch appends nothing; a closed store refuses with CLOSED", async () => {
  const { writes, close } = setup();
  assert.deepEqual(await writes.append([]), []);
  close();
  await assert.rejects(writes.append([{ stream: "s", type: "Noted" }]), (error) => error.code === "CLOSED");
  await assert.rejects(writes.catchUp(), (error) => error.code === "CLOSED");
});

test("callers that come while a catch-up reads share the next one; the one after it does not start meanwhile", async () => {
  const { writes, core } = setup();
  const first = writes.catchUp();
  await new Promise((resolve) => setImmediate(resolve)); // the first one is reading now
  const second = writes.catchUp();
  const third = writes.catchUp();
  assert.equal(second, third, "one queued catch-up for both");
  assert.notEqual(first, second);
  await first;
  assert.equal(core.catchUps, 1, "the next one waits for the first to end");
  await Promise.all([second, third]);
  assert.equal(core.catchUps, 2);
});

test("the changes of one catch-up merge: a later reset starts the events over", () => {
  const a = { previousHead: 0, head: 2, events: [event(1), event(2)], confirmedHead: 2, rebased: false, reset: false };
  const b = { previousHead: 2, head: 3, events: [event(3)], confirmedHead: 3, rebased: false, reset: false };
  const reset = { previousHead: 0, head: 1, events: [event(1)], confirmedHead: 1, rebased: false, reset: true };
  assert.deepEqual(mergeChanges([a, b], 0, 0), { ...a, head: 3, confirmedHead: 3, events: [event(1), event(2), event(3)] });
  const merged = mergeChanges([a, reset], 0, 0);
  assert.equal(merged.reset, true);
  assert.deepEqual(merged.events, [event(1)]);
  assert.deepEqual(mergeChanges([], 4, 3), { previousHead: 4, head: 4, events: [], confirmedHead: 3, rebased: false, reset: false });
});
