// A typed app: compiled with `tsc --noEmit` (npm test) to prove the public types work.
// Each `@ts-expect-error` line must be an error, or tsc fails.
import { openStore, AnnalsError, type AnnalsEvent, type Projection, type Store } from "annals";

type TodoEvent =
  | { type: "TodoAdded"; data: { id: string; title: string } }
  | { type: "TodoCompleted"; data: { id: string } }
  | { type: "TodoRenamed"; data: { id: string; title: string } };

interface Todo {
  title: string;
  done: boolean;
}
type Todos = Record<string, Todo>;

const todos: Projection<Todos, TodoEvent> = {
  initial: {},
  version: 1,
  apply(state, event) {
    switch (event.type) {
      case "TodoAdded":
        return { ...state, [event.data.id]: { title: event.data.title, done: false } };
      case "TodoCompleted": {
        const todo = state[event.data.id];
        // @ts-expect-error TodoCompleted has no title
        void event.data.title;
        return todo ? { ...state, [event.data.id]: { ...todo, done: true } } : state;
      }
      case "TodoRenamed": {
        const todo = state[event.data.id];
        return todo ? { ...state, [event.data.id]: { ...todo, title: event.data.title } } : state;
      }
    }
  },
};

const count: Projection<number, TodoEvent> = { initial: 0, apply: (n) => n + 1 };

// Exact type equality (no `any` slipping through).
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(): T | void {}

export async function inferred(): Promise<void> {
  // E and the state types are inferred from the projections.
  const store = await openStore({ name: "todos", storage: "memory", projections: { todos, count } });
  const t = store.get("todos");
  const n = store.get("count");
  assertType<Equal<typeof t, Todos>>();
  assertType<Equal<typeof n, number>>();
  assertType<Equal<typeof store, Store<TodoEvent, { todos: Todos; count: number }>>>();
  // @ts-expect-error no such projection
  store.get("nope");
  // @ts-expect-error count is a number
  const wrong: string = store.get("count");
  void wrong;

  const added = await store.append({ stream: "todo-1", type: "TodoAdded", data: { id: "1", title: "milk" } });
  assertType<Equal<typeof added, AnnalsEvent<TodoEvent>>>();
  const position: number = added.position;
  void position;
  await store.append({ stream: "todo-1", type: "TodoCompleted", data: { id: "1" }, expectedVersion: 1 });
  await store.appendMany([
    { stream: "todo-2", type: "TodoAdded", data: { id: "2", title: "eggs" }, expectedVersion: "no_stream" },
    { stream: "todo-2", type: "TodoRenamed", data: { id: "2", title: "bread" }, expectedVersion: "exists" },
  ]);
  // @ts-expect-error unknown event type
  await store.append({ stream: "todo-1", type: "TodoDeleted", data: { id: "1" } });
  // @ts-expect-error data does not match its type
  await store.append({ stream: "todo-1", type: "TodoAdded", data: { id: "1" } });
  // @ts-expect-error a stream is required
  await store.append({ type: "TodoCompleted", data: { id: "1" } });
  // @ts-expect-error not an expected version
  await store.append({ stream: "todo-1", type: "TodoCompleted", data: { id: "1" }, expectedVersion: "never" });

  const off = store.subscribe("todos", (state) => {
    const s: Todos = state;
    void s;
  });
  off();
  const past: Todos = await store.stateAt("todos", 1);
  void past;

  const renames = await store.events({ type: "TodoRenamed", limit: 10 });
  assertType<Equal<typeof renames, AnnalsEvent<{ type: "TodoRenamed"; data: { id: string; title: string } }>[]>>();
  for (const e of renames) {
    const title: string = e.data.title; // narrowed by the query's type
    void title;
  }
  const all = await store.events({ after: 0, stream: "todo-1" });
  for (const e of all) {
    if (e.type === "TodoAdded") {
      const title: string = e.data.title;
      void title;
    }
  }
  // @ts-expect-error unknown type in a query
  await store.events({ type: "TodoDeleted" });

  store.on("change", (change) => {
    const events: AnnalsEvent<TodoEvent>[] = change.events;
    void events;
  });

  try {
    await store.append({ stream: "todo-1", type: "TodoCompleted", data: { id: "1" }, expectedVersion: 0 });
  } catch (error) {
    if (error instanceof AnnalsError && error.code === "WRONG_EXPECTED_VERSION") {
      const actual: number | undefined = error.actualVersion;
      void actual;
    }
  }
  await store.close();
}

export async function explicit(): Promise<Store<TodoEvent, { titles: string[] }>> {
  // Explicit type arguments type inline projections.
  return openStore<TodoEvent, { titles: string[] }>({
    name: "titles",
    projections: {
      titles: {
        initial: [],
        apply: (titles, event) => (event.type === "TodoAdded" ? [...titles, event.data.title] : titles),
      },
    },
  });
}

export async function inline(): Promise<void> {
  // Inline projections without type arguments: states are inferred from `initial`.
  const store = await openStore({
    name: "inline",
    projections: {
      total: { initial: 0, apply: (n: number, e: AnnalsEvent<TodoEvent>) => n + (e.type === "TodoAdded" ? 1 : 0) },
    },
  });
  const total = store.get("total");
  assertType<Equal<typeof total, number>>();
  await store.append({ stream: "x", type: "TodoAdded", data: { id: "1", title: "t" } });
  // @ts-expect-error unknown event type
  await store.append({ stream: "x", type: "Nope", data: {} });
}

export async function untyped(): Promise<void> {
  // No types at all: any event shape goes, `data` may be left out.
  const store = await openStore({ name: "loose", storage: "memory" });
  await store.append({ stream: "s", type: "Anything" });
  await store.append({ stream: "s", type: "Other", data: { any: ["thing"] } });
  // @ts-expect-error type is required
  await store.append({ stream: "s" });
}

export async function inlineUnannotated(): Promise<void> {
  // Unannotated reducers: the state type comes from `initial`, events are untyped.
  const store = await openStore({
    name: "plain",
    projections: { names: { initial: [] as string[], apply: (names: string[], e) => [...names, e.type] } },
  });
  const names = store.get("names");
  assertType<Equal<typeof names, string[]>>();
}
