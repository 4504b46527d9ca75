// Typed, validated events: Standard Schema validators (zod and valibot) in `events`, values
// JSON cannot carry faithfully, and reducers that return undefined.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import vm from "node:vm";

import * as v from "valibot";
import { z } from "zod";

import { openStore } from "annals";

import { rejectsWith, uniqueName } from "./helpers.mjs";

const count = { initial: 0, apply: (n) => n + 1 };

function open(options = {}) {
  return openStore({ name: uniqueName("validation"), storage: "memory", projections: { count }, ...options });
}

/** The store wrote nothing: no event, no change, no fold. */
async function assertEmpty(store, changes) {
  assert.equal(store.head, 0);
  assert.equal(store.get("count"), 0);
  assert.deepEqual(await store.events(), []);
  assert.deepEqual(changes, []);
}

function watchChanges(store) {
  const changes = [];
  store.on("change", (c) => changes.push(c));
  return changes;
}

const zodEvents = {
  TodoAdded: z.object({ id: z.string(), title: z.string().min(1), priority: z.number().int().default(0) }),
  TodoDone: z.object({ id: z.string() }),
};

const valibotEvents = {
  TodoAdded: v.object({ id: v.string(), title: v.pipe(v.string(), v.minLength(1)), priority: v.optional(v.number(), 0) }),
  TodoDone: v.object({ id: v.string() }),
};

for (const [library, events] of [
  ["zod", zodEvents],
  ["valibot", valibotEvents],
]) {
  describe(`${library} schemas`, () => {
    test("a bad event is INVALID_EVENT with its type, index and issues; nothing is written", async () => {
      const store = await open({ events });
      const changes = watchChanges(store);
      const error = await rejectsWith(
        () => store.append({ stream: "todo-1", type: "TodoAdded", data: { id: "1", title: 42 } }),
        "INVALID_EVENT",
      );
      assert.equal(error.index, 0);
      assert.equal(error.type, "TodoAdded");
      assert.equal(error.issues.length, 1);
      assert.deepEqual(error.issues[0].path, ["data", "title"]);
      assert.equal(typeof error.issues[0].message, "string");
      assert.match(error.message, /^event 0 \(TodoAdded\): data\.title: /);
      assert.ok(error.message.includes(error.issues[0].message));
      await assertEmpty(store, changes);
      await store.close();
    });

    test("in a batch, a bad third event writes none of the batch", async () => {
      const store = await open({ events });
      const changes = watchChanges(store);
      const error = await rejectsWith(
        () =>
          store.appendMany([
            { stream: "todo-1", type: "TodoAdded", data: { id: "1", title: "milk" } },
            { stream: "todo-1", type: "TodoDone", data: { id: "1" } },
            { stream: "todo-2", type: "TodoAdded", data: { id: "2", title: "" } },
            { stream: "todo-2", type: "TodoDone", data: { id: "2" } },
          ]),
        "INVALID_EVENT",
      );
      assert.equal(error.index, 2);
      assert.equal(error.type, "TodoAdded");
      assert.deepEqual(error.issues[0].path, ["data", "title"]);
      assert.match(error.message, /^event 2 \(TodoAdded\): data\.title: /);
      await assertEmpty(store, changes);
      // The store still takes good events.
      const ok = await store.append({ stream: "todo-1", type: "TodoDone", data: { id: "1" } });
      assert.equal(ok.position, 1);
      await store.close();
    });

    test("what is stored is the validator's output (a default)", async () => {
      const store = await open({ events });
      const added = await store.append({ stream: "todo-1", type: "TodoAdded", data: { id: "1", title: "milk" } });
      assert.deepEqual(added.data, { id: "1", title: "milk", priority: 0 });
      const [stored] = await store.events();
      assert.deepEqual(stored.data, { id: "1", title: "milk", priority: 0 });
      await store.close();
    });

    test("a type without a schema is appended as it is", async () => {
      const store = await open({ events });
      const e = await store.append({ stream: "x", type: "Unschemed", data: { anything: [1, "two"] } });
      assert.deepEqual(e.data, { anything: [1, "two"] });
      await store.close();
    });
  });
}

describe("async validators", () => {
  const zodAsync = {
    NameTaken: z.object({
      name: z.string().refine(async (name) => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        return name !== "taken";
      }, "this name is taken"),
    }),
  };
  const valibotAsync = {
    NameTaken: v.objectAsync({
      name: v.pipeAsync(
        v.string(),
        v.checkAsync(async (name) => {
          await new Promise((resolve) => setTimeout(resolve, 5));
          return name !== "taken";
        }, "this name is taken"),
      ),
    }),
  };
  for (const [library, events] of [
    ["zod refine(async)", zodAsync],
    ["valibot pipeAsync", valibotAsync],
  ]) {
    test(`${library}: refused with its issue, nothing written; a good one is stored`, async () => {
      const store = await open({ events });
      const changes = watchChanges(store);
      const error = await rejectsWith(
        () =>
          store.appendMany([
            { stream: "n", type: "NameTaken", data: { name: "free" } },
            { stream: "n", type: "Other", data: 1 },
            { stream: "n", type: "NameTaken", data: { name: "taken" } },
          ]),
        "INVALID_EVENT",
      );
      assert.equal(error.index, 2);
      assert.deepEqual(error.issues, [{ message: "this name is taken", path: ["data", "name"] }]);
      assert.equal(error.message, "event 2 (NameTaken): data.name: this name is taken");
      await assertEmpty(store, changes);
      const ok = await store.append({ stream: "n", type: "NameTaken", data: { name: "free" } });
      assert.equal(ok.position, 1);
      assert.deepEqual(ok.data, { name: "free" });
      await store.close();
    });
  }

  test("appends reach the log in the order they were made, async validation or not", async () => {
    const store = await open({ events: zodAsync });
    const results = await Promise.all([
      store.append({ stream: "n", type: "NameTaken", data: { name: "a" } }),
      store.append({ stream: "n", type: "Plain", data: "b" }),
      store.append({ stream: "n", type: "NameTaken", data: { name: "taken" } }).catch((e) => e),
      store.append({ stream: "n", type: "Plain", data: "c" }),
    ]);
    assert.deepEqual(
      results.map((r) => (r.code ? r.code : r.position)),
      [1, 2, "INVALID_EVENT", 3],
    );
    const log = await store.events();
    assert.deepEqual(
      log.map((e) => e.type),
      ["NameTaken", "Plain", "Plain"],
    );
    await store.close();
  });

  test("close waits for an append whose validation is under way", async () => {
    const store = await open({ events: zodAsync });
    const appending = store.append({ stream: "n", type: "NameTaken", data: { name: "a" } });
    const outcome = appending.then(
      (e) => e.position,
      (e) => e.code,
    );
    await store.close();
    // Either it got through before the close, or it was refused as CLOSED: never lost silently.
    assert.ok([1, "CLOSED"].includes(await outcome));
  });
});

describe("validators that misbehave, and the `events` option", () => {
  test("a validator that throws is INVALID_EVENT with its reason", async () => {
    const throwing = {
      "~standard": {
        version: 1,
        vendor: "test",
        validate() {
          throw new Error("validator bug");
        },
      },
    };
    const store = await open({ events: { T: throwing } });
    const error = await rejectsWith(() => store.append({ stream: "s", type: "T", data: 1 }), "INVALID_EVENT");
    assert.match(error.message, /event 0 \(T\): data: its validator threw: validator bug/);
    assert.equal(error.cause.message, "validator bug");
    await store.close();
  });

  test("`events` must map types to Standard Schema validators", async () => {
    await rejectsWith(() => open({ events: { T: { parse() {} } } }), "INVALID_ARGUMENT");
    await rejectsWith(() => open({ events: "zod" }), "INVALID_ARGUMENT");
    const v2 = { "~standard": { version: 2, vendor: "x", validate: () => ({ value: 1 }) } };
    const error = await rejectsWith(() => open({ events: { T: v2 } }), "INVALID_ARGUMENT");
    assert.match(error.message, /version 2/);
  });
});

describe("values JSON cannot carry faithfully are INVALID_EVENT naming their path", () => {
  class Point {
    constructor() {
      this.x = 1;
    }
  }
  const cyclic = { a: {} };
  cyclic.a.back = cyclic;
  const cases = [
    ["a Date", { due: new Date(0) }, "data.due is a Date; JSON would turn it into a string: store date.toISOString() or date.getTime()"],
    ["NaN", { n: NaN }, "data.n is NaN; JSON would turn it into null"],
    ["Infinity", { list: [1, -Infinity] }, "data.list[1] is -Infinity; JSON would turn it into null"],
    ["a typed array", { bytes: new Uint8Array([1, 2]) }, /^event 0 \(T\): data\.bytes is a Uint8Array; /],
    ["an ArrayBuffer", { buf: new ArrayBuffer(2) }, /^event 0 \(T\): data\.buf is an ArrayBuffer; /],
    ["a DataView", { view: new DataView(new ArrayBuffer(2)) }, /data\.view is a DataView/],
    ["a Map", { tags: new Map([["a", 1]]) }, /^event 0 \(T\): data\.tags is a Map; JSON would turn it into \{\}/],
    ["a Set", { tags: new Set(["a"]) }, /data\.tags is a Set; JSON would turn it into \{\}/],
    ["a BigInt", { "big n": 2n }, /^event 0 \(T\): data\["big n"\] is a BigInt/],
    ["a function", { f() {} }, /data\.f is a function/],
    ["a symbol", { s: Symbol("s") }, /data\.s is a symbol/],
    ["a class instance", { p: new Point() }, /data\.p is a Point instance, not a plain object/],
    ["a cycle", cyclic, /data\.a\.back is circular/],
    ["undefined in an array", { list: [1, undefined] }, /data\.list\[1\] is undefined in an array; JSON would turn it into null/],
  ];

  for (const [name, data, expected] of cases) {
    test(`${name}, without a schema`, async () => {
      const store = await open();
      const changes = watchChanges(store);
      const error = await rejectsWith(() => store.append({ stream: "s", type: "T", data }), "INVALID_EVENT", name);
      if (typeof expected === "string") assert.equal(error.message, `event 0 (T): ${expected}`);
      else assert.match(error.message, expected);
      assert.equal(error.index, 0);
      assert.equal(error.type, "T");
      assert.equal(error.issues.length, 1);
      assert.equal(error.issues[0].path[0], "data");
      await assertEmpty(store, changes);
      await store.close();
    });
  }

  test("with a schema, in a batch: the path, the type and the index", async () => {
    const store = await open({ events: { T: z.any(), Due: z.object({ due: z.date() }) } });
    const changes = watchChanges(store);
    for (const [name, data] of [
      ["NaN", { n: NaN }],
      ["a typed array", { bytes: new Float64Array(1) }],
      ["a Map", { m: new Map() }],
      ["a BigInt", { n: 1n }],
    ]) {
      const error = await rejectsWith(
        () =>
          store.appendMany([
            { stream: "s", type: "T", data: 1 },
            { stream: "s", type: "T", data },
          ]),
        "INVALID_EVENT",
        name,
      );
      assert.equal(error.index, 1);
      assert.equal(error.type, "T");
      assert.match(error.message, /^event 1 \(T\): data\.\w+ is /);
    }
    // The validator's output is checked: z.date() passes the Date through, JSON would not.
    const error = await rejectsWith(
      () => store.append({ stream: "s", type: "Due", data: { due: new Date(0) } }),
      "INVALID_EVENT",
    );
    assert.equal(error.message, "event 0 (Due): data.due is a Date; JSON would turn it into a string: store date.toISOString() or date.getTime()");
    assert.deepEqual(error.issues[0].path, ["data", "due"]);
    await assertEmpty(store, changes);
    await store.close();
  });

  test("a schema may turn such a value into JSON: its output is stored", async () => {
    const events = { Due: z.object({ due: z.date().transform((d) => d.toISOString()) }) };
    const store = await open({ events });
    const e = await store.append({ stream: "s", type: "Due", data: { due: new Date(0) } });
    assert.deepEqual(e.data, { due: "1970-01-01T00:00:00.000Z" });
    await store.close();
  });

  test("meta gets the same check", async () => {
    const store = await open();
    const error = await rejectsWith(
      () => store.append({ stream: "s", type: "T", data: 1, meta: { at: new Date(0) } }),
      "INVALID_EVENT",
    );
    assert.match(error.message, /^event 0 \(T\): meta\.at is a Date/);
    assert.deepEqual(error.issues[0].path, ["meta", "at"]);
    await store.close();
  });

  test("plain objects of another realm and an own `constructor` key are plain data", async () => {
    const store = await open();
    const foreign = vm.runInNewContext("({ a: 1, list: [1, { b: 2 }] })");
    const e = await store.append({ stream: "s", type: "T", data: { foreign, constructor: "x" } });
    assert.deepEqual(e.data, { foreign: { a: 1, list: [1, { b: 2 }] }, constructor: "x" });
    await store.close();
  });

  test("an undefined object field is simply absent; plain data and null prototypes pass", async () => {
    const store = await open();
    const bare = Object.create(null);
    bare.k = "v";
    const e = await store.append({ stream: "s", type: "T", data: { a: 1, gone: undefined, nested: { x: undefined }, bare } });
    assert.deepEqual(e.data, { a: 1, nested: {}, bare: { k: "v" } });
    assert.equal("gone" in e.data, false);
    const [stored] = await store.events();
    assert.equal("gone" in stored.data, false);
    await store.close();
  });
});

describe("execute validates decided events", () => {
  const events = { Renamed: z.object({ title: z.string().min(1), by: z.string().default("someone") }) };
  const todo = {
    initial: { title: "" },
    evolve: (s, e) => (e.type === "Renamed" ? { title: e.data.title } : s),
    decide: (command) => [{ type: "Renamed", data: { title: command.title } }],
  };

  test("a bad decided event is INVALID_EVENT naming the aggregate; a good one stores the output", async () => {
    const store = await open({ events, aggregates: { todo } });
    const changes = watchChanges(store);
    const error = await rejectsWith(() => store.execute("todo", "t1", { type: "Rename", title: "" }), "INVALID_EVENT");
    assert.match(error.message, /^aggregate "todo" decided an invalid event 0 \(Renamed\): data\.title: /);
    assert.equal(error.index, 0);
    assert.equal(error.type, "Renamed");
    assert.deepEqual(error.issues[0].path, ["data", "title"]);
    await assertEmpty(store, changes);
    const result = await store.execute("todo", "t1", { type: "Rename", title: "milk" });
    assert.deepEqual(result.events[0].data, { title: "milk", by: "someone" });
    await store.close();
  });

  test("async validators and JSON checks apply to decided events too", async () => {
    const asyncEvents = {
      Renamed: z.object({ title: z.string().refine(async (t) => t !== "taken", "taken") }),
    };
    const store = await open({ events: asyncEvents, aggregates: { todo } });
    const error = await rejectsWith(() => store.execute("todo", "t1", { type: "Rename", title: "taken" }), "INVALID_EVENT");
    assert.deepEqual(error.issues, [{ message: "taken", path: ["data", "title"] }]);
    const dated = {
      ...todo,
      decide: () => [{ type: "Dated", data: { at: new Date(0) } }],
    };
    const plain = await open({ aggregates: { dated } });
    const jsonError = await rejectsWith(() => plain.execute("dated", "d1", { type: "X" }), "INVALID_EVENT");
    assert.match(jsonError.message, /^aggregate "dated" decided an invalid event 0 \(Dated\): data\.at is a Date/);
    assert.equal(store.head, 0);
    assert.equal(plain.head, 0);
    const ok = await store.execute("todo", "t1", { type: "Rename", title: "free" });
    assert.equal(ok.version, 1);
    await store.close();
    await plain.close();
  });
});

describe("a reducer that returns undefined", () => {
  // The READMEs' mistake: a switch with no `default`.
  const titles = {
    initial: [],
    apply(state, event) {
      switch (event.type) {
        case "TodoAdded":
          return [...state, event.data.title];
      }
    },
  };

  test("keeps the previous state and is reported once with PROJECTION_FAILED", async () => {
    const store = await openStore({ name: uniqueName(), storage: "memory", projections: { titles } });
    const errors = [];
    store.on("error", (e) => errors.push(e));
    await store.append({ stream: "a", type: "TodoAdded", data: { title: "milk" } });
    const [unknown] = await store.appendMany([
      { stream: "a", type: "TodoArchived", data: {} },
      { stream: "a", type: "TodoAdded", data: { title: "eggs" } },
    ]);
    assert.deepEqual(store.get("titles"), ["milk", "eggs"]);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, "PROJECTION_FAILED");
    assert.equal(
      errors[0].message,
      'projection "titles" returned undefined for event 2 (TodoArchived); the previous state was kept (a reducer must return a state: end its switch with `default: return state`)',
    );
    // Folding it again (time travel, another append) does not report it again.
    assert.deepEqual(await store.stateAt("titles", 2), ["milk"]);
    assert.deepEqual(await store.stateAt("titles", 3), ["milk", "eggs"]);
    await store.append({ stream: "a", type: "TodoAdded", data: { title: "bread" } });
    assert.deepEqual(store.get("titles"), ["milk", "eggs", "bread"]);
    assert.equal(errors.length, 1);
    // Another event of the kind is another report (once each).
    await store.append({ stream: "b", type: "TodoArchived", data: {} });
    assert.equal(errors.length, 2);
    assert.match(errors[1].message, /event 5 \(TodoArchived\)/);
    assert.notEqual(unknown.id, undefined);
    await store.close();
  });

  test("an event another tab appended is reported once in this tab, however often it catches up", async () => {
    const name = uniqueName();
    const tabA = await openStore({ name, storage: "memory", sharedMemory: true, projections: { titles } });
    const tabB = await openStore({ name, storage: "memory", sharedMemory: true, projections: { titles } });
    const errorsA = [];
    tabA.on("error", (e) => errorsA.push(e));
    await tabB.append({ stream: "a", type: "TodoAdded", data: { title: "milk" } });
    await tabB.append({ stream: "a", type: "TodoArchived", data: {} });
    await tabA.catchUp();
    await tabA.catchUp();
    assert.deepEqual(tabA.get("titles"), ["milk"]);
    await tabA.append({ stream: "a", type: "TodoAdded", data: { title: "eggs" } });
    await tabA.stateAt("titles", 2);
    assert.deepEqual(tabA.get("titles"), ["milk", "eggs"]);
    assert.equal(errorsA.filter((e) => e.code === "PROJECTION_FAILED").length, 1);
    await tabA.close();
    await tabB.close();
  });
});
