// A typed app: compiled with `tsc --noEmit` (npm test) to prove the public types work.
// Each `@ts-expect-error` line must be an error, or tsc fails.
import {
  openStore,
  AnnalsError,
  ReactorError,
  causedBy,
  type Aggregate,
  type AnnalsEvent,
  type AppendedEvent,
  type DecidedEvent,
  type EventIssue,
  type EventsFrom,
  type Projection,
  type Rejection,
  type Store,
  type SyncReport,
  type SyncStatus,
} from "annals";
import { useProjection, useSyncStatus } from "annals/react";
import * as v from "valibot";
import { z } from "zod";

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
  assertType<Equal<typeof added, AppendedEvent<TodoEvent>>>();
  const position: number = added.position;
  const streamVersion: number = added.streamVersion;
  const asRead: AnnalsEvent<TodoEvent> = added;
  void position;
  void streamVersion;
  void asRead;
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

// ---- the write model ------------------------------------------------------------------

type TodoCommand =
  | { type: "Add"; title: string }
  | { type: "Complete" }
  | { type: "Rename"; title: string };

interface TodoState {
  exists: boolean;
  done: boolean;
}

const todo: Aggregate<TodoState, TodoCommand, TodoEvent> = {
  initial: { exists: false, done: false },
  evolve(state, event) {
    switch (event.type) {
      case "TodoAdded":
        return { ...state, exists: true };
      case "TodoCompleted":
        return { ...state, done: true };
      default:
        return state;
    }
  },
  decide(command, state) {
    switch (command.type) {
      case "Add":
        if (state.exists) throw new Error("exists");
        return [{ type: "TodoAdded", data: { id: "1", title: command.title } }];
      case "Complete":
        return state.done ? [] : [{ type: "TodoCompleted", data: { id: "1" } }];
      case "Rename":
        return [{ type: "TodoRenamed", data: { id: "1", title: command.title }, meta: { by: "me" } }];
    }
  },
  onRejected(rejection) {
    const reason: string = rejection.reason;
    void reason;
    return [{ aggregate: "todo", id: rejection.id, command: { type: "Complete" } }];
  },
};

// @ts-expect-error decided events must be of the aggregate's event types
const wrongDecision: DecidedEvent<TodoEvent>[] = [{ type: "TodoRenamed", data: { id: "1" } }];
void wrongDecision;

interface Stats {
  completed: number;
}
type StatsCommand = { type: "Count" };
const stats: Aggregate<Stats, StatsCommand, TodoEvent> = {
  initial: { completed: 0 },
  evolve: (s) => s,
  decide: () => [],
};

export async function commands(): Promise<void> {
  const store = await openStore({
    name: "cqrs",
    storage: "memory",
    projections: { todos },
    aggregates: { todo, stats },
    sync: { url: "http://localhost:8080", store: "todos", token: "dev" },
  });
  assertType<
    Equal<typeof store, Store<TodoEvent, { todos: Todos }, { todo: typeof todo; stats: typeof stats }>>
  >();
  const result = await store.execute("todo", "todo-1", { type: "Rename", title: "milk" });
  const events: AnnalsEvent<TodoEvent>[] = result.events;
  const version: number = result.version;
  void events;
  void version;
  await store.execute("todo", "todo-1", { type: "Complete" }, { commandId: "c1", correlationId: "flow" });
  await store.execute("stats", "s", { type: "Count" });
  // @ts-expect-error unknown command type
  await store.execute("todo", "todo-1", { type: "Delete" });
  // @ts-expect-error a Rename needs its title
  await store.execute("todo", "todo-1", { type: "Rename" });
  // @ts-expect-error a stats command on the todo aggregate
  await store.execute("todo", "todo-1", { type: "Count" });
  // @ts-expect-error no such aggregate
  await store.execute("nope", "x", { type: "Add", title: "t" });

  const reactor = store.react({
    name: "complete-stats",
    on: ["TodoCompleted"],
    handle(event) {
      const id: string = event.data.id;
      // @ts-expect-error the handler gets only the types it listens to
      void event.data.title;
      return [
        { aggregate: "stats", id: `stats-${id}`, command: { type: "Count" } },
        { aggregate: "todo", id, command: { type: "Rename", title: "done" }, ...{} },
      ];
    },
  });
  await reactor.idle();
  store.react({
    name: "bad",
    on: ["TodoAdded"],
    // @ts-expect-error a todo command sent to the stats aggregate
    handle: () => [{ aggregate: "stats", id: "s", command: { type: "Complete" } }],
  });
  // @ts-expect-error unknown event type to react to
  store.react({ name: "bad2", on: ["TodoDeleted"], handle: () => [] });
  await store.execute("todo", "todo-2", { type: "Add", title: "x" }, causedBy(result.events[0]!));

  const status: SyncStatus = store.syncStatus;
  const leader: boolean = status.leader;
  void leader;
  const report: SyncReport = await store.sync();
  void report;
  store.on("sync", (s) => void s.pending);
  store.on("rejected", (event, reason, actualVersion) => {
    if (event.type === "TodoAdded") {
      const title: string = event.data.title;
      void title;
    }
    const r: string = reason;
    const v: number | undefined = actualVersion;
    void r;
    void v;
  });
  const rejected: Rejection<TodoEvent>[] = await store.rejected();
  void rejected;
  const flow = await store.events({ correlationId: "flow" });
  void flow;
  store.on("error", (error) => {
    if (error instanceof ReactorError) {
      const attempt: number = error.attempt;
      void attempt;
    }
  });
  store.on("closed", ({ reason, unsynced }) => {
    const why: "deleted" | "upgraded" | "lost" = reason;
    const count: number = unsynced;
    void [why, count];
  });
  // @ts-expect-error a closed store says why with a known reason only
  store.on("closed", (info: { reason: "crashed" }) => void info);

  // React bindings.
  function useTodos(): Todos {
    return useProjection(store, "todos");
  }
  void useTodos;
  function useWrong(): void {
    // @ts-expect-error no such projection
    useProjection(store, "nope");
  }
  void useWrong;
  const synced: SyncStatus = useSyncStatus(store);
  void synced;
  await store.close();
}

export async function noAggregates(): Promise<void> {
  const store = await openStore({ name: "plain2", storage: "memory", projections: { todos } });
  // @ts-expect-error no aggregates registered
  await store.execute("todo", "x", { type: "Add", title: "t" });
}

// ---- events typed (and validated) by Standard Schema validators ---------------------

const schemas = {
  TodoAdded: z.object({ id: z.string(), title: z.string(), priority: z.number().default(0) }),
  TodoDone: v.object({ id: v.string() }),
};
type SchemaEvent = EventsFrom<typeof schemas>;

// Aggregates are typed with the schemas' events; `decide` returns the validators' input
// (here `priority` may be left out).
const schemaTodo: Aggregate<{ done: boolean }, { type: "Add"; title: string }, SchemaEvent> = {
  initial: { done: false },
  evolve: (state, event) => (event.type === "TodoDone" ? { done: true } : state),
  decide: (command) => [{ type: "TodoAdded", data: { id: "1", title: command.title } }],
};

export async function withSchemas(): Promise<void> {
  const store = await openStore({
    name: "schemas",
    storage: "memory",
    events: schemas,
    projections: {
      titles: {
        initial: [] as string[],
        apply: (state, event) => {
          switch (event.type) {
            case "TodoAdded": {
              // The reducer gets the validator's output: `priority` is there.
              assertType<Equal<typeof event.data, { id: string; title: string; priority: number }>>();
              return [...state, event.data.title];
            }
            case "TodoDone":
              assertType<Equal<typeof event.data, { id: string }>>();
              return state;
            default:
              return state;
          }
        },
      },
    },
    aggregates: { todo: schemaTodo },
  });
  assertType<Equal<ReturnType<typeof store.get<"titles">>, string[]>>();
  // Appends take the validators' input (`priority` has a default) and give their output.
  const added = await store.append({ stream: "t", type: "TodoAdded", data: { id: "1", title: "milk" } });
  const stored: AnnalsEvent<SchemaEvent> = added;
  void stored;
  if (added.type === "TodoAdded") {
    const priority: number = added.data.priority;
    void priority;
  }
  await store.appendMany([
    { stream: "t", type: "TodoAdded", data: { id: "2", title: "eggs", priority: 2 } },
    { stream: "t", type: "TodoDone", data: { id: "2" } },
  ]);
  // @ts-expect-error a wrong payload: id is a string
  await store.append({ stream: "t", type: "TodoAdded", data: { id: 1, title: "milk" } });
  // @ts-expect-error a wrong payload: title is missing
  await store.appendMany([{ stream: "t", type: "TodoAdded", data: { id: "1" } }]);
  // @ts-expect-error a type with no schema
  await store.append({ stream: "t", type: "TodoDeleted", data: { id: "1" } });
  const result = await store.execute("todo", "t", { type: "Add", title: "bread" });
  assertType<Equal<typeof result.events, AnnalsEvent<SchemaEvent>[]>>();
  // @ts-expect-error not a command of the aggregate
  await store.execute("todo", "t", { type: "Remove" });
  // React hooks take it.
  const useTitles = () => useProjection(store, "titles");
  assertType<Equal<ReturnType<typeof useTitles>, string[]>>();
  // A store opened with schemas is a Store of their output events.
  const plain: Store<SchemaEvent, { titles: string[] }, { todo: typeof schemaTodo }> = store;
  void plain;

  try {
    await store.append({ stream: "t", type: "TodoDone", data: { id: "1" } });
  } catch (error) {
    if (error instanceof AnnalsError && error.code === "INVALID_EVENT") {
      const issues: EventIssue[] | undefined = error.issues;
      const index: number | undefined = error.index;
      const type: string | undefined = error.type;
      void [issues, index, type];
    }
  }
  await store.close();
}

export async function schemaAggregateChecked(): Promise<void> {
  const wrong: Aggregate<number, { type: "X" }, EventsFrom<{ T: typeof schemas.TodoDone }>> = {
    initial: 0,
    evolve: (n) => n,
    decide: () => [{ type: "T", data: { id: "1" } }],
  };
  // @ts-expect-error the aggregate's events are not the schemas'
  await openStore({ name: "schemas2", events: schemas, aggregates: { wrong } });
}
