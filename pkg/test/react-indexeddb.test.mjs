// `openStore` opened again in one tab, on the real IndexedDB backend (the wasm core over
// fake-indexeddb, an IndexedDB for Node): StrictMode through a StoreProvider, and what hot
// reload does (the module runs again, with the same or an edited reducer).
import "fake-indexeddb/auto";
import "./dom.mjs";

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { act, cleanup, render } from "@testing-library/react";
import { createElement as h, StrictMode } from "react";

import { openStore } from "annals";
import { StoreProvider, useProjection, useStore } from "annals/react";

import { realmStores } from "../dist/realm-stores.js";
import { eventually, uniqueName } from "./helpers.mjs";

afterEach(() => cleanup());
// The core finds IndexedDB on `window` when there is one (jsdom's has none).
for (const name of ["indexedDB", "IDBKeyRange", "IDBRequest", "IDBTransaction", "IDBDatabase", "IDBObjectStore", "IDBCursor", "IDBIndex", "IDBFactory", "IDBOpenDBRequest", "IDBVersionChangeEvent"]) {
  window[name] = globalThis[name];
}

const count = { initial: 0, apply: (n) => n + 1 };
const opensOf = (name) => realmStores().find((s) => s.key === `indexeddb:${name}`) ?? { handles: 0, opened: 0 };

/** Waits (settling React's updates in act) until `check()` is truthy. */
function until(check, what) {
  return eventually(async () => {
    await act(() => new Promise((resolve) => setTimeout(resolve, 0)));
    return check();
  }, 3000, what);
}

test("StrictMode: a StoreProvider calling openStore opens one IndexedDB store, and unmounting closes it", async () => {
  const name = uniqueName("strict-idb");
  const options = { name, projections: { count } };
  const seen = new Set();
  function Count() {
    const store = useStore();
    seen.add(store);
    return h("p", null, `count ${useProjection(store, "count")}`);
  }
  const opening = [];
  const open = () => {
    const promise = openStore(options);
    opening.push(promise);
    return promise;
  };
  const view = render(h(StrictMode, null, h(StoreProvider, { open }, h(Count))));
  // The opens resolve inside act, so React applies the provider's update there.
  await act(async () => {
    await new Promise((resolve) => setTimeout(resolve, 0)); // the provider calls `open` in a microtask
    await Promise.all(opening);
    await new Promise((resolve) => setTimeout(resolve, 0));
  });
  assert.equal(opening.length, 2, "StrictMode ran the provider's effect twice");
  await until(() => view.container.textContent === "count 0", "store open");
  assert.equal(opensOf(name).opened, 1, "one store opened for two mounts");
  assert.equal(opensOf(name).handles, 1, "the first mount's handle is released");
  const [store] = seen;
  await act(() => store.append({ stream: "a", type: "T" }));
  await until(() => view.container.textContent === "count 1", "append shown");

  view.unmount();
  await until(() => store.closed && opensOf(name).handles === 0, "closed after unmount");
  // Closed for real: a new open is a new store, with the data.
  const again = await openStore(options);
  assert.equal(opensOf(name).opened, 2);
  assert.equal(again.get("count"), 1);
  await again.close();
});

test("hot reload: the same definitions share the store, an edited reducer takes it over, dispose then reopen waits", async () => {
  const name = uniqueName("hmr-idb");
  const first = await openStore({ name, projections: { count } });
  await first.appendMany([{ stream: "a", type: "T" }, { stream: "b", type: "T" }]);

  // The module ran again with the same definitions (a new options object).
  const same = await openStore({ name, projections: { count } });
  assert.equal(opensOf(name).opened, 1);
  assert.equal(same.get("count"), 2);

  // The module ran again with an edited reducer (and its version bumped, so it rebuilds).
  const edited = { initial: 0, apply: (n) => n + 10, version: 2 };
  const next = await openStore({ name, projections: { count: edited } });
  assert.equal(opensOf(name).opened, 2);
  assert.equal(first.closed, true, "the earlier store was closed");
  assert.equal(same.closed, true);
  assert.equal(next.head, 2, "the new store has the data");
  assert.equal(next.get("count"), 20, "folded by the new reducer");

  // import.meta.hot.dispose(() => store.close()), then the module runs again at once.
  const closing = next.close();
  const reopened = await openStore({ name, projections: { count: edited } });
  await closing;
  assert.equal(opensOf(name).opened, 3, "the closing store was not shared");
  assert.equal(next.closed, true);
  assert.equal(reopened.get("count"), 20);
  await reopened.append({ stream: "a", type: "T" });
  assert.equal(reopened.get("count"), 30);
  await reopened.close();
  assert.equal(opensOf(name).handles, 0);
});
