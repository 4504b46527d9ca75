// Offline-first sync in the demo, end to end: a real annals-server (SQLite in a temporary
// directory) serves www/dist and syncs two browser contexts (two devices: separate
// IndexedDB). One goes offline, both add todos, it comes back: both show the same list.
// Run with `npm --prefix www run test:e2e` after building www/dist and the server
// (ANNALS_SERVER_BIN, default target/debug/annals-server).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { addViaUi as add, appUrl, eventually, launchBrowser, readLog, startAnnalsServer, syncState, titles } from "./helpers.mjs";

/** @type {import("playwright-core").Browser} */
let browser;
/** @type {{ url: string, close: () => void }} */
let server;

before(async () => {
  server = await startAnnalsServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  server?.close();
});

/** The store's log as the page reads it. @param {import("playwright-core").Page} page */
async function log(page) {
  return (await readLog(page)).events.map((e) => ({ id: e.id, position: e.position, pending: e.pending }));
}

test("two devices, one offline, converge on the same todo list", { timeout: 120_000 }, async () => {
  const store = `sync-${Date.now().toString(36)}`;
  const url = appUrl(server.url, store, { sync: true });
  const [deviceA, deviceB] = [await browser.newContext(), await browser.newContext()];
  const [a, b] = [await deviceA.newPage(), await deviceB.newPage()];
  const errors = /** @type {string[]} */ ([]);
  for (const page of [a, b]) page.on("pageerror", (e) => errors.push(String(e)));
  for (const page of [a, b]) {
    await page.goto(url);
    await page.locator('[data-testid="app"][data-state="ready"]').waitFor({ timeout: 30_000 });
  }
  const waitFor = { timeout: 20_000, interval: 100 };
  await eventually(() => syncState(a), (s) => s.online === "true", { ...waitFor, what: "device A online" });

  await add(a, "milk");
  await eventually(() => titles(b), (t) => t.includes("milk"), { ...waitFor, what: "B to receive A's todo" });

  await deviceB.setOffline(true);
  await add(b, "eggs (offline)");
  await add(b, "bread (offline)");
  await add(a, "jam (online)");
  await eventually(() => syncState(b), (s) => s.online === "false" && s.pending === "2", { ...waitFor, what: "B offline with 2 pending" });
  assert.deepEqual(await titles(b), ["bread (offline)", "eggs (offline)", "milk"], "B works offline");

  await deviceB.setOffline(false);
  const expected = ["bread (offline)", "eggs (offline)", "jam (online)", "milk"];
  await eventually(() => titles(a), (t) => JSON.stringify(t) === JSON.stringify(expected), { ...waitFor, what: "A to show every todo" });
  await eventually(() => titles(b), (t) => JSON.stringify(t) === JSON.stringify(expected), { ...waitFor, what: "B to show every todo" });
  await eventually(() => syncState(b), (s) => s.pending === "0", { ...waitFor, what: "B's outbox to drain" });

  const [logA, logB] = [await log(a), await log(b)];
  assert.deepEqual(logA, logB, "identical logs on both devices");
  assert.deepEqual(logA.map((e) => e.position), [1, 2, 3, 4]);
  assert.ok(logA.every((e) => !e.pending), "every event confirmed");
  assert.deepEqual(errors, []);
  await deviceA.close();
  await deviceB.close();
});
