// The React hooks' public types: compiled with `tsc --noEmit` (npm test). Each
// `@ts-expect-error` line must be an error, or tsc fails.
import { openStore, type AnnalsEvent, type Projection, type Store } from "annals";
import {
  StoreProvider,
  useEvents,
  useHead,
  useProjection,
  useStateAt,
  useStore,
  useSyncStatus,
  type EventsResult,
  type StateAtResult,
} from "annals/react";
import { createElement } from "react";

type TodoEvent =
  | { type: "TodoAdded"; data: { id: string; title: string } }
  | { type: "TodoCompleted"; data: { id: string } };
type Todos = Record<string, { title: string; done: boolean }>;

const todos: Projection<Todos, TodoEvent> = {
  initial: {},
  apply: (state, event) => {
    switch (event.type) {
      case "TodoAdded":
        return { ...state, [event.data.id]: { title: event.data.title, done: false } };
      default:
        return state;
    }
  },
};

type AppStore = Store<TodoEvent, { todos: Todos; count: number }>;

export function Typed(): null {
  const store = useStore<AppStore>();
  const all: Todos = useProjection(store, "todos");
  // The selector gets the projection's state type; the result is the selector's.
  const open: number = useProjection(store, "todos", (t) => Object.values(t).filter((x) => !x.done).length);
  const titles: string[] = useProjection(
    store,
    "todos",
    (t) => Object.values(t).map((x) => x.title),
    (a, b) => a.length === b.length && a.every((x, i) => x === b[i]),
  );
  // @ts-expect-error no such projection
  useProjection(store, "todo");
  // @ts-expect-error the selector's parameter is the state of "count", a number
  useProjection(store, "count", (n: string) => n);
  const past: StateAtResult<Todos> = useStateAt(store, "todos", 3);
  const pastCount: number | undefined = useStateAt(store, "count", 3).state;
  const added: EventsResult<AnnalsEvent<Extract<TodoEvent, { type: "TodoAdded" }>>> = useEvents(store, { type: "TodoAdded" });
  const title: string | undefined = added.events[0]?.data.title;
  // @ts-expect-error not an event type of this store
  useEvents(store, { type: "TodoDeleted" });
  const head: number = useHead(store);
  const pending: number = useSyncStatus(store).pending;
  void [all, open, titles, past, pastCount, title, head, pending];
  return null;
}

export const withOpen = createElement(StoreProvider, {
  open: () => openStore({ name: "todos", projections: { todos } }),
  fallback: "opening",
});
export const withStore = (store: AppStore) => createElement(StoreProvider, { store });
