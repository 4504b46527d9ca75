// annals/devtools on real memory stores (in a jsdom): the panel's what-if, freeze, bundle
// and divergence controls do what they say to an actual store, and it follows the log live.
import "./dom.mjs";

import assert from "node:assert/strict";
// Node's File, a Blob the store reads (jsdom's is its own class); a browser's input gives the same kind.
import { File } from "node:buffer";
import { afterEach, test } from "node:test";

import { openStore } from "annals";
import { mountDevtools } from "annals/devtools";

import { makeEvents, openTestStore, rejectsWith, uniqueName } from "./helpers.mjs";

const settle = (ms = 30) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition, what, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await settle(10);
  }
}

const open = [];
function mount(store) {
  const devtools = mountDevtools(store);
  open.push({ devtools, store });
  const root = document.querySelector("[data-annals-devtools]").shadowRoot;
  const $ = (id) => root.querySelector(`[data-testid="${id}"]`);
  const $$ = (id) => [...root.querySelectorAll(`[data-testid="${id}"]`)];
  const row = (position) => $$("devtools-row").find((r) => r.dataset.position === String(position));
  return { $, $$, row };
}

afterEach(async () => {
  for (const { devtools, store } of open.splice(0)) {
    devtools.unmount();
    if (!store.closed) await store.close();
  }
  document.body.innerHTML = "";
});

function select(element, value) {
  element.value = value;
  element.dispatchEvent(new window.Event("change"));
}

test("the timeline lists the store's events and shows new ones as they are appended", async () => {
  const store = await openTestStore();
  await store.appendMany(makeEvents(5));
  const { $, row } = mount(store);
  await settle();
  assert.equal($("devtools-timeline-count").textContent, "5 events");
  assert.match(row(3).textContent, /s-2.*Counted/);
  await store.append({ stream: "orders", type: "OrderPlaced", data: { total: 12 } });
  await until(() => row(6), "the appended event's row");
  assert.match(row(6).textContent, /orders.*OrderPlaced.*confirmed/);
  assert.equal($("devtools-timeline-count").textContent, "6 events");
});

test("switching an event off refolds the state without it; the log keeps it; restore folds it back", async () => {
  const store = await openTestStore();
  await store.appendMany([
    { stream: "a", type: "T" },
    { stream: "b", type: "T" },
    { stream: "a", type: "T" },
  ]);
  const { $, row } = mount(store);
  await settle();
  select($("devtools-projection"), "byStream");
  await until(() => /"?a"?: ?2/.test($("devtools-json").textContent), "the present state");
  row(2).querySelector('[data-testid="devtools-row-toggle"]').click();
  await until(() => /^\{1 key\}/.test($("devtools-json").textContent), "the state without stream b");
  assert.doesNotMatch($("devtools-json").textContent, /b: ?1/);
  assert.match($("devtools-whatif-badge").textContent, /what-if: 1 event off/);
  assert.equal(store.head, 3, "the log keeps the event");
  assert.deepEqual(store.get("byStream"), { a: 2, b: 1 }, "the app's state is untouched");
  $("devtools-whatif-restore").click();
  await until(() => /b: ?1/.test($("devtools-json").textContent), "stream b back");
});

test("'show the app here' freezes the store at the selected position; the badge unfreezes it", async () => {
  const store = await openTestStore();
  await store.appendMany(makeEvents(10));
  const { $ } = mount(store);
  await settle();
  const input = $("devtools-position");
  input.value = "4";
  input.dispatchEvent(new window.Event("change"));
  await settle();
  $("devtools-freeze").click();
  await until(() => store.frozenAt === 4, "the freeze");
  assert.equal(store.get("count"), 4, "the app sees the past");
  await rejectsWith(store.append({ stream: "x", type: "T" }), "FROZEN");
  assert.match($("devtools-frozen-badge").textContent, /frozen at #4/);
  $("devtools-unfreeze").click();
  assert.equal(store.frozenAt, undefined);
  assert.equal(store.get("count"), 10);
  await settle();
  assert.ok($("devtools-frozen-badge").hasAttribute("hidden"));

  // A freeze made elsewhere (the app, the Redux DevTools bridge) shows too.
  await store.freeze(2);
  await settle();
  assert.match($("devtools-frozen-badge").textContent, /frozen at #2/);
  store.unfreeze();
});

test("an exported bundle opens in the panel as its own source, reproducing the same states", async () => {
  const store = await openTestStore();
  await store.appendMany(makeEvents(12, { streams: 4 }));
  let exported;
  URL.createObjectURL = (blob) => {
    exported = blob;
    return "blob:annals-bundle";
  };
  URL.revokeObjectURL = () => {};
  const { $, $$ } = mount(store);
  await settle();
  $("devtools-export").click();
  await until(() => exported, "the exported file");
  const text = await exported.text();
  assert.equal(JSON.parse(text.split("\n")[0]).format, "annals-bundle");

  const input = $("devtools-import");
  Object.defineProperty(input, "files", { value: [new File([text], "bug.annals.ndjson")], configurable: true });
  input.dispatchEvent(new window.Event("change"));
  await until(() => $("devtools-bundle-summary"), "the opened bundle");
  assert.ok($("devtools-bundle-same"), "the same projections reproduce every fingerprint");
  assert.equal($("devtools-source").selectedOptions[0].textContent, "bundle bug.annals.ndjson");
  await settle();
  assert.equal($("devtools-timeline-count").textContent, "12 events");
  select($("devtools-projection"), "byStream");
  await until(() => /s-3: ?3/.test($("devtools-json").textContent), "the bundle's state");
  assert.equal($$("devtools-freeze").length, 0);
});

test("a bundle folded by other projections says how it differs", async () => {
  const store = await openTestStore();
  await store.appendMany(makeEvents(6));
  const text = await store.exportBundle();
  // The same store name, another reducer for `count`: its fingerprints differ.
  const other = await openStore({
    name: uniqueName(),
    storage: "memory",
    projections: { count: { initial: 0, apply: (n) => n + 2 } },
  });
  const { $, $$ } = mount(other);
  await settle();
  const input = $("devtools-import");
  Object.defineProperty(input, "files", { value: [new File([text], "theirs.ndjson")], configurable: true });
  input.dispatchEvent(new window.Event("change"));
  await until(() => $("devtools-bundle-summary"), "the opened bundle");
  const differences = $$("devtools-bundle-difference").map((d) => d.textContent);
  assert.ok(differences.some((d) => /missing.*byStream/.test(d)), differences.join(" | "));
  assert.ok(differences.some((d) => /fingerprint.*count/.test(d)), differences.join(" | "));
  await store.close();
});

test("divergence on a memory store: no other tab, no server, nothing found", async () => {
  const store = await openTestStore();
  await store.appendMany(makeEvents(20));
  const { $ } = mount(store);
  await settle();
  $("devtools-tab-divergence").click();
  $("devtools-divergence-run").click();
  await until(() => !$("devtools-divergence-run").disabled && $("devtools-divergence-status").textContent !== "comparing…", "the comparison");
  assert.equal($("devtools-divergence-status").textContent, "nothing to compare with");
  assert.match($("devtools-divergence").textContent, /no other tab answered/);
  assert.match($("devtools-divergence").textContent, /does not sync/);
});

test("an event appended by a command links to its whole flow: one click filters the timeline to it", async () => {
  const store = await openStore({
    name: uniqueName(),
    storage: "memory",
    projections: { count: { initial: 0, apply: (n) => n + 1 } },
    aggregates: {
      order: {
        initial: null,
        evolve: (state) => state,
        decide: (command) => [
          { type: "OrderPlaced", data: { sku: command.sku } },
          { type: "StockReserved", data: { sku: command.sku } },
        ],
      },
    },
  });
  await store.append({ stream: "noise", type: "Unrelated" });
  await store.execute("order", "order-1", { type: "Place", sku: "lamp" }, { correlationId: "flow-42" });
  await store.append({ stream: "noise", type: "Unrelated" });
  const { $, $$, row } = mount(store);
  await settle();
  row(2).click();
  $("devtools-tab-event").click();
  await until(() => $("devtools-event-flow"), "the flow link");
  assert.match($("devtools-event").textContent, /flow-42/);
  $("devtools-event-flow").click();
  assert.equal($("devtools-filter-text").value, "flow-42");
  await until(() => $("devtools-timeline-count").textContent === "2 of 4", "the flow's two events");
  assert.deepEqual(
    $$("devtools-row").map((r) => r.dataset.position),
    ["2", "3"],
  );
});
