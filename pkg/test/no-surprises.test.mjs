// No silent surprises (against a real annals-server; see server.mjs): a local store opened
// against another server store is refused with STORE_MISMATCH unless the app asks to reset,
// and rejections stored but not announced before a tab went away are announced after the
// reopen, once. `sharedMemory: true` memory stores stand for reopening an IndexedDB store.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { openStore } from "annals";

import { eventually, rejectsWith, uniqueName } from "./helpers.mjs";
import { installOnlineSwitch, skipWithoutServer, startServer } from "./server.mjs";

const setOnline = installOnlineSwitch();

test("`sync.onMismatch` is \"fail\" or \"reset\"", async () => {
  const sync = { url: "http://127.0.0.1:9", store: "s", token: "t", onMismatch: "replace" };
  const error = await rejectsWith(
    () => openStore({ name: uniqueName("mismatch-option"), storage: "memory", sync }),
    "INVALID_ARGUMENT",
  );
  assert.match(error.message, /onMismatch/);
});

describe("no silent surprises", { skip: skipWithoutServer }, () => {
  let server;
  const stores = [];
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.stop();
  });

  /** Opens (again) the local store `local` syncing with server store `remote`. */
  async function open(local, remote, sync = {}, extra = {}) {
    const store = await openStore({
      name: local,
      storage: "memory",
      sharedMemory: true,
      sync: { url: server.url, store: remote, token: server.token, longPollSeconds: 1, ...sync },
      ...extra,
    });
    stores.push(store);
    return store;
  }

  const settled = (store, head) => () =>
    store.confirmedHead === head && store.syncStatus.pending === 0 && !store.syncStatus.syncing;

  async function syncedCopy(local, remote, count) {
    const store = await open(local, remote);
    await store.appendMany(Array.from({ length: count }, (_, i) => ({ stream: "s", type: "Added", data: i })));
    await eventually(settled(store, count), 10_000, "confirmed");
    await store.close();
  }

  test("a local store opened for another sync.store is refused with STORE_MISMATCH and left as it was", async () => {
    setOnline(true);
    const local = uniqueName("local");
    const [todos, other] = [uniqueName("todos"), uniqueName("todos-v2")];
    await syncedCopy(local, todos, 16);

    const error = await rejectsWith(() => open(local, other), "STORE_MISMATCH");
    for (const named of [todos, other, server.url, "16 confirmed", 'onMismatch: "reset"']) {
      assert.ok(error.message.includes(named), `${named} in ${error.message}`);
    }
    const elsewhere = server.url.replace("127.0.0.1", "localhost");
    await rejectsWith(() => open(local, todos, { url: elsewhere }), "STORE_MISMATCH", "another server URL");

    const same = await open(local, todos, { url: `${server.url}/` });
    assert.equal(same.head, 16, "nothing was dropped");
    await same.sync();
    assert.equal(same.confirmedHead, 16);
    await same.close();
  });

  test('onMismatch: "reset" drops the copy, keeps unpushed events and syncs the new store', async () => {
    const local = uniqueName("local");
    const [todos, other] = [uniqueName("todos"), uniqueName("todos-v2")];
    setOnline(true);
    await syncedCopy(local, todos, 3);
    setOnline(false);
    const offline = await open(local, todos);
    await offline.append({ stream: "mine", type: "Added", data: "never pushed" });
    await offline.close();

    setOnline(true);
    const reset = await open(local, other, { onMismatch: "reset" });
    await eventually(settled(reset, 1), 10_000, "the unpushed event reaches the new store");
    const events = await reset.events();
    assert.deepEqual(
      events.map((e) => e.data),
      ["never pushed"],
    );
    await reset.close();

    const again = await open(local, other);
    assert.equal(again.head, 1, "bound to the new store now");
    const old = await open(uniqueName("reader"), todos);
    await eventually(settled(old, 3), 10_000, "the old store kept its events");
  });

  test("a rejection stored as the tab went away is announced after the reopen, once", async () => {
    setOnline(true);
    const remote = uniqueName("seats");
    const winner = await open(uniqueName("winner"), remote);
    await winner.append({ stream: "seat-1", type: "Reserved", data: "winner", expectedVersion: "no_stream" });
    await winner.sync();

    const local = uniqueName("loser");
    setOnline(false);
    const loser = await open(local, remote);
    await loser.append({ stream: "seat-1", type: "Reserved", data: "loser", expectedVersion: "no_stream" });
    const heardBeforeClosing = [];
    loser.on("rejected", (event) => heardBeforeClosing.push(event.data));
    // The tab goes away while its push is on the way: the answer is stored, but the closing
    // tab announces nothing.
    const realFetch = globalThis.fetch;
    let closing;
    globalThis.fetch = async (request, ...rest) => {
      const url = typeof request === "string" ? request : request.url;
      if (url.includes("/push")) {
        closing ??= loser.close();
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      return realFetch(request, ...rest);
    };
    try {
      setOnline(true);
      await eventually(() => closing !== undefined, 10_000, "the push started");
      await closing;
    } finally {
      globalThis.fetch = realFetch;
    }
    assert.deepEqual(heardBeforeClosing, []);

    const reopened = await open(local, remote);
    const heard = [];
    reopened.on("rejected", (event, _reason, actualVersion) => heard.push([event.data, actualVersion]));
    await eventually(() => heard.length > 0, 10_000, "announced after the reopen");
    assert.deepEqual(heard, [["loser", 1]]);
    assert.equal((await reopened.rejected()).length, 1);
    await reopened.sync();
    await reopened.close();

    const third = await open(local, remote);
    const heardAgain = [];
    third.on("rejected", (event) => heardAgain.push(event.data));
    await third.sync();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(heardAgain, [], "not announced again");
  });
});
