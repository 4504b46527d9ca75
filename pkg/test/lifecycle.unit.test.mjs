// lifecycle.ts, and the store's one AbortController: freeze and resume reach the handlers
// until the signal aborts; `close()` aborts it, and every module lets go of what it held.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openStore } from "annals";

import { followLifecycle } from "../dist/lifecycle.js";
import { TAB_PROTOCOL_VERSION } from "../dist/tabs.js";
import { eventually, installFakeLocks, uniqueName } from "./helpers.mjs";

/** An EventTarget that counts its listeners. */
function countingTarget() {
  const target = new EventTarget();
  let listeners = 0;
  const add = target.addEventListener.bind(target);
  const remove = target.removeEventListener.bind(target);
  target.addEventListener = (type, listener) => (listeners++, add(type, listener));
  target.removeEventListener = (type, listener) => (listeners--, remove(type, listener));
  target.listeners = () => listeners;
  return target;
}

test("freeze and resume reach the handlers until the signal aborts", () => {
  const target = countingTarget();
  const seen = [];
  const abort = new AbortController();
  followLifecycle(target, { freeze: () => seen.push("freeze"), resume: () => seen.push("resume") }, abort.signal);
  target.dispatchEvent(new Event("freeze"));
  target.dispatchEvent(new Event("resume"));
  abort.abort();
  target.dispatchEvent(new Event("freeze"));
  assert.deepEqual(seen, ["freeze", "resume"]);
  assert.equal(target.listeners(), 0);
});

test("without a document nothing is followed, and an aborted signal adds no listener", () => {
  followLifecycle(undefined, { freeze: assert.fail, resume: assert.fail }, new AbortController().signal);
  const target = countingTarget();
  const abort = new AbortController();
  abort.abort();
  followLifecycle(target, { freeze: assert.fail, resume: assert.fail }, abort.signal);
  assert.equal(target.listeners(), 0);
});

test("close stops every module: lifecycle listeners, the sync lock and the channel go", async () => {
  const locks = installFakeLocks();
  const name = uniqueName("abort-all");
  const document = countingTarget();
  globalThis.document = document;
  let store;
  try {
    store = await openStore({
      name,
      storage: "memory",
      sharedMemory: true,
      snapshotEvery: 1,
      projections: { count: { initial: 0, apply: (n) => n + 1 } },
      // Nothing listens there: the sync loop retries, which changes nothing here.
      sync: { url: "http://127.0.0.1:9", store: name, token: "t", longPollSeconds: 1 },
    });
  } finally {
    delete globalThis.document;
  }
  await eventually(() => store.syncStatus.leader, 2000, "the store syncs");
  assert.equal(document.listeners(), 2, "freeze and resume are followed");
  // Two appends in a row: the second snapshot waits for its turn on a timer.
  await store.append({ stream: "s", type: "Noted", data: {} });
  await store.append({ stream: "s", type: "Noted", data: {} });

  const peer = new BroadcastChannel(`annals:${name}`);
  const heard = [];
  peer.onmessage = (message) => heard.push(message.data);
  try {
    await store.close();
    assert.equal(document.listeners(), 0, "no lifecycle listener left");
    assert.equal(locks.held(`annals-sync:${name}`), false, "the sync lock is free");
    assert.equal(store.syncStatus.leader, false);
    peer.postMessage({ v: TAB_PROTOCOL_VERSION, kind: "hello" });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(heard, [], "a closed store answers no tab");
    assert.equal(store.get("count"), 2, "the projections keep their last state");
  } finally {
    peer.close();
  }
});

test("close leaves no timer behind: a change announcement waiting for its task is sent, not left", async () => {
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
  const name = uniqueName("abort-timers");
  const store = await openStore({ name, storage: "memory", sharedMemory: true });
  const peer = new BroadcastChannel(`annals:${name}`);
  const heard = [];
  peer.onmessage = (message) => heard.push(message.data);
  try {
    peer.postMessage({ v: TAB_PROTOCOL_VERSION, kind: "hello" });
    await eventually(() => heard.some((m) => m.kind === "here"), 2000, "the store answers the peer");
    const before = timers();
    await store.append({ stream: "s", type: "Noted", data: {} });
    assert.equal(timers(), before + 1, "the announcement waits for the next task");
    await store.close();
    assert.equal(timers(), before, "no timer of the store is left");
    await eventually(() => heard.some((m) => m.kind === "change" && m.head === 1), 2000, "the change was announced as it closed");
  } finally {
    peer.close();
  }
});
