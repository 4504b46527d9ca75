// The write side: aggregates that decide whether a command may happen, and the process
// manager that turns completions into a count on the `stats` aggregate.
import type { Aggregate, CommandRequest, Reactor, RejectedEvent, Store } from "annals";
import { STATS_STREAM, isTodoEvent, type AppEvent, type States, type StatsEvent, type TodoEvent } from "./todos";

export const MAX_TITLE = 100;

/** What may be asked of a todo (its stream is the aggregate instance). */
export type TodoCommand =
  | { type: "Add"; id: string; title: string }
  | { type: "Rename"; title: string }
  /** Marks the todo done or not done; nothing happens when it already is. */
  | { type: "Toggle"; done: boolean }
  | { type: "Remove" };

/** What `decide` knows of a todo: only what its own events say. */
export interface TodoDecisionState {
  readonly status: "unknown" | "active" | "removed";
  readonly id: string;
  readonly title: string;
  readonly done: boolean;
}

function validTitle(raw: string): string {
  const title = raw.trim();
  if (title === "") throw new Error("a todo needs a title");
  if (title.length > MAX_TITLE) throw new Error(`a title is at most ${MAX_TITLE} characters (this one has ${title.length})`);
  return title;
}

/** Refuses commands on todos that were never added or are gone. */
function existing(state: TodoDecisionState, doing: string): TodoDecisionState {
  if (state.status === "unknown") throw new Error(`cannot ${doing} an unknown todo`);
  if (state.status === "removed") throw new Error(`cannot ${doing} a removed todo`);
  return state;
}

/** The command that asks again for what a refused event did (an add cannot conflict: its id is new). */
function intentOf(event: RejectedEvent<TodoEvent>): TodoCommand | undefined {
  switch (event.type) {
    case "TodoRenamed":
      return { type: "Rename", title: event.data.title };
    case "TodoToggled":
      return { type: "Toggle", done: event.data.done };
    case "TodoRemoved":
      return { type: "Remove" };
    default:
      return undefined;
  }
}

export const todo: Aggregate<TodoDecisionState, TodoCommand, TodoEvent> = {
  initial: { status: "unknown", id: "", title: "", done: false },
  evolve(state, event) {
    if (!isTodoEvent(event)) return state;
    switch (event.type) {
      case "TodoAdded":
        return { status: "active", id: event.data.id, title: event.data.title, done: false };
      case "TodoRenamed":
        return { ...state, title: event.data.title };
      case "TodoToggled":
        return { ...state, done: event.data.done };
      case "TodoRemoved":
        return { ...state, status: "removed" };
    }
  },
  decide(command, state) {
    switch (command.type) {
      case "Add": {
        if (state.status !== "unknown") throw new Error("this todo was already added");
        return [{ type: "TodoAdded", data: { id: command.id, title: validTitle(command.title) } }];
      }
      case "Rename": {
        const { id, title } = existing(state, "rename");
        const renamed = validTitle(command.title);
        return renamed === title ? [] : [{ type: "TodoRenamed", data: { id, title: renamed } }];
      }
      case "Toggle": {
        const { id, done } = existing(state, "toggle");
        return command.done === done ? [] : [{ type: "TodoToggled", data: { id, done: command.done } }];
      }
      case "Remove": {
        const { id } = existing(state, "remove");
        return [{ type: "TodoRemoved", data: { id } }];
      }
      default:
        throw new Error(`unknown command ${JSON.stringify((command as { type: unknown }).type)}`);
    }
  },
  // The server refused one of our offline changes because another device changed the todo
  // first: ask again, against the todo as it now is. `decide` may refuse (the todo is gone),
  // or find nothing left to do. Refusals for other reasons are only reported.
  onRejected(rejection): CommandRequest<TodoCommand>[] {
    const command = rejection.actualVersion === undefined ? undefined : intentOf(rejection.event);
    return command ? [{ aggregate: "todo", id: rejection.id, command }] : [];
  },
};

export type StatsCommand = { type: "CountCompletion"; id: string };

/** The `stats` stream: one event per completion, numbered. */
export const stats: Aggregate<{ readonly completed: number }, StatsCommand, StatsEvent> = {
  initial: { completed: 0 },
  evolve: (state, event) => (event.type === "CompletionCounted" ? { completed: state.completed + 1 } : state),
  decide(command, state) {
    if (command.type !== "CountCompletion") throw new Error(`unknown command ${JSON.stringify(command.type)}`);
    return [{ type: "CompletionCounted", data: { id: command.id, total: state.completed + 1 } }];
  },
};

export const aggregates = { todo, stats };
export type Aggregates = typeof aggregates;
export type TodoStore = Store<AppEvent, States, Aggregates>;

/**
 * The process manager: every confirmed `TodoToggled` that completes a todo counts one
 * completion on the `stats` aggregate (caused by that event, in its correlation). Its
 * checkpoint keeps a reload from skipping or repeating one; one tab runs it.
 */
export function countCompletions(store: TodoStore): Reactor {
  return store.react({
    name: "completions",
    on: ["TodoToggled"],
    handle: (event) =>
      event.data.done === true
        ? [{ aggregate: "stats", id: STATS_STREAM, command: { type: "CountCompletion", id: event.data.id } }]
        : [],
  });
}
