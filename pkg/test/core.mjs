// The wasm core's module, initialised, for tests of its free functions and classes
// (not a test file itself).
import { readFile } from "node:fs/promises";

import init, * as core from "../wasm/annals.js";

await init({ module_or_path: await readFile(new URL("../wasm/annals_bg.wasm", import.meta.url)) });

/** @type {import("../dist/wasm-contract.js").WasmRules & typeof core} */
export const rules = core;

/** Reads a fixture shared with the Rust tests (`tests/fixtures/`). */
export async function fixture(name) {
  return JSON.parse(await readFile(new URL(`../../tests/fixtures/${name}`, import.meta.url), "utf8"));
}
