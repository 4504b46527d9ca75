// Evolving events on an IndexedDB store (fake-indexeddb), where the core opens lazily (the
// events before the snapshots are read in the background): a rebuild waits for them, is
// cut by a close and resumes from its partial snapshot; a snapshot that left out an event
// this build could not read is refolded by a build that can.
import "fake-indexeddb/auto";

import assert from "node:assert/strict";
import { test } from "node:test";

import { openStore } from "annals";

import { uniqueName } from "./helpers.mjs";

const counter = (version) => ({
  version,
  initial: { n: 0, sum: 0 },
  apply: (s, e) => (e.type === "Counted" ? { n: s.n + 1, sum: s.sum + e.data.i } : s),
});
const sumTo = (n) => (n * (n - 1)) / 2;

function untilProgress(store, predicate, ms = 20_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error("no such rebuild progress"));
    }, ms);
    const off = store.on("rebuild", (progress) => {
      if (!predicate(progress)) return;
      clearTimeout(timer);
      off();
      resolve(progress);
    });
  });
}

test("IndexedDB: a rebuild reads the lazily loaded log, is cut by a close, and resumes from its partial snapshot", async () => {
  const name = uniqueName("idb-rebuild");
  const N = 12_000;
  const first = await openStore({ name, storage: "indexeddb", projections: { a: counter(1), b: counter(1) } });
  for (let from = 0; from < N; from += 1_000) {
    await first.appendMany(Array.from({ length: 1_000 }, (_, k) => ({ stream: `s${k % 5}`, type: "Counted", data: { i: from + k } })));
  }
  await first.close();

  const rebuild = { background: 500, slice: 500, saveEvery: 2_000 };
  const cut = await openStore({ name, storage: "indexeddb", projections: { a: counter(2), b: counter(1) }, rebuild });
  assert.deepEqual(cut.get("b"), { n: N, sum: sumTo(N) }, "b is ready when open resolves");
  await untilProgress(cut, (p) => p.done >= 5_000);
  await cut.close();

  const resumed = await openStore({ name, storage: "indexeddb", projections: { a: counter(2), b: counter(1) }, rebuild });
  const at = resumed.get("a").n;
  assert.ok(at >= 4_000 && at < N, `resumed from the partial snapshot at ${at}`);
  await untilProgress(resumed, (p) => p.done === p.total);
  assert.deepEqual(resumed.get("a"), { n: N, sum: sumTo(N) });
  await resumed.close();

  // Finished: the next open has nothing to rebuild.
  const again = await openStore({ name, storage: "indexeddb", projections: { a: counter(2), b: counter(1) }, rebuild });
  const heard = [];
  again.on("rebuild", (p) => heard.push(p));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(heard, []);
  assert.deepEqual(again.get("a"), { n: N, sum: sumTo(N) });
  await again.close();
});

test("IndexedDB: an event skipped by an older build (snapshot written past it) is folded after the upgrade", async () => {
  const name = uniqueName("idb-upgrade");
  const notes = {
    initial: [],
    apply: (state, e) => (e.type === "Note" ? [...state, `${e.data.text}:${e.data.color ?? "-"}`] : state),
  };
  const v2 = { Note: { 1: (data) => ({ ...data, tags: [] }) } };
  const v3 = { Note: { ...v2.Note, 2: (data) => ({ ...data, color: "none" }) } };
  const newer = await openStore({ name, storage: "indexeddb", upcasters: v3 });
  await newer.append({ stream: "n", type: "Note", schemaVersion: 1, data: { text: "a" } });
  await newer.append({ stream: "n", type: "Note", data: { text: "b", tags: [], color: "red" } });
  await newer.close();

  const older = await openStore({ name, storage: "indexeddb", upcasters: v2, unknownEvents: "skip", projections: { notes } });
  assert.deepEqual(older.get("notes"), ["a:-"]);
  await older.append({ stream: "n", type: "Note", data: { text: "c", tags: [] } });
  await older.close();

  const upgraded = await openStore({ name, storage: "indexeddb", upcasters: v3, projections: { notes } });
  assert.deepEqual(upgraded.get("notes"), ["a:none", "b:red", "c:none"]);
  await upgraded.close();
});
