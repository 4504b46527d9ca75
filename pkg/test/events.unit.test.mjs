// events.ts: the store's listener sets. A listener that throws is reported as an error and
// never stops the others; an unknown event name is refused with the known ones.
import assert from "node:assert/strict";
import { test } from "node:test";

import { StoreEvents } from "../dist/events.js";

test("every listener of an event is called, even after one throws; the throw is reported", () => {
  const events = new StoreEvents();
  const seen = [];
  const errors = [];
  events.on("error", (error) => errors.push(error.message));
  events.on("change", () => {
    throw new Error("listener failed");
  });
  events.on("change", (change) => seen.push(change));
  events.emit("change", { head: 1 });
  assert.deepEqual(seen, [{ head: 1 }]);
  assert.deepEqual(errors, ["listener failed"]);
});

test("what on returns removes the listener", () => {
  const events = new StoreEvents();
  const seen = [];
  const off = events.on("sync", (status) => seen.push(status));
  events.emit("sync", 1);
  off();
  events.emit("sync", 2);
  assert.deepEqual(seen, [1]);
});

test("an unknown event, or a listener that is not a function, is refused", () => {
  const events = new StoreEvents();
  assert.throws(() => events.on("changes", () => undefined), /unknown event "changes": use "change", "error", "sync", "rejected", "closed", "frozen" or "rebuild"/);
  assert.throws(() => events.on("change", "f"), /on needs a listener function/);
});

test("with no error listener, errors go to the console", (t) => {
  const events = new StoreEvents();
  const logged = t.mock.method(console, "error", () => undefined);
  events.error(new Error("lost"));
  assert.equal(logged.mock.callCount(), 1);
  assert.equal(logged.mock.calls[0].arguments[1].message, "lost");
});
