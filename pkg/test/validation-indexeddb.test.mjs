// Validation on an IndexedDB store (fake-indexeddb): async validators run before the
// core's transaction, so a batch is written whole after them; recursive schemas open.
import "fake-indexeddb/auto";

import assert from "node:assert/strict";
import { test } from "node:test";

import { z } from "zod";

import { openStore } from "annals";

import { rejectsWith, uniqueName } from "./helpers.mjs";

const slowly = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const Category = z.object({
  name: z.string(),
  get children() {
    return z.array(Category).default([]);
  },
});

const events = {
  // An async check that takes longer than an IndexedDB transaction stays open untouched.
  ItemAdded: z.object({
    sku: z.string().refine(async (sku) => {
      await slowly(20);
      return sku !== "taken";
    }, "this sku is taken"),
    qty: z.number().int().positive().default(1),
  }),
  CategoryAdded: Category,
};

const items = {
  initial: 0,
  apply: (n, e) => (e.type === "ItemAdded" ? n + e.data.qty : n),
};

test("IndexedDB: async validators, then one transaction; the validator's output is what is stored", async () => {
  const name = uniqueName("validation-idb");
  const store = await openStore({ name, storage: "indexeddb", events, projections: { items } });
  const written = await store.appendMany([
    { stream: "cart", type: "ItemAdded", data: { sku: "a" } },
    { stream: "cart", type: "ItemAdded", data: { sku: "b", qty: 2 } },
    { stream: "tree", type: "CategoryAdded", data: { name: "root", children: [{ name: "leaf" }] } },
  ]);
  assert.deepEqual(
    written.map((e) => e.position),
    [1, 2, 3],
  );
  assert.deepEqual(written[0].data, { sku: "a", qty: 1 });
  assert.deepEqual(written[2].data, { name: "root", children: [{ name: "leaf", children: [] }] });

  const error = await rejectsWith(
    () =>
      store.appendMany([
        { stream: "cart", type: "ItemAdded", data: { sku: "c" } },
        { stream: "cart", type: "ItemAdded", data: { sku: "taken" } },
      ]),
    "INVALID_EVENT",
  );
  assert.equal(error.index, 1);
  assert.deepEqual(error.issues, [{ message: "this sku is taken", path: ["data", "sku"] }]);
  await rejectsWith(
    () => store.append({ stream: "d", type: "Dated", data: { at: new Date(0) } }),
    "INVALID_EVENT",
  );
  assert.equal(store.head, 3);
  assert.equal(store.get("items"), 3);
  await store.close();

  // Reopened: exactly the three events, as the validators gave them.
  const again = await openStore({ name, storage: "indexeddb", events, projections: { items } });
  const stored = await again.events();
  assert.deepEqual(
    stored.map((e) => e.data),
    [{ sku: "a", qty: 1 }, { sku: "b", qty: 2 }, { name: "root", children: [{ name: "leaf", children: [] }] }],
  );
  assert.equal(again.get("items"), 3);
  await again.close();
});

test("IndexedDB: opening again with the same schemas shares the store; other schemas take it over", async () => {
  const name = uniqueName("validation-idb-realm");
  const first = await openStore({ name, storage: "indexeddb", events, projections: { items } });
  const second = await openStore({ name, storage: "indexeddb", events, projections: { items } });
  await first.append({ stream: "cart", type: "ItemAdded", data: { sku: "a" } });
  assert.equal(second.head, 1); // the same store
  // A new object around the same validators is the same definition (compared by identity,
  // since a schema may be recursive); another validator is another definition.
  const same = await openStore({ name, storage: "indexeddb", events: { ...events }, projections: { items } });
  assert.equal(first.closed, false);
  await same.close();
  const other = await openStore({
    name,
    storage: "indexeddb",
    events: { ...events, ItemAdded: z.object({ sku: z.string(), qty: z.number() }) },
    projections: { items },
  });
  assert.equal(other.head, 1);
  assert.equal(first.closed, true); // taken over: the definitions changed
  await other.close();
  await second.close().catch(() => undefined);
});
