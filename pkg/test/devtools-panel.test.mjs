// annals/devtools' panel in a jsdom, driven through its test ids like a user, over a fake
// store that can hold a million events without folding them (its states are formulas of the
// position), so these tests check the panel itself: the shadow root, the virtualised
// timeline, filter, travel, what-if, freeze, bundles, divergence and rejected events.
import "./dom.mjs";

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { mountDevtools } from "annals/devtools";

const DEBUG = Symbol.for("annals.debug");
const T0 = Date.UTC(2026, 11, 7, 12, 0, 0);

/** The made-up event at `position`: streams cart-0..cart-99, every tenth a CheckedOut. */
function generated(position) {
  return {
    id: `00000000-0000-7000-8000-${String(position).padStart(12, "0")}`,
    position,
    stream: `cart-${position % 100}`,
    version: Math.ceil(position / 100),
    type: position % 10 === 0 ? "CheckedOut" : "ItemAdded",
    data: { sku: `sku-${position}` },
    time: T0 + position * 1000,
    origin: "client-aaaaaaaa-1111",
    pending: false,
  };
}

/**
 * What the panel needs of a store, over `size` generated events (plus appended ones).
 * States: `count` is the number of events folded; `cart` is `{ count, last }`. `calls`
 * records what the panel asked.
 */
function fakeStore({ size = 0, name = "shop", differentFrom = null, tabs = [], retainedFrom = 1 } = {}) {
  const appended = [];
  const listeners = new Map();
  const calls = { stateAt: [], freeze: [], unfreeze: 0, exportBundle: 0, openBundle: [], range: 0 };
  let frozenAt;
  const head = () => size + appended.length;
  const eventAt = (p) => (p <= size ? generated(p) : appended[p - size - 1]);
  const stateAt = (projection, position, skip = []) => {
    const skipped = skip.filter((id) => {
      const p = Number(id.slice(-12));
      return p <= position;
    }).length;
    const count = position - skipped;
    if (projection === "count") return count;
    return { count, last: position > 0 ? eventAt(position).type : null, skipped };
  };
  const fingerprint = (projection, p) => (differentFrom !== null && p >= differentFrom ? `bad-${p}` : `fp-${projection}-${p}`);
  const emit = (event, ...args) => {
    for (const listener of listeners.get(event) ?? []) listener(...args);
  };
  const store = {
    name,
    get head() {
      return head();
    },
    get confirmedHead() {
      return head();
    },
    closed: false,
    syncStatus: { online: false, syncing: false, pending: 0, lastPulled: 0, lastError: null, lastErrorCode: null, error: null, leader: false },
    get frozenAt() {
      return frozenAt;
    },
    get(projection) {
      return stateAt(projection, frozenAt ?? head());
    },
    async stateAt(projection, position, options) {
      calls.stateAt.push({ projection, position, skip: options?.skip ?? [] });
      return stateAt(projection, position, options?.skip ?? []);
    },
    async freeze(position) {
      calls.freeze.push(position);
      frozenAt = position;
      emit("frozen", position);
    },
    unfreeze() {
      calls.unfreeze += 1;
      frozenAt = undefined;
      emit("frozen", undefined);
    },
    async exportBundle() {
      calls.exportBundle += 1;
      return `{"format":"annals-bundle"}\n`;
    },
    async rejected() {
      return [{ event: { id: "r-1", stream: "cart-1", type: "ItemAdded", data: {} }, reason: "WRONG_EXPECTED_VERSION", actualVersion: 3 }];
    },
    on(event, listener) {
      if (!listeners.has(event)) listeners.set(event, new Set());
      listeners.get(event).add(listener);
      return () => listeners.get(event).delete(listener);
    },
    async close() {
      store.closed = true;
    },
    /** Appends `n` events the way a store announces them. */
    add(n) {
      const previousHead = head();
      const events = [];
      for (let i = 0; i < n; i++) {
        const e = { ...generated(head() + 1), type: "Live", position: head() + 1 };
        appended.push(e);
        events.push(e);
      }
      emit("change", { previousHead, head: head(), events, confirmedHead: head(), rebased: false, reset: false });
    },
    emit,
    listenerCount: () => [...listeners.values()].reduce((n, set) => n + set.size, 0),
    calls,
  };
  store[DEBUG] = {
    synced: false,
    projections: () => [
      { name: "cart", version: 2 },
      { name: "count", version: 1 },
    ],
    range(after, to) {
      calls.range += 1;
      if (after + 1 < retainedFrom && to > after) {
        // A store cut by retention reads nothing below what it keeps (as the core refuses).
        const kept = `positions ${retainedFrom} to ${head()}`;
        throw Object.assign(new Error(`a read reaches below the retained range: this replica keeps ${kept}`), {
          code: "NOT_RETAINED",
          retainedFrom,
        });
      }
      const out = [];
      for (let p = after + 1; p <= Math.min(to, head()); p++) out.push(eventAt(p));
      return out;
    },
    whenComplete: async () => {},
    fingerprints: async (projection, positions) => positions.map((p) => fingerprint(projection, p)),
    tabFingerprints: async (projection, positions) =>
      tabs.map((tab) => ({ tab: tab.id, head: head(), fingerprints: positions.map((p) => tab.fingerprint(projection, p)) })),
    serverReplica: async () => {
      throw Object.assign(new Error("this store does not sync"), { code: "INVALID_ARGUMENT" });
    },
    openBundle: async (bundle) => {
      calls.openBundle.push(bundle);
      return {
        store: fakeStore({ size: 5, name: "their-shop" }),
        header: {
          format: "annals-bundle",
          formatVersion: 1,
          annals: "0.1.0",
          store: "their-shop",
          exportedAt: T0,
          events: 5,
          confirmedHead: 5,
          projections: [{ name: "cart", version: 1 }],
          fingerprintEvery: 1,
          fingerprints: {},
        },
        differences: [{ projection: "cart", kind: "version", message: "the bundle has cart v1, this app v2" }],
      };
    },
    checkpointStats: () => ({ count: 0, bytes: 0, budgetBytes: 0 }),
  };
  return store;
}

/** Lets animation frames, debounced filters and pending promises run. */
const settle = (ms = 30) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition, what, ms = 3000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await settle(10);
  }
}

let mounted = [];
function mount(store, element) {
  const devtools = mountDevtools(store, element);
  mounted.push(devtools);
  const root = document.querySelector("[data-annals-devtools]").shadowRoot;
  const $ = (id) => root.querySelector(`[data-testid="${id}"]`);
  const $$ = (id) => [...root.querySelectorAll(`[data-testid="${id}"]`)];
  return { devtools, root, $, $$ };
}

afterEach(() => {
  for (const devtools of mounted) devtools.unmount();
  mounted = [];
  document.body.innerHTML = "";
});

function type(input, value) {
  input.value = value;
  input.dispatchEvent(new window.Event("input", { bubbles: true }));
  input.dispatchEvent(new window.Event("change", { bubbles: true }));
}

test("docks in a shadow root at the end of the page; unmount removes it and stops listening", async () => {
  const store = fakeStore({ size: 10 });
  const before = document.head.innerHTML;
  const { devtools, root, $ } = mount(store);
  const host = document.body.lastElementChild;
  assert.equal(host.getAttribute("data-testid"), "devtools-host");
  assert.ok(host.classList.contains("docked"));
  assert.ok(root.querySelector("style").textContent.includes(":host"), "the styles live in the shadow root");
  assert.equal(document.head.innerHTML, before, "nothing is added to the page's head");
  assert.equal(document.querySelectorAll("style").length, 0, "no style reaches the page");
  assert.ok($("devtools"));
  await settle();
  assert.ok(store.listenerCount() > 0);
  devtools.unmount();
  assert.equal(document.querySelector("[data-annals-devtools]"), null);
  assert.equal(store.listenerCount(), 0, "every store listener is removed");
});

test("mounts inside a given element instead of docking", async () => {
  const store = fakeStore({ size: 3 });
  const box = document.createElement("div");
  document.body.append(box);
  const { $ } = mount(store, box);
  assert.equal(box.firstElementChild.getAttribute("data-testid"), "devtools-host");
  assert.ok(box.firstElementChild.classList.contains("embedded"));
  assert.equal($("devtools-close"), null, "an embedded panel has no close or minimise button");
});

test("a million-event timeline renders a bounded number of rows, the newest in view, and follows the log live", async () => {
  const store = fakeStore({ size: 1_000_000 });
  const { $, $$ } = mount(store);
  await settle();
  const rows = $$("devtools-row");
  assert.ok(rows.length > 5 && rows.length <= 60, `${rows.length} rows in the DOM`);
  assert.equal($("devtools-timeline-count").textContent, "1,000,000 events");
  const positions = rows.map((row) => Number(row.dataset.position));
  assert.equal(Math.max(...positions), 1_000_000, "following the log: the newest event is drawn");
  const last = rows.find((row) => row.dataset.position === "1000000");
  assert.match(last.textContent, /cart-0/);
  assert.match(last.textContent, /CheckedOut/);
  assert.match(last.textContent, /confirmed/);
  assert.ok(last.classList.contains("selected"), "the head is selected");
  assert.ok(store.calls.range < 10, `${store.calls.range} range reads: only the visible rows were read`);

  store.add(3);
  await settle();
  assert.equal($("devtools-timeline-count").textContent, "1,000,003 events");
  assert.ok($$("devtools-row").some((row) => row.dataset.position === "1000003" && /Live/.test(row.textContent)));
  assert.ok($$("devtools-row").length <= 60);
  assert.equal($("devtools-position").value, "1000003", "the selection follows the head");

  // Scrolling to the top draws the first events with the same number of rows.
  const viewport = $("devtools-timeline");
  viewport.scrollTop = 0;
  viewport.dispatchEvent(new window.Event("scroll"));
  await settle();
  const top = $$("devtools-row").map((row) => Number(row.dataset.position));
  assert.equal(Math.min(...top), 1);
  assert.ok(top.length <= 60);
});

test("rows below what retention keeps show the range kept, read once, instead of loading forever", async () => {
  const store = fakeStore({ size: 5000, retainedFrom: 4001 });
  const { root, $, $$ } = mount(store);
  await settle();
  assert.ok($$("devtools-row").some((row) => row.dataset.position === "5000"), "the kept events are drawn");
  const viewport = $("devtools-timeline");
  viewport.scrollTop = 0;
  viewport.dispatchEvent(new window.Event("scroll"));
  await settle();
  const reads = store.calls.range;
  await settle(50);
  assert.equal(store.calls.range, reads, "no read again and again");
  const empty = root.querySelector(".empty");
  assert.equal(empty.hidden, false);
  assert.match(empty.textContent, /positions 4001 to 5000/);
  // A filter looks through the kept events only.
  type($("devtools-filter-type"), "checked");
  await until(() => $("devtools-timeline-count").textContent === "100 of 5,000", "100 matches among the kept");
});

test("the filter narrows the timeline by stream, type and text, counting matches", async () => {
  const store = fakeStore({ size: 5000 });
  const { $, $$ } = mount(store);
  await settle();
  type($("devtools-filter-stream"), "cart-7");
  type($("devtools-filter-type"), "checked");
  // Streams containing "cart-7" (cart-7, cart-70..79) and CheckedOut (every tenth position): cart-70 only.
  await until(() => $("devtools-timeline-count").textContent === "50 of 5,000", "50 matches");
  const rows = $$("devtools-row");
  assert.ok(rows.length > 0);
  for (const row of rows) assert.match(row.textContent, /cart-70.*CheckedOut/);
  type($("devtools-filter-type"), "");
  type($("devtools-filter-stream"), "no-such-stream");
  // While scanning the count reads "0 of 5,000 · searching N%"; then the scan is over.
  await until(() => $("devtools-timeline-count").textContent === "0 of 5,000", "no match");
  assert.equal($$("devtools-row").length, 0);
  assert.match($("devtools-timeline").textContent, /no event matches the filter/);
  type($("devtools-filter-stream"), "");
  type($("devtools-filter-text"), "sku-4242");
  await until(() => $("devtools-timeline-count").textContent === "1 of 5,000", "the one event with that data");
  assert.equal($$("devtools-row")[0].dataset.position, "4242");
  // Events that arrive while filtering are matched too.
  type($("devtools-filter-text"), "");
  type($("devtools-filter-type"), "live");
  await until(() => /^0 of/.test($("devtools-timeline-count").textContent), "no Live event yet");
  store.add(2);
  await until(() => $("devtools-timeline-count").textContent === "2 of 5,002", "the two live events");
});

test("travel: slider, steps, first/last and a typed position show the state there and its diff", async () => {
  const store = fakeStore({ size: 100 });
  const { $, $$ } = mount(store);
  await settle();
  assert.equal($("devtools-projection").value, "cart");
  assert.match($("devtools-state-meta").textContent, /cart after #100/);
  assert.match($("devtools-json").textContent, /count: ?100/);

  $("devtools-prev").click();
  await settle();
  assert.equal($("devtools-position").value, "99");
  assert.match($("devtools-json").textContent, /count: ?99/);
  assert.deepEqual(store.calls.stateAt.at(-1), { projection: "cart", position: 99, skip: [] });
  assert.ok($$("devtools-row").find((row) => row.dataset.position === "99").classList.contains("selected"));

  $("devtools-first").click();
  await settle();
  assert.equal($("devtools-slider").value, "0");
  assert.match($("devtools-json").textContent, /last: ?null/);

  type($("devtools-position"), "42");
  await settle();
  assert.equal($("devtools-slider").value, "42");
  assert.match($("devtools-json").textContent, /count: ?42/);

  type($("devtools-slider"), "60");
  await settle();
  assert.equal($("devtools-position").value, "60");

  $("devtools-next").click();
  await settle();
  $("devtools-tab-diff").click();
  await settle();
  assert.match($("devtools-state-meta").textContent, /#60 → #61/);
  const changed = $$("devtools-diff-changed").map((e) => e.textContent);
  assert.ok(changed.some((text) => /count/.test(text) && /60/.test(text) && /61/.test(text)), changed.join(" | "));
  assert.ok(changed.some((text) => /last/.test(text) && /CheckedOut/.test(text)), "event 60 was a CheckedOut, 61 an ItemAdded");

  // Two picked positions.
  const mode = $("devtools-diff-mode");
  mode.value = "pair";
  mode.dispatchEvent(new window.Event("change"));
  type($("devtools-diff-a"), "10");
  type($("devtools-diff-b"), "20");
  await settle();
  assert.match($("devtools-state-meta").textContent, /#10 → #20/);

  $("devtools-tab-event").click();
  await settle();
  assert.match($("devtools-event").textContent, /sku-61/);

  $("devtools-last").click();
  await settle();
  assert.equal($("devtools-position").value, "100");

  // Another projection.
  $("devtools-tab-state").click();
  const projection = $("devtools-projection");
  projection.value = "count";
  projection.dispatchEvent(new window.Event("change"));
  await settle();
  assert.match($("devtools-state-meta").textContent, /^count after #100/);
  assert.equal($("devtools-json").textContent.trim(), "100");
});

test("clicking a row selects its position", async () => {
  const store = fakeStore({ size: 30 });
  const { $, $$ } = mount(store);
  await settle();
  $$("devtools-row").find((row) => row.dataset.position === "25").click();
  await settle();
  assert.equal($("devtools-position").value, "25");
  assert.equal($("devtools-follow").getAttribute("aria-pressed"), "false", "a picked position stops following the head");
});

test("what-if: unchecking events refolds without them, with a badge; one click restores", async () => {
  const store = fakeStore({ size: 20 });
  const { $, $$ } = mount(store);
  await settle();
  assert.ok($("devtools-whatif-badge").hasAttribute("hidden"));
  const toggleAt = (p) => $$("devtools-row").find((row) => row.dataset.position === String(p)).querySelector('[data-testid="devtools-row-toggle"]');
  for (const p of [5, 12]) {
    const toggle = toggleAt(p);
    assert.equal(toggle.checked, true);
    toggle.click();
  }
  await settle();
  assert.equal($("devtools-whatif-badge").hasAttribute("hidden"), false);
  assert.match($("devtools-whatif-badge").textContent, /what-if: 2 events off/);
  assert.deepEqual(store.calls.stateAt.at(-1).skip, [generated(5).id, generated(12).id]);
  assert.match($("devtools-json").textContent, /count: ?18/);
  assert.ok(toggleAt(5).closest('[data-testid="devtools-row"]').classList.contains("off"));
  assert.equal($$("devtools-row").length >= 20, true, "the log keeps the events switched off");

  $("devtools-whatif-restore").click();
  await settle();
  assert.ok($("devtools-whatif-badge").hasAttribute("hidden"));
  assert.equal(toggleAt(5).checked, true);
  assert.match($("devtools-json").textContent, /count: ?20/);
});

test("freeze shows the app at the selected position; the badge returns to the present; freezes made elsewhere show", async () => {
  const store = fakeStore({ size: 50 });
  const { $ } = mount(store);
  await settle();
  type($("devtools-position"), "30");
  await settle();
  assert.match($("devtools-freeze").textContent, /#30/);
  $("devtools-freeze").click();
  await settle();
  assert.deepEqual(store.calls.freeze, [30]);
  assert.equal($("devtools-frozen-badge").hasAttribute("hidden"), false);
  assert.match($("devtools-frozen-badge").textContent, /frozen at #30/);
  $("devtools-unfreeze").click();
  await settle();
  assert.equal(store.calls.unfreeze, 1);
  assert.ok($("devtools-frozen-badge").hasAttribute("hidden"));

  await store.freeze(7);
  await settle();
  assert.match($("devtools-frozen-badge").textContent, /frozen at #7/);
});

test("export saves a bundle file; import opens one as another source with its differences", async () => {
  const store = fakeStore({ size: 10 });
  const created = [];
  URL.createObjectURL = (blob) => {
    created.push(blob);
    return "blob:bundle";
  };
  URL.revokeObjectURL = () => {};
  const { $, $$ } = mount(store);
  await settle();
  $("devtools-export").click();
  await until(() => $("devtools-export-done"), "the export notice");
  assert.equal(store.calls.exportBundle, 1);
  assert.equal(created.length, 1);
  const link = $("devtools-bundle-link");
  assert.match(link.getAttribute("download"), /^shop-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.annals\.ndjson$/);

  const file = new window.File(['{"format":"annals-bundle"}\n'], "bug-1234.annals.ndjson");
  const input = $("devtools-import");
  Object.defineProperty(input, "files", { value: [file], configurable: true });
  input.dispatchEvent(new window.Event("change"));
  await until(() => $("devtools-bundle-summary"), "the bundle summary");
  assert.equal(store.calls.openBundle[0], file);
  const source = $("devtools-source");
  assert.deepEqual([...source.options].map((o) => o.textContent), ["this app (shop)", "bundle bug-1234.annals.ndjson"]);
  assert.equal(source.value, "1");
  assert.match($("devtools-bundle-summary").textContent, /their-shop/);
  assert.match($("devtools-bundle-difference").textContent, /version.*cart v1, this app v2/);
  await settle();
  assert.equal($("devtools-timeline-count").textContent, "5 events", "the timeline browses the bundle");
  assert.equal($("devtools-freeze"), null, "a bundle cannot freeze the app");
  assert.equal($("devtools-export").disabled, true);

  source.value = "0";
  source.dispatchEvent(new window.Event("change"));
  await settle();
  assert.equal($("devtools-timeline-count").textContent, "10 events");
  assert.ok($("devtools-notice").hasAttribute("hidden"));
  assert.equal($$("devtools-freeze").length, 1);
});

test("divergence: a tab that folds differently is bisected to its first differing event; jump selects it", async () => {
  const store = fakeStore({
    size: 10_000,
    tabs: [{ id: "tab-bbbbbbbb-2222", fingerprint: (projection, p) => (projection === "cart" && p >= 4321 ? `odd-${p}` : `fp-${projection}-${p}`) }],
  });
  const { $, $$ } = mount(store);
  await settle();
  $("devtools-tab-divergence").click();
  $("devtools-divergence-run").click();
  await until(() => /found/.test($("devtools-divergence-status").textContent), "the comparison");
  const results = $$("devtools-divergence-result");
  const differs = results.find((r) => r.dataset.projection === "cart");
  assert.equal(differs.dataset.position, "4321");
  assert.match(differs.textContent, /ItemAdded on cart-21/);
  const same = results.find((r) => r.dataset.projection === "count");
  assert.match(same.textContent, /same/);
  assert.match($("devtools-divergence").textContent, /does not sync/);
  differs.querySelector('[data-testid="devtools-divergence-jump"]').click();
  await settle();
  assert.equal($("devtools-position").value, "4321");
});

test("events the server rejected are listed apart, marked rejected, as they come", async () => {
  const store = fakeStore({ size: 3 });
  const { $, $$ } = mount(store);
  await until(() => $$("devtools-rejected-row").length === 1, "the stored rejection");
  assert.match($("devtools-rejected-toggle").textContent, /Rejected by the server \(1\)/);
  assert.match($$("devtools-rejected-row")[0].textContent, /WRONG_EXPECTED_VERSION.*server at v3.*rejected/);
  store.emit("rejected", { id: "r-2", stream: "cart-9", type: "CheckedOut", data: {} }, "REFUSED", undefined);
  await settle();
  assert.equal($$("devtools-rejected-row").length, 2);
  assert.match($$("devtools-rejected-row")[0].textContent, /cart-9.*CheckedOut.*REFUSED/, "the latest first");
});

test("the JSON tree renders children only when expanded, big objects a page at a time", async () => {
  const store = fakeStore({ size: 1 });
  const big = Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`k${i}`, { nested: { deep: i } }]));
  store.get = () => big;
  const { $, $$ } = mount(store);
  await settle();
  const tree = $("devtools-json");
  assert.equal(tree.querySelectorAll(".jn").length, 101, "the root and its first 100 children");
  assert.match($("devtools-json-more").textContent, /show 100 more \(100 of 1,000\)/);
  $("devtools-json-more").click();
  assert.equal(tree.querySelectorAll(".jn").length, 201);
  const firstChildToggle = $$("devtools-json-toggle")[1];
  assert.equal(firstChildToggle.getAttribute("aria-expanded"), "false");
  firstChildToggle.click();
  assert.equal(firstChildToggle.getAttribute("aria-expanded"), "true");
  assert.equal(tree.querySelectorAll(".jn").length, 202, "expanding k0 renders its one child");
});

test("nodes opened in the state tree stay open as new events re-render it", async () => {
  const store = fakeStore({ size: 2 });
  store.get = () => ({ carts: { open: { items: store.head } }, total: store.head });
  const { $, $$ } = mount(store);
  await settle();
  const carts = () => $("devtools-json").querySelector(`.jn[data-path='["carts"]']`);
  assert.equal(carts().querySelector('[data-testid="devtools-json-toggle"]').getAttribute("aria-expanded"), "false");
  carts().querySelector(".jh").click();
  carts().querySelector(`.jn[data-path='["carts","open"]'] .jh`).click();
  store.add(1);
  await until(() => /total: ?3/.test($("devtools-json").textContent), "the state after the new event");
  assert.equal(carts().querySelector('[data-testid="devtools-json-toggle"]').getAttribute("aria-expanded"), "true");
  assert.match(carts().textContent, /items: ?3/, "the nested node is open and shows the new value");
  assert.ok($$("devtools-json-toggle").length >= 3);
});

test("arrow keys in the timeline move the selection", async () => {
  const store = fakeStore({ size: 10 });
  const { $ } = mount(store);
  await settle();
  const viewport = $("devtools-timeline");
  viewport.dispatchEvent(new window.KeyboardEvent("keydown", { key: "ArrowUp", bubbles: true }));
  viewport.dispatchEvent(new window.KeyboardEvent("keydown", { key: "ArrowUp", bubbles: true }));
  await settle();
  assert.equal($("devtools-position").value, "8");
  viewport.dispatchEvent(new window.KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
  await settle();
  assert.equal($("devtools-position").value, "9");
  assert.equal($("devtools-follow").getAttribute("aria-pressed"), "false");
  $("devtools-follow").click();
  await settle();
  assert.equal($("devtools-position").value, "10", "following the head again jumps to it");
});

test("divergence against the server's replica: first differing event, the server's event there, the states' diff; the replica is closed", async () => {
  const store = fakeStore({ size: 300 });
  const replica = fakeStore({ size: 300, differentFrom: 77 });
  // The server ordered another event at 77, and folds it into another cart.
  const range = replica[DEBUG].range;
  replica[DEBUG].range = (after, to) => range(after, to).map((e) => (e.position === 77 ? { ...e, id: "server-77", type: "CouponApplied" } : e));
  replica.stateAt = async (projection, position) => (projection === "count" ? position : { count: position, last: "CouponApplied", skipped: 0 });
  store.syncStatus = { ...store.syncStatus, online: true, leader: true };
  store[DEBUG].synced = true;
  store[DEBUG].serverReplica = async () => replica;
  const { $, $$ } = mount(store);
  await settle();
  assert.match($("devtools-stats").textContent, /online/, "a syncing store shows its connection");
  $("devtools-tab-divergence").click();
  $("devtools-divergence-run").click();
  await until(() => /found/.test($("devtools-divergence-status").textContent), "the comparison");
  const server = $$("devtools-divergence-result").filter((r) => r.dataset.peer === "server");
  assert.deepEqual(server.map((r) => [r.dataset.projection, r.dataset.position]), [
    ["cart", "77"],
    ["count", "77"],
  ]);
  const cart = server[0];
  assert.match(cart.textContent, /first differs at #77 — ItemAdded on cart-77/);
  assert.match(cart.textContent, /the server has another event there: CouponApplied/);
  assert.match(cart.querySelector('[data-testid="devtools-diff"]').textContent, /last.*ItemAdded.*CouponApplied/);
  assert.equal(replica.closed, true, "the replica is closed after the search");
});

test("reading older events while the log grows: the timeline stays where the user scrolled", async () => {
  const store = fakeStore({ size: 5000 });
  const { $, $$ } = mount(store);
  await settle();
  const viewport = $("devtools-timeline");
  viewport.scrollTop = 0;
  viewport.dispatchEvent(new window.Event("scroll"));
  await settle();
  store.add(5);
  await settle();
  assert.equal(viewport.scrollTop, 0);
  assert.equal(Math.min(...$$("devtools-row").map((row) => Number(row.dataset.position))), 1);
  assert.equal($("devtools-position").value, "5005", "the selection still follows the head");
  // Asking for the head again scrolls back to the end.
  $("devtools-follow").click();
  $("devtools-follow").click();
  await settle();
  assert.ok($$("devtools-row").some((row) => row.dataset.position === "5005"));
});

test("the state line shows the checkpoints' memory; copy JSON puts the state shown on the clipboard", async () => {
  const store = fakeStore({ size: 12 });
  store[DEBUG].checkpointStats = () => ({ count: 3, bytes: 1536, budgetBytes: 64 * 1024 * 1024 });
  let copied;
  Object.defineProperty(window.navigator, "clipboard", { value: { writeText: async (text) => (copied = text) }, configurable: true });
  const { $ } = mount(store);
  await settle();
  assert.equal($("devtools-checkpoints").textContent, "checkpoints 3 · 2 KB of 64.0 MB");
  $("devtools-copy").click();
  await until(() => copied, "the copy");
  assert.deepEqual(JSON.parse(copied), { count: 12, last: "ItemAdded", skipped: 0 });
  assert.equal($("devtools-copy").textContent, "copied ✓");
});
