// A stand-in for the Redux DevTools extension (`window.__REDUX_DEVTOOLS_EXTENSION__`), for
// the bridge's tests (not a test file itself). It follows the extension's protocol as the
// reduxjs/redux-devtools sources define it (read for the protocol, written anew):
//
// - the page side of `connect(config)` (extension/src/pageScript/api/index.ts): `init(state,
//   liftedState?)` posts INIT; `send(action, state)` posts ACTION (the action wrapped as
//   `{ action, timestamp, stack }`), `send(null, liftedState)` posts STATE; both are dropped
//   while paused; `error(message)` posts ERROR; `subscribe(listener)` after the connection's
//   own listener, which tracks PAUSE_RECORDING (and answers with LIFTED `{ isPaused }`);
//   an IMPORT message reaches subscribers as DISPATCH IMPORT_STATE; `unsubscribe()` drops
//   every listener of the instance. Payloads travel as JSON text, as the page script sends.
// - the monitor's copy of the lifted state (packages/redux-devtools-app-core
//   reducers/instances.ts): INIT starts over (then the sent lifted state is merged in),
//   ACTION appends and trims to `maxAge` the way commitExcessActions does, STATE replaces
//   it; JUMP_TO_STATE / JUMP_TO_ACTION move its cursor locally before they are sent.
// - what the monitor sends (background nonReduxDispatch, content script): `{ type:
//   "DISPATCH", payload: { type, ... }, state, id, source: "@devtools-extension" }` with
//   `state` the JSON of the state jumped to (JUMP_*), of the whole lifted state
//   (TOGGLE_ACTION), of the first state (ROLLBACK), or nothing; SWEEP sweeps the monitor's
//   copy locally first; ACTION, IMPORT, START, STOP, UPDATE, EXPORT messages.
//
// Messages are delivered synchronously (the extension posts them); `deliver(message)` sends
// any message as is.

const PAGE = "@devtools-page";
const EXTENSION = "@devtools-extension";

function emptyLiftedState() {
  return {
    actionsById: {},
    computedStates: [],
    currentStateIndex: -1,
    nextActionId: 0,
    skippedActionIds: [],
    stagedActionIds: [],
  };
}

function commitExcessActions(lifted, n = 1) {
  let excess = n;
  let idsToDelete = lifted.stagedActionIds.slice(1, excess + 1);
  for (let i = 0; i < idsToDelete.length; i++) {
    if (lifted.computedStates[i + 1].error) {
      excess = i;
      idsToDelete = lifted.stagedActionIds.slice(1, excess + 1);
      break;
    }
    delete lifted.actionsById[idsToDelete[i]];
  }
  lifted.skippedActionIds = lifted.skippedActionIds.filter((id) => !idsToDelete.includes(id));
  lifted.stagedActionIds = [0, ...lifted.stagedActionIds.slice(excess + 1)];
  lifted.committedState = lifted.computedStates[excess].state;
  lifted.computedStates = lifted.computedStates.slice(excess);
  lifted.currentStateIndex = lifted.currentStateIndex > excess ? lifted.currentStateIndex - excess : 0;
}

function recompute(previous, storeState, action, nextActionId = 1, maxAge) {
  const actionId = nextActionId - 1;
  const lifted = { ...previous };
  if (lifted.currentStateIndex === lifted.stagedActionIds.length - 1) lifted.currentStateIndex++;
  lifted.stagedActionIds = [...lifted.stagedActionIds, actionId];
  lifted.actionsById = { ...lifted.actionsById };
  lifted.actionsById[actionId] =
    action.type === "PERFORM_ACTION"
      ? action
      : { action: action.action || action, timestamp: action.timestamp || Date.now(), stack: action.stack, type: "PERFORM_ACTION" };
  lifted.nextActionId = nextActionId;
  lifted.computedStates = [...lifted.computedStates, { state: storeState }];
  if (maxAge) {
    const excess = lifted.stagedActionIds.length - maxAge;
    if (excess > 0) commitExcessActions(lifted, excess);
  }
  return lifted;
}

function parse(text) {
  return typeof text === "string" ? JSON.parse(text) : text;
}

/** The extension's `importState`: an exported file as a lifted state (or a list of actions). */
function importState(text) {
  const parsed = parse(text);
  if (parsed && typeof parsed === "object" && "payload" in parsed) {
    return { nextLiftedState: parse(parsed.payload), preloadedState: parse(parsed.preloadedState) };
  }
  return { nextLiftedState: parsed };
}

let instanceIds = 0;

class MockInstance {
  constructor(extension, config) {
    this.extension = extension;
    this.config = config;
    this.id = config.instanceId || ++instanceIds;
    /** Every call the app made: `{ method, args }`. */
    this.calls = [];
    /** Every message the page side posted (INIT_INSTANCE, INIT, ACTION, STATE, ERROR, LIFTED). */
    this.posted = [];
    /** The monitor's copy of the lifted state. */
    this.monitor = emptyLiftedState();
    /** The instance's options as the monitor took them from its first message. */
    this.options = undefined;
    this.isPaused = config.autoPause === true;
    this.listeners = [(message) => this.#rootListener(message)];
    this.#post({ type: "INIT_INSTANCE", instanceId: this.id, source: PAGE });
  }

  // ---- the page side: what `connect()` returns ---------------------------------------

  api() {
    return {
      init: (state, liftedData) => {
        this.calls.push({ method: "init", args: [state, liftedData] });
        const message = { type: "INIT", payload: JSON.stringify(state), instanceId: this.id, source: PAGE };
        if (liftedData) {
          message.liftedState = structuredClone(liftedData);
          if (liftedData.isPaused) this.isPaused = true;
        }
        message.libConfig = {
          actionCreators: "[]",
          name: this.config.name,
          features: this.config.features,
          serialize: !!this.config.serialize,
          type: this.config.type,
        };
        this.#post(message);
      },
      send: (action, state) => {
        this.calls.push({ method: "send", args: [action, state] });
        if (this.isPaused) return;
        if (action) {
          let amended;
          if (typeof action === "string") amended = { action: { type: action }, timestamp: Date.now() };
          else if (!action.type) amended = { action: { type: "update" }, timestamp: Date.now() };
          else if (action.action) amended = action;
          else amended = { action, timestamp: Date.now(), stack: undefined };
          this.#post({
            type: "ACTION",
            action: JSON.stringify(amended),
            payload: JSON.stringify(state),
            maxAge: this.config.maxAge,
            source: PAGE,
            name: this.config.name,
            instanceId: this.id,
          });
        } else {
          const { actionsById, computedStates, committedState, ...rest } = state;
          this.#post({
            type: "STATE",
            payload: rest,
            actionsById: JSON.stringify(actionsById),
            computedStates: JSON.stringify(computedStates),
            committedState: typeof committedState !== "undefined",
            maxAge: this.config.maxAge,
            source: PAGE,
            name: this.config.name,
            instanceId: this.id,
          });
        }
      },
      subscribe: (listener) => {
        this.calls.push({ method: "subscribe", args: [listener] });
        if (!listener) return undefined;
        const lifted = (message) => {
          if (message.type === "IMPORT") {
            listener({ type: "DISPATCH", payload: { type: "IMPORT_STATE", ...importState(message.state) } });
          } else {
            listener(message);
          }
        };
        const list = this.listeners;
        list.push(lifted);
        return () => {
          const index = list.indexOf(lifted);
          list.splice(index, 1);
        };
      },
      unsubscribe: () => {
        this.calls.push({ method: "unsubscribe", args: [] });
        this.listeners = [];
      },
      error: (payload) => {
        this.calls.push({ method: "error", args: [payload] });
        this.#post({ type: "ERROR", payload, instanceId: this.id, source: PAGE });
      },
    };
  }

  #rootListener(message) {
    if (this.config.autoPause) {
      if (message.type === "START") this.isPaused = false;
      else if (message.type === "STOP") this.isPaused = true;
    }
    if (message.type === "DISPATCH" && message.payload.type === "PAUSE_RECORDING") {
      this.isPaused = message.payload.status;
      this.#post({ type: "LIFTED", liftedState: { isPaused: this.isPaused }, instanceId: this.id, source: PAGE });
    }
  }

  // ---- the monitor: how it takes each posted message -----------------------------------

  #post(message) {
    this.posted.push(message);
    if (!["INIT", "ACTION", "STATE", "LIFTED"].includes(message.type)) return;
    if (this.options === undefined) {
      const libConfig = message.libConfig ?? {};
      this.options = { name: libConfig.name || message.name, features: libConfig.features, lib: message.type === "STATE" ? "redux" : undefined };
    }
    const previous = this.monitor;
    let next;
    switch (message.type) {
      case "INIT": {
        const action = message.action ? parse(message.action) : {};
        next = recompute(emptyLiftedState(), parse(message.payload), {
          action: { type: "@@INIT" },
          timestamp: action.timestamp || Date.now(),
        });
        break;
      }
      case "ACTION": {
        const action = parse(message.action);
        const nextActionId = message.nextActionId || previous.nextActionId + 1;
        next = recompute(previous, parse(message.payload), action, nextActionId, message.maxAge);
        break;
      }
      case "STATE": {
        next = {
          ...message.payload,
          actionsById: parse(message.actionsById),
          computedStates: parse(message.computedStates),
        };
        if (message.committedState) next.committedState = next.computedStates[0].state;
        if (next.computedStates.length <= next.currentStateIndex) next.currentStateIndex = next.computedStates.length - 1;
        break;
      }
      case "LIFTED":
        next = previous;
        break;
    }
    if (message.liftedState) next = { ...next, ...message.liftedState };
    this.monitor = next;
  }

  // ---- what the monitor shows ----------------------------------------------------------

  /** The states the monitor lists, `@@INIT`'s first. */
  states() {
    return this.monitor.computedStates.map((entry) => entry.state);
  }

  /** The action types the monitor lists, `@@INIT` first. */
  types() {
    return this.monitor.stagedActionIds.map((id) => this.monitor.actionsById[id].action.type);
  }

  /** The listed actions (ids, without `@@INIT`). */
  actionIds() {
    return this.monitor.stagedActionIds.slice(1);
  }

  /** The state at the monitor's cursor. */
  currentState() {
    return this.monitor.computedStates[this.monitor.currentStateIndex]?.state;
  }

  /** Messages posted of a type (`"ACTION"`, `"STATE"`, `"INIT"`, `"ERROR"`...). */
  postedOf(type) {
    return this.posted.filter((message) => message.type === type);
  }

  errors() {
    return this.postedOf("ERROR").map((message) => message.payload);
  }

  // ---- what the monitor sends ----------------------------------------------------------

  /** Delivers any message to the instance's listeners, as the content script posts it. */
  deliver(message) {
    const full = { source: EXTENSION, id: String(this.id), ...message };
    for (const listener of [...this.listeners]) listener(full);
  }

  #dispatch(payload, state) {
    this.deliver({ type: "DISPATCH", payload, state });
  }

  jumpToState(index) {
    this.monitor = { ...this.monitor, currentStateIndex: index };
    this.#dispatch({ type: "JUMP_TO_STATE", index }, JSON.stringify(this.monitor.computedStates[index]?.state));
  }

  jumpToAction(actionId) {
    const index = this.monitor.stagedActionIds.indexOf(actionId);
    this.monitor = { ...this.monitor, currentStateIndex: index };
    this.#dispatch({ type: "JUMP_TO_ACTION", actionId }, JSON.stringify(this.monitor.computedStates[index]?.state));
  }

  toggleAction(id) {
    this.#dispatch({ type: "TOGGLE_ACTION", id }, JSON.stringify(this.monitor));
  }

  setActionsActive(start, end, active = true) {
    this.#dispatch({ type: "SET_ACTIONS_ACTIVE", start, end, active }, undefined);
  }

  reset() {
    this.#dispatch({ type: "RESET", timestamp: Date.now() }, undefined);
  }

  commit() {
    this.#dispatch({ type: "COMMIT", timestamp: Date.now() }, undefined);
  }

  rollback() {
    this.#dispatch({ type: "ROLLBACK", timestamp: Date.now() }, JSON.stringify(this.monitor.computedStates[0]?.state));
  }

  sweep() {
    const skipped = new Set(this.monitor.skippedActionIds);
    const m = this.monitor;
    this.monitor = {
      ...m,
      actionsById: Object.fromEntries(Object.entries(m.actionsById).filter(([id]) => !skipped.has(Number(id)))),
      stagedActionIds: m.stagedActionIds.filter((id) => !skipped.has(id)),
      skippedActionIds: [],
      currentStateIndex: Math.min(m.currentStateIndex, m.stagedActionIds.length - 1),
    };
    this.#dispatch({ type: "SWEEP" }, undefined);
  }

  reorderAction(actionId, beforeActionId) {
    this.#dispatch({ type: "REORDER_ACTION", actionId, beforeActionId }, undefined);
  }

  /** The import button: the file's text travels as an IMPORT message. */
  importState(text) {
    this.deliver({ type: "IMPORT", payload: undefined, state: text });
  }

  lockChanges(status) {
    this.#dispatch({ type: "LOCK_CHANGES", status }, undefined);
  }

  pauseRecording(status) {
    this.#dispatch({ type: "PAUSE_RECORDING", status }, undefined);
  }

  /** The dispatcher: typed text, or an action creator call `{ name, selected, args, rest }`. */
  dispatchAction(action) {
    this.deliver({ type: "ACTION", payload: action, state: undefined });
  }

  start() {
    this.deliver({ type: "START", state: undefined, id: undefined });
  }

  stop() {
    this.deliver({ type: "STOP", state: undefined, id: undefined });
  }

  update() {
    this.deliver({ type: "UPDATE", state: undefined });
  }

  exportState() {
    this.deliver({ type: "EXPORT", payload: undefined, state: undefined });
  }
}

/** A mock extension: `connect(config)` like the real one; `instances` are the connections made. */
export function createReduxExtension() {
  const extension = {
    instances: [],
    connect(config = {}) {
      const instance = new MockInstance(extension, { ...config });
      extension.instances.push(instance);
      return instance.api();
    },
    disconnect() {
      for (const instance of extension.instances) instance.listeners = [];
    },
    open() {},
    notifyErrors() {},
    /** The last instance connected. */
    get last() {
      return extension.instances[extension.instances.length - 1];
    },
  };
  return extension;
}

/** Installs a mock as `globalThis.__REDUX_DEVTOOLS_EXTENSION__`; `uninstall()` removes it. */
export function installReduxExtension() {
  const extension = createReduxExtension();
  globalThis.__REDUX_DEVTOOLS_EXTENSION__ = extension;
  return {
    extension,
    uninstall() {
      if (globalThis.__REDUX_DEVTOOLS_EXTENSION__ === extension) delete globalThis.__REDUX_DEVTOOLS_EXTENSION__;
    },
  };
}
