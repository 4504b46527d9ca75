// Web Locks decide which tab syncs a store and which tab runs a process manager (a
// stand-in for navigator.locks here); the other tabs ask it over the BroadcastChannel.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { openStore } from "annals";

import { eventually, installFakeLocks, rejectsWith, uniqueName } from "./helpers.mjs";

const locks = installFakeLocks();
/** A sync target nobody listens on: every request fails at once with OFFLINE. */
const NOWHERE = { url: "http://127.0.0.1:9", store: "nowhere", token: "t" };

describe("one tab syncs", () => {
  test("the first tab leads; the others follow, ask it to sync, and take over when it closes", async () => {
    const name = uniqueName("leader");
    const options = { name, storage: "memory", sharedMemory: true, sync: NOWHERE };
    const one = await openStore(options);
    await eventually(() => one.syncStatus.leader, 2000, "first tab leads");
    const two = await openStore(options);
    const three = await openStore(options);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(two.syncStatus.leader, false);
    assert.equal(three.syncStatus.leader, false);
    assert.ok(locks.held(`annals-sync:${name}`));

    // A follower's append reaches the leader (through the shared storage).
    await two.append({ stream: "a", type: "T" });
    await eventually(() => one.head === 1, 2000, "leader sees the follower's append");
    assert.equal(one.syncStatus.pending, 1);
    assert.equal(two.syncStatus.pending, 1);

    // The leader's status (its last error) reaches the followers.
    await rejectsWith(one.sync(), "OFFLINE");
    await eventually(() => two.syncStatus.lastErrorCode === "OFFLINE", 2000, "status broadcast");
    // A follower's sync() is done by the leader, and fails the way the leader's does.
    await rejectsWith(two.sync(), "OFFLINE");

    // The leader closes: one of the others takes the lock and starts syncing.
    const took = new Promise((resolve) => {
      two.on("sync", (s) => s.leader && resolve("two"));
      three.on("sync", (s) => s.leader && resolve("three"));
    });
    await one.close();
    const leader = await took;
    assert.equal(leader, "two"); // locks are granted in request order
    assert.equal(two.syncStatus.leader, true);
    assert.equal(three.syncStatus.leader, false);
    await two.close();
    await eventually(() => three.syncStatus.leader, 3000, "third tab leads");
    await three.close();
    assert.equal(locks.held(`annals-sync:${name}`), false);
  });
});

describe("one tab runs a process manager", () => {
  test("the handler runs once per event across tabs, and moves to another tab on close", async () => {
    const name = uniqueName("react-lock");
    const stats = {
      initial: 0,
      evolve: (n) => n + 1,
      decide: () => [{ type: "Counted", data: {} }],
    };
    const open = () => openStore({ name, storage: "memory", sharedMemory: true, aggregates: { stats } });
    const one = await open();
    const two = await open();
    const seen = [];
    const handler = (tab) => (event) => {
      seen.push(`${tab}:${event.data.n}`);
      return [{ aggregate: "stats", id: "stats", command: { type: "Count" } }];
    };
    const r1 = one.react({ name: "counter", on: ["Done"], handle: handler("one") });
    two.react({ name: "counter", on: ["Done"], handle: handler("two") });
    await one.appendMany([1, 2].map((n) => ({ stream: `t-${n}`, type: "Done", data: { n } })));
    await r1.idle();
    assert.deepEqual(seen, ["one:1", "one:2"]);
    await one.close();
    await two.append({ stream: "t-3", type: "Done", data: { n: 3 } });
    await eventually(() => seen.length === 3, 3000, "second tab handles the new event");
    assert.deepEqual(seen, ["one:1", "one:2", "two:3"]);
    await eventually(async () => (await two.events({ type: "Counted" })).length === 3, 3000, "three counts");
    await two.close();
  });
});

describe("tabs hear of each other's appends", () => {
  test("a tab that appends as soon as it opens, before another tab answered it, is heard all the same", async () => {
    const name = uniqueName("early");
    const options = { name, storage: "memory", sharedMemory: true };
    const one = await openStore(options);
    const two = await openStore(options);
    // Appended before tab one's answer to the new tab's hello can have arrived.
    await two.append({ stream: "s", type: "T", data: { n: 1 } });
    try {
      await eventually(() => one.head === 1, 5000, "tab one to see tab two's event");
    } finally {
      await one.close();
      await two.close();
    }
  });
});
