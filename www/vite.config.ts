import { fileURLToPath } from "node:url";
import { defineConfig, type Plugin } from "vite";

const page = (file: string) => fileURLToPath(new URL(file, import.meta.url));

const MISSING_DEVTOOLS = "\0annals-devtools-missing";

/**
 * While the installed `annals` has no `annals/devtools` entry (a package built before the
 * panel existed), the board still builds: the Devtools button's dynamic import then fails
 * with this message instead of the whole build.
 */
function devtoolsFallback(): Plugin {
  return {
    name: "annals-devtools-fallback",
    enforce: "pre",
    async resolveId(source, importer, options) {
      if (source !== "annals/devtools") return null;
      const found = await this.resolve(source, importer, { ...options, skipSelf: true }).catch(() => null);
      return found ?? MISSING_DEVTOOLS;
    },
    load(id) {
      if (id !== MISSING_DEVTOOLS) return null;
      return `throw new Error("this build of annals has no annals/devtools entry: rebuild the package (make pkg)");`;
    },
  };
}

export default defineConfig({
  plugins: [devtoolsFallback()],
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
