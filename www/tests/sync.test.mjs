// Offline-first sync in the demo, end to end: a real annals-server (SQLite in a temporary
// directory) serves www/dist and syncs two browser contexts (two devices: separate
// IndexedDB). One goes offline, both add todos, it comes back: both show the same list.
// Run with `npm --prefix www run test:e2e` after building www/dist and the server
// (ANNALS_SERVER_BIN, default target/debug/annals-server).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "..", "..");
const DIST = process.env.WWW_DIST ?? join(ROOT, "www", "dist");
const SERVER_BIN = resolve(ROOT, process.env.ANNALS_SERVER_BIN ?? "target/debug/annals-server");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** @type {import("playwright-core").Browser} */
let browser;
/** @type {import("node:child_process").ChildProcess} */
let serverProcess;
let serverUrl = "";
let dataDir = "";

/** Starts annals-server on a free port and resolves with its URL once it listens. */
function startServer() {
  dataDir = mkdtempSync(join(tmpdir(), "annals-e2e-"));
  const args = ["--listen", "127.0.0.1:0", "--database", `sqlite://${dataDir}/annals.db`, "--www", DIST, "--dev-token", "dev"];
  serverProcess = spawn(SERVER_BIN, args, { stdio: ["ignore", "pipe", "ignore"] });
  return new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error("annals-server did not start within 20 s")), 20_000);
    let out = "";
    serverProcess.stdout?.on("data", (chunk) => {
      out += chunk;
      const match = /listening on (http:\/\/\S+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolveUrl(match[1]);
      }
    });
    serverProcess.on("exit", (code) => reject(new Error(`annals-server exited with ${code}`)));
  });
}

before(async () => {
  assert.ok(existsSync(join(DIST, "index.html")), `${DIST}/index.html is missing: build www first`);
  assert.ok(existsSync(SERVER_BIN), `${SERVER_BIN} is missing: cargo build --features server --bin annals-server`);
  serverUrl = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless=new",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
});

after(async () => {
  await browser?.close();
  serverProcess?.kill("SIGTERM");
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/**
 * Polls `probe` until `done(value)` holds; fails with the last value after `timeout` ms.
 * @template T
 * @param {() => Promise<T>} probe
 * @param {(value: T) => boolean} done
 * @param {string} what
 */
async function eventually(probe, done, what, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await probe();
    if (done(value)) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; last value: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** @param {import("playwright-core").Page} page */
async function titles(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('[data-testid="todo-title"]')].map((el) => el.textContent ?? "").sort(),
  );
}

/** @param {import("playwright-core").Page} page */
async function syncState(page) {
  return page.evaluate(() => {
    const el = document.querySelector('[data-testid="sync-status"]');
    return { online: el?.getAttribute("data-online"), pending: el?.getAttribute("data-pending"), text: el?.textContent };
  });
}

/** @param {import("playwright-core").Page} page @param {string} title */
async function add(page, title) {
  await page.getByTestId("new-todo-input").fill(title);
  await page.getByTestId("add-todo").click();
  await page.getByTestId("todo-item").filter({ hasText: title }).waitFor();
}

/** The store's log as the page reads it. @param {import("playwright-core").Page} page */
async function log(page) {
  return page.evaluate(async () => {
    const events = await window.annalsStore?.events({});
    return (events ?? []).map((e) => ({ id: e.id, position: e.position, pending: e.pending }));
  });
}

test("two devices, one offline, converge on the same todo list", { timeout: 120_000 }, async () => {
  const store = `sync-${Date.now().toString(36)}`;
  const url = `${serverUrl}/?store=${store}`;
  const [deviceA, deviceB] = [await browser.newContext(), await browser.newContext()];
  const [a, b] = [await deviceA.newPage(), await deviceB.newPage()];
  const errors = /** @type {string[]} */ ([]);
  for (const page of [a, b]) page.on("pageerror", (e) => errors.push(String(e)));
  for (const page of [a, b]) {
    await page.goto(url);
    await page.locator('[data-testid="app"][data-state="ready"]').waitFor({ timeout: 30_000 });
  }
  await eventually(() => syncState(a), (s) => s.online === "true", "device A online");

  await add(a, "milk");
  await eventually(() => titles(b), (t) => t.includes("milk"), "B to receive A's todo");

  await deviceB.setOffline(true);
  await add(b, "eggs (offline)");
  await add(b, "bread (offline)");
  await add(a, "jam (online)");
  await eventually(() => syncState(b), (s) => s.online === "false" && s.pending === "2", "B offline with 2 pending");
  assert.deepEqual(await titles(b), ["bread (offline)", "eggs (offline)", "milk"], "B works offline");

  await deviceB.setOffline(false);
  const expected = ["bread (offline)", "eggs (offline)", "jam (online)", "milk"];
  await eventually(() => titles(a), (t) => JSON.stringify(t) === JSON.stringify(expected), "A to show every todo");
  await eventually(() => titles(b), (t) => JSON.stringify(t) === JSON.stringify(expected), "B to show every todo");
  await eventually(() => syncState(b), (s) => s.pending === "0", "B's outbox to drain");

  const [logA, logB] = [await log(a), await log(b)];
  assert.deepEqual(logA, logB, "identical logs on both devices");
  assert.deepEqual(logA.map((e) => e.position), [1, 2, 3, 4]);
  assert.ok(logA.every((e) => !e.pending), "every event confirmed");
  assert.deepEqual(errors, []);
  await deviceA.close();
  await deviceB.close();
});
