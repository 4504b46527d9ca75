// End-to-end tests of the demo app in www/dist, driven by playwright-core in Debian's Chromium.
// Run with `npm --prefix www run test:e2e` after `npm --prefix www run build`.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  TEST_TIMEOUT,
  addViaUi,
  appUrl,
  eventually,
  freshStore,
  item,
  launchBrowser,
  newTab,
  openApp as openAppAt,
  readLog,
  serveDist,
  shown,
  waitReady,
} from "./helpers.mjs";

/** @typedef {import("playwright-core").Page} Page */

/** @type {import("playwright-core").Browser} */
let browser;
/** @type {{ url: string, close: () => Promise<void> }} */
let server;

before(async () => {
  server = await serveDist();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

/** Opens the app on `store` (local only) and waits until the store is open. @param {Page} page @param {string} store */
const openApp = (page, store) => openAppAt(page, appUrl(server.url, store));

/**
 * Runs in a page: appends a toggle of todo `id` to `done`, expecting its stream at version `expected`.
 * @param {{ id: string, done: boolean, expected: number | undefined }} arg
 * @returns {Promise<unknown>} "ok", or the error's code
 */
async function toggleAt({ id, done, expected }) {
  const store = window.annalsStore;
  if (!store) throw new Error("window.annalsStore is not set");
  try {
    await store.append({ stream: `todo-${id}`, type: "TodoToggled", data: { id, done }, expectedVersion: expected });
    return "ok";
  } catch (err) {
    return /** @type {{ code?: unknown }} */ (err).code;
  }
}

test("todos survive a reload: same list, same head", { timeout: TEST_TIMEOUT }, async () => {
  /** @type {string[]} */
  const errors = [];
  const context = await browser.newContext();
  try {
    const page = await newTab(context, errors);
    const store = freshStore("reload");
    await openApp(page, store);
    assert.deepEqual((await shown(page)).todos, [], "a fresh store starts empty");

    for (const title of ["buy milk", "walk the dog", "write tests"]) await addViaUi(page, title);
    await item(page, "walk the dog").getByTestId("todo-toggle").check();
    await eventually(() => item(page, "walk the dog").getAttribute("data-done"), (v) => v === "true", { what: "the toggle" });
    // The completion is counted by the process manager, in an event of its own.
    await eventually(() => shown(page), (s) => s.completedTotal === "1", { what: "the completion to be counted" });
    await item(page, "write tests").getByTestId("todo-remove").click();
    await eventually(() => page.getByTestId("todo-item").count(), (n) => n === 2, { what: "the removal" });

    const before = await shown(page);
    assert.deepEqual(
      before.todos.map(({ title, done }) => ({ title, done })),
      [
        { title: "buy milk", done: false },
        { title: "walk the dog", done: true },
      ],
    );
    assert.equal(before.head, "6", "3 adds, 1 toggle, 1 completion counted, 1 removal");
    assert.equal(before.eventCount, "6");
    assert.equal(before.completedTotal, "1");
    assert.equal(before.todoCount, "2");
    assert.equal(before.error, "");
    const logBefore = await readLog(page);
    assert.deepEqual(
      logBefore.events.map((e) => e.type),
      ["TodoAdded", "TodoAdded", "TodoAdded", "TodoToggled", "CompletionCounted", "TodoRemoved"],
    );

    await page.reload();
    await waitReady(page);
    assert.deepEqual(await shown(page), before, "the page shows the same state after a reload");
    assert.deepEqual(await readLog(page), logBefore, "the log is the same after a reload");

    // Another store name is another database.
    const other = await newTab(context, errors);
    await openApp(other, freshStore("other"));
    const empty = await shown(other);
    assert.deepEqual([empty.todos, empty.head], [[], "0"]);

    assert.deepEqual(errors, [], "no errors in the page");
  } finally {
    await context.close();
  }
});

test("two tabs appending concurrently end with one identical, gapless log", { timeout: TEST_TIMEOUT }, async () => {
  const PER_TAB = 20;
  /** @type {string[]} */
  const errors = [];
  const context = await browser.newContext();
  try {
    const store = freshStore("tabs");
    const tabA = await newTab(context, errors);
    const tabB = await newTab(context, errors);
    const tabs = [tabA, tabB];
    await Promise.all(tabs.map((page) => openApp(page, store)));

    // Both tabs fire all their appends at once, and at the same time as each other.
    const added = await Promise.all(
      tabs.map((page, t) =>
        page.evaluate(
          async ({ tab, count }) => {
            const store = window.annalsStore;
            if (!store) throw new Error("window.annalsStore is not set");
            const ids = Array.from({ length: count }, (_, i) => `${tab}-${i}-${Math.random().toString(36).slice(2, 8)}`);
            await Promise.all(
              ids.map((id, i) =>
                store.append({ stream: `todo-${id}`, type: "TodoAdded", data: { id, title: `${tab} #${i}` }, expectedVersion: "no_stream" }),
              ),
            );
            return ids;
          },
          { tab: "AB"[t], count: PER_TAB },
        ),
      ),
    );
    const allIds = added.flat();
    const total = allIds.length;
    assert.equal(new Set(allIds).size, total);

    // Each tab catches up with the other's appends and shows every todo.
    for (const page of tabs) {
      await eventually(
        () => shown(page),
        (s) => s.todos.length === total && s.head === String(total) && s.eventCount === String(total),
        { what: `all ${total} todos in a tab` },
      );
    }

    const [a, b] = await Promise.all([readLog(tabA), readLog(tabB)]);
    assert.equal(a.head, total);
    assert.equal(b.head, total);
    assert.deepEqual(a.events, b.events, "both tabs read the same log");
    assert.deepEqual(
      a.events.map((e) => e.position),
      Array.from({ length: total }, (_, i) => i + 1),
      "positions are 1..N, gapless, in order",
    );
    assert.equal(new Set(a.events.map((e) => e.id)).size, total, "event ids are unique");
    assert.deepEqual(
      a.events.map((e) => e.data.id).sort(),
      [...allIds].sort(),
      "every appended todo is stored exactly once",
    );
    for (const e of a.events) {
      assert.equal(e.type, "TodoAdded");
      assert.equal(e.stream, `todo-${e.data.id}`);
      assert.equal(e.version, 1, `${e.stream} has one event`);
    }

    // Both projections agree, and the list is in log order.
    const [stateA, stateB] = await Promise.all(tabs.map((page) => page.evaluate(() => window.annalsStore?.get("todos"))));
    assert.equal(Object.keys(stateA ?? {}).length, total);
    assert.deepEqual(stateA, stateB);
    const [shownA, shownB] = await Promise.all([shown(tabA), shown(tabB)]);
    assert.deepEqual(shownA, shownB);
    assert.deepEqual(
      shownA.todos.map((t) => t.id),
      a.events.map((e) => e.data.id),
    );
    assert.deepEqual(errors, [], "no errors in the pages");
  } finally {
    await context.close();
  }
});

test("a change in one tab shows in the other, and a stale write is refused", { timeout: TEST_TIMEOUT }, async () => {
  /** @type {string[]} */
  const errors = [];
  const context = await browser.newContext();
  try {
    const store = freshStore("conflict");
    const [a, b] = [await newTab(context, errors), await newTab(context, errors)];
    await openApp(a, store);
    await openApp(b, store);

    await addViaUi(a, "shared");
    await item(b, "shared").waitFor();
    const id = await item(a, "shared").getAttribute("data-id");
    assert.ok(id);

    await item(b, "shared").getByTestId("todo-toggle").check();
    await eventually(() => item(a, "shared").getAttribute("data-done"), (v) => v === "true", { what: "the toggle to reach tab A" });
    // The completion is counted (in the stream `stats`): head 3.
    await eventually(() => shown(a), (s) => s.completedTotal === "1" && s.head === "3", { what: "the completion to be counted" });

    // Adding the same todo again (its stream exists) is refused and stores nothing.
    const refused = await b.evaluate(async (id) => {
      const store = window.annalsStore;
      if (!store) throw new Error("window.annalsStore is not set");
      try {
        await store.append({ stream: `todo-${id}`, type: "TodoAdded", data: { id, title: "again" }, expectedVersion: "no_stream" });
        return { ok: true };
      } catch (err) {
        const { name, code } = /** @type {{ name?: unknown, code?: unknown }} */ (err);
        return { ok: false, isError: err instanceof Error, name, code, head: store.head };
      }
    }, id);
    assert.deepEqual(refused, { ok: false, isError: true, name: "AnnalsError", code: "WRONG_EXPECTED_VERSION", head: 3 });

    // Both tabs toggle at the version they saw: the first wins, the second is checked against the
    // log (with the other tab's write in it), not against its own view, and is refused.
    const seen = await b.evaluate((id) => window.annalsStore?.get("todos")[id]?.version, id);
    assert.equal(seen, 2);
    assert.equal(await a.evaluate(toggleAt, { id, done: false, expected: seen }), "ok");
    assert.equal(await b.evaluate(toggleAt, { id, done: false, expected: seen }), "WRONG_EXPECTED_VERSION");

    const [sa, sb] = await Promise.all(
      [a, b].map((page) => eventually(() => shown(page), (s) => s.head === "4", { what: "head 4 in both tabs" })),
    );
    assert.deepEqual(sa, sb);
    assert.deepEqual(sa?.todos.map(({ title, done }) => ({ title, done })), [{ title: "shared", done: false }]);
    assert.deepEqual(errors, [], "no errors in the pages");
  } finally {
    await context.close();
  }
});
