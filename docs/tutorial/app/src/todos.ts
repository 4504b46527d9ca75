import type { Projection } from "annals";

/** Every event this app appends. Past tense: they record what happened. */
export type TodoEvent =
  | { type: "TodoAdded"; data: { id: string; title: string } }
  | { type: "TodoCompleted"; data: { id: string } };

export type Todos = Record<string, { title: string; done: boolean }>;

/** The read model: all todos by id, folded from the log. */
export const todos: Projection<Todos, TodoEvent> = {
  initial: {},
  version: 1,
  apply(state, event) {
    switch (event.type) {
      case "TodoAdded":
        return { ...state, [event.data.id]: { title: event.data.title, done: false } };
      case "TodoCompleted": {
        const todo = state[event.data.id];
        return todo ? { ...state, [event.data.id]: { ...todo, done: true } } : state;
      }
      default:
        // A newer version of the app, syncing through the same server, may append event
        // types this one does not know yet: keep the state as it is.
        return state;
    }
  },
};
