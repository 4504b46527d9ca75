// The todo list as a projection: a pure reducer over the event log.
import type { AnnalsEvent, EventShape, Projection, ProjectionsFor, Store } from "annals";

/** The events this app writes; each todo lives in its own stream, `todo-<id>`. */
export type TodoEvent =
  | { type: "TodoAdded"; data: { id: string; title: string } }
  | { type: "TodoToggled"; data: { id: string } }
  | { type: "TodoRemoved"; data: { id: string } };

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
  readonly events: number;
}

export interface States {
  todos: TodoState;
  stats: Stats;
}

export type TodoStore = Store<TodoEvent, States>;

export const streamOf = (id: string): string => `todo-${id}`;

/** The log may hold events this version of the app does not know (or malformed ones): skip them. */
function isTodoEvent(event: AnnalsEvent<EventShape>): event is AnnalsEvent<TodoEvent> {
  const data = event.data as { id?: unknown; title?: unknown } | null;
  if (typeof data !== "object" || data === null || typeof data.id !== "string") return false;
  switch (event.type) {
    case "TodoAdded":
      return typeof data.title === "string";
    case "TodoToggled":
    case "TodoRemoved":
      return true;
    default:
      return false;
  }
}

export const todos: Projection<TodoState, TodoEvent> = {
  initial: {},
  version: 1,
  apply(state, event: AnnalsEvent<EventShape>) {
    if (!isTodoEvent(event)) return state;
    const { id } = event.data;
    const todo = state[id];
    switch (event.type) {
      case "TodoAdded":
        return todo ? state : { ...state, [id]: { id, title: event.data.title, done: false, version: event.version } };
      case "TodoToggled":
        return todo ? { ...state, [id]: { ...todo, done: !todo.done, version: event.version } } : state;
      case "TodoRemoved": {
        if (!todo) return state;
        const { [id]: _removed, ...rest } = state;
        return rest;
      }
    }
  },
};

/** Counts every event in the log, whatever its type. */
export const stats: Projection<Stats, TodoEvent> = {
  initial: { events: 0 },
  version: 1,
  apply: (state) => ({ events: state.events + 1 }),
};

export const projections: ProjectionsFor<States, TodoEvent> = { todos, stats };

/** A todo id: starts with the time, so ids sort by creation; 64 random bits keep tabs apart. */
export function newTodoId(): string {
  const [a = 0, b = 0] = crypto.getRandomValues(new Uint32Array(2));
  return Date.now().toString(36) + a.toString(36).padStart(7, "0") + b.toString(36).padStart(7, "0");
}
