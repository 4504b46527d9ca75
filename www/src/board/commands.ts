// The board's write side: aggregates that decide whether a command may happen (a throw in
// `decide` refuses it: COMMAND_REJECTED, nothing written), and the process manager that
// stamps cards completed when they arrive in a Done list.
import type { Aggregate, CommandRequest, Reactor, Store } from "annals";
import { BOARD_STREAM, isAppEvent, isDoneTitle, type AppEvent, type BoardEvent, type CardEvent, type States } from "./model";

export const MAX_LISTS = 8;
export const MAX_LIST_TITLE = 30;
export const MAX_CARD_TITLE = 80;

function validTitle(raw: string, what: string, max: number): string {
  const title = raw.trim().replace(/\s+/g, " ");
  if (title === "") throw new Error(`${what} needs a title`);
  if (title.length > max) throw new Error(`${what} title is at most ${max} characters (this one has ${title.length})`);
  return title;
}

// ---- the board: its lists ---------------------------------------------------------------

export type BoardCommand =
  | { type: "AddList"; id: string; title: string }
  /** The three usual lists, on an empty board. */
  | { type: "UseTemplate"; ids: [string, string, string] };

export interface BoardDecisionState {
  readonly lists: readonly { readonly id: string; readonly title: string }[];
}

export const TEMPLATE = ["To do", "Doing", "Done"] as const;

export const board: Aggregate<BoardDecisionState, BoardCommand, BoardEvent> = {
  initial: { lists: [] },
  evolve(state, event) {
    if (!isAppEvent(event) || event.type !== "ListAdded") return state;
    return { lists: [...state.lists, { id: event.data.id, title: event.data.title }] };
  },
  decide(command, state) {
    switch (command.type) {
      case "AddList": {
        const title = validTitle(command.title, "a list", MAX_LIST_TITLE);
        if (state.lists.some((list) => list.id === command.id)) return []; // asked again: done already
        const same = state.lists.find((list) => list.title.toLowerCase() === title.toLowerCase());
        if (same) throw new Error(`there is already a list named "${same.title}"`);
        if (state.lists.length >= MAX_LISTS) throw new Error(`a board holds at most ${MAX_LISTS} lists`);
        return [{ type: "ListAdded", data: { id: command.id, title } }];
      }
      case "UseTemplate": {
        if (state.lists.length > 0) throw new Error("the board already has lists");
        return TEMPLATE.map((title, i) => ({ type: "ListAdded" as const, data: { id: command.ids[i] ?? "", title } }));
      }
      default:
        throw new Error(`unknown command ${JSON.stringify((command as { type: unknown }).type)}`);
    }
  },
  // Two devices added lists at once: the server kept the first and refused the other (a
  // version conflict on the board's stream). Ask again against the board as it now is:
  // `decide` adds it, or refuses (a list with that name arrived meanwhile).
  onRejected(rejection): CommandRequest<BoardCommand>[] {
    const { event } = rejection;
    if (rejection.actualVersion === undefined || event.type !== "ListAdded") return [];
    return [{ aggregate: "board", id: BOARD_STREAM, command: { type: "AddList", id: event.data.id, title: event.data.title } }];
  },
};

// ---- a card ------------------------------------------------------------------------------

export type CardCommand =
  | { type: "AddCard"; id: string; list: string; listTitle: string; title: string }
  | { type: "Move"; to: string; toTitle: string }
  /** From the process manager: the move (or add) `by` put the card in a Done list. */
  | { type: "Complete"; by: string }
  /** From the process manager: the move `by` took the completed card out of Done. */
  | { type: "Reopen"; by: string }
  | { type: "Archive" };

export interface CardDecisionState {
  readonly status: "unknown" | "active" | "archived";
  readonly id: string;
  readonly list: string;
  /** The id of the event that put the card in its list (its add or its last move). */
  readonly placedBy: string;
  readonly completed: boolean;
}

function existing(state: CardDecisionState, doing: string): CardDecisionState {
  if (state.status === "unknown") throw new Error(`cannot ${doing} a card that does not exist`);
  if (state.status === "archived") throw new Error(`cannot ${doing} an archived card`);
  return state;
}

export const card: Aggregate<CardDecisionState, CardCommand, CardEvent> = {
  initial: { status: "unknown", id: "", list: "", placedBy: "", completed: false },
  evolve(state, event) {
    if (!isAppEvent(event)) return state;
    switch (event.type) {
      case "CardAdded":
        return { status: "active", id: event.data.id, list: event.data.list, placedBy: event.id, completed: false };
      case "CardMoved":
        return { ...state, list: event.data.to, placedBy: event.id };
      case "CardCompleted":
        return { ...state, completed: true };
      case "CardReopened":
        return { ...state, completed: false };
      case "CardArchived":
        return { ...state, status: "archived" };
      default:
        return state;
    }
  },
  decide(command, state) {
    switch (command.type) {
      case "AddCard": {
        if (state.status !== "unknown") throw new Error("this card was already added");
        const title = validTitle(command.title, "a card", MAX_CARD_TITLE);
        const { id, list, listTitle } = command;
        return [{ type: "CardAdded", data: { id, list, listTitle, title } }];
      }
      case "Move": {
        const { id, list } = existing(state, "move");
        if (list === command.to) throw new Error(`the card is already in "${command.toTitle}"`);
        return [{ type: "CardMoved", data: { id, from: list, to: command.to, toTitle: command.toTitle } }];
      }
      // The process manager's commands act only while the card is where their event put
      // it: they run once the server confirmed that event, and by then the card may have
      // moved on (here, or in a change of this device still waiting for the server).
      case "Complete": {
        const { id, list, completed, placedBy } = state;
        if (state.status !== "active" || placedBy !== command.by || completed) return [];
        return [{ type: "CardCompleted", data: { id, list } }];
      }
      case "Reopen": {
        const { id, list, completed, placedBy } = state;
        if (state.status !== "active" || placedBy !== command.by || !completed) return [];
        return [{ type: "CardReopened", data: { id, list } }];
      }
      case "Archive": {
        const { id } = existing(state, "archive");
        return [{ type: "CardArchived", data: { id } }];
      }
      default:
        throw new Error(`unknown command ${JSON.stringify((command as { type: unknown }).type)}`);
    }
  },
};

export const aggregates = { board, card };
export type Aggregates = typeof aggregates;
export type BoardStore = Store<AppEvent, States, Aggregates>;

/**
 * The process manager: a card that arrives in a list titled "Done" (added there or moved
 * there) is stamped completed by a `Complete` command on its aggregate; a completed card
 * that leaves Done is reopened. It acts on confirmed events, once each (its checkpoint
 * survives reloads), in one tab; the commands are caused by the event, in its correlation.
 */
export function stampDone(store: BoardStore): Reactor {
  return store.react({
    name: "done-stamp",
    on: ["CardAdded", "CardMoved"],
    handle(event) {
      const id = event.stream;
      const by = event.id;
      if (event.type === "CardAdded") {
        return isDoneTitle(event.data.listTitle) ? [{ aggregate: "card", id, command: { type: "Complete", by } }] : [];
      }
      const command: CardCommand = isDoneTitle(event.data.toTitle) ? { type: "Complete", by } : { type: "Reopen", by };
      return [{ aggregate: "card", id, command }];
    },
  });
}
