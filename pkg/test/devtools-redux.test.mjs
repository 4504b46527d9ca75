// The Redux DevTools bridge (`connectReduxDevtools` from "annals/devtools") against a mock
// of the extension's `connect()` API that follows its protocol (./redux-extension-mock.mjs):
// what the extension is sent, and what each message the extension can send does to the app.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

import { openStore } from "annals";
import { connectReduxDevtools } from "annals/devtools";

import { rejectsWith, uniqueName } from "./helpers.mjs";
import { createReduxExtension, installReduxExtension } from "./redux-extension-mock.mjs";

/** A memory store whose `count` projection counts events and `byStream` counts per stream. */
function openCountStore() {
  return openStore({
    name: uniqueName("redux"),
    storage: "memory",
    projections: {
      count: { initial: 0, apply: (n) => n + 1 },
      // Sums `data.n`: switching an event off changes the sum by its own amount.
      sum: { initial: 0, apply: (s, e) => s + (e.data?.n ?? 0) },
    },
  });
}

/** Appends events `n = values[i]` one at a time (one change each); returns them. */
async function appendEach(store, values, stream = "s") {
  const events = [];
  for (const n of values) events.push(await store.append({ stream, type: `Add${n}`, data: { n } }));
  return events;
}

let installed;
let store;
let connection;
const errors = [];

beforeEach(async () => {
  installed = installReduxExtension();
  store = await openCountStore();
  errors.length = 0;
});

afterEach(async () => {
  connection?.disconnect();
  connection = undefined;
  installed.uninstall();
  if (!store.closed) await store.close();
});

function connect(name = "sum", options = {}) {
  connection = connectReduxDevtools(store, name, { onError: (e) => errors.push(e.message), ...options });
  return connection;
}

/** The mock instance the bridge connected to. */
function ext() {
  return installed.extension.last;
}

describe("connecting", () => {
  test("without the extension it returns a no-op connection and never throws", async () => {
    installed.uninstall();
    assert.equal(globalThis.__REDUX_DEVTOOLS_EXTENSION__, undefined);
    const c = connectReduxDevtools(store, "sum");
    assert.equal(c.connected, false);
    await store.append({ stream: "s", type: "Add1", data: { n: 1 } });
    await c.idle();
    c.disconnect();
    c.disconnect();
    assert.equal(store.frozenAt, undefined);
  });

  test("an extension whose connect throws gives a no-op connection and a warning", async () => {
    const broken = { connect: () => { throw new Error("extension broke"); } };
    const c = connectReduxDevtools(store, "sum", { extension: broken, onError: (e) => errors.push(e.message) });
    assert.equal(c.connected, false);
    assert.deepEqual(errors, ["extension broke"]);
  });

  test("it names the instance, declares what annals supports and inits with the projection's state", async () => {
    await appendEach(store, [5, 7]);
    connect();
    await connection.idle();
    assert.equal(connection.connected, true);
    const instance = ext();
    assert.equal(instance.config.name, `${store.name}/sum`);
    assert.equal(instance.config.maxAge, 50);
    const f = instance.config.features;
    assert.deepEqual(
      { jump: f.jump, skip: f.skip, pause: f.pause, lock: f.lock, reorder: f.reorder, import: f.import, dispatch: f.dispatch },
      { jump: true, skip: true, pause: true, lock: true, reorder: false, import: false, dispatch: false },
    );
    const inits = instance.calls.filter((c) => c.method === "init");
    assert.equal(inits.length, 1);
    assert.equal(inits[0].args[0], 12, "init gets the projection's current state");
    assert.deepEqual(instance.types(), ["@@INIT"]);
    assert.deepEqual(instance.states(), [12]);
  });

  test("the global extension is found on globalThis, or one can be passed", async () => {
    const other = createReduxExtension();
    connect("count", { extension: other });
    await connection.idle();
    assert.equal(other.instances.length, 1);
    assert.equal(installed.extension.instances.length, 0);
  });
});

describe("sending events", () => {
  test("each appended event is sent as an action { type, event } with the state right after it", async () => {
    connect();
    const events = await appendEach(store, [1, 2, 3]);
    await connection.idle();
    const sends = ext().calls.filter((c) => c.method === "send");
    assert.equal(sends.length, 3);
    sends.forEach((call, i) => {
      const [action, state] = call.args;
      assert.equal(action.type, `Add${i + 1}`);
      assert.equal(action.event.id, events[i].id);
      assert.equal(action.event.position, events[i].position);
      assert.deepEqual(action.event.data, { n: i + 1 });
      assert.equal(state, [1, 3, 6][i]);
    });
    assert.deepEqual(ext().types(), ["@@INIT", "Add1", "Add2", "Add3"]);
    assert.deepEqual(ext().states(), [0, 1, 3, 6]);
  });

  test("a batch sends each of its events with its own state, not the state after the batch", async () => {
    connect();
    await store.appendMany([1, 10, 100, 1000].map((n) => ({ stream: "s", type: `Add${n}`, data: { n } })));
    await connection.idle();
    const states = ext().calls.filter((c) => c.method === "send").map((c) => c.args[1]);
    assert.deepEqual(states, [1, 11, 111, 1111]);
    assert.deepEqual(ext().states(), [0, 1, 11, 111, 1111]);
  });

  test("the extension keeps maxAge actions; the bridge trims the same way and keeps jumps right", async () => {
    connect("sum", { maxAge: 4 });
    const events = await appendEach(store, [1, 2, 3, 4, 5, 6]);
    await connection.idle();
    // @@INIT (now after event 3) and the last three events.
    assert.deepEqual(ext().states(), [6, 10, 15, 21]);
    ext().jumpToState(0);
    await connection.idle();
    assert.equal(store.frozenAt, events[2].position, "@@INIT stands for the position the extension committed");
    assert.equal(store.get("sum"), 6);
    ext().jumpToState(2);
    await connection.idle();
    assert.equal(store.frozenAt, events[4].position);
    assert.equal(store.get("sum"), 15);
  });

  test("a batch larger than the window is sent as one lifted state, each event with its own state", async () => {
    connect("sum", { maxAge: 4 });
    await store.appendMany([1, 2, 3, 4, 5, 6].map((n) => ({ stream: "s", type: `Add${n}`, data: { n } })));
    await connection.idle();
    const stateSends = ext().calls.filter((c) => c.method === "send" && c.args[0] === null);
    assert.equal(stateSends.length, 1);
    assert.deepEqual(ext().types(), ["@@INIT", "Add4", "Add5", "Add6"]);
    assert.deepEqual(ext().states(), [6, 10, 15, 21]);
    assert.equal(ext().monitor.currentStateIndex, 3);
  });
});

describe("changes that rewrite the log's tail (sync: rebased, reset)", () => {
  // A memory store has no sync; a wrapper lets the test tell the bridge of the changes a
  // synced store reports, while every read goes to the real store.
  function withChanges(real) {
    const listeners = new Set();
    const wrapped = new Proxy(real, {
      get(target, key) {
        if (key === "on") {
          return (event, listener) => {
            if (event !== "change") return target.on(event, listener);
            listeners.add(listener);
            const off = target.on(event, listener);
            return () => {
              listeners.delete(listener);
              off();
            };
          };
        }
        const value = Reflect.get(target, key, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    return { wrapped, emit: (change) => listeners.forEach((listener) => listener(change)) };
  }

  test("a rebased change re-sends the window as the log now is, each event with its own state", async () => {
    const { wrapped, emit } = withChanges(store);
    connection = connectReduxDevtools(wrapped, "sum", { onError: (e) => errors.push(e.message) });
    const events = await appendEach(store, [1, 2, 4]);
    await connection.idle();
    const ids = ext().actionIds();
    // Pending events 2 and 3 moved: the change names what follows position 1 now.
    emit({ previousHead: 1, head: 3, confirmedHead: 1, rebased: true, reset: false, events: events.slice(1) });
    await connection.idle();
    const last = ext().calls.at(-1);
    assert.equal(last.method, "send");
    assert.equal(last.args[0], null, "sent whole, as a lifted state");
    assert.deepEqual(ext().types(), ["@@INIT", "Add1", "Add2", "Add4"]);
    assert.deepEqual(ext().states(), [0, 1, 3, 7]);
    assert.deepEqual(ext().actionIds(), ids, "events still at their positions keep their action ids");
    assert.deepEqual(errors, []);
  });

  test("a reset change (the server's log restarted) re-sends the window from the log", async () => {
    const { wrapped, emit } = withChanges(store);
    connection = connectReduxDevtools(wrapped, "sum", { onError: (e) => errors.push(e.message) });
    const events = await appendEach(store, [1, 2]);
    await connection.idle();
    emit({ previousHead: 0, head: 2, confirmedHead: 2, rebased: false, reset: true, events });
    await connection.idle();
    assert.equal(ext().calls.at(-1).args[0], null);
    assert.deepEqual(ext().states(), [0, 1, 3]);
    ext().jumpToState(1);
    await connection.idle();
    assert.equal(store.frozenAt, events[0].position);
  });
});

describe("jumping (JUMP_TO_STATE, JUMP_TO_ACTION)", () => {
  test("jumping to action 3 freezes the store at that event's position and the app's get() shows that state", async () => {
    connect();
    const events = await appendEach(store, [1, 2, 3, 4, 5]);
    await connection.idle();
    const third = ext().actionIds()[2];
    ext().jumpToAction(third);
    await connection.idle();
    assert.equal(store.frozenAt, events[2].position);
    assert.equal(store.get("sum"), 6);
    assert.equal(store.get("count"), 3);
    await rejectsWith(store.append({ stream: "s", type: "Add9", data: { n: 9 } }), "FROZEN");
    assert.equal(ext().currentState(), 6, "the extension's cursor is on that action");
  });

  test("jumping to a state maps its index to a position, never reading the state the extension sends", async () => {
    connect();
    const events = await appendEach(store, [1, 2, 3]);
    await connection.idle();
    // A message whose `state` lies: the bridge must not use it.
    ext().deliver({ type: "DISPATCH", payload: { type: "JUMP_TO_STATE", index: 1 }, state: JSON.stringify(999) });
    await connection.idle();
    assert.equal(store.frozenAt, events[0].position);
    assert.equal(store.get("sum"), 1);
  });

  test("jumping to @@INIT freezes at the baseline: the head when the bridge connected", async () => {
    const before = await appendEach(store, [10, 20]);
    connect();
    await appendEach(store, [1, 2]);
    await connection.idle();
    ext().jumpToState(0);
    await connection.idle();
    assert.equal(store.frozenAt, before[1].position);
    assert.equal(store.get("sum"), 30);
  });

  test("jumping to the latest action unfreezes the store", async () => {
    connect();
    await appendEach(store, [1, 2, 3]);
    await connection.idle();
    ext().jumpToState(1);
    await connection.idle();
    assert.notEqual(store.frozenAt, undefined);
    ext().jumpToState(3);
    await connection.idle();
    assert.equal(store.frozenAt, undefined);
    assert.equal(store.get("sum"), 6);
    await store.append({ stream: "s", type: "Add4", data: { n: 4 } });
  });

  test("an index or action id the bridge does not list moves nothing", async () => {
    connect();
    await appendEach(store, [1, 2]);
    await connection.idle();
    ext().deliver({ type: "DISPATCH", payload: { type: "JUMP_TO_STATE", index: 42 } });
    ext().deliver({ type: "DISPATCH", payload: { type: "JUMP_TO_ACTION", actionId: 42 } });
    await connection.idle();
    assert.equal(store.frozenAt, undefined);
    assert.equal(ext().monitor.currentStateIndex, 2);
  });

  test("freezing the store from elsewhere (the annals panel) moves the extension's cursor", async () => {
    connect();
    const events = await appendEach(store, [1, 2, 3]);
    await connection.idle();
    await store.freeze(events[1].position);
    await connection.idle();
    assert.equal(ext().monitor.currentStateIndex, 2);
    assert.equal(ext().currentState(), 3);
    store.unfreeze();
    await connection.idle();
    assert.equal(ext().monitor.currentStateIndex, 3);
  });
});

describe("what-if (TOGGLE_ACTION, SET_ACTIONS_ACTIVE, SWEEP)", () => {
  test("toggling an action re-sends states folded without that event, and the log keeps it", async () => {
    connect();
    const events = await appendEach(store, [1, 2, 4, 8]);
    await connection.idle();
    const second = ext().actionIds()[1];
    ext().toggleAction(second);
    await connection.idle();
    const last = ext().calls.at(-1);
    assert.equal(last.method, "send");
    assert.equal(last.args[0], null, "the lifted state is re-sent");
    assert.deepEqual(last.args[1].skippedActionIds, [second]);
    assert.deepEqual(ext().states(), [0, 1, 1, 5, 13], "folded without the 2");
    assert.deepEqual(ext().monitor.skippedActionIds, [second]);
    assert.equal((await store.events()).length, 4, "the log keeps the event");
    assert.equal(store.get("sum"), 15, "the app's state is the log's");
    assert.equal(store.frozenAt, undefined);
    assert.deepEqual(await store.stateAt("sum", events[3].position, { skip: [events[1].id] }), 13);

    ext().toggleAction(second);
    await connection.idle();
    assert.deepEqual(ext().states(), [0, 1, 3, 7, 15], "switched on again");
    assert.deepEqual(ext().monitor.skippedActionIds, []);
  });

  test("events appended while an action is off are sent folded without it", async () => {
    connect();
    await appendEach(store, [1, 2]);
    await connection.idle();
    ext().toggleAction(ext().actionIds()[0]);
    await connection.idle();
    await appendEach(store, [4]);
    await connection.idle();
    assert.deepEqual(ext().states(), [0, 0, 2, 6]);
    assert.equal(store.get("sum"), 7);
  });

  test("SET_ACTIONS_ACTIVE switches a range off and on", async () => {
    connect();
    await appendEach(store, [1, 2, 4, 8]);
    await connection.idle();
    const ids = ext().actionIds();
    ext().setActionsActive(ids[1], ids[3], false);
    await connection.idle();
    assert.deepEqual(ext().states(), [0, 1, 1, 1, 9]);
    ext().setActionsActive(ids[1], ids[3], true);
    await connection.idle();
    assert.deepEqual(ext().states(), [0, 1, 3, 7, 15]);
  });

  test("SWEEP drops the switched-off actions from the list; the log keeps them and they stay off until RESET", async () => {
    connect();
    await appendEach(store, [1, 2, 4]);
    await connection.idle();
    ext().toggleAction(ext().actionIds()[1]);
    await connection.idle();
    ext().sweep();
    await connection.idle();
    assert.deepEqual(ext().types(), ["@@INIT", "Add1", "Add4"]);
    assert.deepEqual(ext().states(), [0, 1, 5]);
    assert.equal((await store.events()).length, 3);
    await appendEach(store, [8]);
    await connection.idle();
    assert.deepEqual(ext().states(), [0, 1, 5, 13], "still folded without it");
    ext().reset();
    await connection.idle();
    assert.deepEqual(ext().types(), ["@@INIT", "Add1", "Add2", "Add4", "Add8"]);
    assert.deepEqual(ext().states(), [0, 1, 3, 7, 15]);
  });

  test("jumping while an action is off freezes the app at the log's real state (the what-if stays in the extension)", async () => {
    connect();
    const events = await appendEach(store, [1, 2, 4]);
    await connection.idle();
    ext().toggleAction(ext().actionIds()[0]);
    await connection.idle();
    ext().jumpToState(2);
    await connection.idle();
    assert.equal(store.frozenAt, events[1].position);
    assert.equal(store.get("sum"), 3);
    assert.equal(ext().currentState(), 2);
  });
});

describe("history (COMMIT, ROLLBACK, RESET)", () => {
  test("COMMIT makes the present the new baseline: unfrozen, no actions, what-if forgotten", async () => {
    connect();
    await appendEach(store, [1, 2, 4]);
    await connection.idle();
    ext().toggleAction(ext().actionIds()[0]);
    ext().jumpToState(1);
    await connection.idle();
    ext().commit();
    await connection.idle();
    assert.equal(store.frozenAt, undefined);
    assert.deepEqual(ext().types(), ["@@INIT"]);
    assert.deepEqual(ext().states(), [7]);
    assert.equal(ext().calls.at(-1).method, "init");
    await appendEach(store, [8]);
    await connection.idle();
    assert.deepEqual(ext().states(), [7, 15]);
    assert.equal((await store.events()).length, 4, "the log is not squashed");
  });

  test("ROLLBACK freezes the app at the committed state and keeps the later actions listed", async () => {
    await appendEach(store, [100]);
    connect();
    await appendEach(store, [1, 2]);
    await connection.idle();
    ext().toggleAction(ext().actionIds()[0]);
    await connection.idle();
    ext().rollback();
    await connection.idle();
    assert.equal(store.frozenAt, 1);
    assert.equal(store.get("sum"), 100);
    assert.equal(ext().monitor.currentStateIndex, 0);
    assert.deepEqual(ext().states(), [100, 101, 103], "the what-if is cleared");
    ext().jumpToState(2);
    await connection.idle();
    assert.equal(store.frozenAt, undefined);
  });

  test("ROLLBACK with nothing after the baseline leaves the app in the present", async () => {
    connect();
    await connection.idle();
    ext().rollback();
    await connection.idle();
    assert.equal(store.frozenAt, undefined);
  });

  test("RESET returns to the connection's start: unfrozen, what-if forgotten, every event since listed again", async () => {
    await appendEach(store, [100]);
    connect();
    await appendEach(store, [1, 2, 4]);
    await connection.idle();
    ext().commit();
    await connection.idle();
    await appendEach(store, [8]);
    ext().toggleAction(ext().actionIds()[0]);
    ext().jumpToState(0);
    await connection.idle();
    assert.notEqual(store.frozenAt, undefined);
    ext().reset();
    await connection.idle();
    assert.equal(store.frozenAt, undefined);
    assert.deepEqual(ext().types(), ["@@INIT", "Add1", "Add2", "Add4", "Add8"]);
    assert.deepEqual(ext().states(), [100, 101, 103, 107, 115]);
    assert.deepEqual(ext().monitor.skippedActionIds, []);
    assert.equal(ext().monitor.currentStateIndex, 4);
  });
});

describe("what the extension may not do (IMPORT_STATE, REORDER_ACTION, ACTION, LOCK_CHANGES)", () => {
  test("IMPORT_STATE is refused: told to the extension's error channel and to onError; the extension shows the log again", async () => {
    connect();
    await appendEach(store, [1, 2]);
    await connection.idle();
    const exported = JSON.stringify({ ...ext().monitor, computedStates: [{ state: 42 }], stagedActionIds: [0] });
    ext().importState(exported);
    await connection.idle();
    assert.equal(ext().errors().length, 1);
    assert.match(ext().errors()[0], /import/i);
    assert.equal(errors.length, 1);
    assert.deepEqual(ext().states(), [0, 1, 3]);
    assert.equal(store.get("sum"), 3);
    assert.equal((await store.events()).length, 2);
  });

  test("REORDER_ACTION is refused and the log's order re-sent", async () => {
    connect();
    await appendEach(store, [1, 2, 4]);
    await connection.idle();
    const [a, , c] = ext().actionIds();
    ext().reorderAction(c, a);
    await connection.idle();
    assert.match(ext().errors()[0], /order/);
    assert.deepEqual(ext().types(), ["@@INIT", "Add1", "Add2", "Add4"]);
    assert.equal(ext().calls.at(-1).args[0], null);
  });

  test("an ACTION dispatched from the extension is refused by default: the log is read-only from there", async () => {
    connect();
    await connection.idle();
    ext().dispatchAction("{ type: 'Add1' }");
    await connection.idle();
    assert.match(ext().errors()[0], /read-only/);
    assert.equal(store.head, 0);
  });

  test("with options.dispatch, an ACTION from the extension is handed to the app (which may append)", async () => {
    const seen = [];
    connect("sum", {
      dispatch: async (action) => {
        seen.push(action);
        const { n } = JSON.parse(action);
        await store.append({ stream: "s", type: "Typed", data: { n } });
      },
    });
    await connection.idle();
    assert.equal(ext().config.features.dispatch, true);
    ext().dispatchAction('{ "n": 5 }');
    await connection.idle();
    assert.deepEqual(seen, ['{ "n": 5 }']);
    assert.equal(store.get("sum"), 5);
    assert.deepEqual(ext().types(), ["@@INIT", "Typed"]);
    const custom = { name: "add", selected: 0, args: ["1"], rest: "[]" };
    connection.disconnect();
    connect("sum", { dispatch: (action) => { seen.push(action); throw new Error("no such creator"); } });
    await connection.idle();
    ext().dispatchAction(custom);
    await connection.idle();
    assert.deepEqual(seen.at(-1), custom);
    assert.deepEqual(ext().errors(), ["no such creator"]);
  });

  test("LOCK_CHANGES is recorded (isLocked) and dispatches from the extension are refused while locked", async () => {
    const seen = [];
    connect("sum", { dispatch: (action) => seen.push(action) });
    await connection.idle();
    ext().lockChanges(true);
    await connection.idle();
    assert.equal(ext().monitor.isLocked, true);
    ext().dispatchAction("{}");
    await connection.idle();
    assert.deepEqual(seen, []);
    assert.match(ext().errors()[0], /locked/);
    ext().lockChanges(false);
    ext().dispatchAction("{}");
    await connection.idle();
    assert.deepEqual(seen, ["{}"]);
    assert.equal(ext().monitor.isLocked, false);
  });
});

describe("recording (PAUSE_RECORDING, START, STOP, UPDATE)", () => {
  test("PAUSE_RECORDING stops sending until resumed; resuming sends what arrived meanwhile", async () => {
    connect();
    await appendEach(store, [1]);
    await connection.idle();
    ext().pauseRecording(true);
    await connection.idle();
    const sent = ext().calls.length;
    await appendEach(store, [2, 4]);
    await connection.idle();
    assert.equal(ext().calls.length, sent, "nothing sent while paused");
    assert.equal(ext().monitor.isPaused, true);
    ext().pauseRecording(false);
    await connection.idle();
    assert.deepEqual(ext().types(), ["@@INIT", "Add1", "Add2", "Add4"]);
    assert.deepEqual(ext().states(), [0, 1, 3, 7]);
    assert.equal(ext().monitor.isPaused, false);
  });

  test("STOP (monitor closed) stops sending; START sends the whole window again", async () => {
    connect();
    await appendEach(store, [1]);
    await connection.idle();
    ext().stop();
    await connection.idle();
    const sent = ext().calls.length;
    await appendEach(store, [2]);
    await connection.idle();
    assert.equal(ext().calls.length, sent);
    ext().start();
    await connection.idle();
    assert.equal(ext().calls.at(-1).method, "init");
    assert.deepEqual(ext().types(), ["@@INIT", "Add1", "Add2"]);
    assert.deepEqual(ext().states(), [0, 1, 3]);
  });

  test("UPDATE re-sends the lifted state; EXPORT, OPTIONS and unknown types are ignored", async () => {
    connect();
    await appendEach(store, [1]);
    await connection.idle();
    const sent = ext().calls.length;
    ext().exportState();
    ext().deliver({ type: "OPTIONS", options: {} });
    ext().deliver({ type: "SOMETHING_NEW", payload: { type: "JUMP_TO_STATE", index: 0 } });
    ext().deliver({ type: "DISPATCH", payload: { type: "SOMETHING_NEWER" } });
    await connection.idle();
    assert.equal(ext().calls.length, sent);
    assert.equal(store.frozenAt, undefined);
    ext().update();
    await connection.idle();
    assert.equal(ext().calls.length, sent + 1);
    assert.equal(ext().calls.at(-1).args[0], null);
    assert.deepEqual(ext().states(), [0, 1]);
  });
});

describe("disconnecting", () => {
  test("disconnect unsubscribes the store and the extension, and unfreezes the store it froze", async () => {
    connect();
    await appendEach(store, [1, 2]);
    await connection.idle();
    ext().jumpToState(1);
    await connection.idle();
    assert.notEqual(store.frozenAt, undefined);
    connection.disconnect();
    assert.equal(connection.connected, false);
    assert.equal(store.frozenAt, undefined);
    assert.ok(ext().calls.some((c) => c.method === "unsubscribe"));
    const sent = ext().calls.length;
    await appendEach(store, [4]);
    ext().deliver({ type: "DISPATCH", payload: { type: "JUMP_TO_STATE", index: 0 } });
    await connection.idle();
    assert.equal(ext().calls.length, sent);
    assert.equal(store.frozenAt, undefined);
  });

  test("disconnect leaves a freeze that someone else made", async () => {
    connect();
    const events = await appendEach(store, [1, 2]);
    await connection.idle();
    ext().jumpToState(1);
    await connection.idle();
    await store.freeze(events[1].position);
    await connection.idle();
    connection.disconnect();
    assert.equal(store.frozenAt, events[1].position);
    store.unfreeze();
  });

  test("closing the store ends the connection quietly", async () => {
    connect();
    await connection.idle();
    await store.close();
    ext().jumpToState(0);
    await connection.idle();
    assert.equal(connection.connected, false);
    assert.deepEqual(errors, []);
  });
});
