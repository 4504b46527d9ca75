// One NDJSON format across runtimes: a store's `exportEvents()` seeds a server store through
// `annals-server import`, and `annals-server export` seeds a store through `importEvents()`,
// with the same projection states on both sides. Needs the binary (ANNALS_SERVER_BIN).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { openStore } from "annals";

import { eventually, uniqueName } from "./helpers.mjs";
import { skipWithoutBinary, startServer } from "./server.mjs";

function projections() {
  return {
    count: { initial: 0, apply: (n) => n + 1 },
    totals: { initial: {}, apply: (s, e) => ({ ...s, [e.stream]: (s[e.stream] ?? 0) + (e.data.amount ?? 0) }) },
  };
}

async function text(stream) {
  let out = "";
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return out;
    out += value;
  }
}

describe("import and export between a store and annals-server", { skip: skipWithoutBinary }, () => {
  let server;
  let dir;
  const stores = [];
  before(async () => {
    server = await startServer();
    dir = mkdtempSync(join(tmpdir(), "annals-transfer-"));
  });
  after(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cli = (...args) => execFileSync(process.env.ANNALS_SERVER_BIN, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

  async function open(extra = {}) {
    const store = await openStore({ name: uniqueName("server-transfer"), storage: "memory", projections: projections(), ...extra });
    stores.push(store);
    return store;
  }

  const synced = (storeName) => open({ sync: { url: server.url, store: storeName, token: server.token, longPollSeconds: 1 } });

  test("a store's export, imported by annals-server, reaches synced clients with the same state", async () => {
    const source = await open();
    for (let i = 0; i < 3; i++) {
      await source.appendMany(Array.from({ length: 1_000 }, (_, k) => ({ stream: `acct-${k % 9}`, type: "Deposited", data: { amount: i * 1_000 + k } })));
    }
    const file = join(dir, "from-store.ndjson");
    writeFileSync(file, await text(source.exportEvents()));
    const storeName = uniqueName("seeded");
    const report = JSON.parse(cli("import", "--database", server.database, "--store", storeName, file));
    assert.deepEqual(report, { lines: 3_000, imported: 3_000, duplicates: 0, rejected: 0, dryRun: false });
    // Again: nothing new.
    assert.equal(JSON.parse(cli("import", "--database", server.database, "--store", storeName, file)).duplicates, 3_000);

    const client = await synced(storeName);
    await eventually(() => client.confirmedHead === 3_000, 10_000, "the client pulled the imported events");
    for (const name of ["count", "totals"]) assert.equal(await client.fingerprint(name), await source.fingerprint(name), name);
    const ids = (events) => events.map((e) => e.id);
    assert.deepEqual(ids(await client.events()), ids(await source.events()));
  });

  test("annals-server's export, imported by a store, gives the same state; into the syncing store, nothing new", async () => {
    const storeName = uniqueName("exported");
    const writer = await synced(storeName);
    for (const from of [0, 1_000]) {
      const n = from === 0 ? 1_000 : 500;
      await writer.appendMany(Array.from({ length: n }, (_, k) => ({ stream: `acct-${(from + k) % 4}`, type: "Deposited", data: { amount: from + k } })));
    }
    await writer.sync();
    assert.equal(writer.syncStatus.pending, 0);
    const file = join(dir, "from-server.ndjson");
    cli("export", "--database", server.database, "--store", storeName, "--out", file);
    const header = JSON.parse(readFileSync(file, "utf8").split("\n", 1)[0]);
    assert.equal(header.count, 1_500);

    const copy = await open();
    assert.deepEqual(await copy.importEvents(new Blob([readFileSync(file)])), { imported: 1_500, duplicates: 0, lines: 1_500 });
    for (const name of ["count", "totals"]) assert.equal(await copy.fingerprint(name), await writer.fingerprint(name), name);
    assert.deepEqual(await writer.importEvents(readFileSync(file, "utf8")), { imported: 0, duplicates: 1_500, lines: 1_500 });
  });
});
