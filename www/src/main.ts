import { AnnalsError, openStore, type NewEvent } from "annals";
import { newTodoId, projections, streamOf, type States, type Todo, type TodoEvent, type TodoStore } from "./todos";

declare global {
  interface Window {
    /** The open store, for tests and for poking around in devtools. */
    annalsStore?: TodoStore;
  }
}

function byTestId<T extends HTMLElement>(id: string): T {
  const el = document.querySelector<T>(`[data-testid="${id}"]`);
  if (!el) throw new Error(`missing element [data-testid="${id}"]`);
  return el;
}

const app = byTestId<HTMLElement>("app");
const form = byTestId<HTMLFormElement>("new-todo-form");
const input = byTestId<HTMLInputElement>("new-todo-input");
const list = byTestId<HTMLUListElement>("todo-list");
const errorBox = byTestId<HTMLElement>("error");

const params = new URLSearchParams(location.search);
const storeName = params.get("store") || "annals-todos";
byTestId("store-name").textContent = storeName;

/**
 * Sync with the annals-server that serves this page (`make demo`), unless `?sync=off`
 * (the page then works as a local-only store, for example on a plain static server).
 * `?token=` overrides the demo token.
 */
const syncEnabled = params.get("sync") !== "off";
const syncOptions = syncEnabled
  ? { url: location.origin, store: storeName, token: params.get("token") || "dev" }
  : undefined;

function showError(err: unknown): void {
  const code = err instanceof AnnalsError ? `${err.code}: ` : "";
  errorBox.textContent = code + (err instanceof Error ? err.message : String(err));
  console.error(err);
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
  // Toggling flips what this tab saw, so it insists on the stream version it saw: a change made
  // meanwhile in another tab fails with WRONG_EXPECTED_VERSION instead of being flipped back.
  toggle.addEventListener("change", () =>
    write(store, { stream: streamOf(todo.id), type: "TodoToggled", data: { id: todo.id }, expectedVersion: todo.version }),
  );

  const title = document.createElement("span");
  title.dataset.testid = "todo-title";
  title.textContent = todo.title;

  const remove = document.createElement("button");
  remove.type = "button";
  remove.dataset.testid = "todo-remove";
  remove.textContent = "✕";
  remove.title = "Remove";
  remove.addEventListener("click", () =>
    write(store, { stream: streamOf(todo.id), type: "TodoRemoved", data: { id: todo.id }, expectedVersion: "exists" }),
  );

  li.append(toggle, title, remove);
  return li;
}

function render(store: TodoStore): void {
  const todos = Object.values(store.get("todos"));
  list.replaceChildren(...todos.map((todo) => renderTodo(store, todo)));
  byTestId("todo-count").textContent = String(todos.length);
  byTestId("event-count").textContent = String(store.get("stats").events);
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

async function write(store: TodoStore, event: NewEvent<TodoEvent>): Promise<void> {
  errorBox.textContent = "";
  try {
    await store.append(event);
  } catch (err) {
    showError(err);
    render(store); // undo what the control shows (a checkbox flips before the append settles)
  }
}

async function main(): Promise<void> {
  const store = await openStore<TodoEvent, States>({
    name: storeName,
    storage: "indexeddb",
    projections,
    sync: syncOptions,
  });
  window.annalsStore = store;

  // Both projections change on every event, ours or another tab's; render once per burst.
  let scheduled = false;
  const rerender = () => {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      render(store);
    });
  };
  store.subscribe("todos", rerender);
  store.subscribe("stats", rerender);
  store.on("sync", () => renderSync(store));
  store.on("rejected", (event, reason) => {
    errorBox.textContent = `The server refused ${event.type}: ${reason}`;
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const title = input.value.trim();
    if (!title) return;
    input.value = "";
    const id = newTodoId();
    void write(store, { stream: streamOf(id), type: "TodoAdded", data: { id, title }, expectedVersion: "no_stream" });
  });

  render(store);
  app.dataset.state = "ready";
}

main().catch((err: unknown) => {
  app.dataset.state = "error";
  showError(err);
});
