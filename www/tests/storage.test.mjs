// Storage trouble in the demo, in Chromium: a full disk (a real QuotaExceededError, the
// origin's quota lowered through the DevTools protocol), a database deleted under a synced
// store, and a newer build upgrading the database while an old tab holds it open.
// Run with `npm --prefix www run test:e2e` after building www/dist and the server.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  TEST_TIMEOUT,
  addViaUi,
  appUrl,
  eventually,
  freshStore,
  launchBrowser,
  newTab,
  openApp,
  readLog,
  serveDist,
  shown,
  startAnnalsServer,
  syncState,
  titles,
  waitReady,
} from "./helpers.mjs";

/** @typedef {import("playwright-core").Page} Page */

/** @type {import("playwright-core").Browser} */
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/**
 * Runs in a page: appends `events` (one `append`, or one `appendMany` for several) through the
 * demo's store; "ok" and the positions, or the error's name and code. An event with a
 * `noise` of n gets n characters of random base64 in its data: the browser compresses what
 * it stores, so only random bytes take their size from the quota.
 * @param {Array<{ stream: string, type: string, data: Record<string, unknown>, noise?: number }>} events
 */
async function appendInPage(events) {
  const store = window.annalsStore;
  if (!store) throw new Error("window.annalsStore is not set");
  /** @param {number} n */
  const noise = (n) => {
    let out = "";
    while (out.length < n) out += btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(30_000))));
    return out.slice(0, n);
  };
  const batch = events.map(({ noise: n, ...e }) => (n ? { ...e, data: { ...e.data, noise: noise(n) } } : e));
  try {
    const stored = batch.length === 1 ? [await store.append(/** @type {any} */ (batch[0]))] : await store.appendMany(/** @type {any} */ (batch));
    return { ok: true, positions: stored.map((e) => e.position) };
  } catch (err) {
    const e = /** @type {Error & { code?: string }} */ (err);
    return { ok: false, name: e.name, code: e.code, message: e.message };
  }
}

/** A todo added as a raw event, with `noise` random characters. @param {string} id @param {number} noise */
const bigTodo = (id, noise) => ({ stream: `todo-${id}`, type: "TodoAdded", data: { id, title: `big ${id}` }, noise });

describe("a full disk", () => {
  /** @type {{ url: string, close: () => Promise<void> }} */
  let server;
  before(async () => {
    server = await serveDist();
  });
  after(async () => {
    await server?.close();
  });

  test("QuotaExceededError fails the append with QUOTA_EXCEEDED, stores nothing partial, and appends work once space is freed", { timeout: TEST_TIMEOUT }, async () => {
    /** @type {string[]} */
    const errors = [];
    const context = await browser.newContext();
    try {
      const page = await newTab(context, errors);
      // The origin gets 600 KB, set before the page first opens its storage (Chromium reads an
      // origin's quota when it opens the storage): room for todos, none for an 800 KB event.
      const cdp = await context.newCDPSession(page);
      const origin = new URL(server.url).origin;
      await cdp.send("Storage.overrideQuotaForOrigin", { origin, quotaSize: 600_000 });
      const store = freshStore("quota");
      await openApp(page, appUrl(server.url, store));
      for (const title of ["milk", "eggs"]) await addViaUi(page, title);
      const before = await shown(page);
      const logBefore = await readLog(page);

      const single = await page.evaluate(appendInPage, [bigTodo("huge", 800_000)]);
      assert.deepEqual(
        { ok: single.ok, name: single.name, code: single.code },
        { ok: false, name: "AnnalsError", code: "QUOTA_EXCEEDED" },
        `a write past the quota is refused with QUOTA_EXCEEDED: ${single.message}`,
      );
      // A batch with one small event and one that does not fit: all or nothing.
      const batch = await page.evaluate(appendInPage, [bigTodo("small", 10), bigTodo("huge2", 800_000)]);
      assert.deepEqual([batch.ok, batch.code], [false, "QUOTA_EXCEEDED"], "the batch is refused as a whole");

      assert.deepEqual(await readLog(page), logBefore, "nothing of either batch is in the log");
      assert.deepEqual(await shown(page), before, "the page shows what it showed");
      await page.reload();
      await waitReady(page);
      assert.deepEqual(await readLog(page), logBefore, "nor on disk: the reload reads the same log");

      // Space is freed (the quota grows): the same append now succeeds, at the next position.
      await cdp.send("Storage.overrideQuotaForOrigin", { origin, quotaSize: 100_000_000 });
      const retried = await page.evaluate(appendInPage, [bigTodo("huge", 800_000)]);
      assert.deepEqual(retried, { ok: true, positions: [logBefore.head + 1] });
      await addViaUi(page, "bread");
      assert.deepEqual(await titles(page), ["big huge", "bread", "eggs", "milk"]);
      await page.reload();
      await waitReady(page);
      assert.deepEqual((await readLog(page)).head, logBefore.head + 2, "both appends are stored");

      // The QUOTA_EXCEEDED errors were answers to the test's own calls, not page errors.
      assert.deepEqual(errors, [], "no errors in the page");
    } finally {
      await context.close();
    }
  });
});

describe("a synced store", () => {
  /** @type {{ url: string, close: () => void }} */
  let server;
  before(async () => {
    server = await startAnnalsServer();
  });
  after(() => {
    server?.close();
  });

  /** The server's log of `store`: ids in server order. @param {string} store */
  async function serverIds(store) {
    const response = await fetch(`${server.url}/v1/stores/${encodeURIComponent(store)}/pull?after=0&limit=1000`, {
      headers: { authorization: "Bearer dev" },
    });
    assert.equal(response.status, 200);
    const body = /** @type {{ events: Array<{ id: string }> }} */ (await response.json());
    return body.events.map((e) => e.id);
  }

  /**
   * Two ways the database goes away under the store: another tab of the origin deletes it
   * (`versionchange`, reason "deleted"), or the browser clears the site's data (the connection
   * is closed under the store, reason "lost").
   */
  const takeAways = [
    {
      how: "another tab deletes it",
      reason: "deleted",
      /** @param {{ other: Page, store: string }} arg */
      run: async ({ other, store }) => {
        const deleted = await other.evaluate(
          (name) =>
            new Promise((resolve) => {
              const request = indexedDB.deleteDatabase(name);
              request.onsuccess = () => resolve("deleted");
              request.onerror = () => resolve(`failed: ${request.error?.name}`);
              request.onblocked = () => resolve("blocked");
            }),
          store,
        );
        assert.equal(deleted, "deleted", "the deletion is not blocked by the open store");
      },
    },
    {
      how: "the browser clears the site's data",
      reason: "lost",
      /** @param {{ cdp: import("playwright-core").CDPSession }} arg */
      run: async ({ cdp }) => {
        await cdp.send("Storage.clearDataForOrigin", { origin: new URL(server.url).origin, storageTypes: "indexeddb" });
      },
    },
  ];

  for (const takeAway of takeAways) {
    test(`when ${takeAway.how}, it closes with "${takeAway.reason}", reopens, pulls everything back and loses no unsynced event`, { timeout: 120_000 }, async () => {
      /** @type {string[]} */
      const errors = [];
      const context = await browser.newContext();
      try {
        const store = freshStore(takeAway.reason);
        const page = await newTab(context, errors);
        await openApp(page, appUrl(server.url, store, { sync: true }));
        const wait = { timeout: 20_000, interval: 100 };
        await addViaUi(page, "synced before");
        await eventually(() => syncState(page), (s) => s.pending === "0" && s.online === "true", { ...wait, what: "the todo to be pushed" });

        // A second tab of the same store, opened while the network is up: it holds the
        // database open too, and the outbox in its memory.
        const other = await newTab(context, errors);
        await openApp(other, appUrl(server.url, store, { sync: true }));
        const cdp = await context.newCDPSession(page);

        // Offline, one more todo stays in the outbox: on disk and in memory only.
        await context.setOffline(true);
        await addViaUi(page, "not pushed yet");
        await eventually(() => syncState(page), (s) => s.pending === "1", { ...wait, what: "one event pending" });
        await eventually(() => titles(other), (t) => t.includes("not pushed yet"), { ...wait, what: "the second tab to see it" });
        const unsynced = (await readLog(page)).events.filter((e) => e.pending).map((e) => e.id);
        await page.evaluate(() => {
          /** @type {any} */ (window).closedWith = [];
          window.annalsStore?.on("closed", (info) => /** @type {any} */ (window).closedWith.push(info));
        });
        const oldStore = await page.evaluateHandle(() => window.annalsStore);

        await takeAway.run({ other, store, cdp });

        // The old store said why, and fails with CLOSED instead of waiting on a lost connection.
        await eventually(() => page.evaluate(() => /** @type {any} */ (window).closedWith), (c) => c.length > 0, { ...wait, what: "the closed event" });
        assert.deepEqual(await page.evaluate(() => /** @type {any} */ (window).closedWith), [{ reason: takeAway.reason, unsynced: 1 }]);
        const late = await oldStore.evaluate(async (s) => {
          try {
            await /** @type {any} */ (s).append({ stream: "late", type: "Late", data: {} });
            return "ok";
          } catch (err) {
            return /** @type {{ code?: string }} */ (err).code;
          }
        });
        assert.equal(late, "CLOSED");

        // The app reopened the database; still offline, it already shows the unsynced todo again.
        await waitReady(page);
        await eventually(() => titles(page), (t) => t.includes("not pushed yet"), { ...wait, what: "the unsynced todo back" });

        // Online again: the pushed todo comes back from the server, the other one is pushed once.
        await context.setOffline(false);
        await eventually(() => titles(page), (t) => JSON.stringify(t) === JSON.stringify(["not pushed yet", "synced before"]), { ...wait, what: "both todos" });
        await eventually(() => syncState(page), (s) => s.pending === "0", { ...wait, what: "the outbox to drain" });
        const log = await readLog(page);
        assert.ok(log.events.every((e) => !e.pending), "every event confirmed");
        const ids = await serverIds(store);
        assert.equal(new Set(ids).size, ids.length, "no event twice on the server");
        assert.deepEqual(log.events.map((e) => e.id), ids, "the reopened store holds the server's log");
        for (const id of unsynced) assert.ok(ids.includes(id), "the event that was never pushed reached the server, by its id");
        assert.match((await shown(page)).error ?? "", /restored from the server/);
        // The second tab reopened too, and appended the same ids again: nothing doubled.
        // (Until it has reopened, its store is the closed one and reading it fails.)
        const otherLog = () => readLog(other).catch(() => null);
        await eventually(otherLog, (l) => JSON.stringify(l) === JSON.stringify(log), { ...wait, what: "the second tab to hold the same log" });
        assert.deepEqual(await serverIds(store), ids, "still no event twice on the server");
        assert.deepEqual(errors, [], "no errors in the pages");
      } finally {
        await context.close();
      }
    });
  }

  test("the unsynced events of a deleted database survive a reload before the store reopens", { timeout: 120_000 }, async () => {
    /** @type {string[]} */
    const errors = [];
    const context = await browser.newContext();
    try {
      const store = freshStore("reload");
      const page = await newTab(context, errors);
      await openApp(page, appUrl(server.url, store, { sync: true }));
      const wait = { timeout: 20_000, interval: 100 };
      await addViaUi(page, "synced before");
      await eventually(() => syncState(page), (s) => s.pending === "0" && s.online === "true", { ...wait, what: "the todo to be pushed" });
      await context.setOffline(true);
      await addViaUi(page, "not pushed yet");
      await eventually(() => syncState(page), (s) => s.pending === "1", { ...wait, what: "one event pending" });
      const unsynced = (await readLog(page)).events.filter((e) => e.pending).map((e) => e.id);

      // The app reopens the database as soon as it is deleted, and would append the event
      // again from this page's memory: here that reopen never completes, and the page is
      // reloaded instead, so only what survives a reload can bring the event back.
      await page.evaluate(() => {
        /** @type {any} */ (indexedDB).open = () => ({});
      });
      const deleted = await page.evaluate(
        (name) =>
          new Promise((resolve) => {
            const request = indexedDB.deleteDatabase(name);
            request.onsuccess = () => resolve("deleted");
            request.onerror = () => resolve(`failed: ${request.error?.name}`);
            request.onblocked = () => resolve("blocked");
          }),
        store,
      );
      assert.equal(deleted, "deleted");
      const key = `annals-orphans:${store}`;
      const kept = await eventually(
        () => page.evaluate((k) => localStorage.getItem(k), key),
        (v) => v !== null,
        { ...wait, what: "the outbox kept in localStorage" },
      );
      assert.deepEqual(JSON.parse(kept ?? "{}").events.map((/** @type {{ id: string }} */ e) => e.id), unsynced);

      await context.setOffline(false);
      await page.reload();
      await waitReady(page);
      await eventually(() => titles(page), (t) => JSON.stringify(t) === JSON.stringify(["not pushed yet", "synced before"]), { ...wait, what: "both todos after the reload" });
      await eventually(() => syncState(page), (s) => s.pending === "0", { ...wait, what: "the outbox to drain" });
      const ids = await serverIds(store);
      assert.equal(new Set(ids).size, ids.length, "no event twice on the server");
      for (const id of unsynced) assert.ok(ids.includes(id), "the event that was never pushed reached the server, by its id");
      assert.equal(await page.evaluate((k) => localStorage.getItem(k), key), null, "forgotten once appended");
      assert.deepEqual(errors, [], "no errors in the page");
    } finally {
      await context.close();
    }
  });
});

describe("a newer build", () => {
  /** @type {{ url: string, close: () => Promise<void> }} */
  let server;
  before(async () => {
    server = await serveDist();
  });
  after(async () => {
    await server?.close();
  });

  test("upgrading the database while an old tab holds it does not hang: the old tab closes with CLOSED and says so", { timeout: TEST_TIMEOUT }, async () => {
    /** @type {string[]} */
    const errors = [];
    const context = await browser.newContext();
    try {
      const store = freshStore("upgrade");
      const old = await newTab(context, errors);
      await openApp(old, appUrl(server.url, store));
      await addViaUi(old, "milk");
      await old.evaluate(() => {
        /** @type {any} */ (window).closedWith = [];
        window.annalsStore?.on("closed", (info) => /** @type {any} */ (window).closedWith.push(info));
      });

      // The newer build opens the database at the next schema version, in another tab.
      // A bare page of the origin stands in for the newer build (its own errors are not ours).
      const newer = await context.newPage();
      await newer.goto(new URL("/", server.url).toString());
      const upgraded = await newer.evaluate(
        (name) =>
          new Promise((resolve) => {
            const request = indexedDB.open(name, 3);
            const timer = setTimeout(() => resolve("hung"), 10_000);
            request.onupgradeneeded = () => request.result.createObjectStore("added-by-v3");
            request.onsuccess = () => {
              clearTimeout(timer);
              const names = [...request.result.objectStoreNames];
              request.result.close();
              resolve({ version: request.result.version, names });
            };
            request.onerror = () => resolve(`failed: ${request.error?.name}`);
          }),
        store,
      );
      assert.deepEqual(upgraded, { version: 3, names: ["added-by-v3", "meta", "pending", "segments", "snapshots"] }, "the upgrade went through, data kept");

      assert.deepEqual(await old.evaluate(() => /** @type {any} */ (window).closedWith), [{ reason: "upgraded", unsynced: 0 }]);
      assert.equal(await old.getByTestId("app").getAttribute("data-state"), "closed");
      assert.match((await shown(old)).error ?? "", /newer version of this app/);
      const late = await old.evaluate(appendInPage, [{ stream: "late", type: "Late", data: {} }]);
      assert.deepEqual([late.ok, late.code], [false, "CLOSED"], "the old tab's writes fail with CLOSED");
      assert.equal(await old.evaluate(() => window.annalsStore?.closed), true);
      assert.deepEqual(errors, [], "no errors in the pages");
    } finally {
      await context.close();
    }
  });
});
