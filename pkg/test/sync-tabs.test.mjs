// Several tabs of one synced store against a real annals-server (skipped unless one is
// configured, see server.mjs), with a stand-in for Web Locks: one tab syncs for all.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { openStore } from "annals";

import { eventually, installFakeLocks, uniqueName } from "./helpers.mjs";
import { skipWithoutServer, startServer } from "./server.mjs";

installFakeLocks();

describe("tabs of a synced store", { skip: skipWithoutServer }, () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test("the syncing tab pushes the others' appends; they see them confirmed; sync() anywhere; hand-over on close", async () => {
    const serverStore = uniqueName("tabs");
    const name = uniqueName("tab");
    const options = {
      name,
      storage: "memory",
      sharedMemory: true,
      projections: { list: { initial: [], apply: (l, e) => [...l, `${e.data.n}${e.pending ? "?" : ""}`] } },
      sync: { url: server.url, store: serverStore, token: server.token, longPollSeconds: 1 },
    };
    const one = await openStore(options);
    await eventually(() => one.syncStatus.leader, 2000, "first tab leads");
    const two = await openStore(options);
    const other = await openStore({ ...options, name: uniqueName("device"), sharedMemory: false });

    await two.append({ stream: "s", type: "T", data: { n: 1 } });
    assert.deepEqual(two.get("list"), ["1?"]);
    await eventually(() => two.confirmedHead === 1 && two.syncStatus.pending === 0, 10_000, "confirmed in tab two");
    assert.deepEqual(two.get("list"), ["1"]);
    await eventually(() => two.syncStatus.online && !two.syncStatus.leader, 5000, "tab two hears the leader's status");

    // Another device appends; tab two asks the leader to sync now.
    await other.append({ stream: "s", type: "T", data: { n: 2 } });
    await other.sync();
    const report = await two.sync();
    assert.equal(typeof report.pulled, "number");
    await eventually(() => two.confirmedHead === 2, 5000, "tab two has the other device's event");
    assert.deepEqual(two.get("list"), ["1", "2"]);

    // The syncing tab closes: tab two takes over.
    await one.close();
    await eventually(() => two.syncStatus.leader, 5000, "tab two leads");
    await two.append({ stream: "s", type: "T", data: { n: 3 } });
    await eventually(() => two.confirmedHead === 3 && two.syncStatus.pending === 0, 10_000, "tab two syncs itself");
    await eventually(() => other.confirmedHead === 3, 10_000, "the other device pulls it");
    assert.deepEqual(other.get("list"), ["1", "2", "3"]);
    await two.close();
    await other.close();
  });

  test("a refused event is reported in every tab", async () => {
    const serverStore = uniqueName("tabs-reject");
    const base = {
      storage: "memory",
      sync: { url: server.url, store: serverStore, token: server.token, longPollSeconds: 1 },
    };
    const winner = await openStore({ ...base, name: uniqueName("winner") });
    await winner.append({ stream: "seat", type: "Reserved", expectedVersion: "no_stream" });
    await winner.sync();

    const name = uniqueName("loser");
    // Both tabs open before anything is pulled, so the append below sees an empty stream.
    const tabOptions = { ...base, name, sharedMemory: true, sync: { ...base.sync, url: "http://127.0.0.1:9" } };
    const one = await openStore(tabOptions);
    const two = await openStore(tabOptions);
    await two.append({ stream: "seat", type: "Reserved", expectedVersion: "no_stream" });
    await one.close();
    await two.close();
    // Reopen pointed at the server: the pending event is pushed and refused.
    const seen = { three: [], four: [] };
    const three = await openStore({ ...base, name, sharedMemory: true });
    three.on("rejected", (event, reason, actual) => seen.three.push([event.stream, actual]));
    const four = await openStore({ ...base, name, sharedMemory: true });
    four.on("rejected", (event, reason, actual) => seen.four.push([event.stream, actual]));
    await eventually(() => seen.three.length > 0 && seen.four.length > 0, 10_000, "reported in both tabs");
    assert.deepEqual(seen.three, [["seat", 1]]);
    assert.deepEqual(seen.four, [["seat", 1]]);
    assert.equal((await four.rejected()).length, 1);
    await three.close();
    await four.close();
    await winner.close();
  });
});
