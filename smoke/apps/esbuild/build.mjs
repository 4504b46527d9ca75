// esbuild bundles the JavaScript but leaves `new URL("../wasm/annals_bg.wasm",
// import.meta.url)` alone, so the wasm file is copied to where that URL points: a
// `wasm/` folder beside the folder of the bundle (here the bundle is dist/main.js, served
// at /main.js, so the wasm is served at /wasm/annals_bg.wasm).
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import * as esbuild from "esbuild";

rmSync("dist", { recursive: true, force: true });
await esbuild.build({
  entryPoints: ["src/main.js"],
  bundle: true,
  format: "esm",
  minify: true,
  outfile: "dist/main.js",
  logLevel: "warning",
});
const require = createRequire(import.meta.url);
const wasm = require.resolve("annals/package.json").replace(/package\.json$/, "wasm/annals_bg.wasm");
mkdirSync("dist/wasm", { recursive: true });
copyFileSync(wasm, "dist/wasm/annals_bg.wasm");
copyFileSync("index.html", "dist/index.html");
