// End-to-end tests of the demo app in www/dist, driven by playwright-core in Debian's Chromium.
// Run with `npm --prefix www run test:e2e` after `npm --prefix www run build`.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serveStatic } from "../scripts/serve.mjs";

const DIST = process.env.WWW_DIST ?? join(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const TEST_TIMEOUT = 90_000;

/** @typedef {import("playwright-core").Page} Page */
/** @typedef {import("playwright-core").BrowserContext} BrowserContext */

/** @type {import("playwright-core").Browser} */
let browser;
/** @type {{ url: string, close: () => Promise<void> }} */
let server;

before(async () => {
  assert.ok(existsSync(join(DIST, "index.html")), `${DIST}/index.html is missing: run \`npm --prefix www run build\` first`);
  server = await serveStatic(DIST);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless=new",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
});

after(async () => {
  await browser?.close();
  await server?.close();
});

/** A store name no other test (or earlier run) has used. @param {string} label */
const freshStore = (label) => `e2e-${label}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

/**
 * Polls `probe` until `done(value)` holds; fails with the last value after `timeout` ms.
 * @template T
 * @param {() => Promise<T>} probe
 * @param {(value: T) => boolean} done
 * @param {{ timeout?: number, interval?: number, what?: string }} [options]
 * @returns {Promise<T>}
 */
async function eventually(probe, done, { timeout = 15_000, interval = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let value;
  for (;;) {
    value = await probe();
    if (done(value)) return value;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeout} ms waiting for ${what}; last value: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** A new tab that records uncaught page errors and console errors in `errors`.
 * @param {BrowserContext} context
 * @param {string[]} errors
 */
async function newTab(context, errors) {
  const page = await context.newPage();
  page.on("pageerror", (err) => errors.push(String(err)));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(msg.text());
  });
  return page;
}

/** Opens the app on `store` and waits until the store is open. @param {Page} page @param {string} store */
async function openApp(page, store) {
  await page.goto(`${server.url}?store=${encodeURIComponent(store)}&sync=off`);
  await waitReady(page);
}

/** @param {Page} page */
async function waitReady(page) {
  const app = page.getByTestId("app");
  await page.locator('[data-testid="app"]:is([data-state="ready"], [data-state="error"])').waitFor({ timeout: 30_000 });
  const state = await app.getAttribute("data-state");
  assert.equal(state, "ready", `the app failed to open its store: ${await page.getByTestId("error").textContent()}`);
}

/** What the page shows. @param {Page} page */
async function shown(page) {
  return page.evaluate(() => {
    /** @param {string} id */
    const text = (id) => document.querySelector(`[data-testid="${id}"]`)?.textContent ?? null;
    return {
      todos: [...document.querySelectorAll('[data-testid="todo-item"]')].map((li) => ({
        id: li.getAttribute("data-id"),
        title: li.querySelector('[data-testid="todo-title"]')?.textContent ?? null,
        done: li.getAttribute("data-done") === "true",
      })),
      todoCount: text("todo-count"),
      eventCount: text("event-count"),
      head: text("head"),
      error: text("error"),
    };
  });
}

/** The whole log as the page's store reads it, with the fields that must agree across tabs. @param {Page} page */
async function readLog(page) {
  return page.evaluate(async () => {
    const store = window.annalsStore;
    if (!store) throw new Error("window.annalsStore is not set");
    const events = await store.events({});
    return {
      head: store.head,
      events: events.map((e) => ({ id: e.id, position: e.position, stream: e.stream, version: e.version, type: e.type, data: e.data })),
    };
  });
}

/** @param {Page} page @param {string} title */
async function addViaUi(page, title) {
  await page.getByTestId("new-todo-input").fill(title);
  await page.getByTestId("add-todo").click();
  await page.getByTestId("todo-item").filter({ hasText: title }).waitFor();
}

/**
 * Runs in a page: toggles todo `id` expecting its stream at version `expected`.
 * @param {{ id: string, expected: number | undefined }} arg
 * @returns {Promise<unknown>} "ok", or the error's code
 */
async function toggleAt({ id, expected }) {
  const store = window.annalsStore;
  if (!store) throw new Error("window.annalsStore is not set");
  try {
    await store.append({ stream: `todo-${id}`, type: "TodoToggled", data: { id }, expectedVersion: expected });
    return "ok";
  } catch (err) {
    return /** @type {{ code?: unknown }} */ (err).code;
  }
}

/** The todo item showing `title`. @param {Page} page @param {string} title */
const item = (page, title) => page.getByTestId("todo-item").filter({ has: page.getByTestId("todo-title").getByText(title, { exact: true }) });

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
    assert.equal(before.head, "5", "3 adds, 1 toggle, 1 removal");
    assert.equal(before.eventCount, "5");
    assert.equal(before.todoCount, "2");
    assert.equal(before.error, "");
    const logBefore = await readLog(page);
    assert.deepEqual(
      logBefore.events.map((e) => e.type),
      ["TodoAdded", "TodoAdded", "TodoAdded", "TodoToggled", "TodoRemoved"],
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
    assert.deepEqual(refused, { ok: false, isError: true, name: "AnnalsError", code: "WRONG_EXPECTED_VERSION", head: 2 });

    // Both tabs toggle at the version they saw: the first wins, the second is checked against the
    // log (with the other tab's write in it), not against its own view, and is refused.
    const seen = await b.evaluate((id) => window.annalsStore?.get("todos")[id]?.version, id);
    assert.equal(seen, 2);
    assert.equal(await a.evaluate(toggleAt, { id, expected: seen }), "ok");
    assert.equal(await b.evaluate(toggleAt, { id, expected: seen }), "WRONG_EXPECTED_VERSION");

    const [sa, sb] = await Promise.all(
      [a, b].map((page) => eventually(() => shown(page), (s) => s.head === "3", { what: "head 3 in both tabs" })),
    );
    assert.deepEqual(sa, sb);
    assert.deepEqual(sa?.todos.map(({ title, done }) => ({ title, done })), [{ title: "shared", done: false }]);
    assert.deepEqual(errors, [], "no errors in the pages");
  } finally {
    await context.close();
  }
});
