// The read side: the events this app writes and the projections (pure reducers) over them.
import type { AnnalsEvent, EventShape, Projection, ProjectionsFor } from "annals";

/** The events of one todo; each todo lives in its own stream, `todo-<id>`. */
export type TodoEvent =
  | { type: "TodoAdded"; data: { id: string; title: string } }
  | { type: "TodoRenamed"; data: { id: string; title: string } }
  | { type: "TodoToggled"; data: { id: string; done: boolean } }
  | { type: "TodoRemoved"; data: { id: string } };

/**
 * The events of the `stats` stream, written by the `completions` process manager: the todo
 * `id` was completed, the `total`-th completion counted.
 */
export type StatsEvent = { type: "CompletionCounted"; data: { id: string; total: number } };

export type AppEvent = TodoEvent | StatsEvent;

export interface Todo {
  readonly id: string;
  readonly title: string;
  readonly done: boolean;
  /** Version of the todo's stream after the last event applied to it. */
  readonly version: number;
}

/** Todos by id, in the order they were added (the log's order). */
export type TodoState = Readonly<Record<string, Todo>>;

export interface Stats {
  /** Every event in the log, whatever its type. */
  readonly events: number;
  /** Completions counted by the `completions` process manager. */
  readonly completed: number;
}

export interface States {
  todos: TodoState;
  stats: Stats;
}

export const streamOf = (id: string): string => `todo-${id}`;
export const STATS_STREAM = "stats";

/** The log may hold events this version of the app does not know (or malformed ones): skip them. */
export function isTodoEvent(event: AnnalsEvent<EventShape>): event is AnnalsEvent<TodoEvent> {
  const data = event.data as { id?: unknown; title?: unknown; done?: unknown } | null;
  if (typeof data !== "object" || data === null || typeof data.id !== "string") return false;
  switch (event.type) {
    case "TodoAdded":
    case "TodoRenamed":
      return typeof data.title === "string";
    case "TodoToggled":
      return typeof data.done === "boolean";
    case "TodoRemoved":
      return true;
    default:
      return false;
  }
}

export const todos: Projection<TodoState, AppEvent> = {
  initial: {},
  version: 2,
  apply(state, event: AnnalsEvent<EventShape>) {
    if (!isTodoEvent(event)) return state;
    const { id } = event.data;
    const todo = state[id];
    const { version } = event;
    switch (event.type) {
      case "TodoAdded":
        return todo ? state : { ...state, [id]: { id, title: event.data.title, done: false, version } };
      case "TodoRenamed":
        return todo ? { ...state, [id]: { ...todo, title: event.data.title, version } } : state;
      case "TodoToggled":
        return todo ? { ...state, [id]: { ...todo, done: event.data.done, version } } : state;
      case "TodoRemoved": {
        if (!todo) return state;
        const { [id]: _removed, ...rest } = state;
        return rest;
      }
    }
  },
};

export const stats: Projection<Stats, AppEvent> = {
  initial: { events: 0, completed: 0 },
  version: 2,
  apply: (state, event) => ({
    events: state.events + 1,
    completed: state.completed + (event.type === "CompletionCounted" ? 1 : 0),
  }),
};

export const projections: ProjectionsFor<States, AppEvent> = { todos, stats };

/** A todo id: starts with the time, so ids sort by creation; 64 random bits keep tabs apart. */
export function newTodoId(): string {
  const [a = 0, b = 0] = crypto.getRandomValues(new Uint32Array(2));
  return Date.now().toString(36) + a.toString(36).padStart(7, "0") + b.toString(36).padStart(7, "0");
}
