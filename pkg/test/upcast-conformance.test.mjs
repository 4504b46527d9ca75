// The upcaster fixture shared with the Rust tests (tests/fixtures/upcasters.json): the same
// chain written in TypeScript gives the same outputs, current versions and start-up check
// refusals, through the package's compiled rules and through a real store (append as
// stored, read upcast).
import assert from "node:assert/strict";
import { test } from "node:test";

import { openStore } from "annals";

import { Upcasters } from "../dist/upcast.js";
import { fixture } from "./core.mjs";
import { rejectsWith, uniqueName } from "./helpers.mjs";

/** The fixture's chain, as an app writes it (per its "about"). */
const does = {
  "add priority: 0": (data) => ({ ...data, priority: 0 }),
  "move title to text": ({ title, ...rest }) => (title === undefined ? rest : { ...rest, text: title }),
  'done (boolean) becomes status ("done" | "open")': ({ done, ...rest }) => ({ ...rest, status: done === true ? "done" : "open" }),
};

/** `upcasters` options from fixture declarations; a second declaration of a version is keyed "0<v>" (the same version). */
function upcastersOf(chain) {
  const map = {};
  for (const { type, from, renameTo, does: what } of chain) {
    const fn = (what && does[what]) ?? ((data) => data);
    const byVersion = (map[type] ??= {});
    const key = Object.hasOwn(byVersion, String(from)) ? `0${from}` : String(from);
    byVersion[key] = renameTo === undefined ? fn : { type: renameTo, upcast: fn };
  }
  return map;
}

test("upcast fixture: each case's output, and the current versions", async () => {
  const { chain, cases, currentVersions } = await fixture("upcasters.json");
  const upcasters = new Upcasters(upcastersOf(chain));
  for (const { name, in: input, out } of cases) {
    const event = { id: "e", position: 1, stream: "s", version: 1, time: 0, pending: false, ...input };
    const got = upcasters.upcast(event);
    assert.equal(got.type, out.type, name);
    assert.equal(got.schemaVersion ?? 1, out.schemaVersion, name);
    assert.deepEqual(got.data, out.data, name);
    assert.equal(got.id, "e", `${name}: the envelope stays`);
  }
  for (const [type, version] of Object.entries(currentVersions)) {
    assert.equal(upcasters.currentVersion(type), version, type);
  }
});

test("upcast fixture: the start-up check refuses each bad chain naming its types and versions, and takes the valid ones", async () => {
  const { checks, valid } = await fixture("upcasters.json");
  for (const { name, chain, error } of checks) {
    const refused = await rejectsWith(
      openStore({ name: uniqueName("upcast-check"), storage: "memory", upcasters: upcastersOf(chain) }),
      "INVALID_ARGUMENT",
      name,
    );
    for (const mention of error.mentions) {
      assert.ok(refused.message.includes(mention), `${name}: "${refused.message}" names ${mention}`);
    }
  }
  for (const { name, chain, currentVersions } of valid) {
    const upcasters = new Upcasters(upcastersOf(chain));
    for (const [type, version] of Object.entries(currentVersions)) {
      assert.equal(upcasters.currentVersion(type), version, `${name}: ${type}`);
    }
    const store = await openStore({ name: uniqueName("upcast-valid"), storage: "memory", upcasters: upcastersOf(chain) });
    await store.close();
  }
});

test("upcast fixture through a store: events stored at their versions read as the fixture says, stored bytes unchanged", async () => {
  const { chain, cases } = await fixture("upcasters.json");
  const name = uniqueName("upcast-store");
  // Written by a build without upcasters: the stored versions are what the cases give.
  const writer = await openStore({ name, storage: "memory", sharedMemory: true });
  await writer.appendMany(cases.map((c) => ({ stream: "s", type: c.in.type, schemaVersion: c.in.schemaVersion, data: c.in.data })));
  const stored = await writer.events();
  const reader = await openStore({ name, storage: "memory", sharedMemory: true, upcasters: upcastersOf(chain) });
  const read = await reader.events();
  assert.equal(read.length, cases.length);
  cases.forEach(({ name: caseName, in: input, out }, i) => {
    assert.equal(read[i].type, out.type, caseName);
    assert.equal(read[i].schemaVersion ?? 1, out.schemaVersion, caseName);
    assert.deepEqual(read[i].data, out.data, caseName);
    const changed = input.type !== out.type || input.schemaVersion !== out.schemaVersion;
    assert.deepEqual(read[i].upcastFrom, changed ? { type: input.type, schemaVersion: input.schemaVersion } : undefined, caseName);
  });
  // The store without upcasters still reads them as stored.
  assert.deepEqual((await writer.events()).map((e) => [e.type, e.schemaVersion ?? 1, e.data]), stored.map((e) => [e.type, e.schemaVersion ?? 1, e.data]));
  cases.forEach(({ in: input }, i) => assert.deepEqual(stored[i].data, input.data));
  await reader.close();
  await writer.close();
});
