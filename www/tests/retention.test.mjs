// Bounded local storage in headless Chromium, on IndexedDB, against a real annals-server
// (issue 13, item 5): a store with `retain: { events: 5 }` drops the confirmed events its
// snapshots cover from IndexedDB, keeps working across reloads, travels back past its
// retained range while online (the server answers), names the range with NOT_RETAINED
// offline, and another tab learns of the cut. storage() reports usage, quota and
// persistence. (The rules run natively in tests/retention.rs and from Node in
// pkg/test/retention.test.mjs; this is the browser's storage under them.)
import assert from "node:assert/strict";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { TEST_TIMEOUT, freshStore, launchBrowser, startAnnalsServer } from "./helpers.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** @type {import("playwright-core").Browser} */
let browser;
/** @type {{ url: string, close: () => void }} */
let server;

before(async () => {
  [server, browser] = await Promise.all([startAnnalsServer({ www: ROOT }), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  server?.close();
});

/** @param {import("playwright-core").Page} page */
async function load(page) {
  await page.goto(`${server.url}/www/tests/pages/retention.html`);
  await page.waitForFunction(() => /** @type {any} */ (window).ready === true);
}

test("a store with retention keeps working across reloads and travels back past its retained range while online", { timeout: TEST_TIMEOUT }, async () => {
  const context = await browser.newContext();
  /** @type {string[]} */
  const errors = [];
  const page = await context.newPage();
  page.on("pageerror", (error) => errors.push(String(error)));
  const other = await context.newPage();
  other.on("pageerror", (error) => errors.push(String(error)));
  await Promise.all([load(page), load(other)]);
  const name = freshStore("retention");
  const storeName = freshStore("retained");

  // Another tab holds the same store from before the cut.
  await other.evaluate(async ([name, storeName]) => {
    const window = /** @type {any} */ (globalThis);
    window.store = await window.openRetained(name, storeName);
  }, [name, storeName]);

  const first = await page.evaluate(async ([name, storeName]) => {
    const window = /** @type {any} */ (globalThis);
    const store = await window.openRetained(name, storeName);
    window.store = store;
    await store.appendMany(Array.from({ length: 30 }, (_, i) => ({ stream: `s-${i % 2}`, type: "Added", data: { n: i + 1 } })));
    await store.sync();
    const segmentsBefore = await window.storedSegmentKeys(name);
    const retained = await window.cut(store);
    return {
      retained,
      segmentsBefore,
      segmentsAfter: await window.storedSegmentKeys(name),
      report: await store.storage(),
      persistRequests: window.persistRequests,
      sum: store.get("sum"),
    };
  }, [name, storeName]);
  assert.equal(first.sum, 465);
  assert.equal(first.retained.to, 30);
  assert.ok(first.retained.dropped >= 1 && first.retained.dropped <= 25, `the newest 5 stay: dropped ${first.retained.dropped}`);
  assert.deepEqual(first.segmentsBefore, [1], "one pull wrote one segment");
  assert.deepEqual(first.segmentsAfter, [first.retained.dropped + 1], "IndexedDB holds the tail only");
  assert.equal(typeof first.report.usage, "number");
  assert.equal(typeof first.report.quota, "number");
  assert.equal(typeof first.report.persisted, "boolean", "persistence is reported");
  assert.equal(first.persistRequests, 1, "opening the store asked for persistent storage");

  // The other tab learns of the cut (the change announcement carries it).
  const seen = await other.evaluate(async (dropped) => {
    const store = /** @type {any} */ (globalThis).store;
    for (let i = 0; i < 200 && (await store.storage()).retained.dropped < dropped; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    return { retained: (await store.storage()).retained, sum: store.get("sum") };
  }, first.retained.dropped);
  assert.deepEqual(seen.retained, first.retained);
  assert.equal(seen.sum, 465);
  await other.close();

  // Reload: the store opens from its snapshot and the tail, and reads past the cut online.
  await page.reload();
  await page.waitForFunction(() => /** @type {any} */ (window).ready === true);
  const reloaded = await page.evaluate(async ([name, storeName]) => {
    const window = /** @type {any} */ (globalThis);
    const store = await window.openRetained(name, storeName);
    window.store = store;
    const all = await store.events();
    const appended = await store.append({ stream: "s-0", type: "Added", data: { n: 100 }, expectedVersion: 15 });
    await store.sync();
    return {
      sum: store.get("sum"),
      retained: (await store.storage()).retained,
      positions: all.map((/** @type {any} */ e) => e.position),
      at10: await store.stateAt("sum", 10),
      stream: (await store.events({ stream: "s-1", limit: 3 })).map((/** @type {any} */ e) => e.data.n),
      version: appended.version,
      confirmed: store.confirmedHead,
    };
  }, [name, storeName]);
  assert.equal(reloaded.sum, 565);
  assert.deepEqual(reloaded.retained.dropped, first.retained.dropped);
  assert.deepEqual(reloaded.positions, Array.from({ length: 30 }, (_, i) => i + 1), "the whole log, the dropped part from the server");
  assert.equal(reloaded.at10, 55, "time travel before the retained range");
  assert.deepEqual(reloaded.stream, [2, 4, 6]);
  assert.equal(reloaded.version, 16, "stream versions count the dropped events");
  assert.equal(reloaded.confirmed, 31);

  // Offline, the same reads fail with NOT_RETAINED naming the range kept.
  await context.setOffline(true);
  const offline = await page.evaluate(async () => {
    const store = /** @type {any} */ (globalThis).store;
    /** @param {Promise<unknown>} promise */
    const outcome = async (promise) =>
      promise.then(
        () => ({ code: "ok", message: "" }),
        (/** @type {any} */ e) => ({ code: String(e.code), message: String(e.message) }),
      );
    return {
      read: await outcome(store.events()),
      travel: await outcome(store.stateAt("sum", 2)),
      held: (await store.events({ after: store.confirmedHead - 3 })).length,
    };
  });
  await context.setOffline(false);
  assert.equal(offline.read.code, "NOT_RETAINED");
  assert.match(offline.read.message, new RegExp(`positions ${first.retained.dropped + 1} to 31`));
  assert.equal(offline.travel.code, "NOT_RETAINED");
  assert.equal(offline.held, 3);
  await page.evaluate(() => /** @type {any} */ (globalThis).store.close());
  assert.deepEqual(errors, []);
  await context.close();
});

test("a tab that had not folded up to another tab's cut starts again from the snapshot the cut was made against", { timeout: TEST_TIMEOUT }, async () => {
  const context = await browser.newContext();
  /** @type {string[]} */
  const errors = [];
  const first = await context.newPage();
  const late = await context.newPage();
  for (const page of [first, late]) page.on("pageerror", (error) => errors.push(String(error)));
  await Promise.all([load(first), load(late)]);
  const name = freshStore("lagging");
  const storeName = freshStore("lagging");

  // The first tab opens first, so it syncs; the late one hears no other tab (no
  // BroadcastChannel), so it folds nothing the first one writes until it writes itself.
  await first.evaluate(async ([name, storeName]) => {
    const window = /** @type {any} */ (globalThis);
    window.store = await window.openRetained(name, storeName);
  }, [name, storeName]);
  await late.evaluate(async ([name, storeName]) => {
    const window = /** @type {any} */ (globalThis);
    window.BroadcastChannel = undefined;
    window.reported = [];
    window.store = await window.openRetained(name, storeName);
    window.store.on("error", (/** @type {any} */ e) => window.reported.push(String(e.code)));
  }, [name, storeName]);
  const retained = await first.evaluate(async () => {
    const window = /** @type {any} */ (globalThis);
    await window.store.appendMany(Array.from({ length: 30 }, (_, i) => ({ stream: "s", type: "Added", data: { n: i + 1 } })));
    await window.store.sync();
    return window.cut(window.store);
  });
  assert.ok(retained.dropped > 0);

  const after = await late.evaluate(async () => {
    const window = /** @type {any} */ (globalThis);
    const store = window.store;
    const before = store.get("sum");
    // Its append reads what the first tab wrote, cut included.
    await store.append({ stream: "t", type: "Added", data: { n: 100 } });
    for (let i = 0; i < 200 && store.get("sum") !== 565; i++) await new Promise((resolve) => setTimeout(resolve, 25));
    return { before, sum: store.get("sum"), dropped: (await store.storage()).retained.dropped, reported: window.reported };
  });
  assert.equal(after.before, 0, "the late tab had folded nothing");
  assert.equal(after.sum, 565, "the snapshot's 465 and its own 100");
  assert.equal(after.dropped, retained.dropped);
  assert.deepEqual(after.reported, [], "nothing to report: the store caught up by itself");
  assert.deepEqual(errors, []);
  await context.close();
});
