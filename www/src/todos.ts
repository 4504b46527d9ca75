// The todo list as a projection: a pure reducer over the event log.
import type { AnnalsEvent } from "annals";

/** The events this app writes; each todo lives in its own stream, `todo-<id>`. */
export type TodoEvent =
  | { type: "TodoAdded"; data: { id: string; title: string } }
  | { type: "TodoToggled"; data: { id: string } }
  | { type: "TodoRemoved"; data: { id: string } };

export interface Todo {
  id: string;
  title: string;
  done: boolean;
  /** Version of the todo's stream after the last event applied to it. */
  version: number;
}

/** Todos by id, in the order they were added (the log's order). */
export type TodoState = Readonly<Record<string, Readonly<Todo>>>;

export const streamOf = (id: string): string => `todo-${id}`;

function isTodoEvent(event: AnnalsEvent): event is AnnalsEvent & TodoEvent {
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

export const todosProjection = {
  initial: {} as TodoState,
  version: 1,
  apply(state: TodoState, event: AnnalsEvent): TodoState {
    if (!isTodoEvent(event)) return state; // other events, or malformed ones, change nothing
    const { id } = event.data;
    const todo = state[id];
    switch (event.type) {
      case "TodoAdded":
        if (todo) return state;
        return { ...state, [id]: { id, title: event.data.title, done: false, version: event.version } };
      case "TodoToggled":
        if (!todo) return state;
        return { ...state, [id]: { ...todo, done: !todo.done, version: event.version } };
      case "TodoRemoved": {
        if (!todo) return state;
        const { [id]: _removed, ...rest } = state;
        return rest;
      }
    }
  },
};

/** Counts every event in the log, whatever its type. */
export const statsProjection = {
  initial: { events: 0 },
  version: 1,
  apply: (state: { readonly events: number }): { readonly events: number } => ({ events: state.events + 1 }),
};

export const projections = { todos: todosProjection, stats: statsProjection };

/** A todo id: short, sortable by creation time, unique enough across tabs. */
export function newTodoId(): string {
  const random = crypto.getRandomValues(new Uint32Array(2));
  return Date.now().toString(36) + random[0]!.toString(36) + random[1]!.toString(36);
}
