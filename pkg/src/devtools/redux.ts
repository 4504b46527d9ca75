// The Redux DevTools bridge: one projection of an annals store shown in the Redux DevTools
// extension (`window.__REDUX_DEVTOOLS_EXTENSION__.connect()`), each stored event as one
// action, and the extension's time travel driving the app through `store.freeze`.
//
// What the extension sees. `connect({ name: "<store>/<projection>", maxAge, features })`,
// then `init(state, liftedState)` with the projection's state at the head as the baseline
// (the action `@@INIT`). Each appended event is sent as the action `{ type: event.type,
// event }` with the projection's state right after that event: the last event of a change
// gets `store.get(name)` (free), each earlier event of the same batch gets
// `store.stateAt(name, position)`. That is cheap because it is bounded: at most `maxAge - 1`
// events of a batch are ever sent (the extension keeps no more), stepping one position at
// a time from a checkpoint; a batch larger than the window, a `rebased` change (pending
// events moved behind what the server ordered first) or a `reset` change (the server's log
// restarted) re-sends the whole window instead (`send(null, liftedState)`): the latest
// `maxAge - 1` events after the baseline, each with its own state. The extension never
// gets the state after a batch for every event of it.
//
// The bridge keeps the extension's lifted state (`@redux-devtools/instrument`'s shape:
// `actionsById`, `stagedActionIds`, `computedStates`, `currentStateIndex`,
// `skippedActionIds`, `committedState`, `nextActionId`, `isLocked`, `isPaused`) as the
// extension keeps it, including how it trims to `maxAge`, with each action's event id and
// position beside it. Every move the extension asks for is mapped to a position through
// that table, never by parsing the state the extension sends back with its message.
//
// What each message from the extension does (`subscribe`):
// - DISPATCH JUMP_TO_STATE `{ index }` / JUMP_TO_ACTION `{ actionId }`: the app shows that
//   action's state: `store.freeze(position of that event)` (`@@INIT`: the baseline's
//   position). Jumping to the last action is "back to the present": `store.unfreeze()`.
//   While frozen the app's appends fail with `FROZEN` (events from sync and other tabs
//   still arrive and are listed). Freezing from elsewhere (the annals panel) moves the
//   extension's cursor too (to `@@INIT` when the position is before the window).
// - DISPATCH TOGGLE_ACTION `{ id }` (and SET_ACTIONS_ACTIVE `{ start, end, active }`):
//   what-if. The event's id joins (or leaves) a set of skipped ids; every state from that
//   action on is folded again with `store.stateAt(name, position, { skip })` and the
//   lifted state is re-sent with `skippedActionIds`, as the extension expects of an app
//   that is not a Redux store. Later events are sent folded without the skipped ones too.
//   The log keeps the events; the app is not changed by a what-if (freezing shows the
//   log's real states), only the extension shows it. A switched-off event that leaves the
//   window (past `maxAge`) stays off, baked into the baseline as Redux commits it, until
//   COMMIT, ROLLBACK or RESET.
// - DISPATCH SWEEP: the skipped actions leave the list (the extension sweeps its copy the
//   same way); they stay skipped (their states do not change), as Redux's SWEEP forgets
//   them. RESET brings them back.
// - DISPATCH COMMIT: a new baseline at the present: unfreeze, forget the what-if (skips,
//   swept), and `init` with the current state and no actions. The log is not squashed.
// - DISPATCH ROLLBACK ("Revert"): back to the committed state: the skips are cleared and
//   the app is frozen at the baseline's position (unfrozen if the baseline is the head);
//   the actions after it stay listed (the log keeps them), so a jump forward still works.
// - DISPATCH RESET: as if just connected: unfreeze, forget the what-if, and `init` again
//   from the baseline the connection started with (the latest `maxAge - 1` events after it).
// - DISPATCH REORDER_ACTION: refused (a log's order is fixed); the lifted state is re-sent
//   so the extension shows the real order. `features.reorder` is off.
// - DISPATCH IMPORT_STATE (and a raw IMPORT): refused: annals shows its own log, a state
//   from elsewhere is not applied (open a bug bundle in the annals panel instead). Told to
//   the extension (`error()`) and to `options.onError` (default `console.warn`); the lifted
//   state is re-sent. `features.import` is off.
// - DISPATCH LOCK_CHANGES `{ status }`: recorded and shown (`isLocked`); while locked,
//   ACTION messages are refused even with `options.dispatch`. The extension can never
//   append to the log by itself anyway.
// - DISPATCH PAUSE_RECORDING `{ status }`: while paused nothing is sent; on resume the
//   window is sent again as it is then (events that arrived meanwhile included: the log
//   kept them).
// - ACTION (an action typed or picked in the extension's dispatcher): refused by default
//   (`error()` + `onError`), or handed to `options.dispatch(payload)` (the payload as the
//   extension sends it: the typed text, or `{ name, args, ... }` for an action creator).
// - START / STOP (a monitor opened / the last one closed): STOP stops sending; START sends
//   the whole window again (`init` with the lifted state). UPDATE re-sends it.
// - EXPORT, OPTIONS and any unknown type are ignored (`features.export` is the extension's
//   own export of what it holds).
//
// Limits: the extension's own action filters (allow/deny lists in its options) drop
// actions it is sent, and so shift its indexes away from the bridge's: leave them off.
//
// Without the extension (`window.__REDUX_DEVTOOLS_EXTENSION__` undefined, e.g. in Node
// or production) the function returns a connection that does nothing (`connected`
// false); it never throws.

import type { AnnalsEvent, Change, EventShape, Store } from "../types.js";

/** An action as the bridge sends it: one stored event. */
export interface ReduxDevtoolsEventAction {
  type: string;
  event: AnnalsEvent;
}

/** An action-creator call picked in the extension's dispatcher. */
export interface ReduxDevtoolsCustomAction {
  name: string;
  selected: number;
  args: string[];
  rest: string;
}

/** A message the extension delivers to `subscribe` listeners. */
export interface ReduxDevtoolsMessage {
  type: string;
  payload?: unknown;
  /** The extension's serialised state for the message; the bridge never reads it. */
  state?: unknown;
  id?: unknown;
  source?: string;
}

/** The monitor's features the bridge declares when it connects. */
export interface ReduxDevtoolsFeatures {
  pause?: boolean;
  lock?: boolean;
  persist?: boolean;
  export?: boolean | string;
  import?: boolean | string;
  jump?: boolean;
  skip?: boolean;
  reorder?: boolean;
  dispatch?: boolean;
  test?: boolean;
}

/** What `connect()` is given. */
export interface ReduxDevtoolsConfig {
  name: string;
  maxAge: number;
  features: ReduxDevtoolsFeatures;
}

/** `@redux-devtools/instrument`'s lifted state, as `init(state, lifted)` and `send(null, lifted)` take it. */
export interface ReduxLiftedState {
  actionsById: Record<number, { type: "PERFORM_ACTION"; action: { type: string; [key: string]: unknown }; timestamp: number }>;
  computedStates: { state: unknown }[];
  committedState: unknown;
  currentStateIndex: number;
  nextActionId: number;
  skippedActionIds: number[];
  stagedActionIds: number[];
  isLocked: boolean;
  isPaused: boolean;
}

/** What `__REDUX_DEVTOOLS_EXTENSION__.connect()` returns (the part the bridge uses). */
export interface ReduxDevtoolsExtensionConnection {
  init(state: unknown, liftedState?: ReduxLiftedState): void;
  /** `action` null: `state` is a lifted state replacing the extension's. */
  send(action: ReduxDevtoolsEventAction | null, state: unknown): void;
  subscribe(listener: (message: ReduxDevtoolsMessage) => void): (() => void) | undefined | void;
  unsubscribe(): void;
  error(message: string): void;
}

/** `window.__REDUX_DEVTOOLS_EXTENSION__` (the part the bridge uses). */
export interface ReduxDevtoolsExtension {
  connect(config: ReduxDevtoolsConfig): ReduxDevtoolsExtensionConnection;
}

export interface ReduxDevtoolsOptions {
  /** Actions the extension keeps (its `maxAge`, counting `@@INIT`). Default 50. */
  maxAge?: number;
  /** The instance's name in the extension. Default `"<store name>/<projection>"`. */
  instanceName?: string;
  /**
   * Called with an action dispatched from the extension (ACTION: the typed text, or the
   * action creator call). Without it such actions are refused: the extension cannot write
   * to the log. Not called while the extension locks changes.
   */
  dispatch?: (action: string | ReduxDevtoolsCustomAction) => unknown;
  /** Refusals and failures (also shown in the extension). Default: `console.warn`. */
  onError?: (error: Error) => void;
  /** The extension to use. Default: `globalThis.__REDUX_DEVTOOLS_EXTENSION__`. */
  extension?: ReduxDevtoolsExtension;
}

/** A bridge between a store's projection and the Redux DevTools extension. */
export interface ReduxDevtoolsConnection {
  /** False when there was no extension (a no-op connection) or after `disconnect()`. */
  readonly connected: boolean;
  /** Resolves once every change and message received so far has been handled. */
  idle(): Promise<void>;
  /** Stops listening to the store and the extension; unfreezes the store if the bridge froze it. */
  disconnect(): void;
}

/** One action the extension lists: a stored event and the state after it. */
interface Entry {
  actionId: number;
  eventId: string;
  position: number;
  event: AnnalsEvent;
  state: unknown;
  timestamp: number;
}

type LooseStore = Store<EventShape, Record<string, unknown>, {}>;

const NONE: unique symbol = Symbol("none");

const NO_CONNECTION: ReduxDevtoolsConnection = Object.freeze({
  connected: false,
  idle: () => Promise.resolve(),
  disconnect: () => {},
});

function findExtension(): ReduxDevtoolsExtension | undefined {
  const candidate = (globalThis as { __REDUX_DEVTOOLS_EXTENSION__?: unknown }).__REDUX_DEVTOOLS_EXTENSION__;
  if ((typeof candidate === "object" || typeof candidate === "function") && candidate !== null) {
    if (typeof (candidate as { connect?: unknown }).connect === "function") return candidate as ReduxDevtoolsExtension;
  }
  return undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

/**
 * Shows the projection `name` of `store` in the Redux DevTools extension, one action per
 * stored event; the extension's jumps freeze the app at that event, its skips are
 * what-ifs. Without the extension it returns a connection that does nothing. See the top
 * of this module for what each of the extension's messages does.
 */
export function connectReduxDevtools<E extends EventShape, S, A, K extends keyof S & string>(
  store: Store<E, S, A>,
  name: K,
  options: ReduxDevtoolsOptions = {},
): ReduxDevtoolsConnection {
  let extension: ReduxDevtoolsExtension | undefined;
  try {
    extension = options.extension ?? findExtension();
  } catch {
    extension = undefined;
  }
  if (!extension) return NO_CONNECTION;
  try {
    return new Bridge(store as unknown as LooseStore, name, extension, options);
  } catch (error) {
    warn(options, error);
    return NO_CONNECTION;
  }
}

function warn(options: ReduxDevtoolsOptions, error: unknown): void {
  const e = error instanceof Error ? error : new Error(String(error));
  if (options.onError) {
    try {
      options.onError(e);
    } catch {
      // The app's handler failing must not break the bridge.
    }
  } else {
    console.warn(`annals devtools (Redux DevTools bridge): ${e.message}`);
  }
}

class Bridge implements ReduxDevtoolsConnection {
  readonly #store: LooseStore;
  readonly #name: string;
  readonly #options: ReduxDevtoolsOptions;
  readonly #maxAge: number;
  readonly #devtools: ReduxDevtoolsExtensionConnection;
  readonly #offs: (() => void)[] = [];
  #connected = true;
  #queue: Promise<void> = Promise.resolve();

  // The extension's lifted state, mirrored.
  #connectBase: number;
  #base: number;
  /** The head the window is up to date with. */
  #covered: number;
  #baseState: unknown = undefined;
  #baseTime = Date.now();
  #entries: Entry[] = [];
  #nextActionId = 1;
  #currentIndex = 0;
  #locked = false;
  #paused = false;
  #active = true;
  /** The window misses events (paused or stopped meanwhile): send it whole when sending again. */
  #stale = false;

  // What-if.
  readonly #skip = new Set<string>();
  readonly #swept = new Set<string>();

  /** The position this bridge froze the store at, while it stays frozen there. */
  #ourFreeze: number | undefined;

  constructor(store: LooseStore, name: string, extension: ReduxDevtoolsExtension, options: ReduxDevtoolsOptions) {
    this.#store = store;
    this.#name = name;
    this.#options = options;
    this.#maxAge = Math.max(2, Math.floor(options.maxAge ?? 50));
    this.#connectBase = store.head;
    this.#base = store.head;
    this.#covered = store.head;
    this.#devtools = extension.connect({
      name: options.instanceName ?? `${store.name}/${name}`,
      maxAge: this.#maxAge,
      features: {
        pause: true,
        lock: true,
        persist: false,
        export: true,
        import: false,
        jump: true,
        skip: true,
        reorder: false,
        dispatch: options.dispatch !== undefined,
        test: false,
      },
    });
    const unsubscribe = this.#devtools.subscribe((message) => this.#onMessage(message));
    if (typeof unsubscribe === "function") this.#offs.push(unsubscribe);
    this.#offs.push(
      store.on("change", (change) => this.#onChange(change)),
      store.on("frozen", (position) => this.#enqueue(() => this.#onFrozen(position))),
      store.on("closed", () => this.disconnect()),
    );
    const live = store.frozenAt === undefined ? store.get(name) : NONE;
    this.#enqueue(async () => {
      this.#baseState = await this.#stateAfter(this.#base, live);
      this.#baseTime = Date.now();
      this.#init();
    });
  }

  get connected(): boolean {
    return this.#connected;
  }

  async idle(): Promise<void> {
    for (;;) {
      const queue = this.#queue;
      await queue;
      if (queue === this.#queue) return;
    }
  }

  disconnect(): void {
    if (!this.#connected) return;
    this.#connected = false;
    for (const off of this.#offs.splice(0)) {
      try {
        off();
      } catch {
        // Already gone.
      }
    }
    try {
      this.#devtools.unsubscribe();
    } catch {
      // The extension went away first.
    }
    if (this.#ourFreeze !== undefined && this.#store.frozenAt === this.#ourFreeze && !this.#store.closed) {
      this.#store.unfreeze();
    }
    this.#ourFreeze = undefined;
  }

  // ---- plumbing ----------------------------------------------------------------------

  #enqueue(task: () => void | Promise<void>): void {
    this.#queue = this.#queue.then(async () => {
      if (!this.#connected) return;
      if (this.#store.closed) {
        this.disconnect();
        return;
      }
      try {
        await task();
      } catch (error) {
        if (this.#store.closed) this.disconnect();
        else this.#report(error, false);
      }
    });
  }

  /** Tells the app (`onError`, else `console.warn`) and, for refusals, the extension. */
  #report(error: unknown, toExtension: boolean): void {
    const e = error instanceof Error ? error : new Error(String(error));
    if (toExtension) {
      try {
        this.#devtools.error(e.message);
      } catch {
        // Nothing more to tell.
      }
    }
    warn(this.#options, e);
  }

  #refuse(message: string): void {
    this.#report(new Error(`annals: ${message}`), true);
  }

  #sending(): boolean {
    return this.#active && !this.#paused;
  }

  #stateAt(position: number): Promise<unknown> {
    return this.#skip.size === 0
      ? this.#store.stateAt(this.#name, position)
      : this.#store.stateAt(this.#name, position, { skip: [...this.#skip] });
  }

  /** The state right after `position`: `live` (the store's current state) when it is that. */
  async #stateAfter(position: number, live: unknown): Promise<unknown> {
    if (live !== NONE && this.#skip.size === 0) return live;
    return this.#stateAt(position);
  }

  #lifted(): ReduxLiftedState {
    const actionsById: ReduxLiftedState["actionsById"] = {
      0: { type: "PERFORM_ACTION", action: { type: "@@INIT", position: this.#base }, timestamp: this.#baseTime },
    };
    const skipped: number[] = [];
    for (const entry of this.#entries) {
      actionsById[entry.actionId] = {
        type: "PERFORM_ACTION",
        action: { type: entry.event.type, event: entry.event },
        timestamp: entry.timestamp,
      };
      if (this.#skip.has(entry.eventId)) skipped.push(entry.actionId);
    }
    return {
      actionsById,
      computedStates: [{ state: this.#baseState }, ...this.#entries.map((entry) => ({ state: entry.state }))],
      committedState: this.#baseState,
      currentStateIndex: this.#currentIndex,
      nextActionId: this.#nextActionId,
      skippedActionIds: skipped,
      stagedActionIds: [0, ...this.#entries.map((entry) => entry.actionId)],
      isLocked: this.#locked,
      isPaused: this.#paused,
    };
  }

  #init(): void {
    this.#devtools.init(this.#baseState, this.#lifted());
  }

  #sendLifted(): void {
    if (this.#sending()) this.#devtools.send(null, this.#lifted());
    else this.#stale = true;
  }

  /** The position the action at `index` of the list stands for (0: the baseline). */
  #positionAt(index: number): number {
    return index === 0 ? this.#base : this.#entries[index - 1]!.position;
  }

  /** The index of the last listed action at or before `position` (0 when before them all). */
  #indexFor(position: number): number {
    let index = 0;
    for (let i = 0; i < this.#entries.length; i++) {
      if (this.#entries[i]!.position <= position) index = i + 1;
      else break;
    }
    return index;
  }

  /** Where the extension's cursor belongs: on the frozen position, else the latest action. */
  #desiredIndex(): number {
    const frozen = this.#store.frozenAt;
    return frozen === undefined ? this.#entries.length : this.#indexFor(frozen);
  }

  /**
   * Reads the window again from the log: the latest `maxAge - 1` events after the baseline
   * (swept ones left out), each with its state. Actions keep their ids where the event
   * stayed at its position.
   */
  async #rebuild(): Promise<void> {
    const store = this.#store;
    const head = store.head;
    const live = store.frozenAt === undefined ? store.get(this.#name) : NONE;
    const room = this.#maxAge - 1;
    let base = Math.min(this.#base, head);
    const after = Math.max(base, head - room - this.#swept.size);
    const events = after < head ? ((await store.events({ after, to: head })) as AnnalsEvent[]) : [];
    let visible = events.filter((event) => !this.#swept.has(event.id));
    if (after > base) base = after;
    if (visible.length > room) {
      base = visible[visible.length - room - 1]!.position;
      visible = visible.slice(visible.length - room);
    }
    const known = new Map(this.#entries.map((entry) => [entry.eventId, entry]));
    // Folded again even when the baseline stays: the what-if may have changed since.
    const baseState = await this.#stateAfter(base, base === head ? live : NONE);
    const entries: Entry[] = [];
    for (const event of visible) {
      const state = await this.#stateAfter(event.position, event.position === head ? live : NONE);
      const old = known.get(event.id);
      const keep = old !== undefined && old.position === event.position;
      entries.push({
        actionId: keep ? old.actionId : this.#nextActionId++,
        eventId: event.id,
        position: event.position,
        event,
        state,
        timestamp: keep ? old.timestamp : Date.now(),
      });
    }
    if (base !== this.#base) this.#baseTime = Date.now();
    this.#base = base;
    this.#baseState = baseState;
    this.#entries = entries;
    this.#covered = head;
    this.#currentIndex = this.#desiredIndex();
  }

  /** Rebuilds and sends the window whole (`init` when the extension must start over). */
  async #resend(mode: "init" | "state"): Promise<void> {
    await this.#rebuild();
    this.#stale = false;
    if (mode === "init") {
      if (this.#active) this.#init();
      else this.#stale = true;
    } else {
      this.#sendLifted();
    }
  }

  // ---- the store ---------------------------------------------------------------------

  #onChange(change: Change): void {
    // The store folds a change before it tells its listeners: `get` is the state after it,
    // unless the store is frozen (then `get` shows the past) or later changes came first.
    const store = this.#store;
    const live = store.frozenAt === undefined && store.head === change.head ? store.get(this.#name) : NONE;
    this.#enqueue(() => this.#applyChange(change, live));
  }

  async #applyChange(change: Change, live: unknown): Promise<void> {
    if (!this.#sending()) {
      this.#stale = true;
      return;
    }
    const events = (change.events as AnnalsEvent[]).filter((event) => !this.#swept.has(event.id));
    if (
      this.#stale ||
      change.rebased ||
      change.reset ||
      change.previousHead !== this.#covered ||
      events.length > this.#maxAge - 1
    ) {
      if (change.reset) this.#connectBase = Math.min(this.#connectBase, change.head);
      await this.#resend("state");
      return;
    }
    for (let i = 0; i < events.length; i++) {
      const event = events[i]!;
      const state = await this.#stateAfter(event.position, event.position === change.head ? live : NONE);
      this.#push(event, state);
      this.#devtools.send({ type: event.type, event }, state);
    }
    this.#covered = change.head;
    // The extension's cursor follows new actions only when it was on the latest; a store
    // frozen from elsewhere may want it elsewhere.
    const desired = this.#desiredIndex();
    if (desired !== this.#currentIndex) {
      this.#currentIndex = desired;
      this.#sendLifted();
    }
  }

  /** Adds an action as the extension does when it receives one (the same trimming to `maxAge`). */
  #push(event: AnnalsEvent, state: unknown): void {
    if (this.#currentIndex === this.#entries.length) this.#currentIndex += 1;
    this.#entries.push({
      actionId: this.#nextActionId++,
      eventId: event.id,
      position: event.position,
      event,
      state,
      timestamp: Date.now(),
    });
    const excess = this.#entries.length + 1 - this.#maxAge;
    if (excess > 0) {
      const dropped = this.#entries.splice(0, excess);
      const last = dropped[dropped.length - 1]!;
      this.#base = last.position;
      this.#baseState = last.state;
      this.#baseTime = last.timestamp;
      this.#currentIndex = this.#currentIndex > excess ? this.#currentIndex - excess : 0;
    }
  }

  #onFrozen(position: number | undefined): void {
    if (position !== this.#ourFreeze) this.#ourFreeze = undefined;
    const desired = this.#desiredIndex();
    if (desired !== this.#currentIndex) {
      this.#currentIndex = desired;
      this.#sendLifted();
    }
  }

  // ---- the extension -----------------------------------------------------------------

  #onMessage(message: ReduxDevtoolsMessage): void {
    if (!isObject(message) || typeof message.type !== "string") return;
    this.#enqueue(() => this.#handle(message));
  }

  async #handle(message: ReduxDevtoolsMessage): Promise<void> {
    switch (message.type) {
      case "DISPATCH":
        if (isObject(message.payload) && typeof message.payload.type === "string") {
          await this.#dispatch(message.payload as { type: string } & Record<string, unknown>);
        }
        return;
      case "ACTION":
        await this.#customAction(message.payload);
        return;
      case "IMPORT":
        this.#refuseImport();
        return;
      case "START": {
        const wasActive = this.#active;
        this.#active = true;
        if (!wasActive || this.#stale) await this.#resend("init");
        else this.#init();
        return;
      }
      case "STOP":
        this.#active = false;
        return;
      case "UPDATE":
        if (this.#stale) await this.#resend("state");
        else this.#sendLifted();
        return;
      default:
        // EXPORT (the extension exports what it holds), OPTIONS, anything newer: ignored.
        return;
    }
  }

  async #dispatch(action: { type: string } & Record<string, unknown>): Promise<void> {
    switch (action.type) {
      case "JUMP_TO_STATE":
        if (typeof action.index === "number") await this.#jump(action.index);
        return;
      case "JUMP_TO_ACTION": {
        if (typeof action.actionId !== "number") return;
        const index = action.actionId === 0 ? 0 : this.#entries.findIndex((e) => e.actionId === action.actionId) + 1;
        if (index > 0 || action.actionId === 0) await this.#jump(index);
        return;
      }
      case "TOGGLE_ACTION":
        if (typeof action.id === "number") await this.#toggle([action.id], undefined);
        return;
      case "SET_ACTIONS_ACTIVE": {
        const { start, end, active } = action;
        if (typeof start !== "number" || typeof end !== "number") return;
        const ids: number[] = [];
        for (let id = start; id < end; id++) ids.push(id);
        await this.#toggle(ids, active !== false);
        return;
      }
      case "SWEEP":
        this.#sweep();
        return;
      case "COMMIT":
        this.#leaveFreeze();
        this.#skip.clear();
        this.#swept.clear();
        this.#base = this.#store.head;
        this.#entries = [];
        await this.#resend("init");
        return;
      case "RESET":
        this.#leaveFreeze();
        this.#skip.clear();
        this.#swept.clear();
        this.#base = this.#connectBase;
        await this.#resend("init");
        return;
      case "ROLLBACK":
        await this.#rollback();
        return;
      case "REORDER_ACTION":
        this.#refuse("actions cannot be reordered: the log's order is fixed (switch an action off to see the log without it)");
        this.#sendLifted();
        return;
      case "IMPORT_STATE":
        this.#refuseImport();
        return;
      case "LOCK_CHANGES":
        this.#locked = action.status === true;
        this.#sendLifted();
        return;
      case "PAUSE_RECORDING": {
        const paused = action.status === true;
        if (paused === this.#paused) return;
        this.#paused = paused;
        if (!paused && this.#active) await this.#resend("state");
        return;
      }
      default:
        return;
    }
  }

  /** Moves the app to the action at `index`: freeze there, or unfreeze at the latest. */
  async #jump(index: number): Promise<void> {
    if (!Number.isInteger(index) || index < 0 || index > this.#entries.length) {
      this.#sendLifted();
      return;
    }
    this.#currentIndex = index;
    if (index === this.#entries.length) {
      this.#ourFreeze = undefined;
      if (this.#store.frozenAt !== undefined) this.#store.unfreeze();
      return;
    }
    const position = this.#positionAt(index);
    this.#ourFreeze = position;
    await this.#store.freeze(position);
  }

  #leaveFreeze(): void {
    this.#ourFreeze = undefined;
    if (this.#store.frozenAt !== undefined) this.#store.unfreeze();
  }

  async #rollback(): Promise<void> {
    this.#skip.clear();
    this.#swept.clear();
    await this.#rebuild();
    this.#stale = false;
    if (this.#base >= this.#store.head) {
      this.#leaveFreeze();
    } else {
      this.#ourFreeze = this.#base;
      await this.#store.freeze(this.#base);
    }
    this.#currentIndex = this.#desiredIndex();
    this.#sendLifted();
  }

  /** Switches actions off (`active` false), on (true) or over (undefined), then refolds from the first. */
  async #toggle(actionIds: readonly number[], active: boolean | undefined): Promise<void> {
    let first = -1;
    for (const actionId of actionIds) {
      const index = this.#entries.findIndex((entry) => entry.actionId === actionId);
      if (index < 0) continue;
      const eventId = this.#entries[index]!.eventId;
      const skipped = this.#skip.has(eventId);
      const skip = active === undefined ? !skipped : !active;
      if (skip === skipped) continue;
      if (skip) this.#skip.add(eventId);
      else this.#skip.delete(eventId);
      if (first < 0 || index < first) first = index;
    }
    if (first >= 0) {
      for (let i = first; i < this.#entries.length; i++) {
        const entry = this.#entries[i]!;
        entry.state = await this.#stateAt(entry.position);
      }
    }
    this.#sendLifted();
  }

  #sweep(): void {
    const kept: Entry[] = [];
    for (const entry of this.#entries) {
      if (this.#skip.has(entry.eventId)) this.#swept.add(entry.eventId);
      else kept.push(entry);
    }
    this.#entries = kept;
    this.#currentIndex = Math.min(this.#currentIndex, kept.length);
    this.#sendLifted();
  }

  #refuseImport(): void {
    this.#refuse(
      "importing a state is not supported: the extension shows this store's log as it is " +
        "(to look at another log, export a bug bundle and open it in the annals panel)",
    );
    this.#sendLifted();
  }

  async #customAction(payload: unknown): Promise<void> {
    if (this.#locked) {
      this.#refuse("changes are locked in Redux DevTools: the dispatched action was not handled");
      return;
    }
    const dispatch = this.#options.dispatch;
    if (!dispatch) {
      this.#refuse(
        "the log is read-only from Redux DevTools: pass options.dispatch to connectReduxDevtools to handle dispatched actions",
      );
      return;
    }
    if (typeof payload !== "string" && !isObject(payload)) return;
    try {
      await dispatch(payload as string | ReduxDevtoolsCustomAction);
    } catch (error) {
      this.#report(error, true);
    }
  }
}
