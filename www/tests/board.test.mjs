// The board (www/index.html), the demo that shows annals in one minute, in headless
// Chromium: lists and cards written by commands through the UI, a process manager that
// stamps cards reaching Done, refused commands shown with their message, the online /
// offline indicator and the pending count, the server's refusals shown as notices, and two
// devices that converge. Needs www/dist (`npm --prefix www run build`) and, for the synced
// tests, annals-server (ANNALS_SERVER_BIN, default target/debug/annals-server).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  addCard,
  addList,
  boardLog,
  boardShown,
  boardSync,
  boardTitles,
  boardUrl,
  cardOf,
  column,
  moveCard,
  notices,
  openBoard,
  screenshot,
  useTemplate,
  waitBoardReady,
} from "./board-helpers.mjs";
import { TEST_TIMEOUT, eventually, freshStore, launchBrowser, newTab, serveDist, startAnnalsServer } from "./helpers.mjs";

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

/**
 * Runs `body` with a fresh browser context (a device: its own IndexedDB) and a tab on it;
 * fails if the page logged an error.
 * @param {(page: Page, context: import("playwright-core").BrowserContext) => Promise<void>} body
 */
async function onDevice(body) {
  /** @type {string[]} */
  const errors = [];
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  try {
    await body(await newTab(context, errors), context);
    assert.deepEqual(errors, [], "no errors in the page");
  } finally {
    await context.close();
  }
}

describe("a local board (?sync=off)", () => {
  test("lists and cards added through the UI are events in the log; the board survives a reload", { timeout: TEST_TIMEOUT }, async () => {
    await onDevice(async (page) => {
      await openBoard(page, boardUrl(local.url, freshStore("board-add")));
      assert.deepEqual(await boardShown(page), [], "an empty board");
      assert.equal(await page.getByTestId("sync-label").textContent(), "Local only");
      assert.equal(await page.getByTestId("pending-count").textContent(), "0");

      await useTemplate(page);
      await addList(page, "Blocked");
      await addCard(page, "To do", "Write the launch post");
      await addCard(page, "To do", "Record the demo");
      await addCard(page, "Doing", "Benchmarks");

      const expected = [
        { list: "To do", cards: ["Write the launch post", "Record the demo"] },
        { list: "Doing", cards: ["Benchmarks"] },
        { list: "Done", cards: [] },
        { list: "Blocked", cards: [] },
      ];
      assert.deepEqual(await boardTitles(page), expected);
      assert.deepEqual((await boardShown(page)).map((list) => list.count), ["2", "1", "0", "0"], "each list counts its cards");
      assert.equal(await page.getByTestId("use-template").isVisible(), false, "the template is offered on an empty board only");
      assert.equal(await cardOf(page, "Record the demo").getByTestId("card-move-left").isDisabled(), true, "the first list has no list on its left");
      assert.equal(await cardOf(page, "Record the demo").getByTestId("card-move-right").isDisabled(), false);
      assert.equal(await cardOf(page, "Record the demo").getByTestId("card-move-right").getAttribute("title"), "Move to Doing");

      const log = await boardLog(page);
      assert.deepEqual(
        log.events.map((e) => [e.type, e.stream === "board" ? "board" : "card"]),
        [
          ["ListAdded", "board"],
          ["ListAdded", "board"],
          ["ListAdded", "board"],
          ["ListAdded", "board"],
          ["CardAdded", "card"],
          ["CardAdded", "card"],
          ["CardAdded", "card"],
        ],
      );
      assert.deepEqual(log.events.map((e) => e.version), [1, 2, 3, 4, 1, 1, 1], "the lists share the board's stream; each card has its own");
      assert.deepEqual(log.events.slice(4).map((e) => e.data.title), ["Write the launch post", "Record the demo", "Benchmarks"]);
      assert.ok(log.events.every((e) => !e.pending), "a local store confirms on append");
      assert.equal(await page.getByTestId("event-count").textContent(), "7");
      assert.equal(await page.getByTestId("card-count").textContent(), "3");
      const activity = await page.getByTestId("activity-entry").evaluateAll((items) =>
        items.map((li) => [li.getAttribute("data-position"), li.getAttribute("data-type")]),
      );
      assert.deepEqual(activity.slice(0, 2), [["7", "CardAdded"], ["6", "CardAdded"]], "the event log shows the latest first");

      await page.reload();
      await waitBoardReady(page);
      assert.deepEqual(await boardTitles(page), expected, "the board is read back from IndexedDB");
    });
  });

  test("a card moved to Done is stamped completed by the process manager, and reopened when it leaves", { timeout: TEST_TIMEOUT }, async () => {
    await onDevice(async (page) => {
      await openBoard(page, boardUrl(local.url, freshStore("board-stamp")));
      await useTemplate(page);
      await addCard(page, "To do", "Ship it");
      await addCard(page, "Done", "Already shipped");
      await eventually(() => cardOf(page, "Already shipped").getAttribute("data-completed"), (v) => v === "true", {
        ...waitFor,
        what: "a card added to Done to be stamped",
      });

      await moveCard(page, "Ship it", "right", "Doing");
      assert.equal(await cardOf(page, "Ship it").getAttribute("data-completed"), "false", "Doing is not Done");
      await moveCard(page, "Ship it", "right", "Done");
      await eventually(() => cardOf(page, "Ship it").getAttribute("data-completed"), (v) => v === "true", {
        ...waitFor,
        what: "the process manager to stamp the moved card",
      });
      assert.match((await cardOf(page, "Ship it").getByTestId("card-done").textContent()) ?? "", /^✓ done \d\d:\d\d:\d\d$/);
      assert.equal(await page.getByTestId("done-count").textContent(), "2");

      const log = await boardLog(page);
      const stream = log.events.find((e) => e.type === "CardAdded" && e.data.title === "Ship it")?.stream;
      const own = log.events.filter((e) => e.stream === stream);
      assert.deepEqual(own.map((e) => e.type), ["CardAdded", "CardMoved", "CardMoved", "CardCompleted"], "the move to Doing needed no stamp");
      const [, , toDone, completed] = own;
      assert.equal(toDone?.data.toTitle, "Done");
      assert.equal(completed?.meta?.causationId, toDone?.id, "the stamp is caused by the move to Done");
      assert.equal(completed?.meta?.correlationId, toDone?.meta?.correlationId, "in the move's correlation");

      await moveCard(page, "Ship it", "left", "Doing");
      await eventually(() => cardOf(page, "Ship it").getAttribute("data-completed"), (v) => v === "false", {
        ...waitFor,
        what: "the process manager to reopen the card that left Done",
      });
      await eventually(() => boardLog(page), (l) => l.events.at(-1)?.type === "CardReopened", { ...waitFor, what: "CardReopened" });
      assert.equal(await page.getByTestId("done-count").textContent(), "1");
      assert.equal(await page.getByTestId("activity-entry").first().getAttribute("data-type"), "CardReopened");
      await screenshot(page, "board-stamped");
    });
  });

  test("a card dragged onto another list moves there; archiving removes it from the board", { timeout: TEST_TIMEOUT }, async () => {
    await onDevice(async (page) => {
      await openBoard(page, boardUrl(local.url, freshStore("board-drag")));
      await useTemplate(page);
      await addCard(page, "To do", "Drag me");
      await addCard(page, "To do", "Archive me");
      await cardOf(page, "Drag me").dragTo(column(page, "Done"));
      await column(page, "Done").getByTestId("card").filter({ hasText: "Drag me" }).waitFor();
      await eventually(() => cardOf(page, "Drag me").getAttribute("data-completed"), (v) => v === "true", { ...waitFor, what: "the stamp" });

      await cardOf(page, "Archive me").getByTestId("card-archive").click();
      await cardOf(page, "Archive me").waitFor({ state: "detached" });
      assert.deepEqual(await boardTitles(page), [
        { list: "To do", cards: [] },
        { list: "Doing", cards: [] },
        { list: "Done", cards: ["Drag me ✓"] },
      ]);
      const types = (await boardLog(page)).events.map((e) => e.type);
      assert.deepEqual(types.slice(3), ["CardAdded", "CardAdded", "CardMoved", "CardCompleted", "CardArchived"]);
      const latest = page.getByTestId("activity-entry").first();
      assert.equal(await latest.getAttribute("data-position"), "8");
      assert.equal(await latest.getByTestId("activity-what").textContent(), "“Archive me” archived", "the log names the archived card");
    });
  });

  test("a refused command shows the aggregate's message and writes nothing", { timeout: TEST_TIMEOUT }, async () => {
    await onDevice(async (page) => {
      await openBoard(page, boardUrl(local.url, freshStore("board-refused")));
      await useTemplate(page);
      const head = (await boardLog(page)).head;

      await page.getByTestId("new-list-input").fill("done");
      await page.getByTestId("add-list").click();
      await page.getByTestId("toast").first().waitFor();
      assert.deepEqual(await notices(page), [
        { kind: "refused", code: "COMMAND_REJECTED", message: 'there is already a list named "Done"' },
      ]);
      assert.equal(await page.getByTestId("new-list-input").inputValue(), "done", "what was typed stays, to be fixed");

      const todo = column(page, "To do");
      await todo.getByTestId("new-card-input").fill("   ");
      await todo.getByTestId("add-card").click();
      await page.getByTestId("toast").nth(1).waitFor();
      await todo.getByTestId("new-card-input").fill("x".repeat(81));
      await todo.getByTestId("add-card").click();
      await page.getByTestId("toast").nth(2).waitFor();
      assert.deepEqual((await notices(page)).slice(1), [
        { kind: "refused", code: "COMMAND_REJECTED", message: "a card needs a title" },
        { kind: "refused", code: "COMMAND_REJECTED", message: "a card title is at most 80 characters (this one has 81)" },
      ]);

      for (const title of ["Four", "Five", "Six", "Seven", "Eight"]) await addList(page, title);
      await page.getByTestId("new-list-input").fill("Nine");
      await page.getByTestId("add-list").click();
      await page.getByTestId("toast").filter({ hasText: "at most 8 lists" }).waitFor();
      assert.equal((await notices(page)).at(-1)?.message, "a board holds at most 8 lists");
      assert.equal((await boardShown(page)).length, 8);

      const log = await boardLog(page);
      assert.equal(log.head, head + 5, "only the five accepted lists were written");
      assert.ok(log.events.every((e) => e.type === "ListAdded"));

      await page.getByTestId("toast-dismiss").first().click();
      assert.equal((await notices(page)).length, 3, "a notice can be dismissed");
    });
  });
});

describe("a synced board (annals-server)", () => {
  test("offline: the indicator says so, changes wait as pending (unstamped), and sync when back online", { timeout: 120_000 }, async () => {
    await onDevice(async (page, device) => {
      await openBoard(page, boardUrl(synced.url, freshStore("board-offline"), { sync: true }));
      await eventually(() => boardSync(page), (s) => s.state === "online" && s.label === "Online · synced", {
        ...waitFor,
        what: "online",
      });
      await useTemplate(page);
      await addCard(page, "To do", "Online card");
      await eventually(() => boardSync(page), (s) => s.pending === "0", { ...waitFor, what: "the first events confirmed" });

      await device.setOffline(true);
      await addCard(page, "To do", "Offline card");
      await moveCard(page, "Offline card", "right", "Doing");
      await moveCard(page, "Offline card", "right", "Done");
      const offline = await eventually(() => boardSync(page), (s) => s.state === "offline" && s.pending === "3", {
        ...waitFor,
        what: "offline with 3 pending",
      });
      assert.equal(offline.online, "false");
      assert.equal(offline.label, "Offline · 3 pending");
      await eventually(() => cardOf(page, "Offline card").getAttribute("data-pending"), (v) => v === "true", {
        ...waitFor,
        what: "the card marked as syncing",
      });
      assert.equal(await cardOf(page, "Online card").getAttribute("data-pending"), "false");
      assert.equal(await cardOf(page, "Offline card").getAttribute("data-completed"), "false", "the process manager waits for the server to confirm the move");
      const pending = await page.locator('[data-testid="activity-entry"][data-pending="true"]').count();
      assert.equal(pending, 3, "the event log marks the pending events");
      await screenshot(page, "board-offline");

      await device.setOffline(false);
      await eventually(() => boardSync(page), (s) => s.state === "online" && s.pending === "0", { ...waitFor, what: "the outbox to drain" });
      await eventually(() => cardOf(page, "Offline card").getAttribute("data-completed"), (v) => v === "true", {
        ...waitFor,
        what: "the stamp once the server confirmed the move",
      });
      await eventually(() => cardOf(page, "Offline card").getAttribute("data-pending"), (v) => v === "false", { ...waitFor, what: "confirmed" });
      const log = await boardLog(page);
      assert.ok(log.events.every((e) => !e.pending), "every event confirmed");
      assert.equal(log.events.at(-1)?.type, "CardCompleted");
    });
  });

  test("two devices converge; the server's refusals show as notices and the board keeps what the server kept", { timeout: 150_000 }, async () => {
    /** @type {string[]} */
    const errors = [];
    const [deviceA, deviceB] = [await browser.newContext(), await browser.newContext()];
    try {
      const [a, b] = [await newTab(deviceA, errors), await newTab(deviceB, errors)];
      const url = boardUrl(synced.url, freshStore("board-converge"), { sync: true });
      await openBoard(a, url);
      await openBoard(b, url);
      for (const page of [a, b]) await eventually(() => boardSync(page), (s) => s.state === "online", { ...waitFor, what: "online" });

      await useTemplate(a);
      await addCard(a, "To do", "Contested");
      await addCard(a, "To do", "Quiet");
      await eventually(() => boardTitles(b), (t) => JSON.stringify(t) === JSON.stringify([
        { list: "To do", cards: ["Contested", "Quiet"] },
        { list: "Doing", cards: [] },
        { list: "Done", cards: [] },
      ]), { ...waitFor, what: "B to receive A's board" });

      // B works offline while A carries on.
      await deviceB.setOffline(true);
      await addList(b, "Later");
      await moveCard(b, "Contested", "right", "Doing");
      await addCard(b, "To do", "From B");
      await eventually(() => boardSync(b), (s) => s.state === "offline" && s.pending === "3", { ...waitFor, what: "B offline, 3 pending" });

      await addList(a, "Blocked");
      await moveCard(a, "Contested", "right", "Doing");
      await moveCard(a, "Contested", "right", "Done");
      await eventually(() => cardOf(a, "Contested").getAttribute("data-completed"), (v) => v === "true", { ...waitFor, what: "A's stamp" });
      await eventually(() => boardSync(a), (s) => s.pending === "0", { ...waitFor, what: "A confirmed" });

      await deviceB.setOffline(false);
      const expected = [
        { list: "To do", cards: ["Quiet", "From B"] },
        { list: "Doing", cards: [] },
        { list: "Done", cards: ["Contested ✓"] },
        { list: "Blocked", cards: [] },
        { list: "Later", cards: [] },
      ];
      for (const page of [a, b]) {
        await eventually(() => boardTitles(page), (t) => JSON.stringify(t) === JSON.stringify(expected), { ...waitFor, what: "the same board on both devices" });
        await eventually(() => boardSync(page), (s) => s.pending === "0", { ...waitFor, what: "both outboxes drained" });
      }

      // B's list and B's move were both refused (A changed those streams first); the list
      // was asked again against the board as it is, the move was not.
      const rejected = (await notices(b)).filter((n) => n.kind === "rejected");
      assert.equal(rejected.length, 2, JSON.stringify(rejected));
      assert.ok(rejected.every((n) => n.code === "REJECTED"));
      assert.deepEqual(rejected.map((n) => n.message).sort(), [
        "the list “Later”: another device changed it first. It is asked again against the board as it is now.",
        "your move of “Contested” to Doing: another device changed it first. The board shows what the server kept.",
      ]);
      assert.deepEqual((await notices(a)).filter((n) => n.kind === "rejected"), [], "A's changes were all accepted");
      await screenshot(b, "board-converged-rejections");

      const [logA, logB] = [await boardLog(a), await boardLog(b)];
      const strip = (/** @type {typeof logA} */ log) => log.events.map((e) => ({ id: e.id, position: e.position, type: e.type, pending: e.pending }));
      assert.deepEqual(strip(logA), strip(logB), "identical logs");
      assert.ok(logA.events.every((e) => !e.pending));
      assert.equal(logA.events.filter((e) => e.type === "CardCompleted").length, 1, "one stamp, though both devices run the process manager");
      assert.deepEqual(errors, [], "no errors in the pages");
    } finally {
      await deviceA.close();
      await deviceB.close();
    }
  });
});
