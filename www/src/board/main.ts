// The demo: a shared board built on annals. Lists and cards are written by commands
// (aggregates decide, and may refuse), a process manager stamps cards that reach Done,
// the header shows sync (online, pending), the server's refusals show as notices, and the
// devtools panel is one click away (loaded on demand: the board's bundle holds none of it).
import "./style.css";
import { byTestId, pageStore } from "../page";
import { AnnalsError, openStore, type RejectedEvent, type SyncStatus } from "annals";
import { aggregates, stampDone, type Aggregates, type BoardCommand, type BoardStore, type CardCommand } from "./commands";
import { BOARD_STREAM, cardStream, cardsIn, isDoneTitle, newId, projections, type ActivityEntry, type AppEvent, type BoardState, type Card, type List, type States } from "./model";
import { closeDevtools, toggleDevtools } from "./devtools";
import { toast } from "./toasts";


/** `el("div", { class: "x", "data-testid": "y" }, child...)`. */
function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | undefined> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) if (value !== undefined) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

const app = byTestId<HTMLElement>("app");
const boardEl = byTestId<HTMLElement>("board");
const activityEl = byTestId<HTMLOListElement>("activity");
const devtoolsButton = byTestId<HTMLButtonElement>("open-devtools");
const frozenBanner = byTestId<HTMLElement>("frozen-banner");

const { name: storeName, syncEnabled, sync: syncOptions } = pageStore("annals-board");
byTestId("store-name").textContent = storeName;

/** `?chaos=1`: the board reducer is nondeterministic on purpose (for the divergence view). */
const chaos = new URLSearchParams(location.search).get("chaos") === "1";
byTestId("chaos-badge").hidden = !chaos;

/** The open store: replaced when the database is opened again. */
let current: BoardStore | undefined;
/** Streams with events the server has not confirmed yet (cards show "syncing"). */
let pendingStreams = new Set<string>();
/** Card titles seen, so that the log can name archived cards. */
const knownTitles = new Map<string, string>();

// ---- commands ------------------------------------------------------------------------

function showError(err: unknown): void {
  const code = err instanceof AnnalsError ? err.code : undefined;
  const message = err instanceof Error ? err.message : String(err);
  if (code === "COMMAND_REJECTED") {
    // An answer for the user, not a fault: the decider's own words ("there is already a list named …").
    toast("refused", "Command refused", message, code);
  } else if (code === "FROZEN") {
    toast("refused", "Read-only", "the devtools show the past: go back to the present to change the board", code);
  } else {
    toast("error", "Something failed", message, code);
    console.error(err);
  }
}

async function execute(
  ...args: [aggregate: "board", id: string, command: BoardCommand] | [aggregate: "card", id: string, command: CardCommand]
): Promise<boolean> {
  const store = current;
  if (!store) return false;
  try {
    if (args[0] === "board") await store.execute("board", args[1], args[2]);
    else await store.execute("card", args[1], args[2]);
    return true;
  } catch (err) {
    showError(err);
    return false;
  }
}

function listTitle(state: BoardState, id: string): string {
  return state.lists.find((list) => list.id === id)?.title ?? "?";
}

function moveCard(card: Card, to: List): Promise<boolean> {
  return execute("card", cardStream(card.id), { type: "Move", to: to.id, toTitle: to.title });
}

// ---- rendering -----------------------------------------------------------------------

/** Columns by list id, kept across renders so that what is typed in their forms stays. */
const columns = new Map<string, { root: HTMLElement; title: HTMLElement; count: HTMLElement; cards: HTMLElement }>();
let addListColumn: HTMLElement | undefined;

function column(list: List): NonNullable<ReturnType<typeof columns.get>> {
  const existing = columns.get(list.id);
  if (existing) return existing;
  const title = el("h3", { "data-testid": "list-title" });
  const count = el("span", { class: "count", "data-testid": "list-count" });
  const cards = el("div", { class: "cards", "data-testid": "cards" });
  const input = el("input", {
    "data-testid": "new-card-input",
    placeholder: "Add a card…",
    autocomplete: "off",
    "aria-label": `new card in ${list.title}`,
  });
  const form = el(
    "form",
    { class: "new-card", "data-testid": "new-card-form" },
    input,
    el("button", { type: "submit", class: "button small", "data-testid": "add-card" }, "Add"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = newId();
    const title = input.value;
    void execute("card", cardStream(id), { type: "AddCard", id, list: list.id, listTitle: list.title, title }).then(
      (ok) => {
        if (ok && input.value === title) input.value = "";
      },
    );
  });
  const root = el(
    "section",
    { class: "list", "data-testid": "list", "data-list-id": list.id },
    el("header", {}, title, count),
    cards,
    form,
  );
  // Drag a card onto a list to move it there.
  root.addEventListener("dragover", (e) => {
    if (!e.dataTransfer?.types.includes("text/x-annals-card")) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "move";
    root.classList.add("drop");
  });
  root.addEventListener("dragleave", (e) => {
    if (!root.contains(e.relatedTarget as Node | null)) root.classList.remove("drop");
  });
  root.addEventListener("drop", (e) => {
    root.classList.remove("drop");
    const id = e.dataTransfer?.getData("text/x-annals-card");
    const store = current;
    if (!id || !store) return;
    e.preventDefault();
    const card = store.get("board").cards[id];
    if (card && card.list !== list.id) void moveCard(card, list);
  });
  const made = { root, title, count, cards };
  columns.set(list.id, made);
  return made;
}

function newListColumn(): HTMLElement {
  if (addListColumn) return addListColumn;
  const input = el("input", {
    "data-testid": "new-list-input",
    placeholder: "New list…",
    autocomplete: "off",
    "aria-label": "new list",
  });
  const form = el(
    "form",
    { class: "new-list", "data-testid": "new-list-form" },
    input,
    el("button", { type: "submit", class: "button", "data-testid": "add-list" }, "Add list"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const title = input.value;
    void execute("board", BOARD_STREAM, { type: "AddList", id: newId(), title }).then((ok) => {
      if (ok && input.value === title) input.value = "";
    });
  });
  const template = el(
    "button",
    { type: "button", class: "button ghost", "data-testid": "use-template" },
    "Start with To do · Doing · Done",
  );
  template.addEventListener("click", () => {
    void execute("board", BOARD_STREAM, { type: "UseTemplate", ids: [newId(), newId(), newId()] });
  });
  const intro = el(
    "div",
    { class: "intro" },
    el("h3", {}, "An empty board"),
    el("p", {}, "Every list and card you add is a command, decided by an aggregate and written to an event log that syncs."),
  );
  addListColumn = el("section", { class: "list add-list", "data-testid": "add-list-column" }, intro, form, template);
  return addListColumn;
}

function renderCard(state: BoardState, card: Card, index: number): HTMLElement {
  const lists = state.lists;
  const at = lists.findIndex((list) => list.id === card.list);
  const pending = pendingStreams.has(cardStream(card.id));
  const title = el("p", { class: "card-title", "data-testid": "card-title" }, card.title);
  const meta = el("div", { class: "card-meta" });
  if (card.completed) {
    const when = card.completedAt === undefined ? "" : ` ${clock(card.completedAt)}`;
    meta.append(
      el(
        "span",
        { class: "badge done", "data-testid": "card-done", title: "stamped by the done-stamp process manager" },
        `✓ done${when}`,
      ),
    );
  }
  if (pending) meta.append(el("span", { class: "badge pending", "data-testid": "card-pending", title: "not confirmed by the server yet" }, "syncing"));

  const action = (testid: string, label: string, text: string, run: () => void, disabled = false) => {
    const button = el("button", { type: "button", class: "icon-button", "data-testid": testid, title: label, "aria-label": `${label}: ${card.title}` }, text);
    button.disabled = disabled;
    if (disabled) button.dataset.disabledByBoard = "true"; // stays disabled after a freeze
    button.addEventListener("click", run);
    return button;
  };
  const left = lists[at - 1];
  const right = lists[at + 1];
  const actions = el(
    "div",
    { class: "card-actions" },
    action("card-move-left", left ? `Move to ${left.title}` : "Move left", "←", () => left && void moveCard(card, left), !left),
    action("card-move-right", right ? `Move to ${right.title}` : "Move right", "→", () => right && void moveCard(card, right), !right),
    action("card-archive", "Archive", "✕", () => void execute("card", cardStream(card.id), { type: "Archive" })),
  );
  const root = el(
    "article",
    {
      class: "card",
      "data-testid": "card",
      "data-card-id": card.id,
      "data-completed": String(card.completed),
      "data-pending": String(pending),
      draggable: "true",
      style: `--i:${index}`,
    },
    title,
    meta,
    actions,
  );
  root.addEventListener("dragstart", (e) => {
    e.dataTransfer?.setData("text/x-annals-card", card.id);
    if (e.dataTransfer) e.dataTransfer.effectAllowed = "move";
    root.classList.add("dragging");
  });
  root.addEventListener("dragend", () => root.classList.remove("dragging"));
  return root;
}

function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
}

function renderBoard(store: BoardStore): void {
  const state = store.get("board");
  for (const card of Object.values(state.cards)) knownTitles.set(card.id, card.title);
  const shown: HTMLElement[] = [];
  for (const list of state.lists) {
    const col = column(list);
    const cards = cardsIn(state, list.id);
    col.title.textContent = list.title;
    col.count.textContent = String(cards.length);
    col.root.dataset.title = list.title;
    col.root.dataset.done = String(isDoneTitle(list.title));
    col.cards.replaceChildren(...cards.map((card, i) => renderCard(state, card, i)));
    if (cards.length === 0) col.cards.append(el("p", { class: "empty", "data-testid": "list-empty" }, isDoneTitle(list.title) ? "Cards moved here get stamped done." : "No cards"));
    shown.push(col.root);
  }
  // Lists only disappear when the devtools travel back before they were added.
  for (const [id, col] of columns) if (!state.lists.some((list) => list.id === id)) col.root.remove();
  const adder = newListColumn();
  const template = adder.querySelector<HTMLElement>('[data-testid="use-template"]');
  if (template) template.hidden = state.lists.length > 0;
  adder.classList.toggle("first", state.lists.length === 0);
  // Moving a focused form would blur it: only touch the DOM when the lists changed.
  const wanted = [...shown, adder];
  const same = wanted.length === boardEl.children.length && wanted.every((node, i) => boardEl.children[i] === node);
  if (!same) boardEl.replaceChildren(...wanted);
  byTestId("card-count").textContent = String(Object.keys(state.cards).length);
}

function describeEntry(state: BoardState, entry: ActivityEntry): string {
  const data = entry.data as Record<string, string>;
  const name = `“${knownTitles.get(data["id"] ?? "") ?? data["title"] ?? "a card"}”`;
  switch (entry.type) {
    case "ListAdded":
      return `list “${data["title"]}” added`;
    case "CardAdded":
      return `${name} added to ${data["listTitle"]}`;
    case "CardMoved":
      return `${name} moved to ${data["toTitle"]}`;
    case "CardCompleted":
      return `${name} stamped done by the process manager`;
    case "CardReopened":
      return `${name} reopened in ${listTitle(state, data["list"] ?? "")}`;
    case "CardArchived":
      return `${name} archived`;
    default:
      return entry.stream;
  }
}

/** The last position the event log has shown: newer entries arrive with a highlight. */
let activitySeenUpTo = 0;

function renderActivity(store: BoardStore): void {
  const { events, done, recent } = store.get("activity");
  const state = store.get("board");
  const confirmed = syncEnabled ? store.confirmedHead : Number.POSITIVE_INFINITY;
  const frozen = store.frozenAt !== undefined;
  for (const entry of recent) {
    const data = entry.data as Record<string, unknown>;
    if (entry.type === "CardAdded" && typeof data["id"] === "string" && typeof data["title"] === "string") {
      knownTitles.set(data["id"], data["title"]);
    }
  }
  const seen = activitySeenUpTo;
  activitySeenUpTo = recent.at(-1)?.position ?? 0;
  activityEl.replaceChildren(
    ...[...recent].reverse().map((entry) => {
      const pending = !frozen && entry.position > confirmed;
      const classes = [pending ? "pending" : "", entry.position > seen ? "fresh" : ""].filter(Boolean).join(" ");
      return el(
        "li",
        {
          "data-testid": "activity-entry",
          "data-type": entry.type,
          "data-position": String(entry.position),
          "data-pending": String(pending),
          class: classes || undefined,
        },
        el("span", { class: "pos" }, `#${entry.position}`),
        el("span", { class: `type t-${entry.type}` }, entry.type),
        el("span", { class: "what", "data-testid": "activity-what" }, describeEntry(state, entry)),
        el("span", { class: "when" }, pending ? "pending" : clock(entry.time)),
      );
    }),
  );
  byTestId("activity-empty").hidden = recent.length > 0;
  byTestId("event-count").textContent = String(events);
  byTestId("done-count").textContent = String(done);
  byTestId("head").textContent = String(store.head);
}

function render(store: BoardStore): void {
  renderBoard(store);
  renderActivity(store);
  renderFrozen(store);
  renderSync(store);
}

function renderFrozen(store: BoardStore): void {
  const at = store.frozenAt;
  frozenBanner.hidden = at === undefined;
  app.dataset.frozen = String(at !== undefined);
  byTestId("frozen-at").textContent = at === undefined ? "" : String(at);
  for (const control of boardEl.querySelectorAll<HTMLInputElement | HTMLButtonElement>("input, button")) {
    control.disabled = at !== undefined || control.dataset.disabledByBoard === "true";
  }
}

function renderSync(store: BoardStore): void {
  const status: SyncStatus | undefined = syncEnabled ? store.syncStatus : undefined;
  const pill = byTestId("sync-status");
  const label = byTestId("sync-label");
  byTestId("pending-count").textContent = String(status?.pending ?? 0);
  if (!status) {
    pill.dataset.online = "false";
    pill.dataset.pending = "0";
    pill.dataset.state = "local";
    label.textContent = "Local only";
    pill.title = "?sync=off: this store keeps its log in this browser only";
    return;
  }
  pill.dataset.online = String(status.online);
  pill.dataset.pending = String(status.pending);
  const broken = status.error && status.error.code !== "OFFLINE";
  pill.dataset.state = broken ? "error" : status.online ? "online" : "offline";
  label.textContent = broken
    ? `Sync error · ${status.error?.code}`
    : status.online
      ? status.pending > 0
        ? `Online · syncing ${status.pending}`
        : "Online · synced"
      : `Offline · ${status.pending} pending`;
  pill.title = status.error?.message ?? (status.online ? "connected to the sync server" : "changes wait here until the server answers");
  void refreshPending(store);
}

/** Finds which cards have events the server has not confirmed yet. */
let pendingQuery = 0;
async function refreshPending(store: BoardStore): Promise<void> {
  const query = ++pendingQuery;
  const streams = new Set<string>();
  if (store.syncStatus.pending > 0 && store.head > store.confirmedHead) {
    for (const event of await store.events({ after: store.confirmedHead })) streams.add(event.stream);
  }
  if (query !== pendingQuery || current !== store) return;
  const changed = streams.size !== pendingStreams.size || [...streams].some((s) => !pendingStreams.has(s));
  pendingStreams = streams;
  if (changed) {
    renderBoard(store);
    renderActivity(store);
    renderFrozen(store);
  }
}

// ---- the server's refusals -------------------------------------------------------------

function rejectionNotice(event: RejectedEvent<AppEvent>, reason: string, actualVersion: number | undefined): void {
  const data = event.data as Record<string, string>;
  const name = knownTitles.get(data["id"] ?? "") ?? data["title"];
  const what =
    event.type === "CardMoved"
      ? `your move of “${name ?? "a card"}” to ${data["toTitle"]}`
      : event.type === "ListAdded"
        ? `the list “${data["title"]}”`
        : `${event.type}${name ? ` of “${name}”` : ""}`;
  const after =
    event.type === "ListAdded"
      ? "It is asked again against the board as it is now."
      : "The board shows what the server kept.";
  // A version conflict: another device wrote to that stream first (the reason says which versions).
  const why = actualVersion === undefined ? reason : "another device changed it first";
  toast("rejected", "The server refused a change", `${what}: ${why}. ${after}`, "REJECTED").title = reason;
}

// ---- the store ---------------------------------------------------------------------------

async function start(): Promise<void> {
  const store = await openStore<AppEvent, States, Aggregates>({
    name: storeName,
    storage: "indexeddb",
    projections: projections({ chaos }),
    aggregates,
    sync: syncOptions,
  });
  if (current && current !== store) closeDevtools(devtoolsButton); // it shows the store that closed
  current = store;
  pendingStreams = new Set();
  (window as unknown as { annalsStore?: BoardStore }).annalsStore = store;

  // Both projections change on every event, ours or another tab's; render once per burst.
  let scheduled = false;
  const rerender = () => {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      if (current === store) render(store);
    });
  };
  store.subscribe("board", rerender);
  store.subscribe("activity", rerender);
  store.on("sync", () => renderSync(store));
  try {
    store.on("frozen", rerender);
  } catch {
    // A build of annals from before freeze(): nothing can freeze this store.
  }
  store.on("rejected", (event, reason, actualVersion) => rejectionNotice(event, reason, actualVersion));
  // Failures in the background: the process manager, compensations (`board.onRejected`).
  store.on("error", showError);
  store.on("closed", ({ reason }) => {
    if (reason === "upgraded") {
      app.dataset.state = "closed";
      toast("error", "Closed", "A newer version of this app is open in another tab: reload this tab to use it.");
      return;
    }
    // The database was deleted or cleared under us: open it again (sync brings the log back).
    app.dataset.state = "reopening";
    start()
      .then(() => toast("info", "Reopened", syncEnabled ? "The local database was deleted: restored from the server." : "The local database was deleted: this board starts again empty."))
      .catch(failed);
  });
  stampDone(store);

  render(store);
  app.dataset.state = "ready";
}

function failed(err: unknown): void {
  app.dataset.state = "error";
  byTestId("loading").textContent = "The store could not be opened.";
  showError(err);
}

devtoolsButton.addEventListener("click", () => {
  if (current) void toggleDevtools(current, devtoolsButton);
});
byTestId("unfreeze").addEventListener("click", () => current?.unfreeze());

start().catch(failed);
