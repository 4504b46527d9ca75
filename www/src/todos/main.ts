import { byTestId, pageStore } from "../page";
import { AnnalsError, openStore } from "annals";
import { aggregates, countCompletions, type Aggregates, type TodoCommand, type TodoStore } from "./commands";
import { newTodoId, projections, streamOf, type AppEvent, type States, type Todo } from "./todos";

declare global {
  interface Window {
    /** The open store, for tests and for poking around in devtools. */
    annalsStore?: TodoStore;
  }
}


const app = byTestId<HTMLElement>("app");
const form = byTestId<HTMLFormElement>("new-todo-form");
const input = byTestId<HTMLInputElement>("new-todo-input");
const list = byTestId<HTMLUListElement>("todo-list");
const errorBox = byTestId<HTMLElement>("error");

const { name: storeName, syncEnabled, sync: syncOptions } = pageStore("annals-todos");
byTestId("store-name").textContent = storeName;

/** The todo being renamed and what has been typed so far (kept across re-renders). */
let editing: { id: string; draft: string } | undefined;

function showError(err: unknown): void {
  const code = err instanceof AnnalsError ? `${err.code}: ` : "";
  errorBox.textContent = code + (err instanceof Error ? err.message : String(err));
  // A refused command is an answer for the user, not a fault.
  if (!(err instanceof AnnalsError && err.code === "COMMAND_REJECTED")) console.error(err);
}

/** Executes a command on todo `id`; a refusal (or any failure) shows in the error area. */
async function run(store: TodoStore, id: string, command: TodoCommand): Promise<boolean> {
  errorBox.textContent = "";
  try {
    await store.execute("todo", streamOf(id), command);
    return true;
  } catch (err) {
    showError(err);
    render(store); // undo what the control shows (a checkbox flips before the command settles)
    return false;
  }
}

function button(testid: string, text: string, title: string, onClick: () => void): HTMLButtonElement {
  const el = document.createElement("button");
  el.type = "button";
  el.dataset.testid = testid;
  el.textContent = text;
  el.title = title;
  el.addEventListener("click", onClick);
  return el;
}

/** The title, or while renaming, a field that executes `Rename` on Enter (Escape cancels). */
function renderTitle(store: TodoStore, todo: Todo): HTMLElement {
  if (editing?.id !== todo.id) {
    const title = document.createElement("span");
    title.dataset.testid = "todo-title";
    title.textContent = todo.title;
    return title;
  }
  const rename = document.createElement("form");
  rename.dataset.testid = "rename-form";
  const field = document.createElement("input");
  field.dataset.testid = "todo-rename-input";
  field.setAttribute("aria-label", `rename: ${todo.title}`);
  field.value = editing.draft;
  field.addEventListener("input", () => {
    if (editing) editing.draft = field.value;
  });
  field.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    editing = undefined;
    render(store);
  });
  rename.addEventListener("submit", (e) => {
    e.preventDefault();
    void run(store, todo.id, { type: "Rename", title: field.value }).then((ok) => {
      if (!ok) return;
      editing = undefined;
      render(store);
    });
  });
  rename.append(field);
  return rename;
}

function renderTodo(store: TodoStore, todo: Todo): HTMLLIElement {
  const li = document.createElement("li");
  li.dataset.testid = "todo-item";
  li.dataset.id = todo.id;
  li.dataset.done = String(todo.done);

  const toggle = document.createElement("input");
  toggle.type = "checkbox";
  toggle.checked = todo.done;
  toggle.dataset.testid = "todo-toggle";
  toggle.setAttribute("aria-label", `done: ${todo.title}`);
  // Says what the box now shows, not "flip": if another tab ticked it first, nothing is left to do.
  toggle.addEventListener("change", () => void run(store, todo.id, { type: "Toggle", done: toggle.checked }));

  const rename = button("todo-rename", "✎", "Rename", () => {
    editing = { id: todo.id, draft: todo.title };
    render(store);
    const field = list.querySelector<HTMLInputElement>('[data-testid="todo-rename-input"]');
    field?.focus();
    field?.select();
  });
  const remove = button("todo-remove", "✕", "Remove", () => void run(store, todo.id, { type: "Remove" }));

  li.append(toggle, renderTitle(store, todo), rename, remove);
  return li;
}

function render(store: TodoStore): void {
  const state = store.get("todos");
  if (editing && !state[editing.id]) editing = undefined; // removed meanwhile
  const refocus = (document.activeElement as HTMLElement | null)?.dataset.testid === "todo-rename-input";
  const todos = Object.values(state);
  list.replaceChildren(...todos.map((todo) => renderTodo(store, todo)));
  if (refocus) list.querySelector<HTMLInputElement>('[data-testid="todo-rename-input"]')?.focus();
  const { events, completed } = store.get("stats");
  byTestId("todo-count").textContent = String(todos.length);
  byTestId("event-count").textContent = String(events);
  byTestId("completed-total").textContent = String(completed);
  byTestId("head").textContent = String(store.head);
  renderSync(store);
}

function renderSync(store: TodoStore): void {
  const status = store.syncStatus;
  const el = byTestId("sync-status");
  if (!syncEnabled || !status) {
    el.textContent = "local only";
    el.dataset.online = "false";
    return;
  }
  el.dataset.online = String(status.online);
  el.dataset.pending = String(status.pending);
  const state = status.online ? "online" : "offline";
  const error = status.lastError ? ` (${status.lastErrorCode ?? "error"})` : "";
  el.textContent = `${state}, ${status.pending} pending${error}`;
}

/** The store the form writes to: replaced when the database is opened again. */
let current: TodoStore | undefined;

async function start(): Promise<void> {
  const store = await openStore<AppEvent, States, Aggregates>({
    name: storeName,
    storage: "indexeddb",
    projections,
    aggregates,
    sync: syncOptions,
  });
  current = store;
  window.annalsStore = store;

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
  store.subscribe("todos", rerender);
  store.subscribe("stats", rerender);
  store.on("sync", () => renderSync(store));
  store.on("rejected", (event, reason) => {
    errorBox.textContent = `The server refused ${event.type}: ${reason}`;
  });
  // Failures in the background: the process manager, compensations (`todo.onRejected`).
  store.on("error", showError);
  store.on("closed", ({ reason }) => {
    if (reason === "upgraded") {
      // A newer build owns the database now; this tab's code cannot read it.
      app.dataset.state = "closed";
      errorBox.textContent = "A newer version of this app is open in another tab: reload this tab to use it.";
      return;
    }
    // The database was deleted or cleared under us: open it again. The store pulls the log
    // back from the server and appends again what had not been pushed yet.
    app.dataset.state = "reopening";
    start()
      .then(() => {
        errorBox.textContent = syncEnabled
          ? "The local database was deleted: restored from the server."
          : "The local database was deleted: this device starts again from an empty list.";
      })
      .catch(failed);
  });
  countCompletions(store);

  render(store);
  app.dataset.state = "ready";
}

function failed(err: unknown): void {
  app.dataset.state = "error";
  showError(err);
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const store = current;
  if (!store) return;
  const id = newTodoId();
  void run(store, id, { type: "Add", id, title: input.value }).then((ok) => {
    if (ok) input.value = "";
  });
});

start().catch(failed);
