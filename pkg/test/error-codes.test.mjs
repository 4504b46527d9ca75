// Error codes are defined once, in Rust (`ErrorCode`): the list the wrapper is compiled
// with (generated into pkg/src/generated/) must be the one the core reports at run time,
// and every code the wrapper's sources throw must be in it.
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { test } from "node:test";

import { ANNALS_ERROR_CODES } from "../dist/generated/error-codes.js";
import { rules } from "./core.mjs";

test("the generated TS codes are the core's codes", () => {
  assert.deepEqual([...ANNALS_ERROR_CODES], rules.errorCodes());
});

test("every code the wrapper throws is a generated code", async () => {
  const dir = new URL("../src/", import.meta.url);
  const known = new Set(ANNALS_ERROR_CODES);
  const thrown = new Set();
  for (const file of await readdir(dir)) {
    if (!file.endsWith(".ts")) continue;
    const text = await readFile(new URL(file, dir), "utf8");
    // `new AnnalsError("CODE", ...)`, `super("CODE", ...)` and `isAnnalsError(e, "CODE")`.
    for (const m of text.matchAll(/(?:AnnalsError|super|isAnnalsError\([^,]+,)\(?\s*"([A-Z_]+)"/g)) thrown.add(m[1]);
  }
  assert.ok(thrown.size >= 5, `found only ${[...thrown]}`);
  for (const code of thrown) assert.ok(known.has(code), `${code} is thrown by the wrapper but is not an ErrorCode`);
});

test("a core error reaches the app with a generated code", async () => {
  const { openStore, AnnalsError } = await import("annals");
  const store = await openStore({ name: `codes-${process.pid}`, storage: "memory" });
  try {
    await store.append({ stream: "s", type: "T", data: {}, expectedVersion: 5 });
    assert.fail("the append should have failed");
  } catch (error) {
    assert.ok(error instanceof AnnalsError);
    assert.ok(ANNALS_ERROR_CODES.includes(error.code), error.code);
  } finally {
    await store.close();
  }
});
