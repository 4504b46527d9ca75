// Tokens and headers through a real annals-server (see server.mjs: skipped unless one is
// configured): `sync.token` as a string or a function (sync or async) asked again after a
// refusal, `sync.headers` on every request, a refused token told apart from being offline,
// and sync resuming by itself once a good token comes.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { openStore } from "annals";

import { eventually, uniqueName } from "./helpers.mjs";
import { installOnlineSwitch, skipWithoutServer, startServer } from "./server.mjs";

installOnlineSwitch();

/** Records the headers of every request the core sends to `url` (the wasm transport calls globalThis.fetch). */
function recordRequests(url) {
  const original = globalThis.fetch;
  const seen = [];
  globalThis.fetch = (input, init) => {
    const request = new Request(input, init);
    if (request.url.startsWith(url)) seen.push({ url: request.url, headers: Object.fromEntries(request.headers) });
    return original(request);
  };
  return { seen, restore: () => (globalThis.fetch = original) };
}

describe("auth through annals-server", { skip: skipWithoutServer }, () => {
  let server;
  const stores = [];
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.stop();
  });

  async function client(sync) {
    const store = await openStore({
      name: uniqueName("auth"),
      storage: "memory",
      sync: { url: server.url, store: uniqueName("auth-store"), longPollSeconds: 1, ...sync },
    });
    stores.push(store);
    return store;
  }

  test("a token function (sync) is asked at start; its token syncs", async () => {
    const asked = [];
    const store = await client({
      token: (request) => {
        asked.push(request.reason);
        return server.token;
      },
    });
    await store.append({ stream: "s", type: "T" });
    await eventually(() => store.syncStatus.pending === 0, 5000, "pushed");
    assert.deepEqual(asked, ["start"]);
    assert.equal(store.syncStatus.error, null);
    assert.equal(store.syncStatus.online, true);
  });

  test("a refused token is UNAUTHORIZED, online; the async function is asked again once per refusal, and sync resumes", async () => {
    const tokens = ["expired", "still-expired", server.token];
    const asked = [];
    const store = await client({
      token: async (request) => {
        asked.push({ reason: request.reason, code: request.error?.code });
        await new Promise((resolve) => setTimeout(resolve, 5));
        return tokens.shift() ?? server.token;
      },
    });
    const statuses = [];
    store.on("sync", (s) => statuses.push(s));
    await store.append({ stream: "s", type: "T" });
    await eventually(() => store.syncStatus.pending === 0 && store.syncStatus.error === null, 8000, "recovered");
    assert.deepEqual(asked, [
      { reason: "start", code: undefined },
      { reason: "refused", code: "UNAUTHORIZED" },
      { reason: "refused", code: "UNAUTHORIZED" },
    ]);
    const refused = statuses.find((s) => s.error?.code === "UNAUTHORIZED");
    assert.ok(refused, "the status said the token was refused");
    assert.equal(refused.online, true, "a refused token is not being offline");
    assert.equal(refused.lastErrorCode, "UNAUTHORIZED");
    assert.match(refused.error.message, /refused the token/);
    assert.ok(!statuses.some((s) => s.error?.code === "OFFLINE"), "never reported as offline");
    // Once it works, the function is not asked again.
    await store.append({ stream: "s", type: "T" });
    await eventually(() => store.syncStatus.pending === 0, 5000, "second push");
    assert.equal(asked.length, 3);
  });

  test("a string token that is refused stays UNAUTHORIZED without retrying in a loop", async () => {
    const recorder = recordRequests(server.url);
    try {
      const store = await client({ token: "wrong" });
      await eventually(() => store.syncStatus.error?.code === "UNAUTHORIZED", 5000, "refused");
      const requests = recorder.seen.length;
      await store.append({ stream: "s", type: "T" });
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(recorder.seen.length, requests, "the refused token is not sent again");
      assert.equal(store.syncStatus.online, true);
      assert.equal(store.syncStatus.pending, 1);
    } finally {
      recorder.restore();
    }
  });

  test("a token function that keeps failing is retried with backoff, not in a hot loop", async () => {
    let calls = 0;
    const errors = [];
    const store = await client({
      token: () => {
        calls += 1;
        return calls === 1 ? "wrong" : Promise.reject(new Error("the auth server is down"));
      },
    });
    store.on("error", (e) => errors.push(e));
    await eventually(() => calls >= 2, 5000, "asked again after the refusal");
    await new Promise((resolve) => setTimeout(resolve, 1500));
    // Refused at once, then backoff 1 s, 2 s, ...: at most three calls in 1.5 s.
    assert.ok(calls <= 4, `asked ${calls} times`);
    assert.ok(errors.some((e) => /auth server is down/.test(String(e?.message ?? e))), "the failure was reported");
    assert.equal(store.syncStatus.error?.code, "UNAUTHORIZED");
  });

  test("headers (an object, or a function) go with every request", async () => {
    const recorder = recordRequests(server.url);
    try {
      const a = await client({ token: server.token, headers: { "X-Tenant": "acme" } });
      await a.append({ stream: "s", type: "T" });
      await eventually(() => a.syncStatus.pending === 0, 5000, "a pushed");
      const b = await client({
        token: () => server.token,
        headers: async () => ({ "x-request-source": "auth-test" }),
      });
      await b.append({ stream: "s", type: "T" });
      await eventually(() => b.syncStatus.pending === 0, 5000, "b pushed");
      const tenant = recorder.seen.filter((r) => r.headers["x-tenant"] === "acme");
      const source = recorder.seen.filter((r) => r.headers["x-request-source"] === "auth-test");
      assert.ok(tenant.some((r) => r.url.includes("/push")) && tenant.some((r) => r.url.includes("/pull")));
      assert.ok(source.some((r) => r.url.includes("/push")) && source.some((r) => r.url.includes("/pull")));
      for (const r of [...tenant, ...source]) assert.equal(r.headers.authorization, `Bearer ${server.token}`);
    } finally {
      recorder.restore();
    }
  });

  test("bad token and header options are refused when the store opens", async () => {
    const open = (sync) =>
      openStore({ name: uniqueName("bad"), storage: "memory", sync: { url: server.url, store: "s", ...sync } });
    await assert.rejects(open({ token: 42 }), /`sync.token` must be a string or a function/);
    await assert.rejects(open({ token: "t", headers: [] }), /`sync.headers` must be an object/);
    await assert.rejects(open({ token: "t", headers: { Authorization: "x" } }), /give the token as `sync.token`/);
    await assert.rejects(open({ token: "t", headers: { "X-A": 1 } }), /must be a string on one line/);
  });
});
