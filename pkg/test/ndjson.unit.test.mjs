// ndjson.ts: the NDJSON lines that event exports and bug bundles share. Lines are numbered
// from 1 whatever the chunks look like; a JSON array from the core splits into its items
// without being parsed (brackets, braces and quotes inside strings are text).
import assert from "node:assert/strict";
import { test } from "node:test";

import { eventLinePages, jsonArrayItems, readLines, splitLines } from "../dist/ndjson.js";

async function collect(source) {
  const out = [];
  for await (const line of readLines(source)) out.push(line);
  return out;
}

test("lines are numbered from 1 across chunks, with \\r\\n and a last line without its newline", async () => {
  const expected = [
    { line: 1, text: "a" },
    { line: 2, text: "" },
    { line: 3, text: "bc" },
    { line: 4, text: "d" },
  ];
  assert.deepEqual(await collect("a\r\n\nbc\nd"), expected);
  assert.deepEqual(await collect(["a\r", "\n", "\nb", "c\nd"]), expected);
  assert.deepEqual(splitLines("a\r\n\nbc\nd"), expected);
  assert.deepEqual(await collect(""), []);
  assert.deepEqual(await collect("x\n"), [{ line: 1, text: "x" }]);
});

test("bytes are decoded across chunk boundaries, even inside a character; Blobs and async iterables are read", async () => {
  const bytes = new TextEncoder().encode("é😀\nz\n");
  const oneByOne = (async function* () {
    for (const b of bytes) yield new Uint8Array([b]);
  })();
  assert.deepEqual(await collect(oneByOne), [
    { line: 1, text: "é😀" },
    { line: 2, text: "z" },
  ]);
  assert.deepEqual(await collect(new Blob([bytes])), [
    { line: 1, text: "é😀" },
    { line: 2, text: "z" },
  ]);
  await assert.rejects(collect(42), TypeError);
});

test("a JSON array's items are cut at its top-level commas, unchanged", () => {
  const items = ['{"a":"x,}]{[\\"","b":[1,{"c":2}]}', '{"n":1.50,"s":"\\\\"}', "{}"];
  assert.deepEqual(jsonArrayItems(`[${items.join(",")}]`), items);
  assert.deepEqual(jsonArrayItems("[]"), []);
  for (const item of items) JSON.parse(item);
});

test("event lines come a page at a time, each page whole lines", () => {
  const pages = [];
  const asked = [];
  for (const page of eventLinePages(5, (after, to) => {
    asked.push([after, to]);
    return JSON.stringify(Array.from({ length: to - after }, (_, i) => ({ position: after + i + 1 })));
  }, 2)) {
    pages.push(page);
  }
  assert.deepEqual(asked, [
    [0, 2],
    [2, 4],
    [4, 5],
  ]);
  assert.deepEqual(pages, ['{"position":1}\n{"position":2}\n', '{"position":3}\n{"position":4}\n', '{"position":5}\n']);
});
