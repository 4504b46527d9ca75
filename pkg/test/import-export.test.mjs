// Import and export as NDJSON: `store.exportEvents()` streams a header and the events as
// stored, with bounded memory; `store.importEvents(source)` appends them in batches keeping
// ids, so importing again adds nothing; dry runs write nothing; a bad line is named by its
// number with nothing of its batch written.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, test } from "node:test";

import { openStore } from "annals";

import { rejectsWith, uniqueName } from "./helpers.mjs";

function projections() {
  return {
    count: { initial: 0, apply: (n) => n + 1 },
    totals: {
      initial: {},
      apply: (s, e) => ({ ...s, [e.stream]: (s[e.stream] ?? 0) + (e.data.amount ?? 0) }),
    },
    tagged: { initial: 0, apply: (n, e) => n + (e.meta?.tag === "x" ? 1 : 0) },
  };
}

function open(extra = {}) {
  return openStore({ name: uniqueName("transfer"), storage: "memory", projections: projections(), ...extra });
}

/** An export's text with `n` events (header first), as another replica would have written it. */
function ndjson(n, { header = true, from = 0 } = {}) {
  const lines = [];
  if (header) lines.push(JSON.stringify({ format: "annals-events", formatVersion: 1, store: "elsewhere", count: n, exportedAt: 1 }));
  for (let i = from; i < from + n; i++) {
    lines.push(
      JSON.stringify({
        id: randomUUID(),
        position: i + 1,
        stream: `acct-${i % 17}`,
        version: Math.floor(i / 17) + 1,
        type: "Deposited",
        data: { amount: i % 100 },
        ...(i % 10 === 0 ? { meta: { tag: "x" } } : {}),
        time: 1_700_000_000_000 + i,
        origin: `client-${i % 3}`,
        pending: false,
      }),
    );
  }
  return lines.join("\n") + "\n";
}

/** The whole text of an export stream. */
async function text(stream) {
  let out = "";
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return out;
    out += value;
  }
}

describe("importEvents", () => {
  test("importing a 100k-line NDJSON file twice yields 100k events: the second adds none", async () => {
    const file = ndjson(100_000);
    const store = await open();
    try {
      const progress = [];
      const first = await store.importEvents(file, { onProgress: (p) => progress.push(p) });
      assert.deepEqual(first, { imported: 100_000, duplicates: 0, lines: 100_000 });
      assert.equal(progress.length, 100, "one report per batch of 1,000");
      assert.deepEqual(progress.at(-1), { done: 100_000, total: 100_000 });
      const second = await store.importEvents(file);
      assert.deepEqual(second, { imported: 0, duplicates: 100_000, lines: 100_000 });
      assert.equal(store.head, 100_000);
      assert.equal(store.get("count"), 100_000);
    } finally {
      await store.close();
    }
  });

  test("ids, times, origins, meta and data are kept; positions and versions are the store's", async () => {
    const file = ndjson(5);
    const source = file.trim().split("\n").slice(1).map((l) => JSON.parse(l));
    const store = await open();
    try {
      await store.append({ stream: "acct-0", type: "Opened", data: {} });
      await store.importEvents(file);
      const events = await store.events({ after: 1 });
      assert.deepEqual(
        events.map(({ id, stream, type, data, meta, time, origin }) => ({ id, stream, type, data, meta, time, origin })),
        source.map(({ id, stream, type, data, meta, time, origin }) => ({ id, stream, type, data, meta, time, origin })),
      );
      assert.deepEqual(events.map((e) => e.position), [2, 3, 4, 5, 6]);
      assert.equal(events[0].version, 2, "acct-0 already had an event here");
    } finally {
      await store.close();
    }
  });

  test("a dry run checks every line, counts what would be imported and writes nothing", async () => {
    const file = ndjson(2_500);
    const store = await open();
    try {
      await store.importEvents(file.split("\n").slice(1, 501).join("\n"));
      assert.equal(store.head, 500);
      const done = [];
      const report = await store.importEvents(file, { dryRun: true, onProgress: (p) => done.push(p.done) });
      assert.deepEqual(report, { imported: 2_000, duplicates: 500, lines: 2_500 });
      assert.deepEqual(done, [1_000, 2_000, 2_500]);
      assert.equal(store.head, 500, "nothing written");
      // Repeats within the file count as duplicates in a dry run too.
      const events = file.split("\n").slice(1).join("\n");
      const twice = events + events;
      const repeated = await store.importEvents(twice, { dryRun: true });
      assert.equal(repeated.imported, 2_000);
      assert.equal(store.head, 500);
    } finally {
      await store.close();
    }
  });

  test("a bad line is named by its number; nothing of its batch is written, earlier batches stay", async () => {
    const lines = ndjson(2_000).split("\n");
    // Line 1 is the header: line 1,502 holds event 1,501, in the second batch of 1,000.
    lines[1_501] = lines[1_501].replace(/"stream":"[^"]*"/, '"stream":""');
    const broken = lines.join("\n");
    const store = await open();
    try {
      const dry = await rejectsWith(store.importEvents(broken, { dryRun: true }), "INVALID_EVENT");
      assert.match(dry.message, /line 1502: `stream` must be a non-empty string/);
      assert.equal(store.head, 0, "a dry run writes nothing, even up to the bad line");

      const error = await rejectsWith(store.importEvents(broken), "INVALID_EVENT");
      assert.match(error.message, /line 1502/);
      assert.equal(store.head, 1_000, "the first batch stays; nothing of the second");

      const notJson = lines.slice(0, 10).join("\n") + "\n{oops\n";
      assert.match((await rejectsWith(store.importEvents(notJson), "INVALID_EVENT")).message, /line 11: not JSON/);
      const noId = JSON.stringify({ stream: "s", type: "T", data: 1 });
      assert.match((await rejectsWith(store.importEvents(noId), "INVALID_EVENT")).message, /line 1: `id` must be a UUID/);
    } finally {
      await store.close();
    }
  });

  test("a line whose id the store holds as another event is DUPLICATE_ID, nothing of its batch written", async () => {
    const file = ndjson(1_500);
    const store = await open();
    try {
      await store.importEvents(file.split("\n").slice(1, 1_001).join("\n"));
      assert.equal(store.head, 1_000);
      // Line 11 reuses a stored id for other data; line 1,201 (batch two) is new.
      const lines = file.split("\n");
      lines[10] = lines[10].replace(/"amount":\d+/, '"amount":-1');
      const error = await rejectsWith(store.importEvents(lines.join("\n")), "DUPLICATE_ID");
      assert.match(error.message, /line 11: id [0-9a-f-]{36} is already taken by another event/);
      assert.equal(store.head, 1_000, "the first batch held the bad line: nothing of it written");
      // One id twice in the source, as two different events.
      const twice = [lines[1_200], lines[1_200].replace(/"amount":\d+/, '"amount":-2')].join("\n");
      const repeated = await rejectsWith(store.importEvents(twice), "DUPLICATE_ID");
      assert.match(repeated.message, /line 2: .*line 1 has another event with this id/);
      // The very same lines again are plain duplicates.
      assert.deepEqual(await store.importEvents(file), { imported: 500, duplicates: 1_000, lines: 1_500 });
    } finally {
      await store.close();
    }
  });

  test("a cut-off file, another format and a newer format version are refused", async () => {
    const store = await open();
    try {
      const cut = ndjson(10).split("\n").slice(0, 6).join("\n");
      const error = await rejectsWith(store.importEvents(cut), "INVALID_ARGUMENT");
      assert.match(error.message, /announces 10 events but 5 follow/);
      const csv = JSON.stringify({ format: "csv", formatVersion: 1 }) + "\n";
      await rejectsWith(store.importEvents(csv), "INVALID_ARGUMENT");
      const newer = ndjson(1).replace('"formatVersion":1', '"formatVersion":2');
      await rejectsWith(store.importEvents(newer), "FORMAT_TOO_NEW");
      await rejectsWith(store.importEvents(42), "INVALID_ARGUMENT");
      await rejectsWith(store.importEvents("", { dryRun: "yes" }), "INVALID_ARGUMENT");
    } finally {
      await store.close();
    }
  });

  test("reads a Blob, a stream of bytes cut anywhere (even inside a character), an array, and a bug bundle", async () => {
    const file = ndjson(300).replace(/"amount":(\d+)/g, '"amount":$1,"note":"é✓😀"');
    const bytes = new TextEncoder().encode(file);
    const cuts = new ReadableStream({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 7) controller.enqueue(bytes.subarray(i, i + 7));
        controller.close();
      },
    });
    const a = await open();
    const b = await open();
    const c = await open();
    const d = await open();
    try {
      assert.equal((await a.importEvents(new Blob([file]))).imported, 300);
      assert.equal((await b.importEvents(cuts)).imported, 300);
      assert.deepEqual((await b.events({ limit: 1 }))[0].data.note, "é✓😀");
      const array = file.trim().split("\n").slice(1).map((l) => JSON.parse(l));
      assert.deepEqual(await c.importEvents(array), { imported: 300, duplicates: 0, lines: 300 });
      // A bundle's lines are events as stored: its events import (without its fingerprints).
      const bundle = await a.exportBundle();
      assert.deepEqual(await d.importEvents(bundle), { imported: 300, duplicates: 0, lines: 300 });
      for (const store of [b, c, d]) assert.equal(await store.fingerprint("totals"), await a.fingerprint("totals"));
    } finally {
      await Promise.all([a, b, c, d].map((s) => s.close()));
    }
  });

  test("a frozen store takes no import (a dry run still works)", async () => {
    const store = await open();
    try {
      await store.importEvents(ndjson(3));
      await store.freeze(1);
      await rejectsWith(store.importEvents(ndjson(2)), "FROZEN");
      assert.equal((await store.importEvents(ndjson(2), { dryRun: true })).imported, 2);
      store.unfreeze();
    } finally {
      await store.close();
    }
  });
});

describe("exportEvents", () => {
  test("a header line, then each event as stored, in position order", async () => {
    const store = await open();
    try {
      await store.append({ stream: "acct-1", type: "Deposited", data: { amount: 5 }, meta: { tag: "x" } });
      await store.append({ stream: "acct-2", type: "Deposited", data: { amount: 1.5, nested: [1, { a: "b\"c" }] } });
      const before = Date.now();
      const lines = (await text(store.exportEvents())).split("\n");
      assert.equal(lines.pop(), "", "every line ends in a newline");
      const header = JSON.parse(lines[0]);
      assert.deepEqual({ ...header, exportedAt: 0 }, { format: "annals-events", formatVersion: 1, store: store.name, count: 2, exportedAt: 0 });
      assert.ok(header.exportedAt >= before);
      const stored = await store.events();
      assert.deepEqual(
        lines.slice(1).map((l) => JSON.parse(l)),
        stored,
      );
      assert.deepEqual(Object.keys(JSON.parse(lines[1])), ["id", "position", "stream", "version", "type", "data", "meta", "time", "pending"]);
    } finally {
      await store.close();
    }
  });

  test("export then import into a fresh store reproduces identical projection state and the same lines", async () => {
    const a = await open();
    const b = await open();
    try {
      await a.importEvents(ndjson(3_000));
      await a.appendMany(Array.from({ length: 500 }, (_, i) => ({ stream: `acct-${i % 5}`, type: "Deposited", data: { amount: i }, meta: i % 2 ? { tag: "x" } : undefined })));
      const exported = await text(a.exportEvents());
      assert.deepEqual(await b.importEvents(exported), { imported: 3_500, duplicates: 0, lines: 3_500 });
      for (const name of ["count", "totals", "tagged"]) {
        assert.equal(await b.fingerprint(name), await a.fingerprint(name), name);
      }
      const again = await text(b.exportEvents());
      const events = (t) => t.split("\n").slice(1).map((l) => (l ? JSON.parse(l) : l)).map((e) => (e ? { ...e, origin: e.origin ?? null } : e));
      assert.deepEqual(events(again), events(exported));
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("adding upcasters changes no stored byte: the export before and after is the same, line for line", async () => {
    const name = uniqueName("upcasters-added");
    const before = await openStore({ name, storage: "memory", sharedMemory: true });
    await before.appendMany([
      { stream: "todo-1", type: "TodoAdded", data: { title: "milk" } },
      { stream: "todo-1", type: "TodoDone", data: {}, meta: { by: "me" } },
    ]);
    const events = (t) => t.trim().split("\n").slice(1).join("\n");
    const exportedBefore = events(await text(before.exportEvents()));
    await before.close();
    const after = await openStore({
      name,
      storage: "memory",
      sharedMemory: true,
      upcasters: { TodoAdded: { 1: (data) => ({ ...data, priority: 0 }) } },
    });
    try {
      assert.equal((await after.events({ limit: 1 }))[0].data.priority, 0, "reads are upcast");
      assert.equal(events(await text(after.exportEvents())), exportedBefore);
    } finally {
      await after.close();
    }
  });

  test("{ upcast: true } writes events as this build reads them; the default writes them as stored", async () => {
    const v1 = [
      JSON.stringify({ id: randomUUID(), stream: "todo-1", type: "TodoAdded", data: { title: "milk" }, time: 1 }),
      JSON.stringify({ id: randomUUID(), stream: "todo-2", type: "TodoAdded", schemaVersion: 2, data: { title: "eggs", priority: 3 }, time: 2 }),
    ].join("\n");
    const store = await openStore({
      name: uniqueName("upcast-export"),
      storage: "memory",
      upcasters: { TodoAdded: { 1: (data) => ({ ...data, priority: 0 }) } },
    });
    try {
      await store.importEvents(v1);
      const asStored = (await text(store.exportEvents())).trim().split("\n").slice(1).map((l) => JSON.parse(l));
      assert.deepEqual(asStored.map((e) => [e.schemaVersion, e.data]), [
        [undefined, { title: "milk" }],
        [2, { title: "eggs", priority: 3 }],
      ]);
      const upcast = (await text(store.exportEvents({ upcast: true }))).trim().split("\n").slice(1).map((l) => JSON.parse(l));
      assert.deepEqual(upcast.map((e) => [e.schemaVersion, e.data]), [
        [2, { title: "milk", priority: 0 }],
        [2, { title: "eggs", priority: 3 }],
      ]);
      assert.throws(() => store.exportEvents({ upcast: "yes" }), (e) => e.code === "INVALID_ARGUMENT");
    } finally {
      await store.close();
    }
  });

  test("exporting 1M events grows the heap by at most 64 MB (pulled a page at a time)", { timeout: 240_000 }, async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc");
    const store = await openStore({ name: uniqueName("big-export"), storage: "memory" });
    try {
      const total = 1_000_000;
      for (let i = 0; i < total; i += 1_000) {
        await store.appendMany(Array.from({ length: 1_000 }, (_, k) => ({ stream: `s-${(i + k) % 1000}`, type: "Counted", data: { i: i + k, pad: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" } })));
      }
      gc();
      const baseline = process.memoryUsage().heapUsed;
      let peak = 0;
      let lines = 0;
      let bytes = 0;
      const reader = store.exportEvents().getReader();
      for (let chunk = 0; ; chunk++) {
        const { done, value } = await reader.read();
        if (done) break;
        bytes += value.length;
        for (let at = value.indexOf("\n"); at >= 0; at = value.indexOf("\n", at + 1)) lines += 1;
        if (chunk % 50 === 0) {
          gc();
          peak = Math.max(peak, process.memoryUsage().heapUsed - baseline);
        }
      }
      assert.equal(lines, total + 1, "the header and every event");
      assert.ok(bytes > 100 * 1024 * 1024, `the export is larger than the bound it stays under (${bytes} bytes)`);
      assert.ok(peak <= 64 * 1024 * 1024, `heap grew by ${(peak / 1048576).toFixed(1)} MB`);
    } finally {
      await store.close();
    }
  });
});
