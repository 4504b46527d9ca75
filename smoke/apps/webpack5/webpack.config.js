import { fileURLToPath } from "node:url";

// webpack 5 turns `new URL("../wasm/annals_bg.wasm", import.meta.url)` into an emitted
// asset by itself: nothing annals-specific is needed. `performance.hints` is off only
// because the 482 KiB wasm is over webpack's 244 KiB advice for an asset.
export default {
  mode: "production",
  entry: "./src/main.js",
  output: {
    path: fileURLToPath(new URL("dist", import.meta.url)),
    filename: "main.js",
    clean: true,
  },
  performance: { hints: false },
};
