// The Node entry: reads the .wasm file from disk next to this module. Storage is memory
// (Node has no IndexedDB).

import { readFile } from "node:fs/promises";

import init from "../wasm/annals.js";
import { openBundleWith, openStoreWith } from "./entry.js";

export { AnnalsError, ReactorError, isAnnalsError } from "./errors.js";
export { causedBy } from "./reactor.js";
export { diff } from "./diff.js";
export type { AnnalsErrorCode, AnnalsErrorDetails } from "./errors.js";
export type { OpenBundle, OpenBundleOptions, OpenStore } from "./entry.js";
export type * from "./types.js";

export const openStore = openStoreWith(async () =>
  init({ module_or_path: await readFile(new URL("../wasm/annals_bg.wasm", import.meta.url)) }),
);

export const openBundle = openBundleWith(openStore);
