import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const page = (file: string) => fileURLToPath(new URL(file, import.meta.url));

export default defineConfig({
  // Relative URLs, so that www/dist can be served from any path (annals-server --www, a CDN, file server).
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    rollupOptions: {
      // Two pages: the board (the demo) and the todo list the reliability tests drive.
      input: { board: page("index.html"), todos: page("todos.html") },
    },
  },
  // `annals` is a workspace package that loads its .wasm by URL; leave it to Vite's asset handling.
  optimizeDeps: { exclude: ["annals"] },
});
