import { defineConfig } from "vite";

export default defineConfig({
  // Relative URLs, so that www/dist can be served from any path (annals-server --www, a CDN, file server).
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
  },
  // `annals` is a workspace package that loads its .wasm by URL; leave it to Vite's asset handling.
  optimizeDeps: { exclude: ["annals"] },
});
