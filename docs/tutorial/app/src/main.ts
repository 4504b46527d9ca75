import { openStore } from "annals";
import { todos, type Todos } from "./todos";

const store = await openStore({
  name: "todos", // the IndexedDB database in this browser
  projections: { todos },
  sync: {
    url: import.meta.env.VITE_ANNALS_URL ?? "http://localhost:8080",
    store: "todos", // the store on the server
    token: "dev", // the server's --dev-token
  },
});

const form = document.querySelector<HTMLFormElement>("#add")!;
const title = document.querySelector<HTMLInputElement>("#title")!;
const list = document.querySelector<HTMLUListElement>("#todos")!;
const status = document.querySelector<HTMLParagraphElement>("#status")!;

function render(state: Todos) {
  list.replaceChildren(
    ...Object.entries(state).map(([id, todo]) => {
      const item = document.createElement("li");
      item.dataset.id = id;
      item.dataset.done = String(todo.done);
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = todo.done;
      box.disabled = todo.done;
      box.addEventListener("change", () => {
        void store.append({ stream: `todo-${id}`, type: "TodoCompleted", data: { id } });
      });
      item.append(box, " ", todo.title);
      return item;
    }),
  );
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const id = crypto.randomUUID();
  void store.append({
    stream: `todo-${id}`,
    type: "TodoAdded",
    data: { id, title: title.value },
    expectedVersion: "no_stream",
  });
  form.reset();
});

render(store.get("todos"));
const unsubscribe = store.subscribe("todos", render);
const offSync = store.on("sync", (s) => {
  status.textContent = `${s.online ? "online" : "offline"}, ${s.pending} pending`;
});

// Hot reload: Vite runs this module again on every edit. Close this copy's store first,
// so the tab never holds two stores of one name.
import.meta.hot?.dispose(async () => {
  unsubscribe();
  offSync();
  await store.close();
});
