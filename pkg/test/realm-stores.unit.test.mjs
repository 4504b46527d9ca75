// realm-stores.ts: what `openStore` does with an IndexedDB store opened again in one tab
// (StrictMode, hot reload). Node has no IndexedDB, so the stores underneath are memory
// stores (and fakes where the order of close and open is what is tested).
import assert from "node:assert/strict";
import { test } from "node:test";

import { openStore } from "annals";

import { definitionsOf, openInRealm, realmStores } from "../dist/realm-stores.js";
import { openTestStore, rejectsWith, uniqueName } from "./helpers.mjs";

const count = { initial: 0, apply: (n) => n + 1 };
const stateOf = (key) => realmStores().find((s) => s.key === key);

/** `openInRealm` over real memory stores, recording each one actually opened. */
function realm(prefix) {
  const key = `indexeddb:${uniqueName(prefix)}`;
  const opened = [];
  const open = (options) =>
    openInRealm(key, definitionsOf(options), async () => {
      const store = await openTestStore();
      opened.push(store);
      return store;
    });
  return { key, opened, open };
}

test("the same definitions share one store; each close releases its handle, the last one closes the store", async () => {
  const { key, opened, open } = realm("share");
  const options = { name: "todos", projections: { count } };
  // Two opens before either resolves (StrictMode's double effect), and one with an equal
  // but new options object (a module run again with the same definitions).
  const [one, two] = await Promise.all([open(options), open(options)]);
  const three = await open({ projections: { count }, name: "todos" });
  assert.equal(opened.length, 1);
  assert.notEqual(one, two, "each open has its own handle");
  assert.equal(stateOf(key).handles, 3);

  await one.append({ stream: "a", type: "T" });
  assert.equal(two.get("count"), 1, "one store underneath");
  let heardByOne = 0;
  one.subscribe("count", () => (heardByOne += 1));
  await one.close();
  assert.equal(one.closed, true);
  assert.equal(opened[0].closed, false, "two handles still hold it");
  await rejectsWith(one.append({ stream: "a", type: "T" }), "CLOSED", "append on a released handle");
  assert.throws(() => one.subscribe("count", () => {}), { code: "CLOSED" });

  await two.append({ stream: "a", type: "T" });
  assert.equal(heardByOne, 0, "a released handle's subscriptions are gone");
  assert.equal(three.get("count"), 2);
  await two.close();
  await two.close(); // a second close releases nothing more
  assert.equal(opened[0].closed, false);
  await three.close();
  assert.equal(opened[0].closed, true, "the last handle closed the store");
  assert.equal(stateOf(key).handles, 0);
});

test("other definitions take over: the earlier store is closed, then the new one opens (hot reload without dispose)", async () => {
  const { key, opened, open } = realm("takeover");
  const before = await open({ name: "todos", projections: { count } });
  // The module ran again: its reducer is a new function.
  const edited = { initial: 0, apply: (n) => n + 10 };
  const after = await open({ name: "todos", projections: { count: edited } });
  assert.equal(opened.length, 2);
  assert.equal(opened[0].closed, true, "the earlier store closed");
  assert.equal(before.closed, true);
  await rejectsWith(before.append({ stream: "a", type: "T" }), "CLOSED");
  assert.equal(after.closed, false);
  assert.deepEqual(stateOf(key), { key, handles: 1, ending: false, opened: 2 });
  // Other options take over too.
  const synced = await open({ name: "todos", projections: { count: edited }, snapshotEvery: 10 });
  assert.equal(after.closed, true);
  await synced.close();
  assert.equal(opened[2].closed, true);
});

test("an open while the store is closing waits for the close (the import.meta.hot.dispose recipe)", async () => {
  const key = `indexeddb:${uniqueName("dispose")}`;
  const log = [];
  const fakeStore = (n) => ({
    closed: false,
    async close() {
      log.push(`closing ${n}`);
      await new Promise((resolve) => setTimeout(resolve, 30));
      this.closed = true;
      log.push(`closed ${n}`);
    },
  });
  const definitions = definitionsOf({ name: "todos", projections: { count } });
  const open = (n) =>
    openInRealm(key, definitions, async () => {
      log.push(`open ${n}`);
      return fakeStore(n);
    });
  const first = await open(1);
  const closing = first.close(); // dispose: not awaited before the module runs again
  const second = await open(2);
  await closing;
  assert.deepEqual(log, ["open 1", "closing 1", "closed 1", "open 2"]);
  assert.equal(second.closed, false);
  await second.close();
  assert.deepEqual(log.slice(4), ["closing 2", "closed 2"]);
});

test("a failed open is not kept: the next open tries again", async () => {
  const key = `indexeddb:${uniqueName("fail")}`;
  const definitions = definitionsOf({ name: "todos" });
  await assert.rejects(
    openInRealm(key, definitions, async () => {
      throw new Error("quota");
    }),
    /quota/,
  );
  const store = await openInRealm(key, definitions, () => openTestStore());
  assert.equal(store.closed, false);
  assert.equal(stateOf(key).handles, 1);
  await store.close();
});

test("openStore keeps memory stores apart (a plain one starts empty, sharedMemory ones are tabs)", async () => {
  const name = uniqueName("memory");
  const before = realmStores().length;
  const one = await openStore({ name, storage: "memory" });
  const two = await openStore({ name, storage: "memory", sharedMemory: true });
  assert.equal(realmStores().length, before, "no memory store is registered for sharing");
  await Promise.all([one.close(), two.close()]);
});
