// Several tabs of one synced store, end to end: four tabs of the demo in one browser context
// (one origin: shared IndexedDB and Web Locks) against a real annals-server. One tab syncs for
// all (it holds the store's Web Lock). All four append; mid-way the syncing tab is closed, or
// frozen (Page Lifecycle), while the others go on. Another tab must take over sync, push every
// event (the stopped tab's last ones too, which it never got out) exactly once, and every tab
// must end with the server's log. A frozen tab, once resumed, converges and pushes nothing.
// The freeze is real: the tabs are background tabs (hidden; see launchBackgroundTabs), which
// Chromium freezes on `Page.setWebLifecycleState`: the page gets `freeze`, then its timers,
// IndexedDB callbacks and the rest stop until it is resumed (the test checks that its timer
// stood still). Chromium still hands a frozen page the BroadcastChannel's messages: annals
// holds them until the page resumes, else the tab would stall the others' writes.
// Run with `npm --prefix www run test:e2e` after building www/dist and the server
// (ANNALS_SERVER_BIN, default target/debug/annals-server).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { appUrl, eventually, freshStore, launchBackgroundTabs, openApp, readLog, startAnnalsServer } from "./helpers.mjs";

/** @typedef {import("playwright-core").Page} Page */

const TABS = 4;
/** Events each tab appends one by one... */
const PER_TAB = 40;
/** ...and the syncing tab's last batch, which it does not get to push before it stops. */
const LAST_BATCH = 10;
/** Generous: two cores run the browser, the server and the test at once. */
const WAIT = { timeout: 60_000, interval: 100 };
/** The period of the frozen tab's ticker (ms): a tab that runs ticks about this often. */
const TICK = 20;
/** The least time the tab stays frozen (ms): a running tab would tick 50 times meanwhile. */
const FROZEN_FOR = 50 * TICK;

/** @type {{ url: string, close: () => void }} */
let server;
/**
 * The browsers the scenarios launched and have not closed (a test that times out leaves its own).
 * @type {Set<{ close: () => Promise<void> }>}
 */
const browsers = new Set();

before(async () => {
  server = await startAnnalsServer();
});

after(async () => {
  for (const browser of browsers) await browser.close();
  server?.close();
});

/** The server's log of `store`, in server order. @param {string} store */
async function serverLog(store) {
  const response = await fetch(new URL(`/v1/stores/${encodeURIComponent(store)}/pull?after=0&limit=10000`, server.url), {
    headers: { Authorization: "Bearer dev" },
  });
  assert.equal(response.status, 200, `pull from the server: ${response.status}`);
  const body = /** @type {{ events: { id: string, position: number }[], more: boolean }} */ (await response.json());
  assert.equal(body.more, false, "the whole log fits in one page");
  return body.events.map((e) => ({ id: e.id, position: e.position }));
}

/** A tab's log: ids, positions, and whether anything is still pending. @param {Page} page */
async function tabLog(page) {
  return (await readLog(page)).events.map((e) => ({ id: e.id, position: e.position, pending: e.pending }));
}

/** Whether the tab's store holds the sync lock. @param {Page} page */
const isLeader = (page) => page.evaluate(() => window.annalsStore?.syncStatus.leader === true);

/** The indexes of `pages` that sync, polled until exactly one does. @param {Page[]} pages */
async function theLeader(pages, what = "exactly one tab to sync") {
  const leaders = await eventually(
    async () => {
      const flags = await Promise.all(pages.map(isLeader));
      return flags.flatMap((flag, i) => (flag ? [i] : []));
    },
    (found) => found.length === 1,
    { ...WAIT, what },
  );
  return /** @type {number} */ (leaders[0]);
}

/**
 * An event id of tab `tab` (its `n`-th event) in this run: a UUID, as annals wants.
 * @param {string} run 8 hex digits @param {number} tab @param {number} n
 */
const eventId = (run, tab, n) => `${run}-0000-4000-8000-${tab.toString(16).padStart(4, "0")}${n.toString(16).padStart(8, "0")}`;

/**
 * Runs in a page: starts appending `count` todos one by one (a short pause between appends
 * lets the tabs interleave) and records progress in `window.tabsTest`; `stop` ends the loop
 * after the append in hand. With `gate`, the loop waits after that many appends until `go`
 * is set.
 * @param {{ run: string, tab: number, count: number, gate?: number }} arg
 */
function startAppending({ run, tab, count, gate }) {
  const store = window.annalsStore;
  if (!store) throw new Error("window.annalsStore is not set");
  const state = { appended: /** @type {string[]} */ ([]), done: false, stop: false, go: false, error: /** @type {string | null} */ (null) };
  // @ts-expect-error: the test's own record on the page
  window.tabsTest = state;
  const id = (/** @type {number} */ n) =>
    `${run}-0000-4000-8000-${tab.toString(16).padStart(4, "0")}${n.toString(16).padStart(8, "0")}`;
  void (async () => {
    for (let n = 0; n < count && !state.stop; n++) {
      while (n === gate && !state.go) await new Promise((resolve) => setTimeout(resolve, 10));
      const todo = id(n);
      await store.append({ id: todo, stream: `todo-${todo}`, type: "TodoAdded", data: { id: todo, title: `tab ${tab} #${n}` } });
      state.appended.push(todo);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })()
    .catch((error) => {
      state.error = String(error);
    })
    .finally(() => {
      state.done = true;
    });
}

/** The page's append loop as it stands. @param {Page} page */
const progress = (page) =>
  page.evaluate(() => {
    // @ts-expect-error: set by startAppending
    const state = window.tabsTest;
    return { appended: /** @type {string[]} */ ([...state.appended]), done: Boolean(state.done), error: state.error };
  });

/** Stops the page's append loop and returns the ids it appended. @param {Page} page */
async function stopAppending(page) {
  await page.evaluate(() => {
    // @ts-expect-error: set by startAppending
    window.tabsTest.stop = true;
  });
  const last = await eventually(() => progress(page), (p) => p.done, { ...WAIT, what: "the append loop to stop" });
  assert.equal(last.error, null);
  return last.appended;
}

/**
 * Every push request a tab sends: its tab, the ids it carried, and how it ended: `answer`
 * holds the server's verdict per id once answered; `failed` is set when it got no answer.
 * @typedef {{ tab: number, ids: string[], answer?: Map<string, string>, failed?: boolean }} Push
 */

/** Records the push requests of the tabs given to `watch`. */
function recordPushes() {
  const pushes = /** @type {Push[]} */ ([]);
  /** Answers still being read. */
  const reading = /** @type {Promise<void>[]} */ ([]);
  const sent = new Map();
  /** @param {import("playwright-core").Request} r */
  const isPush = (r) => r.method() === "POST" && /\/v1\/stores\/[^/]+\/push$/.test(new URL(r.url()).pathname);
  /** @param {Page} page @param {number} tab */
  const watch = (page, tab) => {
    page.on("request", (request) => {
      if (!isPush(request)) return;
      const body = /** @type {{ events: { id: string }[] }} */ (request.postDataJSON());
      const push = { tab, ids: body.events.map((e) => e.id) };
      sent.set(request, push);
      pushes.push(push);
    });
    page.on("requestfailed", (request) => {
      const push = sent.get(request);
      if (push) push.failed = true;
    });
    page.on("requestfinished", (request) => {
      const push = sent.get(request);
      if (!push) return;
      reading.push(
        (async () => {
          const response = await request.response();
          if (response?.status() !== 200) {
            push.failed = true;
            return;
          }
          const body = /** @type {{ results: { id: string, status: string }[] }} */ (await response.json());
          push.answer = new Map(body.results.map((r) => [r.id, r.status]));
        })(),
      );
    });
  };
  return { pushes, watch, settled: () => Promise.all(reading) };
}

/**
 * Cuts `page` off the network (its own target only, through CDP): its sync client's pushes
 * fail at once, so what it appends from now on stays in its outbox.
 * @param {import("playwright-core").BrowserContext} context @param {Page} page
 */
async function cutOff(context, page) {
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", { offline: true, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  return {
    cdp,
    reconnect: () =>
      cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 }),
  };
}

/**
 * Runs in a page: counts ticks of a `setInterval` and records the page lifecycle's `freeze`
 * and `resume` events with the tick count and the time, in `window.lifecycleTest`.
 * @param {number} tick
 */
function watchLifecycle(tick) {
  const state = { ticks: 0, events: /** @type {{ type: string, ticks: number, at: number }[]} */ ([]) };
  // @ts-expect-error: the test's own record on the page
  window.lifecycleTest = state;
  setInterval(() => state.ticks++, tick);
  for (const type of ["freeze", "resume"]) {
    document.addEventListener(type, () => state.events.push({ type, ticks: state.ticks, at: Date.now() }));
  }
}

/**
 * Freezes or resumes `page` (Page Lifecycle) for real: Chromium freezes a hidden page, and
 * only a hidden one. A frozen page runs nothing, not even the test's `evaluate`: leave it
 * alone until it is resumed.
 * @param {import("playwright-core").CDPSession} cdp @param {"frozen" | "active"} state
 */
async function setLifecycle(cdp, state) {
  await cdp.send("Page.setWebLifecycleState", { state });
}

/**
 * Four tabs append; the syncing one stops (`close` or `freeze`) mid-way with its last batch
 * unpushed; the others go on. Returns what the checks below need.
 * @param {"close" | "freeze"} how
 */
async function scenario(how) {
  const errors = /** @type {string[]} */ ([]);
  const browser = await launchBackgroundTabs();
  browsers.add(browser);
  const store = freshStore(`tabs-${how}`);
  const run = Math.floor(Math.random() * 0xffff_ffff).toString(16).padStart(8, "0");
  const { pushes, watch, settled } = recordPushes();
  /** @type {Page[]} */
  const pages = [];
  for (let tab = 0; tab < TABS; tab++) {
    const page = await browser.newTab(errors);
    watch(page, tab);
    await openApp(page, appUrl(server.url, store, { sync: true }));
    pages.push(page);
  }
  const leader = await theLeader(pages, "one tab to take the sync lock");
  const stopped = /** @type {Page} */ (pages[leader]);
  const others = pages.filter((_, i) => i !== leader);

  // The other tabs append half their events now, the other half once the syncing tab stopped.
  for (let tab = 0; tab < TABS; tab++) {
    await pages[tab]?.evaluate(startAppending, { run, tab, count: PER_TAB, gate: tab === leader ? undefined : PER_TAB / 2 });
  }
  await eventually(() => progress(stopped), (p) => p.appended.length >= PER_TAB / 2, { ...WAIT, what: "the syncing tab's first half" });
  const firstHalf = await stopAppending(stopped);
  const expected = new Set(firstHalf);

  // The syncing tab's last batch, appended offline: these events never leave it.
  const network = await cutOff(browser.context, stopped);
  const lastBatch = Array.from({ length: LAST_BATCH }, (_, i) => eventId(run, leader, PER_TAB + i));
  await stopped.evaluate(async (ids) => {
    const store = window.annalsStore;
    if (!store) throw new Error("window.annalsStore is not set");
    await store.appendMany(ids.map((id) => ({ id, stream: `todo-${id}`, type: "TodoAdded", data: { id, title: id } })));
  }, lastBatch);
  for (const id of lastBatch) expected.add(id);
  // The tab knows it is offline: the batch stays in its outbox.
  await eventually(() => stopped.evaluate(() => window.annalsStore?.syncStatus.online), (online) => online === false, {
    ...WAIT,
    what: "the cut-off tab to know it is offline",
  });
  assert.ok(!pushes.some((p) => p.ids.includes(/** @type {string} */ (lastBatch[0])) && p.answer), "the last batch is not on the server");

  if (how === "close") {
    await stopped.close();
  } else {
    // Hidden (a background tab), so it can be frozen; its ticker shows whether it was.
    assert.equal(await stopped.evaluate(() => document.visibilityState), "hidden", "the tab to freeze is hidden");
    await stopped.evaluate(watchLifecycle, TICK);
    // CDP freezes a page whatever it does; Chromium itself does not freeze a page whose
    // IndexedDB transaction another one waits for (frozen mid-read, the tab would stall every
    // tab's writes until IndexedDB gives up on it). So it freezes once it is idle: the other
    // tabs wait at their gate, and every tab has read the whole log.
    for (const page of others) {
      await eventually(() => progress(page), (p) => p.appended.length === PER_TAB / 2, { ...WAIT, what: "the other tabs' first half" });
    }
    const written = (TABS - 1) * (PER_TAB / 2) + firstHalf.length + LAST_BATCH;
    await eventually(
      () => Promise.all(pages.map((page) => page.evaluate(() => window.annalsStore?.head))),
      (heads) => heads.every((head) => head === written),
      { ...WAIT, what: `every tab to have read ${written} events` },
    );
    await setLifecycle(network.cdp, "frozen");
  }
  const stoppedAt = pushes.length;
  const frozenAt = Date.now();
  for (const page of others) {
    await page.evaluate(() => {
      // @ts-expect-error: set by startAppending
      window.tabsTest.go = true;
    });
  }

  const successor = await theLeader(others, "another tab to take over sync");
  for (const page of others) {
    const p = await eventually(() => progress(page), (s) => s.done, { ...WAIT, what: "the other tabs' appends" });
    assert.equal(p.error, null);
    for (const id of p.appended) expected.add(id);
  }
  assert.equal(expected.size, (TABS - 1) * PER_TAB + firstHalf.length + LAST_BATCH, "the ids are all different");
  return { browser, store, pages, stopped, others, successor, leader, expected, pushes, settled, stoppedAt, frozenAt, network, errors };
}

/**
 * Every expected event is on the server exactly once, and every tab of `tabs` ends with the
 * server's log, all confirmed.
 * @param {string} store @param {Set<string>} expected @param {Page[]} tabs
 */
async function assertConverged(store, expected, tabs) {
  const onServer = await eventually(() => serverLog(store), (log) => log.length >= expected.size, {
    ...WAIT,
    what: `the server to hold ${expected.size} events`,
  });
  const ids = onServer.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, "no event is stored twice");
  assert.deepEqual(new Set(ids), expected, "the server holds exactly the events the tabs appended");
  const want = JSON.stringify(onServer.map((e) => ({ ...e, pending: false })));
  for (const page of tabs) {
    await eventually(() => tabLog(page), (log) => JSON.stringify(log) === want, { ...WAIT, what: "a tab's log to be the server's" });
  }
}

/**
 * Each event was accepted by exactly one push, and no push repeated an event the server had
 * (answered `duplicate`), but for one case the protocol allows: an event in a push the
 * stopped tab sent and never got the answer to (it may have reached the server, and the
 * tab that took over could not know). Returns the figures.
 * @param {Push[]} pushes @param {() => Promise<unknown>} settled @param {Set<string>} expected
 * @param {number} stoppedTab
 */
async function assertPushedOnce(pushes, settled, expected, stoppedTab) {
  // The answers' events reach the test on their own schedule: wait until each event has one.
  await eventually(
    async () => {
      await settled();
      const answered = new Set(pushes.flatMap((p) => [...(p.answer?.keys() ?? [])]));
      const mayLack = new Set(pushes.filter((p) => p.tab === stoppedTab && !p.answer).flatMap((p) => p.ids));
      return [...expected].filter((id) => !answered.has(id) && !mayLack.has(id)).length;
    },
    (missing) => missing === 0,
    { ...WAIT, what: "an answer for every pushed event" },
  );
  const unanswered = new Set(pushes.filter((p) => p.tab === stoppedTab && !p.answer).flatMap((p) => p.ids));
  /** @type {Map<string, string[]>} */
  const verdicts = new Map([...expected].map((id) => [id, []]));
  for (const push of pushes) {
    for (const [id, status] of push.answer ?? []) {
      const list = verdicts.get(id);
      assert.ok(list, `a push carried ${id}, which no tab appended`);
      list.push(status);
    }
  }
  for (const [id, statuses] of verdicts) {
    const ok = statuses.filter((s) => s === "ok").length;
    if (unanswered.has(id)) {
      assert.ok(ok <= 1 && statuses.length - ok <= 1, `${id}: ${statuses.join(", ")}`);
    } else {
      assert.deepEqual(statuses, ["ok"], `${id} is accepted by one push, and pushed once`);
    }
  }
  const duplicates = [...verdicts.values()].flat().filter((s) => s === "duplicate").length;
  return { requests: pushes.length, answered: pushes.filter((p) => p.answer).length, duplicates, mayRepeat: unanswered.size };
}

test("the syncing tab closes mid-way: another tab takes over and pushes every event once", { timeout: 180_000 }, async (t) => {
  const s = await scenario("close");
  try {
    await assertConverged(s.store, s.expected, s.others);
    const figures = await assertPushedOnce(s.pushes, s.settled, s.expected, s.leader);
    const successorTab = s.pages.indexOf(/** @type {Page} */ (s.others[s.successor]));
    const later = s.pushes.slice(s.stoppedAt).filter((p) => p.answer);
    assert.ok(later.length > 0 && later.every((p) => p.tab === successorTab), "only the tab that took over pushes");
    assert.deepEqual(s.errors, []);
    t.diagnostic(`${s.expected.size} events from ${TABS} tabs; ${JSON.stringify(figures)}`);
  } finally {
    browsers.delete(s.browser);
    await s.browser.close();
  }
});

test("the syncing tab freezes mid-way: it lets go of sync, another tab takes over; resumed, it pushes nothing", { timeout: 180_000 }, async (t) => {
  const s = await scenario("freeze");
  try {
    await assertConverged(s.store, s.expected, s.others);
    const successorTab = s.pages.indexOf(/** @type {Page} */ (s.others[s.successor]));
    // Back on the network, then thawed: its old sync client must stay quiet, and it queues
    // for the lock behind the tab that syncs now.
    await s.network.reconnect();
    const resumedAt = s.pushes.length;
    assert.deepEqual(s.pushes.slice(s.stoppedAt).filter((p) => p.tab === s.leader), [], "the frozen tab sends nothing");
    // Frozen long enough for its ticker to tell (the other tabs' work above mostly takes longer).
    const left = s.frozenAt + FROZEN_FOR - Date.now();
    if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
    await setLifecycle(s.network.cdp, "active");
    // It really was frozen: it saw `freeze`, then `resume`, and its ticker stood still in
    // between, for long enough that a running tab would have ticked many times.
    const lifecycle = await eventually(
      () =>
        s.stopped.evaluate(() => {
          // @ts-expect-error: set by watchLifecycle
          const state = window.lifecycleTest;
          return /** @type {{ type: string, ticks: number, at: number }[]} */ ([...state.events]);
        }),
      (events) => events.length >= 2,
      { ...WAIT, what: "the thawed tab's resume event" },
    );
    assert.deepEqual(lifecycle.map((e) => e.type), ["freeze", "resume"]);
    const [frozen, resumed] = lifecycle;
    assert.ok(frozen && resumed);
    // (Half of it, at least, by the page's clock: the page and the test read time apart.)
    assert.ok(resumed.at - frozen.at >= FROZEN_FOR / 2, `frozen for ${resumed.at - frozen.at} ms: long enough to tell`);
    assert.ok(resumed.ticks - frozen.ticks <= 1, `the frozen tab ticked ${resumed.ticks - frozen.ticks} times`);
    await assertConverged(s.store, s.expected, s.pages);
    assert.equal(await theLeader(s.pages, "one syncing tab after the thaw"), successorTab);
    // One more event from the thawed tab: the syncing tab pushes it, the thawed one does not.
    const extra = eventId("fffffffe", s.leader, 0);
    await s.stopped.evaluate(async (id) => {
      const store = window.annalsStore;
      if (!store) throw new Error("window.annalsStore is not set");
      await store.append({ id, stream: `todo-${id}`, type: "TodoAdded", data: { id, title: id } });
    }, extra);
    s.expected.add(extra);
    await assertConverged(s.store, s.expected, s.pages);
    const figures = await assertPushedOnce(s.pushes, s.settled, s.expected, s.leader);
    const after = s.pushes.slice(resumedAt);
    assert.deepEqual(after.filter((p) => p.tab === s.leader), [], "the thawed tab pushes nothing");
    assert.ok(after.some((p) => p.ids.includes(extra)), "the syncing tab pushed the thawed tab's event");
    assert.deepEqual(s.errors, []);
    const freeze = { frozenMs: resumed.at - frozen.at, ticksWhileFrozen: resumed.ticks - frozen.ticks };
    t.diagnostic(`${s.expected.size} events from ${TABS} tabs; ${JSON.stringify({ ...figures, ...freeze })}`);
  } finally {
    browsers.delete(s.browser);
    await s.browser.close();
  }
});
