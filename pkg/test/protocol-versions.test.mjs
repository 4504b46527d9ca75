// Mixed versions across clients and servers: a server states the sync protocol versions it
// speaks (`GET /versions`, the `Annals-Protocol` header); a client outside them is told
// UPGRADE_REQUIRED, naming both sides' versions, and pushes nothing; a client within them
// keeps syncing. Needs the binary (ANNALS_SERVER_BIN): the servers start with their own flags.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { openStore } from "annals";

import { eventually, uniqueName } from "./helpers.mjs";
import { skipWithoutBinary, startServer } from "./server.mjs";

async function syncedStore(server, storeName) {
  return openStore({
    name: uniqueName("versions"),
    storage: "memory",
    projections: { count: { initial: 0, apply: (n) => n + 1 } },
    sync: { url: server.url, store: storeName, token: server.token, longPollSeconds: 1 },
  });
}

describe("sync protocol versions", { skip: skipWithoutBinary }, () => {
  test("an old client against a newer server: UPGRADE_REQUIRED naming both versions, nothing pushed", async () => {
    // A server of a future release that no longer speaks v1.
    const server = await startServer({ args: ["--protocol-versions", "2"] });
    let store;
    try {
      const versions = await fetch(`${server.url}/versions`);
      assert.deepEqual((await versions.json()).protocol, [2]);
      assert.equal(versions.headers.get("annals-protocol"), "2");

      const storeName = uniqueName("old-client");
      store = await syncedStore(server, storeName);
      await store.append({ stream: "todo-1", type: "TodoAdded", data: { title: "milk" } });
      const status = await eventually(() => (store.syncStatus.error?.code === "UPGRADE_REQUIRED" ? store.syncStatus : undefined), 10_000, "UPGRADE_REQUIRED");
      assert.match(status.error.message, /speaks protocol v2 and this client speaks v1/);
      assert.match(status.error.message, /upgrade the annals package/);
      assert.equal(status.pending, 1, "the event waits here, to be pushed after the upgrade");

      // Nothing reached the server's store (read through the version it speaks).
      const pulled = await fetch(`${server.url}/v2/stores/${storeName}/pull?after=0`, {
        headers: { authorization: `Bearer ${server.token}` },
      });
      assert.equal((await pulled.json()).head, 0);
    } finally {
      await store?.close();
      await server.stop();
    }
  });

  test("a client within the server's versions keeps working", async () => {
    const server = await startServer({ args: ["--protocol-versions", "1,2"] });
    let store;
    try {
      const versions = await fetch(`${server.url}/versions`);
      assert.deepEqual((await versions.json()).protocol, [1, 2]);
      assert.equal(versions.headers.get("annals-protocol"), "1, 2");
      store = await syncedStore(server, uniqueName("current-client"));
      await store.append({ stream: "todo-1", type: "TodoAdded", data: { title: "milk" } });
      const report = await store.sync();
      assert.equal(report.pushed, 1);
      assert.equal(store.syncStatus.pending, 0);
      assert.equal(store.syncStatus.error, null);
    } finally {
      await store?.close();
      await server.stop();
    }
  });
});
