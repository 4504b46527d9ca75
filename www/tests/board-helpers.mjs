// What the board tests (board.test.mjs, devtools.test.mjs) do on the board page
// (www/index.html) and read from it.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Where the tests leave screenshots to look at (not committed: target/ is ignored). */
export const SCREENSHOTS = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "target", "screenshots");

/** Saves a screenshot of the page as target/screenshots/`name`.png. @param {import("playwright-core").Page} page @param {string} name */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}

/** @typedef {import("playwright-core").Page} Page */

/**
 * The board on `store`, served from `base`: local only unless `sync`; `chaos` turns on the
 * deliberately nondeterministic reducer.
 * @param {string} base @param {string} store @param {{ sync?: boolean, chaos?: boolean }} [options]
 */
export const boardUrl = (base, store, { sync = false, chaos = false } = {}) =>
  `${new URL(`?store=${encodeURIComponent(store)}${sync ? "" : "&sync=off"}${chaos ? "&chaos=1" : ""}`, base)}`;

/** Opens the board at `url` and waits until its store is open. @param {Page} page @param {string} url */
export async function openBoard(page, url) {
  await page.goto(url);
  await waitBoardReady(page);
}

/** @param {Page} page */
export async function waitBoardReady(page) {
  await page.locator('[data-testid="app"]:is([data-state="ready"], [data-state="error"])').waitFor({ timeout: 30_000 });
  const state = await page.getByTestId("app").getAttribute("data-state");
  const notices = await page.getByTestId("toast-message").allTextContents();
  assert.equal(state, "ready", `the board failed to open its store: ${notices.join(" / ")}`);
}

/** The list titled `title`. @param {Page} page @param {string} title */
export const column = (page, title) =>
  page.getByTestId("list").filter({ has: page.getByTestId("list-title").getByText(title, { exact: true }) });

/** The card titled `title`. @param {Page} page @param {string} title */
export const cardOf = (page, title) =>
  page.getByTestId("card").filter({ has: page.getByTestId("card-title").getByText(title, { exact: true }) });

/** Adds a list through the form and waits for its column. @param {Page} page @param {string} title */
export async function addList(page, title) {
  await page.getByTestId("new-list-input").fill(title);
  await page.getByTestId("add-list").click();
  await column(page, title).waitFor();
}

/** The three usual lists, through the empty board's button. @param {Page} page */
export async function useTemplate(page) {
  await page.getByTestId("use-template").click();
  await column(page, "Done").waitFor();
}

/** Adds a card to `list` through its form and waits for it. @param {Page} page @param {string} list @param {string} title */
export async function addCard(page, list, title) {
  const col = column(page, list);
  await col.getByTestId("new-card-input").fill(title);
  await col.getByTestId("add-card").click();
  await col.getByTestId("card").filter({ hasText: title }).waitFor();
}

/**
 * Moves a card one list to the right (or left) with its arrow button and waits until it
 * shows in `to`.
 * @param {Page} page @param {string} title @param {"left" | "right"} direction @param {string} to
 */
export async function moveCard(page, title, direction, to) {
  await cardOf(page, title).getByTestId(`card-move-${direction}`).click();
  await column(page, to).getByTestId("card").filter({ hasText: title }).waitFor();
}

/**
 * The board as the page shows it: lists in order, each with its cards in order.
 * @param {Page} page
 * @returns {Promise<{ title: string, count: string, cards: { title: string, completed: boolean, pending: boolean }[] }[]>}
 */
export async function boardShown(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('[data-testid="list"]')].map((list) => ({
      title: list.querySelector('[data-testid="list-title"]')?.textContent ?? "",
      count: list.querySelector('[data-testid="list-count"]')?.textContent ?? "",
      cards: [...list.querySelectorAll('[data-testid="card"]')].map((card) => ({
        title: card.querySelector('[data-testid="card-title"]')?.textContent ?? "",
        completed: card.getAttribute("data-completed") === "true",
        pending: card.getAttribute("data-pending") === "true",
      })),
    })),
  );
}

/** Lists and card titles only (what two devices must agree on). @param {Page} page */
export async function boardTitles(page) {
  return (await boardShown(page)).map((list) => ({
    list: list.title,
    cards: list.cards.map((card) => `${card.title}${card.completed ? " ✓" : ""}`),
  }));
}

/** What the header shows of sync. @param {Page} page */
export async function boardSync(page) {
  return page.evaluate(() => {
    const pill = document.querySelector('[data-testid="sync-status"]');
    return {
      state: pill?.getAttribute("data-state") ?? null,
      online: pill?.getAttribute("data-online") ?? null,
      pending: document.querySelector('[data-testid="pending-count"]')?.textContent ?? null,
      label: document.querySelector('[data-testid="sync-label"]')?.textContent ?? null,
    };
  });
}

/** The notices shown: kind, code and message of each, oldest first. @param {Page} page */
export async function notices(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('[data-testid="toast"]')].map((toast) => ({
      kind: toast.getAttribute("data-kind"),
      code: toast.getAttribute("data-code"),
      message: toast.querySelector('[data-testid="toast-message"]')?.textContent ?? "",
    })),
  );
}

/**
 * The board's log as its store reads it.
 * @param {Page} page
 * @returns {Promise<{ head: number, confirmedHead: number, events: { id: string, position: number, stream: string, version: number, type: string, data: any, meta: any, pending: boolean }[] }>}
 */
export async function boardLog(page) {
  return page.evaluate(async () => {
    const store = /** @type {any} */ (window).annalsStore;
    if (!store) throw new Error("window.annalsStore is not set");
    /** @type {any[]} */
    const events = await store.events();
    return {
      head: store.head,
      confirmedHead: store.confirmedHead,
      events: events.map((e) => ({
        id: e.id,
        position: e.position,
        stream: e.stream,
        version: e.version,
        type: e.type,
        data: e.data,
        meta: e.meta,
        pending: e.pending,
      })),
    };
  });
}
