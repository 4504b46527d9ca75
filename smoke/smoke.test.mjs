// The smoke matrix: the packed tarball (target/pkg/annals-<version>.tgz) installed into
// fresh throwaway apps under target/smoke/, one named test per toolchain row. Each browser
// row opens a store on IndexedDB in headless Chromium, appends, reloads, and checks the
// state was kept. Run by `make test-smoke` (after `make pack`):
//   node --test smoke/smoke.test.mjs
// SMOKE_NPM_OFFLINE=1 installs with --offline (proves a warm run needs no network).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  checkAppendReloadKept, closeBrowser, freePort, prepareApp, run, serveStatic, startProcess,
} from "./harness.mjs";

// Every app is installed up front, all at once: installs wait on the disk and the npm
// cache rather than the CPU, and the rows then run one by one.
const ROWS = {
  vite7: { shared: true },
  vite8: { shared: true },
  webpack5: { shared: true },
  esbuild: { shared: true },
  node: { shared: false },
  vitest3: { shared: false },
  vitest4: { shared: false },
};
const apps = {};

before(async () => {
  await Promise.all(
    Object.entries(ROWS).map(async ([name, options]) => {
      // prepareApp is synchronous (npm install); a microtask boundary per app is enough
      // to report which one failed, and installs run as separate processes anyway.
      apps[name] = prepareApp(name, options).appDir;
    }),
  );
});

after(closeBrowser);

const node = process.execPath;
const viteBin = (dir) => join(dir, "node_modules", "vite", "bin", "vite.js");

/** A Vite dev server on a free port of 127.0.0.1, stopped after `use`. */
async function withViteDev(dir, use, extraArgs = []) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/`;
  const args = [viteBin(dir), "--host", "127.0.0.1", "--port", String(port), "--strictPort", ...extraArgs];
  const server = await startProcess(node, args, { cwd: dir, url });
  try {
    return await use(url);
  } finally {
    await server.stop();
  }
}

/** `vite build` (once per app and run), then `vite preview` of it on a free port. */
const built = new Set();
async function withVitePreview(dir, use) {
  if (!built.has(dir)) run(node, [viteBin(dir), "build", "--logLevel", "warn"], { cwd: dir });
  built.add(dir);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/`;
  const server = await startProcess(node, [viteBin(dir), "preview", "--host", "127.0.0.1", "--port", String(port), "--strictPort"], { cwd: dir, url });
  try {
    return await use(url);
  } finally {
    await server.stop();
  }
}

function installedVersion(dir, pkg) {
  return JSON.parse(run(node, ["-p", `JSON.stringify(require("${pkg}/package.json").version)`], { cwd: dir }));
}

test("Vite 7 dev server (optimizeDeps.exclude annals): append, reload, state kept", async (t) => {
  t.diagnostic(`vite ${installedVersion(apps.vite7, "vite")}`);
  await withViteDev(apps.vite7, (url) => checkAppendReloadKept(url));
});

// Why the exclude is in the README: without it Vite 7 pre-bundles annals into .vite/deps,
// the wasm URL points nowhere, and the dev server answers index.html. If a Vite 7 release
// fixes this, this test fails: then the README's Vite 7 row needs no config any more.
test("Vite 7 dev server without the exclude fails to load the wasm (the config is needed)", async () => {
  await withViteDev(
    apps.vite7,
    (url) => assert.rejects(checkAppendReloadKept(url), /expected magic word 00 61 73 6d, found 3c 21 64 6f/),
    ["--config", "vite.without-exclude.config.js"],
  );
});

test("Vite 7 production build (vite build + vite preview): append, reload, state kept", async () => {
  await withVitePreview(apps.vite7, (url) => checkAppendReloadKept(url));
});

test("Vite 8 dev server (no config): append, reload, state kept", async (t) => {
  t.diagnostic(`vite ${installedVersion(apps.vite8, "vite")}`);
  await withViteDev(apps.vite8, (url) => checkAppendReloadKept(url));
});

test("Vite 8 production build (vite build + vite preview): append, reload, state kept", async () => {
  await withVitePreview(apps.vite8, (url) => checkAppendReloadKept(url));
});

test("a module Web Worker running the store (Vite 8 build): append, reload, state kept", async () => {
  await withVitePreview(apps.vite8, (url) => checkAppendReloadKept(url, { api: "smokeWorker" }));
});

test("webpack 5 production build: append, reload, state kept", async (t) => {
  t.diagnostic(`webpack ${installedVersion(apps.webpack5, "webpack")}`);
  run(node, ["build.mjs"], { cwd: apps.webpack5 });
  const server = await serveStatic(join(apps.webpack5, "dist"));
  try {
    await checkAppendReloadKept(server.url);
  } finally {
    await server.close();
  }
});

test("esbuild bundle (wasm copied beside it): append, reload, state kept", async (t) => {
  t.diagnostic(`esbuild ${installedVersion(apps.esbuild, "esbuild")}`);
  run(node, ["build.mjs"], { cwd: apps.esbuild });
  const server = await serveStatic(join(apps.esbuild, "dist"));
  try {
    await checkAppendReloadKept(server.url);
  } finally {
    await server.close();
  }
});

test("Node ESM (memory storage): append, appendMany, a conflict, events", () => {
  const out = JSON.parse(run(node, ["app.mjs"], { cwd: apps.node }));
  assert.deepEqual(out, {
    count: 2,
    head: 3,
    types: ["Clicked", "Clicked", "Renamed"],
    conflict: "WRONG_EXPECTED_VERSION",
  });
});

for (const [name, major] of [["vitest3", 3], ["vitest4", 4]]) {
  test(`Vitest ${major} (memory storage): a test file using annals passes`, (t) => {
    const dir = apps[name];
    const version = installedVersion(dir, "vitest");
    t.diagnostic(`vitest ${version}`);
    assert.equal(Number(version.split(".")[0]), major);
    const out = run(node, [join(dir, "node_modules", "vitest", "vitest.mjs"), "run", "--reporter=verbose"], { cwd: dir, env: { CI: "1", NO_COLOR: "1" } });
    assert.match(out, /folds appended events and reads them back/);
    assert.match(out, /Tests\s+1 passed \(1\)/);
  });
}
