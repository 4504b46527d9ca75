// The page lifecycle and the sync lock, in Node with stand-ins: Web Locks (installFakeLocks)
// and one `document` per tab, where the browser fires `freeze` and `resume`. A frozen page
// runs no script, so a tab must not keep the sync lock, nor wait for it, while frozen: it
// would stop every tab of the store from syncing. No server is needed: the lock decides who
// syncs, whether or not the server answers.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { openStore } from "annals";

import { TAB_PROTOCOL_VERSION } from "../dist/tabs.js";
import { eventually, installFakeLocks, uniqueName } from "./helpers.mjs";

const locks = installFakeLocks();

/** Every tab opened, closed after each test (close twice is fine): a failed test must not leave sync loops running. */
const opened = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((store) => store.close()));
});

/**
 * A tab: a store opened with its own `document` (where the page lifecycle's events arrive),
 * closed after the test, and the means to freeze and resume it.
 */
async function openTab(options) {
  const document = new EventTarget();
  globalThis.document = document;
  try {
    const store = await openStore(options);
    opened.push(store);
    return {
      store,
      freeze: () => document.dispatchEvent(new Event("freeze")),
      resume: () => document.dispatchEvent(new Event("resume")),
    };
  } finally {
    delete globalThis.document;
  }
}

/** Tabs of one synced store (shared memory). */
function tabsOf(name) {
  const options = {
    name,
    storage: "memory",
    sharedMemory: true,
    // Nothing listens there: the tabs retry in the background, which changes nothing here.
    sync: { url: "http://127.0.0.1:9", store: name, token: "t", longPollSeconds: 1 },
  };
  return () => openTab(options);
}

const leaders = (...tabs) => tabs.map((t) => t.store.syncStatus.leader);

test("a frozen syncing tab lets go of the sync lock; on resume it queues for it again", async () => {
  const name = uniqueName("freeze-leader");
  const open = tabsOf(name);
  const one = await open();
  await eventually(() => one.store.syncStatus.leader, 2000, "the first tab syncs");
  const two = await open();
  const three = await open();

  one.freeze();
  assert.equal(one.store.syncStatus.leader, false, "it stops syncing as it freezes");
  await eventually(() => two.store.syncStatus.leader, 2000, "the next tab in line takes over");
  assert.deepEqual(leaders(one, two, three), [false, true, false]);

  one.resume();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.deepEqual(leaders(one, two, three), [false, true, false], "resumed, it waits its turn");
  await two.store.close();
  await eventually(() => three.store.syncStatus.leader, 2000, "the tab queued first goes next");
  await three.store.close();
  await eventually(() => one.store.syncStatus.leader, 2000, "then the resumed one");
  await one.store.close();
  assert.equal(locks.held(`annals-sync:${name}`), false);
});

test("a tab frozen while it waits for the sync lock leaves the queue until it resumes", async () => {
  const name = uniqueName("freeze-waiting");
  const open = tabsOf(name);
  const one = await open();
  await eventually(() => one.store.syncStatus.leader, 2000, "the first tab syncs");
  const two = await open();

  two.freeze();
  await one.store.close();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(locks.held(`annals-sync:${name}`), false, "nobody holds the lock: the frozen tab is not handed it");
  assert.equal(two.store.syncStatus.leader, false);

  two.resume();
  await eventually(() => two.store.syncStatus.leader, 2000, "resumed, it takes the lock");
  await two.store.close();
});

test("freeze and resume events that repeat change nothing", async () => {
  const name = uniqueName("freeze-twice");
  const open = tabsOf(name);
  const one = await open();
  await eventually(() => one.store.syncStatus.leader, 2000, "the tab syncs");
  one.resume(); // not frozen: nothing to resume
  one.freeze();
  one.freeze();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(locks.held(`annals-sync:${name}`), false);
  one.resume();
  one.resume();
  await eventually(() => one.store.syncStatus.leader, 2000, "the tab syncs again");
  const two = await open();
  await one.store.close();
  await eventually(() => two.store.syncStatus.leader, 2000, "one turn only: closing the tab frees the lock");
  await two.store.close();
});

test("a frozen tab lets go of its process managers' locks too; another tab runs them meanwhile", async () => {
  const name = uniqueName("freeze-reactor");
  const handled = [];
  const open = async (tab) => {
    const opening = await openTab({ name, storage: "memory", sharedMemory: true });
    opening.store.react({ name: "notes", on: ["Noted"], handle: (event) => void handled.push([tab, event.data.n]) });
    return opening;
  };
  const lock = `annals-react:${name}:notes`;
  const one = await open("one");
  await eventually(() => locks.held(lock), 2000, "tab one runs the reactor");
  const two = await open("two");
  await one.store.append({ stream: "s", type: "Noted", data: { n: 1 } });
  await eventually(() => handled.length === 1, 2000, "the first event handled");

  one.freeze();
  await two.store.append({ stream: "s", type: "Noted", data: { n: 2 } });
  await eventually(() => handled.length === 2, 2000, "the next event handled while tab one is frozen");
  one.resume();
  await two.store.append({ stream: "s", type: "Noted", data: { n: 3 } });
  await eventually(() => handled.length === 3, 2000, "the third event handled");
  await two.store.close();
  await one.store.append({ stream: "s", type: "Noted", data: { n: 4 } });
  await eventually(() => handled.length === 4, 2000, "the fourth event handled");
  assert.deepEqual(handled, [["one", 1], ["two", 2], ["two", 3], ["one", 4]], "each event once, by the tab holding the lock");
});

test("a frozen tab acts on no message of the other tabs until it resumes, then reads what they wrote", async () => {
  const name = uniqueName("freeze-messages");
  const open = () => openTab({ name, storage: "memory", sharedMemory: true });
  const [one, two, three] = [await open(), await open(), await open()];
  await two.store.append({ stream: "s", type: "Noted", data: { n: 1 } });
  await eventually(() => one.store.head === 1 && three.store.head === 1, 2000, "the other tabs read tab two's event");

  // A frozen page still gets the channel's messages (Chromium's BroadcastChannel, like
  // Node's, delivers them); reading on them would hold an IndexedDB transaction open.
  one.freeze();
  await two.store.append({ stream: "s", type: "Noted", data: { n: 2 } });
  await two.store.append({ stream: "s", type: "Noted", data: { n: 3 } });
  await eventually(() => three.store.head === 3, 2000, "a running tab reads both");
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(one.store.head, 1, "the frozen tab read nothing");
  one.resume();
  await eventually(() => one.store.head === 3, 2000, "resumed, it reads both");
});

test("a long freeze keeps few messages: tabs that opened meanwhile get one answer when it resumes", async () => {
  const name = uniqueName("freeze-held");
  const tab = await openTab({ name, storage: "memory", sharedMemory: true });
  // Another tab, as the channel sees it: it says hello many times and counts the answers.
  const channel = new BroadcastChannel(`annals:${name}`);
  const answers = [];
  channel.onmessage = (message) => {
    if (message.data?.kind === "here") answers.push(message.data);
  };
  try {
    tab.freeze();
    for (let i = 0; i < 50; i++) channel.postMessage({ v: TAB_PROTOCOL_VERSION, kind: "hello" });
    for (let i = 0; i < 50; i++) channel.postMessage({ v: TAB_PROTOCOL_VERSION, kind: "sync?", id: `q${i}` });
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(answers.length, 0, "a frozen tab answers nobody");
    tab.resume();
    await eventually(() => answers.length > 0, 2000, "resumed, it answers");
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(answers.length, 1, "one answer stands for the fifty hellos");
  } finally {
    channel.close();
  }
});
