// Stream lifecycle (issue 13, item 3): deleteStream appends $StreamDeleted (reads of the
// stream then return what comes after it, its version counts on, no_stream starts it
// again); closeStream appends $StreamClosed (every later append is STREAM_DELETED, on every
// replica and at the server).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { eventually, openTestStore, rejectsWith, uniqueName } from "./helpers.mjs";
import { installOnlineSwitch, serverFixture, skipWithoutServer } from "./server.mjs";

describe("deleteStream", () => {
  test("the stream reads empty, its version counts on, and no_stream starts it again", async () => {
    const seen = [];
    const store = await openTestStore({
      projections: { types: { initial: [], apply: (s, e) => (seen.push(e.type), [...s, e.type]) } },
    });
    await store.append({ stream: "todo-1", type: "Added", data: { title: "milk" }, expectedVersion: "no_stream" });
    await store.append({ stream: "todo-1", type: "Renamed", data: { title: "oat milk" } });
    await store.append({ stream: "other", type: "Added", data: {} });

    const deleted = await store.deleteStream("todo-1", { expectedVersion: 2 });
    assert.equal(deleted.type, "$StreamDeleted");
    assert.equal(deleted.version, 3);
    assert.equal(deleted.streamVersion, 3);
    assert.deepEqual(await store.events({ stream: "todo-1" }), [], "reads of the stream return nothing");
    assert.deepEqual(await store.events({ stream: "todo-1", backwards: true }), []);
    assert.equal(await store.streamVersion("todo-1"), 3, "the version counts on");
    assert.equal((await store.events({ stream: "other" })).length, 1);
    assert.deepEqual(store.get("types"), ["Added", "Renamed", "Added", "$StreamDeleted"], "projections see the delete");

    const restarted = await store.append({ stream: "todo-1", type: "Added", data: { title: "eggs" }, expectedVersion: "no_stream" });
    assert.equal(restarted.version, 4);
    assert.deepEqual(
      (await store.events({ stream: "todo-1" })).map((e) => e.data.title),
      ["eggs"],
    );
    await rejectsWith(store.append({ stream: "todo-1", type: "Added", expectedVersion: "no_stream" }), "WRONG_EXPECTED_VERSION");
    assert.deepEqual(seen.at(-1), "Added");
    await store.close();
  });

  test("a delete honours its expected version", async () => {
    const store = await openTestStore();
    await store.append({ stream: "s", type: "T" });
    await rejectsWith(store.deleteStream("s", { expectedVersion: 7 }), "WRONG_EXPECTED_VERSION");
    await rejectsWith(store.closeStream("s", { expectedVersion: "no_stream" }), "WRONG_EXPECTED_VERSION");
    assert.equal(store.head, 1, "nothing written");
    await rejectsWith(store.deleteStream(42), "INVALID_ARGUMENT");
    await store.close();
  });

  test("a typed store's projections see the lifecycle events, not as unknown events", async () => {
    const errors = [];
    const schema = { "~standard": { version: 1, vendor: "test", validate: (value) => ({ value }) } };
    const store = await openTestStore({
      events: { Added: schema },
      projections: { types: { initial: [], apply: (s, e) => [...s, e.type] } },
    });
    store.on("error", (e) => errors.push(e));
    await store.append({ stream: "s", type: "Added", data: {} });
    await store.deleteStream("s");
    await store.closeStream("s");
    assert.deepEqual(store.get("types"), ["Added", "$StreamDeleted", "$StreamClosed"]);
    assert.deepEqual(errors, []);
    await store.close();
  });
});

describe("aggregates of deleted streams", () => {
  const todo = {
    initial: { title: null },
    evolve: (state, event) => (event.type === "Added" ? { title: event.data.title } : state),
    decide: (command, state) => {
      if (state.title !== null) throw new Error("the todo exists already");
      return [{ type: "Added", data: { title: command.title } }];
    },
  };

  test("start again from their initial state, at the stream's next version", async () => {
    const store = await openTestStore({ aggregates: { todo } });
    try {
      await store.execute("todo", "todo-1", { type: "Add", title: "milk" });
      await rejectsWith(store.execute("todo", "todo-1", { type: "Add", title: "again" }), "COMMAND_REJECTED");
      await store.deleteStream("todo-1", { expectedVersion: 1 });
      const result = await store.execute("todo", "todo-1", { type: "Add", title: "eggs" });
      assert.equal(result.events[0].version, 3);
      assert.deepEqual(
        (await store.events({ stream: "todo-1" })).map((e) => e.data.title),
        ["eggs"],
      );
    } finally {
      await store.close();
    }
  });
});

describe("aggregates of erased or closed streams", () => {
  /** Counts the events it folds; `Peek` refuses with that count, so a test can read it. */
  const todo = {
    initial: { title: null, folded: 0 },
    evolve: (state, event) => ({ title: event.type === "Added" ? event.data.title : state.title, folded: state.folded + 1 }),
    decide: (command, state) => {
      if (command.type === "Peek") throw new Error(`folded ${state.folded}`);
      if (state.title !== null) throw new Error("the todo exists already");
      return [{ type: "Added", data: { title: command.title } }];
    },
  };
  const peek = async (store, id) => {
    const error = await store.execute("todo", id, { type: "Peek" }).catch((e) => e);
    assert.equal(error.code, "COMMAND_REJECTED");
    return error.message;
  };

  test("an erased stream's aggregate starts again from its initial state, and folds no erased event", async () => {
    const store = await openTestStore({ aggregates: { todo } });
    try {
      await store.execute("todo", "todo-1", { type: "Add", title: "milk" });
      await store.eraseStream("todo-1", { expectedVersion: 1 });
      assert.equal(await peek(store, "todo-1"), "folded 0");
      const result = await store.execute("todo", "todo-1", { type: "Add", title: "eggs" });
      assert.equal(result.events[0].version, 3);
      assert.equal(await peek(store, "todo-1"), "folded 1");
    } finally {
      await store.close();
    }
  });

  test("a closed stream's aggregate does not fold the $StreamClosed", async () => {
    const store = await openTestStore({ aggregates: { todo } });
    try {
      await store.execute("todo", "todo-2", { type: "Add", title: "milk" });
      await store.closeStream("todo-2", { expectedVersion: 1 });
      assert.equal(await peek(store, "todo-2"), "folded 1");
    } finally {
      await store.close();
    }
  });
});

describe("closeStream", () => {
  test("every later append to the stream fails with STREAM_DELETED; its events stay readable", async () => {
    const store = await openTestStore();
    await store.append({ stream: "order-7", type: "Placed", data: {} });
    const closed = await store.closeStream("order-7", { expectedVersion: 1 });
    assert.equal(closed.type, "$StreamClosed");
    for (const expectedVersion of ["any", "no_stream", 2, undefined]) {
      await rejectsWith(store.append({ stream: "order-7", type: "Amended", data: {}, expectedVersion }), "STREAM_DELETED");
    }
    await rejectsWith(store.deleteStream("order-7"), "STREAM_DELETED");
    await rejectsWith(
      store.appendMany([
        { stream: "fresh", type: "T" },
        { stream: "order-7", type: "T" },
      ]),
      "STREAM_DELETED",
    );
    assert.equal(store.head, 2, "nothing of the batch was written");
    assert.deepEqual(
      (await store.events({ stream: "order-7" })).map((e) => e.type),
      ["Placed", "$StreamClosed"],
    );
    await store.close();
  });
});

describe("stream lifecycle through annals-server", { skip: skipWithoutServer }, () => {
  const setOnline = installOnlineSwitch();
  const fixture = serverFixture("lifecycle");
  const client = (storeName) => fixture.client(storeName);

  test("a close reaches the other replica: its offline append is rejected as STREAM_DELETED, later ones fail at once", async () => {
    const name = uniqueName("closed");
    setOnline(true);
    const a = await client(name);
    await a.append({ stream: "cart", type: "Opened", data: {} });
    await a.sync();
    // b opens offline: its sync waits for the device to come online, so nothing it appends
    // can reach the server before the close does.
    setOnline(false);
    const b = await client(name);
    await b.append({ stream: "cart", type: "Added", data: { sku: 1 } });
    // Another replica's close reaches the server first (pushed straight to it, so that b,
    // offline, cannot push before it).
    const pushed = await fetch(`${fixture.server.url}/v1/stores/${name}/push`, {
      method: "POST",
      headers: { authorization: `Bearer ${fixture.server.token}`, "content-type": "application/json" },
      body: JSON.stringify({
        clientId: "another-replica",
        events: [{ id: crypto.randomUUID(), stream: "cart", type: "$StreamClosed", data: {}, time: Date.now(), expectedVersion: 1 }],
      }),
    });
    assert.equal((await pushed.json()).results[0].status, "ok");
    const reported = new Promise((resolve) => b.on("rejected", (...args) => resolve(args)));
    setOnline(true);
    const [event, reason] = await reported;
    assert.equal(event.type, "Added");
    assert.match(reason, /^STREAM_DELETED: /);
    await eventually(() => b.syncStatus.pending === 0 && b.confirmedHead === 2, 10_000, "b has the close");
    await rejectsWith(b.append({ stream: "cart", type: "Added", data: {} }), "STREAM_DELETED");
    await eventually(() => a.confirmedHead === 2, 10_000, "a has the close");
    await rejectsWith(a.append({ stream: "cart", type: "Added", data: {} }), "STREAM_DELETED");
  });

  test("a delete syncs; the other replica starts the stream again with no_stream", async () => {
    const name = uniqueName("deleted");
    setOnline(true);
    const a = await client(name);
    const b = await client(name);
    await a.append({ stream: "draft", type: "Written", data: {} });
    await a.deleteStream("draft", { expectedVersion: 1 });
    await a.sync();
    await eventually(() => b.confirmedHead === 2, 10_000, "b has the delete");
    assert.deepEqual(await b.events({ stream: "draft" }), []);
    await b.append({ stream: "draft", type: "Written", data: { again: true }, expectedVersion: "no_stream" });
    await b.sync();
    await eventually(() => b.syncStatus.pending === 0 && a.confirmedHead === 3, 10_000, "the restart is confirmed and reaches a");
    const events = await a.events({ stream: "draft" });
    assert.deepEqual(
      events.map((e) => [e.version, e.data]),
      [[3, { again: true }]],
    );
  });
});
