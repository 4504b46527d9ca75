// writer-lock.ts with a fake lock manager and Node's BroadcastChannel: the tab holding the
// writer lock writes under one lease until another tab asks for it; it lets go only between
// writes; a frozen or closed tab lets go at once when idle, so it never blocks the others.
// `enter()` gives the lease when held (the write counted in), else a promise to wait on,
// after which the core enters again: `write()` below does as the core does.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ASK_AGAIN_MS, IDLE_MS, WriterLock, writerLockFor } from "../dist/writer-lock.js";
import { fakeLocks } from "./fake-locks.mjs";

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));
let stores = 0;

/** Enters as the core does: waits while not held, then enters again. Resolves to the lease. */
async function write(lock) {
  for (;;) {
    const entered = lock.enter();
    if (typeof entered === "number") return entered;
    await entered;
  }
}

/** Two tabs of one store, on one fake lock manager. */
function twoTabs() {
  const locks = fakeLocks();
  const name = `orders-${++stores}`;
  const lockName = `annals-writer:${name}`;
  const tab = () => writerLockFor(name, locks);
  return { locks, lockName, a: tab(), b: tab() };
}

test("without Web Locks there is no writer lock (the core then reads before every write)", () => {
  assert.equal(writerLockFor("orders", undefined), undefined);
});

test("the holder enters at once, under the same lease, write after write", async (t) => {
  const { a, b } = twoTabs();
  t.after(() => (a.close(), b.close()));
  const first = a.enter();
  assert.ok(first instanceof Promise, "the first write waits for the lock");
  await first;
  assert.equal(a.enter(), 1, "held now: entered at once");
  a.leave();
  assert.equal(a.enter(), 1, "held: the lease comes back at once, not a promise");
  a.leave();
  assert.equal(a.enter(), 1);
  a.leave();
});

test("a tab that asks gets the lock once the holder's write is over; the holder's next write waits for a new lease", async (t) => {
  const { locks, lockName, a, b } = twoTabs();
  t.after(() => (a.close(), b.close()));
  assert.equal(await write(a), 1); // a write in flight
  let bLease;
  const bEntered = write(b).then((lease) => (bLease = lease));
  await tick(20);
  assert.equal(bLease, undefined, "not while the holder's write is in flight");
  a.leave();
  assert.equal(await bEntered, 1);
  assert.equal(a.held, false);
  assert.ok(a.enter() instanceof Promise, "not held any more: a wait");
  const aAgain = write(a);
  await tick(20);
  assert.equal(b.held, true, "the new holder finishes its write first");
  b.leave();
  assert.equal(await aAgain, 2, "a new lease: the core reads what the other tab wrote");
  assert.equal(locks.held(lockName), true);
  a.leave();
});

test("an ask that reached no holder is made again, so an idle holder does not keep the lock", async (t) => {
  const locks = fakeLocks();
  const name = `orders-${++stores}`;
  const [first, second, third] = [0, 1, 2].map(() => writerLockFor(name, locks));
  t.after(() => [first, second, third].forEach((l) => l.close()));
  await write(first);
  // Both ask while `first` holds it; `second` is granted next and never heard `third`'s
  // first ask (it held nothing then).
  const secondEntered = write(second);
  const thirdEntered = write(third);
  first.leave();
  await secondEntered;
  second.leave();
  const started = Date.now();
  await thirdEntered;
  assert.ok(Date.now() - started < 20 * ASK_AGAIN_MS, "asked again within a few intervals");
  third.leave();
});

test("freezing (yield) lets go when idle, and after the write in flight otherwise", async (t) => {
  const { locks, lockName, a, b } = twoTabs();
  t.after(() => (a.close(), b.close()));
  await write(a);
  a.yield();
  assert.equal(locks.held(lockName), true, "kept while its write is in flight");
  a.leave();
  await tick();
  assert.equal(locks.held(lockName), false, "let go once idle");
  assert.ok(a.enter() instanceof Promise, "taken again on the next write");
});

test("closing lets go, and a write still waiting for the lock fails with AbortError", async (t) => {
  const { locks, lockName, a, b } = twoTabs();
  t.after(() => b.close());
  await write(a);
  const waiting = b.enter();
  const failed = assert.rejects(Promise.resolve(waiting), { name: "AbortError" });
  b.close();
  await failed;
  a.close();
  await tick();
  assert.equal(locks.held(lockName), false);
  assert.equal(locks.waiting(lockName), 0);
});

test("messages other than an ask are ignored", async (t) => {
  const locks = fakeLocks();
  const channel = { onmessage: null, postMessage() {}, close() {} };
  const lock = new WriterLock(`orders-${++stores}`, locks, channel);
  t.after(() => lock.close());
  await write(lock);
  lock.leave();
  channel.onmessage({ data: { kind: "change", head: 3 } });
  channel.onmessage({ data: null });
  assert.equal(lock.held, true);
  channel.onmessage({ data: { kind: "writer?" } });
  assert.equal(lock.held, false);
});


test("a write dropped while it waited counts for nothing: the holder still lets go when asked", async (t) => {
  const { locks, lockName, a, b } = twoTabs();
  t.after(() => (a.close(), b.close()));
  await a.enter(); // waited, and then never entered again (its write was dropped)
  assert.equal(a.held, true);
  const bEntered = write(b);
  assert.equal(await bEntered, 1, "nothing in flight kept it");
  assert.equal(locks.held(lockName), true);
  b.leave();
});

test("a frozen tab leaves the lock's queue, so it is never handed the lock while frozen; resumed, it asks again", async (t) => {
  const { locks, lockName, a, b } = twoTabs();
  t.after(() => (a.close(), b.close()));
  await write(a); // `a` writes: its write is in flight
  let bLease;
  const bEntered = write(b).then((lease) => (bLease = lease));
  await tick();
  b.pause(); // frozen while waiting
  await tick();
  assert.equal(locks.waiting(lockName), 0, "out of the queue");
  a.leave();
  await tick(20);
  assert.equal(bLease, undefined, "not handed the lock while frozen");
  assert.equal(locks.held(lockName), false, "`a` let go (it was asked before the freeze), and nobody holds it");
  b.pause();
  b.resume();
  assert.equal(await bEntered, 1, "resumed: it asks again, and the write goes on");
  b.leave();
});

test("a freeze and a resume in quick succession lose no waiting write", async (t) => {
  const { a, b } = twoTabs();
  t.after(() => (a.close(), b.close()));
  await write(a);
  a.leave();
  const bEntered = write(b);
  b.pause();
  b.resume();
  assert.equal(await bEntered, 1);
  b.leave();
});

test("a tab granted the lock lets go at once when others queued meanwhile (an ask that reached no holder)", async (t) => {
  const locks = fakeLocks();
  const name = `orders-${++stores}`;
  const pending = [];
  locks.query = async () => ({ pending: pending.map((n) => ({ name: n })) });
  // No channel: asks reach nobody, only the queue tells.
  const first = new WriterLock(name, locks, undefined);
  const second = new WriterLock(name, locks, undefined);
  t.after(() => (first.close(), second.close()));
  pending.push(`annals-writer:${name}`);
  await write(first);
  first.leave();
  await tick();
  assert.equal(first.held, false, "someone waits: let go once idle");
  pending.length = 0;
  assert.equal(await write(second), 1);
  second.leave();
  await tick();
  assert.equal(second.held, true, "nobody waits: kept");
});

test("primed as the store opens, the lock is held before the first write when nobody holds it", async (t) => {
  const { locks, lockName, a, b } = twoTabs();
  t.after(() => (a.close(), b.close()));
  a.prime();
  await tick();
  assert.equal(a.held, true);
  assert.equal(a.enter(), 1, "the first write enters at once");
  a.leave();
  b.prime(); // held by `a`: nothing happens, nothing is queued
  await tick();
  assert.equal(b.held, false);
  assert.equal(locks.waiting(lockName), 0);
  assert.equal(await write(b), 1, "a write asks for it as usual");
  b.leave();
});

test("a holder lets go after a while without writes, so a tab that cannot ask still gets the lock", async (t) => {
  const locks = fakeLocks();
  const name = `orders-${++stores}`;
  // Neither has a channel: no ask reaches anyone.
  const holder = new WriterLock(name, locks, undefined);
  const other = new WriterLock(name, locks, undefined);
  t.after(() => (holder.close(), other.close()));
  await write(holder);
  holder.leave();
  assert.equal(holder.enter(), 1, "kept between writes that follow each other");
  holder.leave();
  const started = Date.now();
  assert.equal(await write(other), 1);
  assert.ok(Date.now() - started >= IDLE_MS * 0.9, "only once the holder was idle that long");
  other.leave();
  assert.equal(holder.held, false);
});
