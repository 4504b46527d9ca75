import { defineConfig } from "vite";

// Vite 8 needs no annals-specific config for the page. `worker.format: "es"` lets the
// production build emit the module worker (it imports the wasm loader) as an ES module.
export default defineConfig({
  worker: { format: "es" },
});
