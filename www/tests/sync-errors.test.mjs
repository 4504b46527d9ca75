// Sync mistakes in headless Chromium, each reported with its cause and fix: an annals-server
// on another origin without --cors-origin, a sync.url that answers HTML (the dev server), a
// server of another protocol version, a server that is down, and a device that is offline.
// A page served from one origin loads the package (pkg/dist + pkg/wasm) and opens a store
// whose sync.url each test chooses. Needs `bash scripts/build-pkg.sh` and ANNALS_SERVER_BIN
// (default target/debug/annals-server).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createReadStream, existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { eventually, launchBrowser } from "./helpers.mjs";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const PKG = join(ROOT, "pkg");
const SERVER_BIN = process.env.ANNALS_SERVER_BIN ?? join(ROOT, "target", "debug", "annals-server");
const TYPES = { ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };
const PAGE = "<!doctype html><html><head><title>app</title></head><body><div id=app></div></body></html>";

/**
 * The app's origin, like a dev server: the package under /dist and /wasm, an HTML page for
 * every other path (the SPA fallback), and under /old a server of another protocol version.
 */
async function startPageServer() {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    if (path.startsWith("/old/")) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "UNSUPPORTED_VERSION", message: "protocol version v1 is not supported: this server speaks v2 only" } }));
      return;
    }
    const file = resolve(join(PKG, path));
    const packaged = (path.startsWith("/dist/") || path.startsWith("/wasm/")) && file.startsWith(PKG + sep) && existsSync(file);
    if (packaged) {
      res.writeHead(200, { "content-type": TYPES[/** @type {keyof typeof TYPES} */ (extname(file))] ?? "application/octet-stream" });
      createReadStream(file).pipe(res);
      return;
    }
    res.writeHead(200, { "content-type": "text/html" }).end(PAGE);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(undefined)));
  const address = /** @type {import("node:net").AddressInfo} */ (server.address());
  return { url: `http://127.0.0.1:${address.port}`, close: () => new Promise((ok) => server.close(() => ok(undefined))) };
}

/** annals-server on its own port, without --cors-origin unless `extra` adds it. @param {string[]} extra */
async function startBareAnnalsServer(extra = []) {
  const dir = mkdtempSync(join(tmpdir(), "annals-sync-errors-"));
  const args = ["--listen", "127.0.0.1:0", "--database", `sqlite://${dir}/annals.db`, "--dev-token", "dev", ...extra];
  const child = spawn(SERVER_BIN, args, { stdio: ["ignore", "pipe", "ignore"] });
  const url = await new Promise((ok, fail) => {
    let out = "";
    const timer = setTimeout(() => fail(new Error("annals-server did not start")), 20_000);
    child.stdout?.on("data", (chunk) => {
      out += chunk;
      const match = /listening on (http:\/\/\S+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        ok(match[1]);
      }
    });
    child.on("exit", (code) => fail(new Error(`annals-server exited with ${code}`)));
  });
  return {
    url: /** @type {string} */ (url),
    close: () => {
      child.kill("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A loopback port nothing listens on. */
async function closedPort() {
  const server = createServer();
  await new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(undefined)));
  const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
  await new Promise((ok) => server.close(() => ok(undefined)));
  return port;
}

/** @type {Awaited<ReturnType<typeof launchBrowser>>} */
let browser;
/** @type {Awaited<ReturnType<typeof startPageServer>>} */
let page;
/** @type {Awaited<ReturnType<typeof startBareAnnalsServer>>} */
let annals;

before(async () => {
  assert.ok(existsSync(join(PKG, "dist", "index.js")), "pkg/dist is missing: run `bash scripts/build-pkg.sh` first");
  assert.ok(existsSync(SERVER_BIN), `${SERVER_BIN} is missing: cargo build --features server --bin annals-server`);
  [page, annals, browser] = await Promise.all([startPageServer(), startBareAnnalsServer(), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await page?.close();
  annals?.close();
});

/**
 * Opens a page of the app's origin with a store syncing to `syncUrl`, and waits for its
 * status to report an error.
 * @param {string} syncUrl
 * @param {{ offline?: boolean, until?: (status: any) => boolean }} [options]
 */
async function statusError(syncUrl, { offline = false, until = (status) => status.error !== null } = {}) {
  const context = await browser.newContext();
  try {
    const tab = await context.newPage();
    await tab.goto(page.url);
    // Load the package and its wasm while online (a local store does not sync).
    await tab.evaluate(async () => {
      /** @type {string} */
      const entry = "/dist/index.js"; // served by the page server, not resolved by tsc
      const annals = await import(entry);
      await (await annals.openStore({ name: "warm-up", storage: "memory" })).close();
      /** @type {any} */ (window).annals = annals;
    });
    if (offline) await context.setOffline(true);
    await tab.evaluate(async (url) => {
      const { openStore } = /** @type {any} */ (window).annals;
      const store = await openStore({
        name: `errors-${Math.random().toString(36).slice(2)}`,
        storage: "memory",
        sync: { url, store: "todos", token: "dev", longPollSeconds: 1 },
      });
      /** @type {any} */ (window).store = store;
    }, syncUrl);
    const error = await eventually(
      () => tab.evaluate(() => /** @type {any} */ (window).store.syncStatus),
      until,
      { timeout: 15_000, what: `an error syncing with ${syncUrl}` },
    );
    return error;
  } finally {
    await context.close();
  }
}

test("an annals-server that does not allow the page's origin: CORS_REFUSED names --cors-origin", { timeout: 60_000 }, async () => {
  const status = await statusError(annals.url);
  assert.equal(status.error.code, "CORS_REFUSED");
  assert.equal(
    status.error.message,
    `the server at ${annals.url} refused this origin (${page.url}): start annals-server with --cors-origin ${page.url}`,
  );
  assert.equal(status.online, true, "the server answered: the network is up");
});

test("a sync.url that answers HTML (the dev server): NOT_SYNC_SERVER says what sync.url should be", { timeout: 60_000 }, async () => {
  const status = await statusError(page.url);
  assert.equal(status.error.code, "NOT_SYNC_SERVER");
  assert.equal(
    status.error.message,
    `${page.url} is not an annals sync server (it answered HTML); sync.url should be the annals-server address, e.g. http://127.0.0.1:8080`,
  );
});

test("a server of another protocol version: UPGRADE_REQUIRED", { timeout: 60_000 }, async () => {
  const status = await statusError(`${page.url}/old`);
  assert.equal(status.error.code, "UPGRADE_REQUIRED");
  assert.match(status.error.message, /does not speak protocol v1 .*upgrade annals-server and the annals package to the same release/);
});

test("a server that is down: OFFLINE, nothing answers at the URL, start annals-server or fix sync.url", { timeout: 60_000 }, async () => {
  const url = `http://127.0.0.1:${await closedPort()}`;
  const status = await statusError(url);
  assert.equal(status.error.code, "OFFLINE");
  assert.match(status.error.message, new RegExp(`^the sync server is unreachable: nothing answers at ${url} \\(.+\\) although the network is up: start annals-server \\(--listen sets its address\\) or fix sync.url; sync retries by itself$`));
  assert.equal(status.online, false);
});

test("a device that is offline: OFFLINE, says the device is offline", { timeout: 60_000 }, async () => {
  const status = await statusError(annals.url, { offline: true });
  assert.equal(status.error.code, "OFFLINE");
  assert.equal(
    status.error.message,
    "the sync server is unreachable: this device is offline (navigator.onLine is false); sync resumes by itself when the network is back",
  );
  assert.equal(status.online, false);
});

test("the same server started with --cors-origin for the page's origin syncs", { timeout: 60_000 }, async () => {
  const allowed = await startBareAnnalsServer(["--cors-origin", page.url]);
  try {
    const status = await statusError(allowed.url, { until: (s) => s.online && !s.syncing && s.lastPulled === 0 && s.error === null });
    assert.equal(status.error, null);
  } finally {
    allowed.close();
  }
});
