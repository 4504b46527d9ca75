// leader.ts with a fake lock manager, a fake core and fake online events: one tab per store
// holds the sync lock and syncs while it does; a frozen tab gives the lock up and queues
// again on resume; the status apps see; everything stops when the signal aborts.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Leader, tokenRetryDelay } from "../dist/leader.js";
import { fakeLocks } from "./fake-locks.mjs";

/** The core's sync surface: a sync loop that runs until stopSync. */
function fakeCore() {
  const core = {
    running: 0,
    starts: 0,
    stops: 0,
    online: [],
    wakes: 0,
    status: { online: true, syncing: false, pending: 0, lastPulled: 7, lastError: null, lastErrorCode: null },
    onStatus: undefined,
    end: undefined,
    startSync(config, onStatus) {
      core.starts += 1;
      core.running += 1;
      core.config = JSON.parse(config);
      core.onStatus = onStatus;
      return new Promise((resolve) => {
        core.end = () => {
          core.running -= 1;
          resolve();
        };
      });
    },
    stopSync() {
      core.stops += 1;
      const end = core.end;
      core.end = undefined;
      end?.();
    },
    setOnline(online) {
      core.online.push(online);
    },
    syncStatus: () => JSON.stringify(core.status),
    wakeSync() {
      core.wakes += 1;
    },
  };
  return core;
}

/** Online/offline events whose listeners can be counted. */
function fakeWindow() {
  const listeners = new Map();
  return {
    addEventListener(type, listener) {
      listeners.set(type, [...(listeners.get(type) ?? []), listener]);
    },
    removeEventListener(type, listener) {
      listeners.set(type, (listeners.get(type) ?? []).filter((l) => l !== listener));
    },
    fire(type) {
      for (const listener of listeners.get(type) ?? []) listener();
    },
    count: () => [...listeners.values()].reduce((n, list) => n + list.length, 0),
  };
}

const config = { url: "http://localhost:8080", store: "s", token: "t" };

/** A tab's leader over shared `locks`. */
function tab(locks, { online = () => true, events = fakeWindow(), head = 4, confirmed = 2, ...options } = {}) {
  const sync = "sync" in options ? options.sync : config;
  const core = fakeCore();
  const statuses = [];
  const broadcast = [];
  const errors = [];
  let closed = false;
  const host = {
    storeName: "store",
    core,
    head: () => head,
    confirmedHead: () => confirmed,
    isClosed: () => closed,
    broadcastStatus: (status) => broadcast.push(status),
    onRejected: () => undefined,
    onStatus: (status) => statuses.push(status),
    reportError: (error) => errors.push(error),
  };
  const abort = new AbortController();
  const leader = new Leader(host, sync, abort.signal, { locks: () => locks, online, events: () => events });
  return { leader, core, statuses, broadcast, errors, events, abort, close: () => ((closed = true), abort.abort()) };
}

const LOCK = "annals-sync:store";

async function eventually(check, what) {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  assert.fail(`${what}: not met`);
}

test("the tab granted the sync lock syncs, tells the other tabs its status, and says it leads", async () => {
  const locks = fakeLocks();
  const one = tab(locks);
  one.leader.start();
  await eventually(() => one.leader.isLeader, "one leads");
  assert.equal(locks.held(LOCK), true);
  assert.equal(one.core.starts, 1);
  assert.deepEqual(one.core.config, config);
  assert.deepEqual(one.core.online, [true]);
  assert.deepEqual(one.broadcast, [one.core.status]);
  assert.equal(one.leader.status.leader, true);
  assert.equal(one.leader.status.pending, 2);
  assert.equal(one.statuses.at(-1).leader, true, "apps heard that it leads");
  one.close();
});

test("only one tab syncs; the other waits in the lock's queue", async () => {
  const locks = fakeLocks();
  const [one, two] = [tab(locks), tab(locks)];
  one.leader.start();
  two.leader.start();
  await eventually(() => one.leader.isLeader, "one leads");
  assert.equal(two.leader.isLeader, false);
  assert.equal(two.core.starts, 0);
  assert.equal(locks.waiting(LOCK), 1);
  one.close();
  await eventually(() => two.leader.isLeader, "two takes over once one is gone");
  two.close();
});

test("a frozen leader gives up the lock at once, and queues for it again on resume", async () => {
  const locks = fakeLocks();
  const [one, two] = [tab(locks), tab(locks)];
  one.leader.start();
  await eventually(() => one.leader.isLeader, "one leads");
  two.leader.start();

  one.leader.pause();
  assert.equal(one.leader.isLeader, false, "it stops leading as it freezes");
  assert.equal(one.core.stops, 1, "its sync client stopped");
  assert.equal(one.statuses.at(-1).leader, false);
  await eventually(() => two.leader.isLeader, "the other tab is handed the lock");

  one.leader.resume();
  assert.equal(locks.waiting(LOCK), 1, "resumed, it queues again");
  two.close();
  await eventually(() => one.leader.isLeader, "and leads once the lock is free");
  assert.equal(one.core.starts, 2);
  one.close();
});

test("a frozen leader lets go of the lock even while its sync loop still waits on a request", async () => {
  const locks = fakeLocks();
  const one = tab(locks);
  // A request in flight: stopping the client does not end the loop until the answer comes.
  let answer;
  one.core.stopSync = () => {
    one.core.stops += 1;
    const end = one.core.end;
    answer = () => end?.();
  };
  one.leader.start();
  await eventually(() => one.leader.isLeader, "one leads");
  one.leader.pause();
  await eventually(() => !locks.held(LOCK), "the lock is free at once");
  assert.equal(one.core.running, 1, "the loop has not ended yet");
  answer();
  one.close();
});

test("a tab frozen while waiting leaves the queue: it is never handed the lock while frozen", async () => {
  const locks = fakeLocks();
  const [one, two] = [tab(locks), tab(locks)];
  one.leader.start();
  await eventually(() => one.leader.isLeader, "one leads");
  two.leader.start();
  two.leader.pause();
  assert.equal(locks.waiting(LOCK), 0);
  one.close();
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(locks.held(LOCK), false, "nobody holds it");
  assert.equal(two.core.starts, 0);
  two.close();
});

test("pause and resume that repeat change nothing", async () => {
  const locks = fakeLocks();
  const one = tab(locks);
  one.leader.start();
  await eventually(() => one.leader.isLeader, "one leads");
  one.leader.pause();
  one.leader.pause();
  one.leader.resume();
  one.leader.resume();
  await eventually(() => one.leader.isLeader, "leads again");
  assert.equal(locks.waiting(LOCK), 0, "queued once");
  assert.equal(one.core.starts, 2);
  one.close();
});

test("without Web Locks the tab syncs at once", async () => {
  const one = tab(undefined);
  one.leader.start();
  await eventually(() => one.leader.isLeader, "leads");
  one.close();
});

test("a store without sync never leads; its status says offline with its pending count", () => {
  const one = tab(fakeLocks(), { sync: undefined, head: 9, confirmed: 6 });
  one.leader.start();
  assert.deepEqual(one.leader.status, {
    online: false,
    syncing: false,
    pending: 3,
    lastPulled: 6,
    lastError: null,
    lastErrorCode: null,
    error: null,
    leader: false,
  });
  one.leader.statusChanged();
  assert.deepEqual(one.statuses, [], "no sync events for a store without sync");
  assert.equal(one.events.count(), 0, "nor online listeners");
});

test("a tab that does not sync shows the syncing tab's status; the leader ignores others'", async () => {
  const locks = fakeLocks();
  const [one, two] = [tab(locks), tab(locks)];
  one.leader.start();
  await eventually(() => one.leader.isLeader, "one leads");
  two.leader.start();
  const remote = { online: true, syncing: true, pending: 0, lastPulled: 11, lastError: "x", lastErrorCode: "SERVER" };
  two.leader.setRemoteStatus(remote);
  assert.equal(two.leader.status.lastPulled, 11);
  assert.equal(two.leader.status.lastErrorCode, "SERVER");
  assert.equal(two.statuses.length, 1, "one sync event");
  one.leader.setRemoteStatus(remote);
  assert.equal(one.leader.status.lastPulled, 7, "the leader keeps its own");
  one.close();
  two.close();
});

test("the status object stays the same while nothing in it changes", async () => {
  const one = tab(undefined);
  one.leader.start();
  await eventually(() => one.leader.isLeader, "leads");
  assert.equal(one.leader.status, one.leader.status);
  assert.ok(Object.isFrozen(one.leader.status));
  one.close();
});

test("going offline reaches the core and the status", async () => {
  let online = true;
  const one = tab(undefined, { online: () => online });
  one.leader.start();
  await eventually(() => one.leader.isLeader, "leads");
  online = false;
  one.events.fire("offline");
  assert.deepEqual(one.core.online, [true, false]);
  assert.equal(one.leader.status.online, false);
  assert.equal(one.statuses.at(-1).online, false);
  one.close();
});

test("abort stops everything: the sync loop, the lock, the queue, the online listeners", async () => {
  const locks = fakeLocks();
  const [one, two] = [tab(locks), tab(locks)];
  one.leader.start();
  await eventually(() => one.leader.isLeader, "one leads");
  two.leader.start();
  assert.equal(one.events.count(), 2);
  two.close();
  assert.equal(locks.waiting(LOCK), 0, "the waiting tab left the queue");
  assert.equal(two.events.count(), 0);
  one.close();
  assert.equal(one.core.running, 0, "the sync loop ended");
  assert.equal(one.events.count(), 0, "no online/offline listener left");
  await one.leader.stopped();
  await eventually(() => !locks.held(LOCK), "the lock is free");
  assert.equal(two.core.starts, 0, "the aborted tab never syncs");
  assert.deepEqual([...one.errors, ...two.errors], []);
});

test("a token function is asked again after 1 s, 2 s, 4 s ... up to 60 s while its tokens are refused", () => {
  assert.deepEqual([2, 3, 4, 5, 8, 20].map(tokenRetryDelay), [1_000, 2_000, 4_000, 8_000, 60_000, 60_000]);
});
