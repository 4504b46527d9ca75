// The browser entry (also the default for bundlers): loads the wasm next to this module.
// `new URL(..., import.meta.url)` is the pattern Vite and other bundlers follow to ship the
// .wasm file as an asset, with no plugin.

import init from "../wasm/annals.js";
import { openBundleWith, openStoreWith } from "./entry.js";

export { AnnalsError, ReactorError, isAnnalsError } from "./errors.js";
export { causedBy } from "./reactor.js";
export { diff } from "./diff.js";
export type { AnnalsErrorCode, AnnalsErrorDetails } from "./errors.js";
export type { OpenBundle, OpenBundleOptions, OpenStore } from "./entry.js";
export type * from "./types.js";

export const openStore = openStoreWith(() =>
  init({ module_or_path: new URL("../wasm/annals_bg.wasm", import.meta.url) }),
);

export const openBundle = openBundleWith(openStore);
