// The board's read side: the events it writes and the projections (pure reducers) over them.
//
// Streams: `board` holds the lists (one board per store); each card is its own stream,
// `card-<id>`. Events carry what the user saw (a list's title when a card moves into it),
// so that a process manager can act on an event alone.
import type { AnnalsEvent, EventShape, Projection, ProjectionsFor } from "annals";

export const BOARD_STREAM = "board";
export const cardStream = (id: string): string => `card-${id}`;

/** A list whose title is this (any case) is where cards are done. */
export const DONE_TITLE = "Done";
export const isDoneTitle = (title: string): boolean => title.trim().toLowerCase() === DONE_TITLE.toLowerCase();

export type BoardEvent = { type: "ListAdded"; data: { id: string; title: string } };

export type CardEvent =
  | { type: "CardAdded"; data: { id: string; list: string; listTitle: string; title: string } }
  | { type: "CardMoved"; data: { id: string; from: string; to: string; toTitle: string } }
  /** Written by the `done-stamp` process manager when a card arrives in a Done list. */
  | { type: "CardCompleted"; data: { id: string; list: string } }
  /** Written by the `done-stamp` process manager when a completed card leaves Done. */
  | { type: "CardReopened"; data: { id: string; list: string } }
  | { type: "CardArchived"; data: { id: string } };

export type AppEvent = BoardEvent | CardEvent;
export type AppEventType = AppEvent["type"];

export interface List {
  readonly id: string;
  readonly title: string;
}

export interface Card {
  readonly id: string;
  readonly title: string;
  /** The list it is in. */
  readonly list: string;
  /** Where it sorts in its list: the position of the event that put it there. */
  readonly order: number;
  readonly completed: boolean;
  /** When the process manager stamped it completed (the event's time). */
  readonly completedAt?: number;
  /** The version of its stream after the last event applied to it. */
  readonly version: number;
}

export interface BoardState {
  /** In the order they were added. */
  readonly lists: readonly List[];
  /** By id; archived cards are gone. */
  readonly cards: Readonly<Record<string, Card>>;
}

export interface ActivityEntry {
  readonly position: number;
  readonly type: string;
  readonly stream: string;
  readonly data: unknown;
  readonly time: number;
}

export interface Activity {
  /** Every event in the log, whatever its type. */
  readonly events: number;
  /** Completions stamped by the process manager, minus reopenings. */
  readonly done: number;
  /** The latest events, newest last. */
  readonly recent: readonly ActivityEntry[];
}

export interface States {
  board: BoardState;
  activity: Activity;
}

const RECENT = 14;

/** The log may hold events this version of the app does not know (or malformed ones): skip them. */
export function isAppEvent(event: AnnalsEvent<EventShape>): event is AnnalsEvent<AppEvent> {
  const data = event.data as Record<string, unknown> | null;
  if (typeof data !== "object" || data === null || typeof data["id"] !== "string") return false;
  const strings = (...keys: string[]) => keys.every((key) => typeof data[key] === "string");
  switch (event.type) {
    case "ListAdded":
      return strings("title");
    case "CardAdded":
      return strings("list", "listTitle", "title");
    case "CardMoved":
      return strings("from", "to", "toTitle");
    case "CardCompleted":
    case "CardReopened":
      return strings("list");
    case "CardArchived":
      return true;
    default:
      return false;
  }
}

/**
 * The board reducer. `chaos` makes it nondeterministic on purpose (the demo's `?chaos=1`): it
 * stamps `completedAt` with the wall clock at fold time instead of the event's time, the bug
 * the devtools' divergence view is there to catch.
 */
export function boardProjection({ chaos = false } = {}): Projection<BoardState, AppEvent> {
  return {
    initial: { lists: [], cards: {} },
    version: 1,
    apply(state, event: AnnalsEvent<EventShape>) {
      if (!isAppEvent(event)) return state;
      const { position, version } = event;
      const card = state.cards[event.data.id];
      const put = (next: Card): BoardState => ({ ...state, cards: { ...state.cards, [next.id]: next } });
      switch (event.type) {
        case "ListAdded":
          return state.lists.some((list) => list.id === event.data.id)
            ? state
            : { ...state, lists: [...state.lists, { id: event.data.id, title: event.data.title }] };
        case "CardAdded": {
          const { id, list, title } = event.data;
          return card ? state : put({ id, title, list, order: position, completed: false, version });
        }
        case "CardMoved":
          return card ? put({ ...card, list: event.data.to, order: position, version }) : state;
        case "CardCompleted": {
          if (!card) return state;
          const completedAt = chaos ? Date.now() + Math.random() : event.time;
          return put({ ...card, completed: true, completedAt, version });
        }
        case "CardReopened": {
          if (!card) return state;
          const { completedAt: _gone, ...rest } = card;
          return put({ ...rest, completed: false, version });
        }
        case "CardArchived": {
          if (!card) return state;
          const { [card.id]: _archived, ...cards } = state.cards;
          return { ...state, cards };
        }
      }
    },
  };
}

export const activity: Projection<Activity, AppEvent> = {
  initial: { events: 0, done: 0, recent: [] },
  version: 1,
  apply(state, event) {
    const done = state.done + (event.type === "CardCompleted" ? 1 : event.type === "CardReopened" ? -1 : 0);
    const entry: ActivityEntry = {
      position: event.position,
      type: event.type,
      stream: event.stream,
      data: event.data,
      time: event.time,
    };
    return { events: state.events + 1, done, recent: [...state.recent.slice(1 - RECENT), entry] };
  },
};

export function projections({ chaos = false } = {}): ProjectionsFor<States, AppEvent> {
  return { board: boardProjection({ chaos }), activity };
}

/** The cards of `list`, in the order they arrived there. */
export function cardsIn(state: BoardState, list: string): Card[] {
  return Object.values(state.cards)
    .filter((card) => card.list === list)
    .sort((a, b) => a.order - b.order);
}

/** An id for a list or a card: starts with the time, so ids sort by creation; 64 random bits keep devices apart. */
export function newId(): string {
  const [a = 0, b = 0] = crypto.getRandomValues(new Uint32Array(2));
  return Date.now().toString(36) + a.toString(36).padStart(7, "0") + b.toString(36).padStart(7, "0");
}
