// options.ts: every entry point refuses bad input with INVALID_ARGUMENT (or INVALID_EVENT
// for events) and a message that names the option, before anything reaches the core.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { AnnalsError } from "../dist/errors.js";
import {
  checkExecuteArguments,
  parseOpenOptions,
  parseReactorOptions,
  parseSyncOptions,
  serializeBatch,
  serializeQuery,
} from "../dist/options.js";

/** Asserts that `f()` throws an AnnalsError with `code` whose message matches `message`. */
function refuses(f, code, message) {
  assert.throws(f, (error) => {
    assert.ok(error instanceof AnnalsError, `expected an AnnalsError, got ${error}`);
    assert.equal(error.code, code, error.message);
    assert.match(error.message, message);
    return true;
  });
}

const apply = (s) => s;

describe("open options", () => {
  test("a good set of options becomes the settings, projections, aggregates and core options", () => {
    const plan = parseOpenOptions(
      {
        name: "todos",
        storage: "memory",
        snapshotEvery: 10,
        checkpointEvery: 5,
        projections: { count: { initial: 0, apply, version: 3 } },
        aggregates: { todo: { initial: {}, evolve: apply, decide: () => [] } },
        origin: "tab-1",
        sync: { url: "http://localhost:8080", store: "todos", token: "t" },
      },
      false,
    );
    assert.deepEqual(plan.settings, {
      name: "todos",
      storage: "memory",
      shared: false,
      snapshotEvery: 10,
      sync: { url: "http://localhost:8080", store: "todos", token: "t" },
    });
    assert.equal(plan.checkpointEvery, 5);
    assert.deepEqual(
      plan.projections.map((p) => [p.name, p.version]),
      [["count", 3]],
    );
    assert.deepEqual([...plan.aggregates.keys()], ["todo"]);
    // The core records the server store the database copies (STORE_MISMATCH on another).
    assert.deepEqual(plan.core, {
      origin: "tab-1",
      synced: true,
      syncServer: "http://localhost:8080",
      syncStore: "todos",
      lazy: true,
    });
    const reset = parseOpenOptions({ name: "t", sync: { url: "http://localhost:8080", store: "todos", token: "t", onMismatch: "reset" } }, false);
    assert.equal(reset.core.resetOnMismatch, true);
    assert.equal(reset.settings.sync.onMismatch, "reset");
  });

  test("storage defaults to indexeddb where there is IndexedDB, else memory", () => {
    assert.equal(parseOpenOptions({ name: "a" }, true).settings.storage, "indexeddb");
    assert.equal(parseOpenOptions({ name: "a" }, false).settings.storage, "memory");
  });

  test("no options object, or no name, is refused", () => {
    refuses(() => parseOpenOptions(undefined, false), "INVALID_ARGUMENT", /needs an options object/);
    refuses(() => parseOpenOptions({ name: "  " }, false), "INVALID_ARGUMENT", /`name` must be a non-empty string/);
  });

  test("an unknown storage, or IndexedDB where there is none, is refused", () => {
    refuses(() => parseOpenOptions({ name: "a", storage: "disk" }, false), "INVALID_ARGUMENT", /"indexeddb" or "memory", got disk/);
    refuses(() => parseOpenOptions({ name: "a", storage: "indexeddb" }, false), "INVALID_ARGUMENT", /IndexedDB is not available/);
  });

  test("snapshot and checkpoint intervals must be positive integers", () => {
    refuses(() => parseOpenOptions({ name: "a", snapshotEvery: 0 }, false), "INVALID_ARGUMENT", /must be positive/);
    refuses(() => parseOpenOptions({ name: "a", checkpointEvery: 1.5 }, false), "INVALID_ARGUMENT", /`checkpointEvery` must be an integer/);
  });

  test("a projection needs apply, and names starting with react: are reserved", () => {
    refuses(() => parseOpenOptions({ name: "a", projections: { p: { initial: 0 } } }, false), "INVALID_ARGUMENT", /projection "p" needs an `apply/);
    refuses(
      () => parseOpenOptions({ name: "a", projections: { "react:x": { initial: 0, apply } } }, false),
      "INVALID_ARGUMENT",
      /reserved for process managers/,
    );
    refuses(
      () => parseOpenOptions({ name: "a", projections: { p: { initial: 0, apply, version: -1 } } }, false),
      "INVALID_ARGUMENT",
      /`projections.p.version`/,
    );
  });

  test("an aggregate needs evolve and decide, and onRejected must be a function", () => {
    refuses(() => parseOpenOptions({ name: "a", aggregates: [] }, false), "INVALID_ARGUMENT", /`aggregates` must be an object/);
    refuses(
      () => parseOpenOptions({ name: "a", aggregates: { t: { evolve: apply } } }, false),
      "INVALID_ARGUMENT",
      /aggregate "t" needs `evolve\(state, event\)` and `decide/,
    );
    refuses(
      () => parseOpenOptions({ name: "a", aggregates: { t: { evolve: apply, decide: apply, onRejected: 1 } } }, false),
      "INVALID_ARGUMENT",
      /`onRejected` must be a function/,
    );
  });

  test("origin must be a string", () => {
    refuses(() => parseOpenOptions({ name: "a", origin: 7 }, false), "INVALID_ARGUMENT", /`origin` must be a string/);
  });
});

describe("sync options", () => {
  const good = { url: "http://localhost:8080", store: "s", token: "t" };

  test("an unknown sync option is refused by name", () => {
    refuses(() => parseSyncOptions({ ...good, pullEvery: 1 }), "INVALID_ARGUMENT", /unknown sync option `pullEvery`/);
  });

  test("url and store must be non-empty strings, the url a URL, the token a string", () => {
    refuses(() => parseSyncOptions({ ...good, store: "" }), "INVALID_ARGUMENT", /`sync.store` must be a non-empty string/);
    refuses(() => parseSyncOptions({ ...good, url: "not a url" }), "INVALID_ARGUMENT", /`sync.url` is not a URL/);
    refuses(() => parseSyncOptions({ ...good, token: undefined }), "INVALID_ARGUMENT", /`sync.token` must be a string/);
    refuses(() => parseSyncOptions("http://x"), "INVALID_ARGUMENT", /`sync` must be an object/);
  });

  test("batch sizes must be positive; a long poll of 0 seconds is allowed", () => {
    refuses(() => parseSyncOptions({ ...good, pushBatch: 0 }), "INVALID_ARGUMENT", /`sync.pushBatch` must be positive/);
    refuses(() => parseSyncOptions({ ...good, pullLimit: -1 }), "INVALID_ARGUMENT", /`sync.pullLimit` must be an integer/);
    assert.equal(parseSyncOptions({ ...good, longPollSeconds: 0 }).longPollSeconds, 0);
  });
});

describe("queries and batches", () => {
  test("a query must be an object of finite numbers and strings", () => {
    assert.equal(serializeQuery(undefined), "{}");
    refuses(() => serializeQuery([1]), "INVALID_ARGUMENT", /a query must be an object/);
    refuses(() => serializeQuery({ after: Number.NaN }), "INVALID_ARGUMENT", /query `after` must be a finite number/);
    refuses(() => serializeQuery({ after: 1n }), "INVALID_ARGUMENT", /query `after` must be a number or a string/);
  });

  test("a batch refuses what JSON cannot carry, naming the key", () => {
    refuses(() => serializeBatch([1]), "INVALID_EVENT", /event 0: an event must be an object/);
    refuses(() => serializeBatch([{ stream: "s", type: "T", data: { n: 1n } }]), "INVALID_EVENT", /event 0 \(T\): data\.n is a BigInt/);
    refuses(() => serializeBatch([{ stream: "s", type: "T", data: { n: Infinity } }]), "INVALID_EVENT", /event 0 \(T\): data\.n is Infinity; JSON would turn it into null/);
    assert.equal(serializeBatch([{ stream: "s", type: "T" }]), '[{"stream":"s","type":"T"}]');
  });
});

describe("execute and reactor options", () => {
  test("execute needs a stream id, a command with a type, and string ids", () => {
    refuses(() => checkExecuteArguments("", { type: "A" }, {}), "INVALID_ARGUMENT", /`id` \(the aggregate's stream\)/);
    refuses(() => checkExecuteArguments("t-1", { kind: "A" }, {}), "INVALID_ARGUMENT", /a command must be an object with a string `type`/);
    refuses(() => checkExecuteArguments("t-1", { type: "A" }, null), "INVALID_ARGUMENT", /execute options must be an object/);
    refuses(() => checkExecuteArguments("t-1", { type: "A" }, { commandId: "" }), "INVALID_ARGUMENT", /`commandId` must be a non-empty string/);
    checkExecuteArguments("t-1", { type: "A" }, { commandId: "c" });
  });

  test("a reactor needs a name, event types and a handler; retry delays are bounded below", () => {
    const handle = () => [];
    refuses(() => parseReactorOptions(null), "INVALID_ARGUMENT", /react needs/);
    refuses(() => parseReactorOptions({ name: "", on: ["A"], handle }), "INVALID_ARGUMENT", /non-empty `name`/);
    refuses(() => parseReactorOptions({ name: "r", on: [], handle }), "INVALID_ARGUMENT", /non-empty array of event types/);
    refuses(() => parseReactorOptions({ name: "r", on: ["A"] }), "INVALID_ARGUMENT", /`handle\(event\)`/);
    refuses(() => parseReactorOptions({ name: "r", on: ["A"], handle, startAt: 3 }), "INVALID_ARGUMENT", /`startAt`/);
    assert.equal(parseReactorOptions({ name: "r", on: ["A"], handle, retry: { initialMs: 0 } }).initialMs, 1);
    const spec = parseReactorOptions({ name: "r", on: ["A"], handle, retry: { initialMs: 500, maxMs: 100 } });
    assert.deepEqual({ ...spec, handle: undefined }, { name: "r", on: ["A"], handle: undefined, initialMs: 500, maxMs: 500, startAt: "beginning" });
  });
});
