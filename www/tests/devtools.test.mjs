// The time-travel panel (`annals/devtools`) on the board, in headless Chromium: loaded only
// when asked for, travel back with the slider, what-if (an event switched off vanishes from
// the state while the log keeps it), freeze (the app's own UI shows the past, writes are
// refused) and unfreeze, a bug bundle exported then imported, and a deliberately
// nondeterministic reducer (`?chaos=1`) in a second tab caught by the divergence view at the
// event where it parts. Screenshots of the panel go to target/screenshots/ (not committed).
// Needs www/dist and annals-server (ANNALS_SERVER_BIN, default target/debug/annals-server).
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  addCard,
  boardLog,
  boardTitles,
  boardUrl,
  cardOf,
  column,
  moveCard,
  notices,
  openBoard,
  screenshot,
  useTemplate,
} from "./board-helpers.mjs";
import { DIST, TEST_TIMEOUT, eventually, freshStore, launchBrowser, newTab, serveDist, startAnnalsServer } from "./helpers.mjs";

/** @typedef {import("playwright-core").Page} Page */

/** @type {import("playwright-core").Browser} */
let browser;
/** @type {{ url: string, close: () => Promise<void> }} */
let local;
/** @type {{ url: string, close: () => void }} */
let synced;

before(async () => {
  [local, synced, browser] = await Promise.all([serveDist(), startAnnalsServer(), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await local?.close();
  synced?.close();
});

const waitFor = { timeout: 20_000, interval: 100 };
const VIEWPORT = { width: 1440, height: 960 };

/** Opens the panel with the board's button. @param {Page} page */
async function openDevtools(page) {
  await page.getByTestId("open-devtools").click();
  await page.getByTestId("devtools").waitFor();
  await eventually(() => page.getByTestId("open-devtools").getAttribute("data-state"), (s) => s === "open", { ...waitFor, what: "the button to show the panel open" });
}

/**
 * The card ids the panel's state tree lists (it expands `cards` first).
 * @param {Page} page
 */
async function cardIdsInPanel(page) {
  const cards = page.getByTestId("devtools-json").locator(`.jn[data-path='["cards"]']`);
  await cards.waitFor();
  const toggle = cards.getByTestId("devtools-json-toggle").first();
  if (await toggle.isDisabled()) return []; // an empty object: nothing to expand
  if ((await cards.locator(`.jn[data-path^='["cards",']`).count()) === 0) await toggle.click();
  return cards.evaluate((node) =>
    [...node.querySelectorAll(".jn")]
      .map((row) => /** @type {unknown[]} */ (JSON.parse(row.getAttribute("data-path") ?? "[]")))
      .filter((path) => path.length === 2)
      .map((path) => String(path[1]))
      .sort(),
  );
}

/** Moves the panel to `position` with its slider and waits until it shows that state. @param {Page} page @param {number} position */
async function slideTo(page, position) {
  await page.getByTestId("devtools-slider").fill(String(position));
  await eventually(() => page.getByTestId("devtools-position").inputValue(), (v) => v === String(position), { ...waitFor, what: `position ${position}` });
  await eventually(() => page.getByTestId("devtools-state-meta").textContent(), (t) => (t ?? "").includes(`#${position}`), {
    ...waitFor,
    what: `the state after #${position}`,
  });
}

/**
 * A board with three lists and three cards (positions 4, 5, 6), and the cards' ids.
 * @param {Page} page
 */
async function threeCards(page) {
  await useTemplate(page);
  for (const title of ["Alpha", "Bravo", "Charlie"]) await addCard(page, "To do", title);
  const log = await boardLog(page);
  const id = (/** @type {string} */ title) => log.events.find((e) => e.type === "CardAdded" && e.data.title === title)?.data.id;
  return { alpha: id("Alpha"), bravo: id("Bravo"), charlie: id("Charlie"), log };
}

/** @param {(page: Page) => Promise<void>} body */
async function onDevice(body) {
  /** @type {string[]} */
  const errors = [];
  const context = await browser.newContext({ viewport: VIEWPORT, acceptDownloads: true });
  try {
    await body(await newTab(context, errors));
    assert.deepEqual(errors, [], "no errors in the page");
  } finally {
    await context.close();
  }
}

test("the board loads none of the panel until the Devtools button asks for it", { timeout: TEST_TIMEOUT }, async () => {
  await onDevice(async (page) => {
    /** @type {string[]} */
    const scripts = [];
    page.on("response", (response) => {
      if (response.request().resourceType() === "script") scripts.push(new URL(response.url()).pathname);
    });
    await openBoard(page, boardUrl(local.url, freshStore("devtools-lazy")));
    const before = [...scripts];
    assert.equal(await page.getByTestId("devtools-host").count(), 0);
    await openDevtools(page);
    const loaded = scripts.filter((path) => !before.includes(path));
    assert.ok(loaded.length > 0, `the panel's code is fetched on demand (page scripts: ${before.join(", ")})`);
    const code = (/** @type {string[]} */ paths) => paths.map((path) => readFileSync(join(DIST, path), "utf8")).join("\n");
    const [panelCode, pageCode] = [code(loaded), code(before)];
    assert.match(panelCode, /devtools-divergence-run/, "the chunk fetched on demand is the panel");
    assert.doesNotMatch(pageCode, /devtools-divergence-run/, "the board's own scripts hold none of the panel");

    await page.getByTestId("devtools-close").click();
    await page.getByTestId("devtools-host").waitFor({ state: "detached" });
    await eventually(() => page.getByTestId("open-devtools").getAttribute("data-state"), (s) => s === "closed", { ...waitFor, what: "the button to know" });
    await openDevtools(page);
    await page.getByTestId("open-devtools").click();
    await page.getByTestId("devtools-host").waitFor({ state: "detached" });
  });
});

test("travel back with the slider: the panel shows the older board; freeze shows it in the app, which refuses writes until unfrozen", { timeout: TEST_TIMEOUT }, async () => {
  await onDevice(async (page) => {
    await openBoard(page, boardUrl(local.url, freshStore("devtools-travel")));
    const { alpha, bravo, charlie } = await threeCards(page);
    await openDevtools(page);
    assert.equal(await page.getByTestId("devtools-projection").inputValue(), "board");
    assert.equal(await page.getByTestId("devtools-row").count(), 6, "the timeline lists every event");
    assert.deepEqual(await cardIdsInPanel(page), [alpha, bravo, charlie].sort(), "at the head: three cards");
    await screenshot(page, "devtools-head");

    await slideTo(page, 4);
    assert.deepEqual(await cardIdsInPanel(page), [alpha], "after #4: only the first card");
    await slideTo(page, 3);
    assert.deepEqual(await cardIdsInPanel(page), [], "after #3: lists, no cards");
    await slideTo(page, 5);
    assert.deepEqual(await cardIdsInPanel(page), [alpha, bravo].sort());
    await screenshot(page, "devtools-travel");

    // Freeze: the app itself shows the board at #5.
    await page.getByTestId("devtools-freeze").click();
    await page.getByTestId("frozen-banner").waitFor();
    assert.equal(await page.getByTestId("frozen-at").textContent(), "5");
    assert.equal(await page.getByTestId("app").getAttribute("data-frozen"), "true");
    await page.getByTestId("devtools-frozen-badge").waitFor();
    await eventually(() => boardTitles(page), (t) => JSON.stringify(t[0]) === JSON.stringify({ list: "To do", cards: ["Alpha", "Bravo"] }), {
      ...waitFor,
      what: "the app to show the board at #5",
    });
    assert.equal(await page.getByTestId("event-count").textContent(), "5", "the app's counters show #5 too");
    assert.equal(await column(page, "To do").getByTestId("new-card-input").isDisabled(), true, "the board is read-only while frozen");
    const write = await page.evaluate(async () => {
      try {
        await /** @type {any} */ (window).annalsStore.execute("board", "board", { type: "AddList", id: "late", title: "Late" });
        return "written";
      } catch (error) {
        return /** @type {any} */ (error).code;
      }
    });
    assert.equal(write, "FROZEN", "commands are refused while frozen");
    await screenshot(page, "devtools-frozen");

    // Back to the present with the app's own banner button.
    await page.getByTestId("unfreeze").click();
    await page.getByTestId("frozen-banner").waitFor({ state: "hidden" });
    await eventually(() => boardTitles(page), (t) => t[0]?.cards.length === 3, { ...waitFor, what: "the present board" });
    assert.equal(await page.getByTestId("devtools-frozen-badge").isVisible(), false);
    assert.equal(await page.getByTestId("event-count").textContent(), "6");
    await addCard(page, "To do", "Delta");

    // Freeze again at #4 from the panel, and return with the panel's button.
    await slideTo(page, 4);
    await page.getByTestId("devtools-freeze").click();
    await eventually(() => boardTitles(page), (t) => t[0]?.cards.join() === "Alpha", { ...waitFor, what: "the board at #4" });
    await page.getByTestId("devtools-unfreeze").click();
    await eventually(() => boardTitles(page), (t) => t[0]?.cards.length === 4, { ...waitFor, what: "the present again" });
    assert.equal(await page.getByTestId("frozen-banner").isVisible(), false);
  });
});

test("what-if: an event switched off vanishes from the panel's state while the log (and the app) keep it", { timeout: TEST_TIMEOUT }, async () => {
  await onDevice(async (page) => {
    await openBoard(page, boardUrl(local.url, freshStore("devtools-whatif")));
    const { alpha, bravo, charlie, log } = await threeCards(page);
    const bravoAdded = log.events.find((e) => e.data.id === bravo && e.type === "CardAdded");
    assert.equal(bravoAdded?.position, 5);
    await openDevtools(page);

    const row = page.locator('[data-testid="devtools-row"][data-position="5"]');
    await row.getByTestId("devtools-row-toggle").uncheck();
    await page.getByTestId("devtools-whatif-badge").waitFor();
    assert.match((await page.getByTestId("devtools-whatif-badge").textContent()) ?? "", /what-if: 1 event off/);
    await eventually(() => cardIdsInPanel(page), (ids) => JSON.stringify(ids) === JSON.stringify([alpha, charlie].sort()), {
      ...waitFor,
      what: "the state without Bravo",
    });
    assert.equal(await page.getByTestId("devtools-row").count(), 6, "the timeline still lists the event");
    assert.equal(await row.getByTestId("devtools-row-toggle").isChecked(), false);
    assert.equal((await boardLog(page)).events.length, 6, "the log keeps it");
    assert.equal(await cardOf(page, "Bravo").count(), 1, "the app is not changed by a what-if");
    await screenshot(page, "devtools-whatif");

    await page.getByTestId("devtools-whatif-restore").click();
    await page.getByTestId("devtools-whatif-badge").waitFor({ state: "hidden" });
    await eventually(() => cardIdsInPanel(page), (ids) => ids.length === 3, { ...waitFor, what: "Bravo back" });
  });
});

test("a bug bundle exported from the panel opens in it again and reproduces every fingerprint", { timeout: TEST_TIMEOUT }, async () => {
  await onDevice(async (page) => {
    const dir = mkdtempSync(join(tmpdir(), "annals-bundle-"));
    try {
      await openBoard(page, boardUrl(local.url, freshStore("devtools-bundle")));
      const { alpha, bravo, charlie } = await threeCards(page);
      await moveCard(page, "Charlie", "right", "Doing");
      await moveCard(page, "Charlie", "right", "Done");
      await eventually(() => cardOf(page, "Charlie").getAttribute("data-completed"), (v) => v === "true", { ...waitFor, what: "the stamp" });
      const head = (await boardLog(page)).head;
      assert.equal(head, 9);
      await openDevtools(page);

      const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("devtools-export").click()]);
      await page.getByTestId("devtools-export-done").waitFor();
      const file = join(dir, download.suggestedFilename());
      await download.saveAs(file);
      const lines = readFileSync(file, "utf8").trim().split("\n");
      const header = JSON.parse(lines[0] ?? "{}");
      assert.equal(header.format, "annals-bundle");
      assert.equal(header.events, head);
      assert.deepEqual(header.projections.map((/** @type {{ name: string }} */ p) => p.name).sort(), ["activity", "board"]);
      assert.equal(lines.length, head + 1, "a header and one line per event");

      await page.getByTestId("devtools-import").setInputFiles(file);
      await page.getByTestId("devtools-bundle-summary").waitFor();
      await page.getByTestId("devtools-bundle-same").waitFor();
      await eventually(() => page.getByTestId("devtools-row").count(), (n) => n === head, { ...waitFor, what: "the bundle's timeline" });
      const source = await page.getByTestId("devtools-source").evaluate((select) => {
        const s = /** @type {HTMLSelectElement} */ (select);
        return { options: s.options.length, selected: s.selectedOptions[0]?.textContent ?? "" };
      });
      assert.equal(source.options, 2, "this app and the opened bundle");
      assert.match(source.selected, /^bundle /);
      await slideTo(page, 5);
      assert.deepEqual(await cardIdsInPanel(page), [alpha, bravo].sort(), "the bundle travels like the app");
      await screenshot(page, "devtools-bundle");
      await page.getByTestId("devtools-last").click();
      await eventually(() => cardIdsInPanel(page), (ids) => ids.length === 3, { ...waitFor, what: "the bundle's head" });
      assert.ok((await cardIdsInPanel(page)).includes(charlie));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test("a nondeterministic reducer in a second tab (?chaos=1) is caught by the divergence view at the event where it parts", { timeout: 150_000 }, async () => {
  /** @type {string[]} */
  const errors = [];
  const context = await browser.newContext({ viewport: VIEWPORT });
  try {
    const store = freshStore("devtools-chaos");
    const sound = await newTab(context, errors);
    await openBoard(sound, boardUrl(synced.url, store, { sync: true }));
    await useTemplate(sound);
    await addCard(sound, "To do", "Ship it");
    await moveCard(sound, "Ship it", "right", "Doing");
    await moveCard(sound, "Ship it", "right", "Done");
    await eventually(() => cardOf(sound, "Ship it").getAttribute("data-completed"), (v) => v === "true", { ...waitFor, what: "the stamp" });
    await addCard(sound, "To do", "After the stamp");
    await eventually(() => sound.evaluate(() => /** @type {any} */ (window).annalsStore.syncStatus.pending), (n) => n === 0, { ...waitFor, what: "everything confirmed" });
    const log = await boardLog(sound);
    const completed = log.events.find((e) => e.type === "CardCompleted");
    assert.equal(completed?.position, 7, "lists 1-3, add 4, moves 5-6, the stamp 7");

    const chaotic = await newTab(context, errors);
    await openBoard(chaotic, boardUrl(synced.url, store, { sync: true, chaos: true }));
    assert.equal(await chaotic.getByTestId("chaos-badge").isVisible(), true);
    await eventually(() => boardTitles(chaotic), (t) => t[0]?.cards.includes("After the stamp") === true, { ...waitFor, what: "the second tab to read the log" });

    await openDevtools(chaotic);
    await chaotic.getByTestId("devtools-tab-divergence").click();
    await chaotic.getByTestId("devtools-divergence-run").click();
    await eventually(() => chaotic.getByTestId("devtools-divergence-status").textContent(), (t) => /found$/.test(t ?? ""), {
      ...waitFor,
      timeout: 60_000,
      what: "the divergence check",
    });
    const findings = await chaotic.getByTestId("devtools-divergence-result").evaluateAll((items) =>
      items.map((item) => ({
        peer: item.getAttribute("data-peer") ?? "",
        projection: item.getAttribute("data-projection"),
        position: item.getAttribute("data-position"),
        text: item.textContent ?? "",
      })),
    );
    const board = findings.filter((f) => f.projection === "board");
    const tab = board.find((f) => f.peer.startsWith("tab "));
    const server = board.find((f) => f.peer === "server");
    assert.equal(tab?.position, "7", `the sound tab parts at the stamp: ${JSON.stringify(findings)}`);
    assert.equal(server?.position, "7", `the server's replica parts at the stamp: ${JSON.stringify(findings)}`);
    assert.match(tab?.text ?? "", /CardCompleted on card-/, "the view names the event");
    assert.deepEqual(
      findings.filter((f) => f.projection === "activity").map((f) => f.position),
      [null, null],
      "the deterministic projection agrees with the tab and the server",
    );
    assert.equal(await chaotic.getByTestId("devtools-divergence-status").textContent(), "2 divergences found");
    await screenshot(chaotic, "devtools-divergence");

    // Jumping there shows the event in the inspector.
    await chaotic.getByTestId("devtools-divergence-jump").first().click();
    await eventually(() => chaotic.getByTestId("devtools-position").inputValue(), (v) => v === "7", { ...waitFor, what: "the jump" });

    // The sound tab sees the chaotic one part at the same event, and agrees with the server.
    await openDevtools(sound);
    await sound.getByTestId("devtools-tab-divergence").click();
    await sound.getByTestId("devtools-divergence-run").click();
    await eventually(() => sound.getByTestId("devtools-divergence-status").textContent(), (t) => /found$/.test(t ?? ""), {
      ...waitFor,
      timeout: 60_000,
      what: "the divergence check in the sound tab",
    });
    const seen = await sound.getByTestId("devtools-divergence-result").evaluateAll((items) =>
      items.map((item) => [item.getAttribute("data-peer")?.startsWith("tab ") ? "tab" : item.getAttribute("data-peer"), item.getAttribute("data-projection"), item.getAttribute("data-position")]),
    );
    assert.deepEqual(seen.sort(), [
      ["server", "activity", null],
      ["server", "board", null],
      ["tab", "activity", null],
      ["tab", "board", "7"],
    ]);
    assert.deepEqual(await notices(sound), []);
    assert.deepEqual(errors, [], "no errors in the pages");
  } finally {
    await context.close();
  }
});
