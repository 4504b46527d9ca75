// Shared by the Playwright tests of the demo: the browser (playwright-core driving Debian's
// Chromium), the servers (a static one for www/dist, or a real annals-server that also syncs),
// and what the tests read from the page.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS } from "../../scripts/chromium.mjs";
import { serveStatic } from "../scripts/serve.mjs";

/** @typedef {import("playwright-core").Page} Page */
/** @typedef {import("playwright-core").BrowserContext} BrowserContext */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const DIST = process.env.WWW_DIST ?? join(ROOT, "www", "dist");
const SERVER_BIN = resolve(ROOT, process.env.ANNALS_SERVER_BIN ?? "target/debug/annals-server");
export const TEST_TIMEOUT = 90_000;


/** Headless Chromium, with the flags that keep it quiet and working in containers. */
export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/**
 * Headless Chromium whose tabs can really be frozen (Page Lifecycle), for the tests that
 * freeze one: `newTab` opens a tab in the background, so the page is hidden, and
 * `Page.setWebLifecycleState` then freezes it for real (it gets `freeze`, its timers and
 * tasks stop, until `active` resumes it). Chromium leaves a page it shows alone, and a page
 * Playwright opens or launches is always shown: Playwright turns on focus emulation on every
 * page it attaches to, which keeps the page visible. So Chromium is started here, and
 * Playwright connects to it over CDP with `noDefaults`, which leaves the pages of the
 * browser's default context as they are; all the tabs live in that context (one origin:
 * shared IndexedDB and Web Locks). Hidden pages are not throttled here (the same flags
 * Playwright passes), so the background tabs run like shown ones.
 * @returns {Promise<{ context: BrowserContext, newTab: (errors: string[]) => Promise<Page>, close: () => Promise<void> }>}
 */
export async function launchBackgroundTabs() {
  const dataDir = mkdtempSync(join(tmpdir(), "annals-chromium-"));
  const args = [
    ...CHROMIUM_ARGS,
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--remote-debugging-port=0",
    `--user-data-dir=${dataDir}`,
    // The one tab shown: the tests' tabs open behind it.
    "about:blank",
  ];
  const child = spawn(CHROMIUM, args, { stdio: ["ignore", "ignore", "pipe"] });
  const exited = new Promise((resolveExit) => child.once("exit", resolveExit));
  const kill = () => child.kill("SIGKILL");
  process.once("exit", kill);
  /** Waits for Chromium to exit: it was told to (`closing`), else it is ended. */
  const stop = async (closing = false) => {
    process.removeListener("exit", kill);
    if (child.exitCode === null && child.signalCode === null) {
      const term = setTimeout(() => child.kill("SIGTERM"), closing ? 10_000 : 0);
      const timer = setTimeout(kill, 20_000);
      await exited;
      clearTimeout(term);
      clearTimeout(timer);
    }
    // Chromium's helper processes may still be writing there for a moment.
    rmSync(dataDir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
  };
  try {
    const endpoint = await new Promise((resolveEndpoint, reject) => {
      const timer = setTimeout(() => reject(new Error("Chromium did not open its DevTools endpoint within 30 s")), 30_000);
      let out = "";
      let found = false;
      // Read stderr to the end (a full pipe would block Chromium); the endpoint is on it.
      child.stderr?.on("data", (chunk) => {
        if (found) return;
        out += chunk;
        const match = /DevTools listening on (ws:\/\/\S+)/.exec(out);
        if (match) {
          clearTimeout(timer);
          found = true;
          resolveEndpoint(match[1]);
        }
      });
      child.once("exit", (code) => reject(new Error(`Chromium exited with ${code}`)));
    });
    const browser = await chromium.connectOverCDP(/** @type {string} */ (endpoint), { noDefaults: true, isLocal: true });
    const context = /** @type {BrowserContext} */ (browser.contexts()[0]);
    const cdp = await browser.newBrowserCDPSession();
    return {
      context,
      newTab: async (errors) => {
        const [page] = await Promise.all([
          context.waitForEvent("page"),
          cdp.send("Target.createTarget", { url: "about:blank", background: true }),
        ]);
        recordErrors(page, errors);
        return page;
      },
      close: async () => {
        // Closed by CDP, Chromium ends its helper processes before it exits.
        const closing = await cdp.send("Browser.close").then(
          () => true,
          () => false,
        );
        await browser.close().catch(() => undefined);
        await stop(closing);
      },
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

function assertBuilt() {
  assert.ok(existsSync(join(DIST, "index.html")), `${DIST}/index.html is missing: run \`npm --prefix www run build\` first`);
}

/** Serves www/dist on a free port (a local-only demo: open it with `?sync=off`). */
export function serveDist() {
  assertBuilt();
  return serveStatic(DIST);
}

/**
 * Starts annals-server (ANNALS_SERVER_BIN, default target/debug/annals-server) on a free port,
 * with SQLite in a temporary directory, serving www/dist (or the directory `www`) and
 * accepting the demo token `dev`.
 * @param {{ www?: string }} [options]
 * @returns {Promise<{ url: string, close: () => void }>}
 */
export async function startAnnalsServer({ www = DIST } = {}) {
  if (www === DIST) assertBuilt();
  assert.ok(existsSync(SERVER_BIN), `${SERVER_BIN} is missing: cargo build --features server --bin annals-server`);
  const dataDir = mkdtempSync(join(tmpdir(), "annals-e2e-"));
  const args = ["--listen", "127.0.0.1:0", "--database", `sqlite://${dataDir}/annals.db`, "--www", www, "--dev-token", "dev"];
  const child = spawn(SERVER_BIN, args, { stdio: ["ignore", "pipe", "ignore"] });
  const close = () => {
    child.kill("SIGTERM");
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const url = await new Promise((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error("annals-server did not start within 20 s")), 20_000);
      let out = "";
      child.stdout?.on("data", (chunk) => {
        out += chunk;
        const match = /listening on (http:\/\/\S+)/.exec(out);
        if (match) {
          clearTimeout(timer);
          resolveUrl(match[1]);
        }
      });
      child.on("exit", (code) => reject(new Error(`annals-server exited with ${code}`)));
    });
    return { url: /** @type {string} */ (url), close };
  } catch (error) {
    close();
    throw error;
  }
}

/** A store name no other test (or earlier run) has used. @param {string} label */
export const freshStore = (label) => `e2e-${label}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

/**
 * Polls `probe` until `done(value)` holds; fails with the last value after `timeout` ms.
 * @template T
 * @param {() => Promise<T>} probe
 * @param {(value: T) => boolean} done
 * @param {{ timeout?: number, interval?: number, what?: string }} [options]
 * @returns {Promise<T>}
 */
export async function eventually(probe, done, { timeout = 15_000, interval = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let value;
  for (;;) {
    value = await probe();
    if (done(value)) return value;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeout} ms waiting for ${what}; last value: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/**
 * Chromium logs every request that fails because the context is offline as a console error;
 * the tests take devices offline on purpose, so those lines are expected, not app errors.
 */
const OFFLINE_REQUEST = /^Failed to load resource: net::ERR_INTERNET_DISCONNECTED$/;

/** A new tab that records uncaught page errors and console errors in `errors`.
 * @param {BrowserContext} context
 * @param {string[]} errors
 */
export async function newTab(context, errors) {
  const page = await context.newPage();
  recordErrors(page, errors);
  return page;
}

/** Records the uncaught page errors and console errors of `page` in `errors`.
 * @param {Page} page
 * @param {string[]} errors
 */
function recordErrors(page, errors) {
  page.on("pageerror", (err) => errors.push(String(err)));
  page.on("console", (msg) => {
    if (msg.type() === "error" && !OFFLINE_REQUEST.test(msg.text())) errors.push(msg.text());
  });
}

/**
 * The todo app (www/todos.html) on `store`, served from `base`: local only unless `sync`.
 * @param {string} base @param {string} store @param {{ sync?: boolean }} [options]
 */
export const appUrl = (base, store, { sync = false } = {}) =>
  `${new URL(`todos.html?store=${encodeURIComponent(store)}${sync ? "" : "&sync=off"}`, base)}`;

/** Opens the app at `url` and waits until its store is open. @param {Page} page @param {string} url */
export async function openApp(page, url) {
  await page.goto(url);
  await waitReady(page);
}

/** @param {Page} page */
export async function waitReady(page) {
  const app = page.getByTestId("app");
  await page.locator('[data-testid="app"]:is([data-state="ready"], [data-state="error"])').waitFor({ timeout: 30_000 });
  const state = await app.getAttribute("data-state");
  assert.equal(state, "ready", `the app failed to open its store: ${await page.getByTestId("error").textContent()}`);
}

/** What the page shows. @param {Page} page */
export async function shown(page) {
  return page.evaluate(() => {
    /** @param {string} id */
    const text = (id) => document.querySelector(`[data-testid="${id}"]`)?.textContent ?? null;
    return {
      todos: [...document.querySelectorAll('[data-testid="todo-item"]')].map((li) => ({
        id: li.getAttribute("data-id"),
        title: li.querySelector('[data-testid="todo-title"]')?.textContent ?? null,
        done: li.getAttribute("data-done") === "true",
      })),
      todoCount: text("todo-count"),
      eventCount: text("event-count"),
      completedTotal: text("completed-total"),
      head: text("head"),
      error: text("error"),
    };
  });
}

/** The titles shown, sorted. @param {Page} page */
export async function titles(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('[data-testid="todo-title"]')].map((el) => el.textContent ?? "").sort(),
  );
}

/** What the page shows of sync. @param {Page} page */
export async function syncState(page) {
  return page.evaluate(() => {
    const el = document.querySelector('[data-testid="sync-status"]');
    return { online: el?.getAttribute("data-online"), pending: el?.getAttribute("data-pending"), text: el?.textContent };
  });
}

/**
 * The whole log as the page's store reads it, with the fields that must agree across tabs
 * (and devices, once synced).
 * @param {Page} page
 * @param {{ correlationId?: string }} [query]
 */
export async function readLog(page, query = {}) {
  return page.evaluate(async (query) => {
    const store = window.annalsStore;
    if (!store) throw new Error("window.annalsStore is not set");
    const events = await store.events(query);
    return {
      head: store.head,
      events: events.map((e) => ({
        id: e.id,
        position: e.position,
        stream: e.stream,
        version: e.version,
        type: e.type,
        data: /** @type {Record<string, unknown>} */ (e.data),
        meta: e.meta,
        pending: e.pending,
      })),
    };
  }, query);
}

/** @param {Page} page @param {string} title */
export async function addViaUi(page, title) {
  await page.getByTestId("new-todo-input").fill(title);
  await page.getByTestId("add-todo").click();
  await page.getByTestId("todo-item").filter({ hasText: title }).waitFor();
}

/** The todo item showing `title`. @param {Page} page @param {string} title */
export const item = (page, title) =>
  page.getByTestId("todo-item").filter({ has: page.getByTestId("todo-title").getByText(title, { exact: true }) });
