// Evolving events in headless Chromium, on IndexedDB: a log written by version 1 of an app
// replays into version 3's state through its upcasters after a reload, its stored bytes
// unchanged; a v3 event reaching a v2 build is kept and warned about, and folded once the
// app is upgraded. (The same rules run from Node in pkg/test/evolving-events.test.mjs and
// natively in tests/upcast.rs; this is the browser's storage under them.)
import assert from "node:assert/strict";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { serveStatic } from "../scripts/serve.mjs";
import { TEST_TIMEOUT, launchBrowser } from "./helpers.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** @type {import("playwright-core").Browser} */
let browser;
/** @type {{ url: string, close: () => Promise<void> }} */
let server;

before(async () => {
  [server, browser] = await Promise.all([serveStatic(ROOT), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.close();
});

async function openPage() {
  const page = await browser.newPage();
  await page.goto(new URL("www/tests/pages/evolving.html", server.url.endsWith("/") ? server.url : `${server.url}/`).href);
  await page.waitForFunction(() => /** @type {any} */ (window).annals !== undefined);
  return page;
}

/**
 * The app's definitions at version `v` (1, 2 or 3), as page source: v2 adds a priority to
 * TodoAdded, v3 renames it TodoCreated with `title` as `text`.
 */
const APP = `
  const upcastersAt = (v) => ({
    ...(v >= 2 ? { TodoAdded: { 1: (d) => ({ ...d, priority: 0 }), ...(v >= 3 ? { 2: { type: "TodoCreated", upcast: (d) => ({ text: d.title, priority: d.priority }) } } : {}) } } : {}),
  });
  // Each version folds another shape: the projection's version says so (old snapshots go).
  const todosAt = (v) => ({
    version: v,
    initial: {},
    apply: (s, e) => {
      switch (e.type) {
        case "TodoAdded": return { ...s, [e.stream]: v >= 2 ? { title: e.data.title, priority: e.data.priority } : { title: e.data.title } };
        case "TodoCreated": return { ...s, [e.stream]: { text: e.data.text, priority: e.data.priority } };
        default: return s;
      }
    },
  });
  window.exported = async (store) => {
    const reader = store.exportEvents().getReader();
    let text = "";
    for (let part = await reader.read(); !part.done; part = await reader.read()) text += part.value;
    return text.split("\\n").slice(1).join("\\n");
  };
  window.openAt = (name, v) => window.annals.openStore({ name, storage: "indexeddb", upcasters: upcastersAt(v), projections: { todos: todosAt(v) } });
`;

test("a v1 log replays into v3 state after the app is upgraded, its stored bytes unchanged", { timeout: TEST_TIMEOUT }, async () => {
  const page = await openPage();
  await page.addScriptTag({ content: APP });
  const name = `evolving-${Date.now()}`;
  const exportedV1 = await page.evaluate(async (name) => {
    const window = /** @type {any} */ (globalThis);
    const v1 = await window.openAt(name, 1);
    await v1.appendMany([
      { stream: "t1", type: "TodoAdded", data: { title: "milk" } },
      { stream: "t2", type: "TodoAdded", data: { title: "eggs" } },
    ]);
    const text = await window.exported(v1);
    await v1.close();
    return text;
  }, name);
  await page.reload();
  await page.waitForFunction(() => /** @type {any} */ (window).annals !== undefined);
  await page.addScriptTag({ content: APP });
  const after = await page.evaluate(async (name) => {
    const window = /** @type {any} */ (globalThis);
    const v3 = await window.openAt(name, 3);
    const first = (await v3.events({ limit: 1 }))[0];
    const out = {
      state: v3.get("todos"),
      atOne: await v3.stateAt("todos", 1),
      first: { type: first.type, schemaVersion: first.schemaVersion, upcastFrom: first.upcastFrom },
      exported: await window.exported(v3),
    };
    await v3.close();
    return out;
  }, name);
  assert.deepEqual(after.state, { t1: { text: "milk", priority: 0 }, t2: { text: "eggs", priority: 0 } });
  assert.deepEqual(after.atOne, { t1: { text: "milk", priority: 0 } });
  assert.deepEqual(after.first, { type: "TodoCreated", schemaVersion: 3, upcastFrom: { type: "TodoAdded", schemaVersion: 1 } });
  assert.equal(after.exported, exportedV1, "the export as stored is the same before and after the upgrade");
  await page.close();
});

test("a v3 event reaching a v2 build is kept and warned about once, then folded after the upgrade", { timeout: TEST_TIMEOUT }, async () => {
  const page = await openPage();
  await page.addScriptTag({ content: APP });
  const name = `evolving-newer-${Date.now()}`;
  const seen = await page.evaluate(async (name) => {
    const window = /** @type {any} */ (globalThis);
    /** @type {string[]} */
    const errors = [];
    // Version 3 of the app writes first (and closes); then version 2 opens the database.
    const v3 = await window.openAt(name, 3);
    await v3.append({ stream: "t1", type: "TodoCreated", data: { text: "milk", priority: 1 } });
    await v3.close();
    const v2 = await window.openAt(name, 2);
    v2.on("error", (/** @type {{ code: string }} */ e) => errors.push(e.code));
    await new Promise((r) => setTimeout(r, 50));
    /** @type {Record<string, unknown>} */
    const out = { v2State: v2.get("todos"), v2Head: v2.head, errors };
    await v2.close();
    const upgraded = await window.openAt(name, 3);
    out.v3State = upgraded.get("todos");
    await upgraded.close();
    return out;
  }, name);
  assert.equal(seen.v2Head, 1, "the v2 build keeps the event");
  assert.deepEqual(seen.errors, ["UNKNOWN_EVENT"], "and reports it once");
  assert.deepEqual(seen.v2State, {}, "without folding it");
  assert.deepEqual(seen.v3State, { t1: { text: "milk", priority: 1 } }, "the upgraded build folds it");
  await page.close();
});
