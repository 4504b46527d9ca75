import { defineConfig } from "vite";

// Vite 7's dev server pre-bundles dependencies into .vite/deps, where
// `new URL("../wasm/annals_bg.wasm", import.meta.url)` no longer points at the wasm (the
// dev server answers index.html: "expected magic word 00 61 73 6d, found 3c 21 64 6f").
export default defineConfig({
  optimizeDeps: { exclude: ["annals"] },
});
