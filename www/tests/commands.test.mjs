// The command side of the demo in a real browser: the `todo` aggregate's decisions, two tabs
// racing on one todo, causation chains, the `completions` process manager across reloads,
// and a command refused by the sync server and compensated.
// Run with `npm --prefix www run test:e2e` after building www/dist and annals-server.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  TEST_TIMEOUT,
  addViaUi,
  appUrl,
  eventually,
  freshStore,
  item,
  launchBrowser,
  newTab,
  openApp,
  readLog,
  serveDist,
  shown,
  startAnnalsServer,
  syncState,
  waitReady,
} from "./helpers.mjs";

/** @typedef {import("playwright-core").Page} Page */
/** @typedef {import("../src/todos/commands").TodoCommand} TodoCommand */
/** @typedef {import("annals").ExecuteOptions} ExecuteOptions */
/** @typedef {Awaited<ReturnType<typeof readLog>>["events"][number]} LoggedEvent */

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

/**
 * @typedef {{ ok: true, events: { id: string, type: string, version: number }[] }
 *   | { ok: false, code: unknown, message: unknown }} Outcome
 */

/**
 * Runs in the page: executes commands on todos, all started at once (each `execute` decides
 * before its first await, so they all decide on the state the tab has now).
 * @param {{ runs: { id: string, command: { type: string }, options?: ExecuteOptions }[] }} arg
 * @returns {Promise<Outcome[]>}
 */
async function executeAll({ runs }) {
  const store = window.annalsStore;
  if (!store) throw new Error("window.annalsStore is not set");
  return Promise.all(
    runs.map(async ({ id, command, options }) => {
      try {
        const result = await store.execute("todo", `todo-${id}`, /** @type {TodoCommand} */ (command), options);
        return { ok: /** @type {const} */ (true), events: result.events.map((e) => ({ id: e.id, type: e.type, version: e.version })) };
      } catch (err) {
        const { code, message } = /** @type {{ code?: unknown, message?: unknown }} */ (err);
        return { ok: /** @type {const} */ (false), code, message };
      }
    }),
  );
}

/** How many events an outcome appended (-1: refused). @param {Outcome | undefined} outcome */
const appended = (outcome) => (outcome?.ok ? outcome.events.length : -1);

/** Executes one command on todo `id` in `page`. @param {Page} page @param {string} id @param {TodoCommand} command @param {ExecuteOptions} [options] */
async function execute(page, id, command, options) {
  const [result] = await page.evaluate(executeAll, { runs: [{ id, command, options }] });
  assert.ok(result);
  return result;
}

/**
 * Adds todos by command.
 * @template {string} T
 * @param {Page} page @param {readonly T[]} titles
 * @returns {Promise<Record<T, string>>} their ids by title
 */
async function addTodos(page, titles) {
  const ids = titles.map((_, i) => `t${i}-${Math.random().toString(36).slice(2, 10)}`);
  const results = await page.evaluate(executeAll, {
    runs: ids.map((id, i) => ({ id, command: { type: "Add", id, title: titles[i] ?? "" } })),
  });
  assert.ok(results.every((r) => appended(r) === 1), JSON.stringify(results));
  return /** @type {Record<T, string>} */ (Object.fromEntries(titles.map((title, i) => [title, ids[i]])));
}

/** Renames a todo in the UI: ✎, type, Enter. @param {Page} page @param {string} from @param {string} to */
async function renameViaUi(page, from, to) {
  await item(page, from).getByTestId("todo-rename").click();
  await page.getByTestId("todo-rename-input").fill(to);
  await page.getByTestId("todo-rename-input").press("Enter");
}

/** @param {LoggedEvent[]} events @param {string} stream */
const typesOf = (events, stream) => events.filter((e) => e.stream === stream).map((e) => e.type);

/** The events of the `stats` stream. @param {LoggedEvent[]} events */
const statsEvents = (events) => events.filter((e) => e.stream === "stats");

describe("commands in the demo (local store)", () => {
  test("a refused command writes nothing and shows why", { timeout: TEST_TIMEOUT }, async () => {
    /** @type {string[]} */
    const errors = [];
    const context = await browser.newContext();
    try {
      const page = await newTab(context, errors);
      await openApp(page, appUrl(local.url, freshStore("refuse")));
      await addViaUi(page, "buy milk");
      const id = await item(page, "buy milk").getAttribute("data-id");
      assert.ok(id);
      const logBefore = await readLog(page);
      assert.equal(logBefore.head, 1);
      assert.equal(logBefore.events[0]?.meta?.["aggregate"], "todo", "the add went through the aggregate");

      /** Nothing was written, and the page says why. @param {string} message */
      const refusedWith = async (message) => {
        const error = await eventually(() => page.getByTestId("error").textContent(), (t) => !!t, { what: "the error" });
        assert.equal(error, `COMMAND_REJECTED: ${message}`);
        assert.deepEqual(await readLog(page), logBefore, "the log is unchanged");
        assert.equal((await shown(page)).head, "1");
      };

      // Through the UI: an empty title, a title that is too long, for a new todo and a rename.
      await page.getByTestId("new-todo-input").fill("   ");
      await page.getByTestId("add-todo").click();
      await refusedWith("a todo needs a title");
      await page.getByTestId("new-todo-input").fill("x".repeat(101));
      await page.getByTestId("add-todo").click();
      await refusedWith("a title is at most 100 characters (this one has 101)");
      assert.equal(await page.getByTestId("new-todo-input").inputValue(), "x".repeat(101), "the input keeps what was refused");

      await renameViaUi(page, "buy milk", "");
      await refusedWith("a todo needs a title");
      await page.getByTestId("todo-rename-input").fill("y".repeat(150));
      await page.getByTestId("todo-rename-input").press("Enter");
      await refusedWith("a title is at most 100 characters (this one has 150)");
      await page.getByTestId("todo-rename-input").press("Escape");
      assert.equal(await page.getByTestId("todo-rename-input").count(), 0);

      // Through `execute`: commands `decide` refuses, each with its message, nothing written.
      const unknown = "never-added";
      const refusals = [
        [id, { type: "Add", id, title: "buy milk again" }, "this todo was already added"],
        [unknown, { type: "Rename", title: "x" }, "cannot rename an unknown todo"],
        [unknown, { type: "Toggle", done: true }, "cannot toggle an unknown todo"],
        [unknown, { type: "Remove" }, "cannot remove an unknown todo"],
      ];
      for (const [todo, command, message] of /** @type {[string, TodoCommand, string][]} */ (refusals)) {
        assert.deepEqual(await execute(page, todo, command), { ok: false, code: "COMMAND_REJECTED", message });
      }
      assert.deepEqual(await readLog(page), logBefore, "refusals write nothing");

      // A rename that `decide` accepts clears the error; then the todo is removed, and nothing
      // more may happen to it.
      await renameViaUi(page, "buy milk", "  buy oat milk ");
      await item(page, "buy oat milk").waitFor();
      assert.equal((await shown(page)).error, "");
      await item(page, "buy oat milk").getByTestId("todo-remove").click();
      await eventually(() => shown(page), (s) => s.todoCount === "0", { what: "the removal" });
      const logAfter = await readLog(page);
      assert.deepEqual(
        logAfter.events.map((e) => [e.type, e.data]),
        [
          ["TodoAdded", { id, title: "buy milk" }],
          ["TodoRenamed", { id, title: "buy oat milk" }],
          ["TodoRemoved", { id }],
        ],
      );
      for (const [command, message] of /** @type {[TodoCommand, string][]} */ ([
        [{ type: "Rename", title: "x" }, "cannot rename a removed todo"],
        [{ type: "Toggle", done: true }, "cannot toggle a removed todo"],
        [{ type: "Remove" }, "cannot remove a removed todo"],
        [{ type: "Add", id, title: "back" }, "this todo was already added"],
      ])) {
        assert.deepEqual(await execute(page, id, command), { ok: false, code: "COMMAND_REJECTED", message });
      }
      assert.deepEqual(await readLog(page), logAfter, "refusals write nothing");
      assert.deepEqual(errors, [], "refusals are answers, not errors in the page");
    } finally {
      await context.close();
    }
  });

  test("two tabs executing conflicting commands: one wins, the other decides again", { timeout: TEST_TIMEOUT }, async () => {
    /** @type {string[]} */
    const errors = [];
    const context = await browser.newContext();
    try {
      const store = freshStore("race");
      const [a, b] = [await newTab(context, errors), await newTab(context, errors)];
      // Tab B can be kept from hearing about the other tab's writes (BroadcastChannel messages
      // are held back), so that it decides on a state it knows to be stale.
      await b.addInitScript(() => {
        const setter = Object.getOwnPropertyDescriptor(BroadcastChannel.prototype, "onmessage")?.set;
        /** @type {(() => void)[]} */
        const held = [];
        const control = { holding: false, release: () => void (control.holding = false, held.splice(0).forEach((f) => f())) };
        Object.assign(window, { tabMessages: control });
        Object.defineProperty(BroadcastChannel.prototype, "onmessage", {
          configurable: true,
          /** @param {((event: MessageEvent) => void) | null} listener */
          set(listener) {
            const channel = this;
            setter?.call(this, (/** @type {MessageEvent} */ event) => {
              if (control.holding) held.push(() => listener?.call(channel, event));
              else listener?.call(channel, event);
            });
          },
        });
      });
      const hold = () => b.evaluate(() => void (/** @type {any} */ (window).tabMessages.holding = true));
      const release = () => b.evaluate(() => /** @type {any} */ (window).tabMessages.release());
      for (const page of [a, b]) await openApp(page, appUrl(local.url, store));

      const id = await addTodos(a, /** @type {const} */ (["r0", "r1", "r2", "c0", "c1", "c2", "stale remove", "stale rename", "stale ui"]));
      const [removed, completed] = [[id.r0, id.r1, id.r2], [id.c0, id.c1, id.c2]];
      await eventually(() => shown(b), (s) => s.todoCount === "9", { what: "tab B to see the todos" });

      // 1. Both tabs at the same moment: each removes r0..r2 and completes c0..c2.
      const runs = [
        ...removed.map((id) => ({ id, command: { type: "Remove" } })),
        ...completed.map((id) => ({ id, command: { type: "Toggle", done: true } })),
      ];
      const [fromA, fromB] = await Promise.all([a.evaluate(executeAll, { runs }), b.evaluate(executeAll, { runs })]);
      runs.forEach(({ id, command }, i) => {
        const pair = [fromA[i], fromB[i]];
        const winners = pair.filter((r) => appended(r) === 1);
        assert.equal(winners.length, 1, `exactly one tab appended ${command.type} on ${id}: ${JSON.stringify(pair)}`);
        const other = pair.find((r) => r !== winners[0]);
        if (command.type === "Remove") {
          assert.deepEqual(other, { ok: false, code: "COMMAND_REJECTED", message: "cannot remove a removed todo" });
        } else {
          assert.deepEqual(other, { ok: true, events: [] }, "the other found the todo done already: nothing to do");
        }
      });

      // 2. Tab B has not heard of tab A's writes, and decides on what it saw: its appends fail
      //    on the version, `execute` catches up and decides again.
      await hold();
      assert.deepEqual(
        (await Promise.all([execute(a, id["stale remove"], { type: "Remove" }), execute(a, id["stale rename"], { type: "Rename", title: "renamed" })])).map(
          appended,
        ),
        [1, 1],
      );
      const seenByB = await b.evaluate((ids) => ids.map((id) => window.annalsStore?.get("todos")[id]), [id["stale remove"], id["stale rename"]]);
      assert.deepEqual(
        seenByB.map((t) => t && [t.title, t.version]),
        [
          ["stale remove", 1],
          ["stale rename", 1],
        ],
        "tab B's view is stale",
      );
      const [removeB, renameB] = await b.evaluate(executeAll, {
        runs: [
          { id: id["stale remove"], command: { type: "Remove" } },
          { id: id["stale rename"], command: { type: "Rename", title: "renamed" } },
        ],
      });
      assert.deepEqual(removeB, { ok: false, code: "COMMAND_REJECTED", message: "cannot remove a removed todo" });
      assert.deepEqual(renameB, { ok: true, events: [] }, "renamed already: nothing left to do");

      // 3. The same in the UI: tab B still lists a todo tab A removed; removing it there shows
      //    the refusal.
      assert.equal(appended(await execute(a, id["stale ui"], { type: "Remove" })), 1);
      assert.equal(await item(b, "stale ui").count(), 1, "tab B still shows the removed todo");
      await item(b, "stale ui").getByTestId("todo-remove").click();
      await eventually(
        () => b.getByTestId("error").textContent(),
        (t) => t === "COMMAND_REJECTED: cannot remove a removed todo",
        { what: "the refusal in tab B" },
      );
      await release();

      // One log, with one event per contested change: never both appended blindly.
      await eventually(() => Promise.all([shown(a), shown(b)]), ([x, y]) => x.head === y.head && x.completedTotal === "3", {
        what: "both tabs to agree, with 3 completions counted",
      });
      const [logA, logB] = await Promise.all([readLog(a), readLog(b)]);
      assert.deepEqual(logA, logB);
      for (const todo of [...removed, id["stale remove"], id["stale ui"]]) {
        assert.deepEqual(typesOf(logA.events, `todo-${todo}`), ["TodoAdded", "TodoRemoved"]);
      }
      for (const todo of completed) assert.deepEqual(typesOf(logA.events, `todo-${todo}`), ["TodoAdded", "TodoToggled"]);
      assert.deepEqual(typesOf(logA.events, `todo-${id["stale rename"]}`), ["TodoAdded", "TodoRenamed"]);
      assert.equal(logA.head, 9 + 3 + 3 + 3 + 3, "9 adds, 3 removals, 3 completions and their 3 counts, 3 stale changes");
      const [shownA, shownB] = await Promise.all([shown(a), shown(b)]);
      assert.deepEqual({ ...shownA, error: "" }, { ...shownB, error: "" });
      assert.deepEqual(errors, [], "no errors in the pages");
    } finally {
      await context.close();
    }
  });

  test("the process manager's event carries the causation and correlation of its flow", { timeout: TEST_TIMEOUT }, async () => {
    /** @type {string[]} */
    const errors = [];
    const context = await browser.newContext();
    try {
      const page = await newTab(context, errors);
      await openApp(page, appUrl(local.url, freshStore("causation")));
      await addViaUi(page, "write the report");
      await item(page, "write the report").getByTestId("todo-toggle").check();
      await eventually(() => shown(page), (s) => s.completedTotal === "1", { what: "the completion to be counted" });

      const { events } = await readLog(page);
      assert.deepEqual(
        events.map((e) => [e.stream.replace(/^todo-.*/, "todo-…"), e.type]),
        [
          ["todo-…", "TodoAdded"],
          ["todo-…", "TodoToggled"],
          ["stats", "CompletionCounted"],
        ],
      );
      const [added, toggled, counted] = /** @type {LoggedEvent[]} */ (events);
      assert.ok(added && toggled && counted);
      // A command from the UI starts its own flow: command, correlation and causation are one id.
      const flow = toggled.meta?.["correlationId"];
      assert.equal(typeof flow, "string");
      assert.equal(toggled.meta?.["commandId"], flow);
      assert.equal(toggled.meta?.["causationId"], flow);
      assert.notEqual(added.meta?.["correlationId"], flow, "the add is another flow");
      // The process manager's command was caused by the toggle, in the toggle's flow.
      assert.deepEqual(counted.meta, {
        aggregate: "stats",
        commandId: `completions:${toggled.id}:0`,
        correlationId: flow,
        causationId: toggled.id,
      });
      assert.deepEqual(counted.data, { id: toggled.data.id, total: 1 });
      assert.deepEqual((await readLog(page, { correlationId: String(flow) })).events, [toggled, counted], "the whole flow, in order");

      // A flow the caller names spans several commands and what they caused.
      const todo = String(toggled.data.id);
      const options = { correlationId: "flow-reopen-and-finish" };
      assert.equal(appended(await execute(page, todo, { type: "Toggle", done: false }, { ...options, commandId: "reopen-1" })), 1);
      assert.equal(appended(await execute(page, todo, { type: "Toggle", done: true }, { ...options, commandId: "finish-1" })), 1);
      await eventually(() => shown(page), (s) => s.completedTotal === "2", { what: "the second completion" });
      const named = (await readLog(page, options)).events;
      assert.deepEqual(
        named.map((e) => [e.type, e.data, e.meta?.["commandId"], e.meta?.["causationId"]]),
        [
          ["TodoToggled", { id: todo, done: false }, "reopen-1", "reopen-1"],
          ["TodoToggled", { id: todo, done: true }, "finish-1", "finish-1"],
          ["CompletionCounted", { id: todo, total: 2 }, `completions:${named[1]?.id}:0`, named[1]?.id],
        ],
      );
      assert.ok(named.every((e, i) => i === 0 || e.position > (named[i - 1]?.position ?? 0)), "in log order");
      assert.deepEqual(errors, [], "no errors in the page");
    } finally {
      await context.close();
    }
  });

  test("the process manager survives reloads without skipping or repeating", { timeout: TEST_TIMEOUT }, async () => {
    /** @type {string[]} */
    const errors = [];
    const context = await browser.newContext();
    try {
      const store = freshStore("reactor");
      const page = await newTab(context, errors);
      await openApp(page, appUrl(local.url, store));
      const ids = Object.values(await addTodos(page, Array.from({ length: 14 }, (_, i) => `chore ${i}`)));
      await eventually(() => shown(page), (s) => s.todoCount === "14", { what: "the todos" });

      // Two completions, handled at once.
      for (const title of ["chore 0", "chore 1"]) await item(page, title).getByTestId("todo-toggle").check();
      await eventually(() => shown(page), (s) => s.completedTotal === "2", { what: "2 completions counted" });

      // Another page of the app's origin takes the process manager's Web Lock as soon as the
      // app lets go of it (the reload), so the events that come next stay unhandled.
      const lock = `annals-react:${store}:completions`;
      const holder = await context.newPage();
      await holder.goto(new URL("lock-holder", local.url).href); // any page of the origin (a 404)
      await holder.evaluate((lock) => {
        void navigator.locks.request(lock, () => new Promise((release) => Object.assign(window, { releaseLock: release, holding: true })));
      }, lock);
      await page.reload();
      await waitReady(page);
      await eventually(() => holder.evaluate(() => "holding" in window), (held) => held, { what: "the holder to take the lock" });

      // Completed while the process manager cannot run: through the UI, and by command.
      for (const title of ["chore 2", "chore 3"]) {
        await item(page, title).getByTestId("todo-toggle").check();
        await eventually(() => item(page, title).getAttribute("data-done"), (v) => v === "true", { what: `${title} done` });
      }
      const late = ids.slice(4);
      const results = await page.evaluate(executeAll, { runs: late.map((id) => ({ id, command: { type: "Toggle", done: true } })) });
      assert.ok(results.every((r) => appended(r) === 1));
      // Undone and done again: a completion too.
      assert.equal(appended(await execute(page, String(ids[0]), { type: "Toggle", done: false })), 1);
      assert.equal(appended(await execute(page, String(ids[0]), { type: "Toggle", done: true })), 1);
      const completions = 2 + 2 + late.length + 1;

      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await shown(page)).completedTotal, "2", "nothing handled while another page holds the lock");
      await page.reload(); // with every new completion unhandled
      await waitReady(page);
      assert.equal((await shown(page)).completedTotal, "2");
      assert.equal(statsEvents((await readLog(page)).events).length, 2);

      // The lock comes back; reload again as soon as the first of the waiting events is handled.
      await holder.evaluate(() => /** @type {any} */ (window).releaseLock());
      const handled = await eventually(
        () => shown(page),
        (s) => s.completedTotal !== "2",
        { interval: 5, what: "the process manager to start" },
      );
      await page.reload();
      await waitReady(page);
      await eventually(() => shown(page), (s) => s.completedTotal === String(completions), {
        what: `all ${completions} completions counted (${handled.completedTotal} before the reload)`,
      });
      await new Promise((r) => setTimeout(r, 300));
      await page.reload();
      await waitReady(page);

      // Exactly one count per completing toggle, numbered 1..n, each caused by its toggle.
      const { events } = await readLog(page);
      const completing = events.filter((e) => e.type === "TodoToggled" && e.data.done === true);
      const counted = statsEvents(events);
      assert.equal(completing.length, completions);
      assert.equal(counted.length, completions, "one stats event per completion");
      assert.deepEqual(
        counted.map((e) => e.meta?.["causationId"]),
        completing.map((e) => e.id),
        "each completion counted once, in log order",
      );
      assert.deepEqual(
        counted.map((e) => e.data.total),
        Array.from({ length: completions }, (_, i) => i + 1),
      );
      const now = await shown(page);
      assert.equal(now.completedTotal, String(completions));
      assert.equal(now.head, String(events.length));
      assert.deepEqual(errors, [], "no errors in the pages");
    } finally {
      await context.close();
    }
  });
});

describe("commands with the sync server", () => {
  test("a conflicting offline command is refused by the server, reported, and compensated", { timeout: 120_000 }, async () => {
    /** @type {string[]} */
    const errors = [];
    const [deviceA, deviceB] = [await browser.newContext(), await browser.newContext()];
    try {
      const url = appUrl(synced.url, freshStore("refused"), { sync: true });
      const [a, b] = [await newTab(deviceA, errors), await newTab(deviceB, errors)];
      for (const page of [a, b]) await openApp(page, url);
      // Every rejection device B reports, as its store tells it.
      await b.evaluate(() => {
        /** @type {unknown[]} */
        const seen = [];
        Object.assign(window, { rejections: seen });
        window.annalsStore?.on("rejected", (event, reason, actualVersion) => seen.push({ type: event.type, id: event.id, reason, actualVersion }));
      });
      const rejections = () => b.evaluate(() => /** @type {any} */ (window).rejections);
      const settled = { timeout: 20_000, interval: 100 };
      await eventually(() => syncState(a), (s) => s.online === "true", { ...settled, what: "device A online" });

      await addViaUi(a, "milk");
      await addViaUi(a, "bread");
      await eventually(() => shown(b), (s) => s.todoCount === "2", { ...settled, what: "B to receive A's todos" });
      const [milk, bread] = await Promise.all(["milk", "bread"].map((t) => item(a, t).getAttribute("data-id")));
      assert.ok(milk && bread);

      // B, offline, renames milk; A renames it first, online. `decide` accepted both.
      await deviceB.setOffline(true);
      await eventually(() => syncState(b), (s) => s.online === "false", { ...settled, what: "B offline" });
      await renameViaUi(b, "milk", "oat milk");
      await item(b, "oat milk").waitFor();
      await renameViaUi(a, "milk", "soy milk");
      await item(a, "soy milk").waitFor();
      await eventually(() => syncState(a), (s) => s.pending === "0", { ...settled, what: "A's rename confirmed" });
      assert.equal((await syncState(b)).pending, "1");
      const [offlineRename] = (await readLog(b)).events.filter((e) => e.pending);
      assert.ok(offlineRename);

      // B comes back: the server refuses its rename (the todo moved on), B reports it, and
      // `todo.onRejected` asks again against the todo as it now is.
      await deviceB.setOffline(false);
      await eventually(() => rejections(), (r) => r.length === 1, { ...settled, what: "the rejection" });
      assert.deepEqual(await rejections(), [
        {
          type: "TodoRenamed",
          id: offlineRename.id,
          reason: `wrong expected version on stream \`todo-${milk}\`: expected 1, actual 2`,
          actualVersion: 2,
        },
      ]);
      assert.match(String((await shown(b)).error), /^The server refused TodoRenamed: wrong expected version/);
      assert.equal((await b.evaluate(() => window.annalsStore?.rejected()))?.[0]?.event.id, offlineRename.id);
      for (const page of [a, b]) {
        await eventually(() => shown(page), (s) => s.todos.some((t) => t.title === "oat milk"), { ...settled, what: "the compensation everywhere" });
      }
      await eventually(() => syncState(b), (s) => s.pending === "0", { ...settled, what: "B's outbox to drain" });
      const milkLog = (await readLog(a)).events.filter((e) => e.stream === `todo-${milk}`);
      assert.deepEqual(
        milkLog.map((e) => [e.type, e.data.title, e.version]),
        [
          ["TodoAdded", "milk", 1],
          ["TodoRenamed", "soy milk", 2],
          ["TodoRenamed", "oat milk", 3],
        ],
      );
      assert.deepEqual(milkLog[2]?.meta, {
        aggregate: "todo",
        commandId: `compensate:${offlineRename.id}:0`,
        correlationId: offlineRename.meta?.["correlationId"],
        causationId: offlineRename.id,
      });
      assert.ok(!milkLog.some((e) => e.id === offlineRename.id), "the refused event is not in the log");

      // B, offline, completes bread; A removes it. The server refuses the completion, and the
      // compensation is refused by `decide`: the todo is gone. The completion is never counted.
      await deviceB.setOffline(true);
      await eventually(() => syncState(b), (s) => s.online === "false", { ...settled, what: "B offline" });
      await item(b, "bread").getByTestId("todo-toggle").check();
      await eventually(() => syncState(b), (s) => s.pending === "1", { ...settled, what: "B's completion pending" });
      await item(a, "bread").getByTestId("todo-remove").click();
      await eventually(
        () => readLog(a),
        (log) => log.events.some((e) => e.type === "TodoRemoved" && e.stream === `todo-${bread}` && !e.pending),
        { ...settled, what: "A's removal confirmed" },
      );
      await deviceB.setOffline(false);
      await eventually(() => rejections(), (r) => r.length === 2, { ...settled, what: "the second rejection" });
      assert.equal((await rejections())[1].type, "TodoToggled");
      await eventually(
        () => b.getByTestId("error").textContent(),
        (t) => t === "COMMAND_REJECTED: cannot toggle a removed todo",
        { ...settled, what: "the refused compensation to show" },
      );

      await eventually(() => Promise.all([readLog(a), readLog(b)]), ([x, y]) => JSON.stringify(x) === JSON.stringify(y), {
        ...settled,
        what: "identical logs on both devices",
      });
      const final = await readLog(a);
      assert.deepEqual(typesOf(final.events, `todo-${bread}`), ["TodoAdded", "TodoRemoved"]);
      assert.ok(final.events.every((e) => !e.pending));
      assert.deepEqual(statsEvents(final.events), [], "the refused completion was never counted");
      for (const page of [a, b]) assert.equal((await shown(page)).completedTotal, "0");
      assert.deepEqual(errors, [], "no errors in the pages");
    } finally {
      await deviceA.close();
      await deviceB.close();
    }
  });
});
