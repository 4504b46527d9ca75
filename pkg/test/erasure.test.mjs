// Erasure (issue 13, item 4): eraseStream appends $StreamErased, and every earlier event of
// the stream loses its data and meta (reading as erased: true) while keeping its id,
// position, version and type; projections fold again without the data, time travel finds
// none of it, exports carry the events as erased, and an old copy appended again brings
// nothing back. Through annals-server the erasure reaches every replica, and the admin
// command `annals-server erase` erases without a client.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, test } from "node:test";

import { openBundle, openStore } from "annals";

import { eventually, openTestStore, rejectsWith, uniqueName } from "./helpers.mjs";
import { serverFixture, skipWithoutBinary } from "./server.mjs";

const SECRET = "ada@example.com";

/** A projection that remembers every email it folded, per stream. */
const emails = {
  initial: {},
  apply: (s, e) => (e.data?.email ? { ...s, [e.stream]: [...(s[e.stream] ?? []), e.data.email] } : s),
};

const registered = (stream, id) => ({
  ...(id ? { id } : {}),
  stream,
  type: "Registered",
  data: { email: SECRET },
  meta: { ip: "10.0.0.1" },
});

async function exported(store) {
  let text = "";
  for await (const chunk of store.exportEvents()) text += chunk;
  return text;
}

describe("eraseStream", () => {
  test("the stream's earlier events keep their places and lose their data; projections and time travel forget it", async () => {
    const store = await openTestStore({ projections: { emails } });
    const id = crypto.randomUUID();
    await store.append(registered("user-1", id));
    await store.append(registered("user-2"));
    await store.append({ stream: "user-1", type: "Renamed", data: { name: "Ada" } });
    assert.deepEqual(store.get("emails"), { "user-1": [SECRET], "user-2": [SECRET] });
    const changes = [];
    store.on("change", (c) => changes.push(c));

    const erasure = await store.eraseStream("user-1", { expectedVersion: 2 });
    assert.equal(erasure.type, "$StreamErased");
    assert.equal(erasure.version, 3);

    const events = await store.events();
    assert.deepEqual(
      events.map((e) => [e.position, e.stream, e.version, e.type, e.erased ?? false]),
      [
        [1, "user-1", 1, "Registered", true],
        [2, "user-2", 1, "Registered", false],
        [3, "user-1", 2, "Renamed", true],
        [4, "user-1", 3, "$StreamErased", false],
      ],
    );
    assert.equal(events[0].id, id, "ids stay");
    assert.equal(events[0].data, null);
    assert.equal(events[0].meta, undefined, "meta goes with the data");
    assert.deepEqual(events[1].data, { email: SECRET });
    assert.deepEqual(store.get("emails"), { "user-2": [SECRET] }, "the projection folded again");
    assert.ok(changes.some((c) => c.reset), "listeners hear that everything was folded again");
    for (const position of [1, 2, 3]) {
      const past = await store.stateAt("emails", position);
      assert.equal(past["user-1"], undefined, `stateAt(${position})`);
    }

    // An old copy of the erased event, appended again, is a duplicate: the data stays gone.
    const again = await store.append(registered("user-1", id));
    assert.equal(again.duplicate, true);
    assert.equal(again.erased, true);
    assert.equal(store.head, 4, "nothing written");

    // Exports carry erased events as erased, without the data; an import keeps them so.
    const text = await exported(store);
    assert.equal(text.split(SECRET).length - 1, 1, "only user-2's address is exported");
    assert.equal(text.split('"erased":true').length - 1, 2);
    const copy = await openTestStore({ projections: { emails } });
    const report = await copy.importEvents(text);
    assert.equal(report.imported, 4);
    assert.deepEqual(
      (await copy.events()).map((e) => e.erased ?? false),
      [true, false, true, false],
    );
    assert.deepEqual(copy.get("emails"), { "user-2": [SECRET] });
    assert.equal((await copy.importEvents(text)).imported, 0, "importing again adds nothing");
    await copy.close();
    // A bug bundle carries them erased too, and opens into the same states.
    const bundle = await store.exportBundle();
    assert.equal(bundle.split(SECRET).length - 1, 1, "only user-2's address is in the bundle");
    const opened = await openBundle(bundle, { projections: { emails } });
    assert.deepEqual(opened.differences, []);
    assert.deepEqual(opened.store.get("emails"), { "user-2": [SECRET] });
    await opened.store.close();
    await store.close();
  });

  test("an erasure honours its expected version; a closed stream can still be erased", async () => {
    const store = await openTestStore();
    await store.append(registered("user-1"));
    await rejectsWith(store.eraseStream("user-1", { expectedVersion: 5 }), "WRONG_EXPECTED_VERSION");
    assert.equal((await store.events())[0].erased, undefined, "nothing erased");
    await store.closeStream("user-1");
    const erased = await store.eraseStream("user-1");
    assert.equal(erased.version, 3);
    assert.equal((await store.events())[0].erased, true);
    await rejectsWith(store.append(registered("user-1")), "STREAM_DELETED");
    await rejectsWith(store.eraseStream(7), "INVALID_ARGUMENT");
    await store.close();
  });

  test("a typed store's projections see the erasure and the erased events, not unknown events", async () => {
    const errors = [];
    const schema = { "~standard": { version: 1, vendor: "test", validate: (value) => ({ value }) } };
    const store = await openTestStore({
      events: { Registered: schema },
      projections: { seen: { initial: [], apply: (s, e) => [...s, `${e.type}:${e.erased ? "erased" : e.data.email}`] } },
    });
    store.on("error", (e) => errors.push(e));
    await store.append(registered("user-1"));
    await store.eraseStream("user-1");
    assert.deepEqual(store.get("seen"), ["Registered:erased", "$StreamErased:undefined"]);
    assert.deepEqual(errors, []);
    await store.close();
  });
});

describe("erasure across tabs", () => {
  test("another tab holding the store erases its copies and folds again as it hears of the erasure", async () => {
    const name = uniqueName("erasure-tabs");
    const options = { name, storage: "memory", sharedMemory: true, projections: { emails } };
    const one = await openStore(options);
    const two = await openStore(options);
    await one.append(registered("user-1"));
    await one.append(registered("user-2"));
    await eventually(() => two.head === 2, 2000, "the other tab reads both");
    assert.deepEqual(two.get("emails"), { "user-1": [SECRET], "user-2": [SECRET] });
    await one.eraseStream("user-1");
    await eventually(() => two.head === 3, 2000, "the other tab reads the erasure");
    assert.deepEqual(two.get("emails"), { "user-2": [SECRET] });
    assert.equal((await two.events())[0].erased, true);
    assert.equal((await two.stateAt("emails", 1))["user-1"], undefined);
    await one.close();
    await two.close();
  });
});

describe("erasure through annals-server", { skip: skipWithoutBinary }, () => {
  const fixture = serverFixture("erasure", { projections: { emails } });
  const client = (storeName) => fixture.client(storeName);
  async function pulled(storeName) {
    const answer = await fetch(`${fixture.server.url}/v1/stores/${storeName}/pull?after=0`, {
      headers: { authorization: `Bearer ${fixture.server.token}` },
    });
    return (await answer.json()).events;
  }

  test("a replica's erasure reaches the server and the other replica, whose projections fold again", async () => {
    const name = uniqueName("erased");
    const a = await client(name);
    const b = await client(name);
    await a.append(registered("user-1"));
    await a.append(registered("user-2"));
    await a.sync();
    await eventually(() => b.confirmedHead === 2, 10_000, "b has both");
    assert.deepEqual(b.get("emails"), { "user-1": [SECRET], "user-2": [SECRET] });

    await b.eraseStream("user-1");
    assert.equal((await b.events())[0].erased, true, "erased on b at once");
    await b.sync();
    await eventually(() => a.confirmedHead === 3, 10_000, "a has the erasure");
    assert.equal((await a.events())[0].erased, true);
    assert.deepEqual(a.get("emails"), { "user-2": [SECRET] });
    const server_ = await pulled(name);
    assert.deepEqual(
      server_.map((e) => e.erased ?? false),
      [true, false, false],
    );
    assert.equal(server_[0].data, null);
  });

  test("annals-server erase erases a stream without a client; replicas follow", async () => {
    const name = uniqueName("admin");
    const a = await client(name);
    await a.append(registered("user-1"));
    await a.append(registered("user-1"));
    await a.sync();
    await eventually(() => a.confirmedHead === 2, 10_000, "a is confirmed");
    const out = execFileSync(
      process.env.ANNALS_SERVER_BIN,
      ["erase", "--database", fixture.server.database, "--store", name, "--stream", "user-1"],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    );
    assert.deepEqual(JSON.parse(out), { store: name, stream: "user-1", position: 3, version: 3 });
    await a.sync();
    await eventually(() => a.confirmedHead === 3, 10_000, "a pulls the erasure");
    assert.deepEqual(
      (await a.events()).map((e) => e.erased ?? false),
      [true, true, false],
    );
    assert.deepEqual(a.get("emails"), {});
    const refused = (() => {
      try {
        execFileSync(process.env.ANNALS_SERVER_BIN, ["erase", "--database", fixture.server.database, "--store", name, "--stream", "nobody"], {
          encoding: "utf8",
          stdio: ["ignore", "pipe", "pipe"],
        });
        return undefined;
      } catch (error) {
        return error;
      }
    })();
    assert.ok(refused, "erasing a stream that has no events fails");
    assert.match(String(refused.stderr), /has no stream "nobody"/);
  });
});
