// What the smoke matrix's rows share: fresh throwaway apps made from the templates in
// smoke/apps/ with the packed tarball installed, processes to wait for, a static server,
// and headless Chromium.

import { spawn, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync,
} from "node:fs";
import { createServer } from "node:http";
import { createServer as createNetServer } from "node:net";
import { dirname, extname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS } from "../scripts/chromium.mjs";

export const root = fileURLToPath(new URL("..", import.meta.url));
const targetDir = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(root, "target");
const manifest = JSON.parse(readFileSync(join(root, "pkg", "package.json"), "utf8"));
export const tarball = join(targetDir, "pkg", `${manifest.name}-${manifest.version}.tgz`);
export const smokeDir = join(targetDir, "smoke");
const templatesDir = join(root, "smoke", "apps");

/** npm with the flags that let a warm run work from the local cache alone. */
const NPM_FLAGS = ["--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"];

function sha256(...buffers) {
  const hash = createHash("sha256");
  for (const buffer of buffers) hash.update(buffer);
  return hash.digest("hex");
}

/** Every file under `dir`, as paths relative to it, sorted. */
export function listFiles(dir, skip = new Set()) {
  const out = [];
  const walk = (at) => {
    for (const name of readdirSync(at).sort()) {
      if (skip.has(name)) continue;
      const full = join(at, name);
      if (statSync(full).isDirectory()) walk(full);
      else out.push(relative(dir, full));
    }
  };
  walk(dir);
  return out;
}

function hashDir(dir) {
  const hash = createHash("sha256");
  for (const file of listFiles(dir)) hash.update(file).update("\0").update(readFileSync(join(dir, file)));
  return hash.digest("hex");
}

/** The tarball's files (without npm's `package/` prefix) and their hashes. */
let tarballFiles;
export function tarballContents() {
  if (tarballFiles) return tarballFiles;
  if (!existsSync(tarball)) throw new Error(`${tarball} is missing: run make pack first`);
  // One folder per process: node --test may run the smoke files side by side.
  const unpacked = join(smokeDir, `.tarball-${process.pid}`);
  mkdirSync(unpacked, { recursive: true });
  try {
    execFileSync("tar", ["-xzf", tarball, "-C", unpacked]);
    const pkg = join(unpacked, "package");
    tarballFiles = new Map(listFiles(pkg).map((f) => [f, sha256(readFileSync(join(pkg, f)))]));
  } finally {
    rmSync(unpacked, { recursive: true, force: true });
  }
  return tarballFiles;
}

/**
 * Makes the app `target/smoke/<name>` from the template `smoke/apps/<name>` (or from
 * `templateDir`): its files, then `npm install` with `annals` from the tarball. The
 * install is reused while the template and the tarball are unchanged (a stamp file with
 * both hashes); either change reinstalls, so a stale package cannot pass. Then the
 * installed package is compared with the tarball, file by file.
 */
export function prepareApp(name, { templateDir = join(templatesDir, name), shared = true } = {}) {
  const appDir = join(smokeDir, name);
  const tarballHash = sha256(readFileSync(tarball));
  const sharedDir = join(templatesDir, "_shared");
  const stamp = `${tarballHash} ${hashDir(templateDir)} ${shared ? hashDir(sharedDir) : "-"}\n`;
  const stampFile = join(appDir, ".smoke-stamp");
  if (existsSync(stampFile) && readFileSync(stampFile, "utf8") === stamp) {
    checkInstalled(appDir);
    return { appDir, installed: false };
  }
  mkdirSync(appDir, { recursive: true });
  // Keep node_modules (the toolchain) between installs; everything else is laid anew.
  for (const entry of readdirSync(appDir)) {
    if (entry !== "node_modules") rmSync(join(appDir, entry), { recursive: true, force: true });
  }
  rmSync(join(appDir, "node_modules", "annals"), { recursive: true, force: true });
  cpSync(templateDir, appDir, { recursive: true });
  if (shared) cpSync(sharedDir, join(appDir, "src"), { recursive: true });
  const pkgFile = join(appDir, "package.json");
  const pkg = JSON.parse(readFileSync(pkgFile, "utf8"));
  pkg.dependencies = { ...pkg.dependencies, annals: `file:${tarball}` };
  writeFileSync(pkgFile, JSON.stringify(pkg, null, 2) + "\n");
  const offline = process.env.SMOKE_NPM_OFFLINE === "1" ? ["--offline"] : [];
  execFileSync("npm", ["install", ...NPM_FLAGS, ...offline], { cwd: appDir, stdio: ["ignore", "ignore", "pipe"] });
  checkInstalled(appDir);
  writeFileSync(stampFile, stamp);
  return { appDir, installed: true };
}

/** Throws unless node_modules/annals holds exactly the tarball's files. */
function checkInstalled(appDir) {
  const installedDir = join(appDir, "node_modules", "annals");
  const expected = tarballContents();
  const found = existsSync(installedDir) ? listFiles(installedDir) : [];
  const wrong = [...expected].filter(([f, h]) => !existsSync(join(installedDir, f)) || sha256(readFileSync(join(installedDir, f))) !== h);
  const extra = found.filter((f) => !expected.has(f));
  if (wrong.length || extra.length) {
    throw new Error(`${installedDir} is not the current tarball: differs in ${[...wrong.map(([f]) => f), ...extra].join(", ")}`);
  }
}

export async function freePort() {
  return await new Promise((resolvePort, reject) => {
    const server = createNetServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/**
 * Starts a long-running process (a dev server, `vite preview`, annals-server) and waits
 * until `url` answers. Its output is kept for the error message if it never does.
 */
export async function startProcess(command, args, { cwd, env, url, timeoutMs = 60_000 }) {
  const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  let exited = null;
  child.on("exit", (code, signal) => (exited = { code, signal }));
  const stop = async () => {
    if (exited) return;
    const done = new Promise((r) => child.once("exit", r));
    try { process.kill(-child.pid, "SIGTERM"); } catch { /* already gone */ }
    const timer = setTimeout(() => { try { process.kill(-child.pid, "SIGKILL"); } catch { /* gone */ } }, 5000);
    await done;
    clearTimeout(timer);
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited) throw new Error(`${command} ${args.join(" ")} exited (${JSON.stringify(exited)}) before ${url} answered:\n${output}`);
    try {
      const response = await fetch(url);
      if (response.status < 500) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${url} did not answer within ${timeoutMs} ms:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, stop, output: () => output };
}

/** Runs a command to completion; throws with its output if it fails. */
export function run(command, args, { cwd, env } = {}) {
  try {
    return execFileSync(command, args, { cwd, env: { ...process.env, ...env }, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (error) {
    throw new Error(`${command} ${args.join(" ")} failed in ${cwd}:\n${error.stdout ?? ""}${error.stderr ?? ""}`);
  }
}

const MIME = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".map": "application/json",
};

/** A static file server on 127.0.0.1 for a built app (as any web server would serve it). */
export async function serveStatic(dir) {
  const base = resolve(dir);
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    let file = resolve(join(base, path));
    if (file !== base && !file.startsWith(base + sep)) { res.writeHead(403).end(); return; }
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, "index.html");
    if (!existsSync(file)) { res.writeHead(404).end("not found"); return; }
    res.writeHead(200, { "content-type": MIME[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}/`, close: () => new Promise((r) => server.close(r)) };
}

let browser;
export async function launchBrowser() {
  browser ??= await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  return browser;
}
export async function closeBrowser() {
  await browser?.close();
  browser = undefined;
}

/**
 * Opens `url` in a fresh browser context (its own IndexedDB) and collects uncaught errors
 * and console errors, which fail the row.
 */
export async function openPage(url, context) {
  context ??= await (await launchBrowser()).newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") errors.push(`console.error: ${m.text()}`); });
  await page.goto(url);
  return { page, context, errors };
}

/**
 * The check every browser row makes with the counter app (smoke/apps/_shared/counter.js):
 * a new store on IndexedDB starts empty; two appends count 2; after a reload the store
 * opened again from IndexedDB still counts 2 at head 2. `api` names the window object
 * the page exposes (`smoke`, or `smokeWorker` for the store that runs in a worker).
 */
export async function checkAppendReloadKept(url, { api = "smoke" } = {}) {
  const { page, context, errors } = await openPage(url);
  try {
    const ready = async () => {
      await page.waitForFunction((name) => window[name] || window.smokeError, api, { timeout: 30_000 });
      const failure = await page.evaluate(() => window.smokeError);
      if (failure) throw new Error(`the app failed to open its store: ${failure}`);
      return await page.evaluate((name) => window[name].read(), api);
    };
    const first = await ready();
    if (first.count !== 0 || first.head !== 0) throw new Error(`a new store should be empty, got ${JSON.stringify(first)}`);
    await page.evaluate((name) => window[name].append(), api);
    const afterAppends = await page.evaluate((name) => window[name].append(), api);
    if (afterAppends.count !== 2 || afterAppends.head !== 2) throw new Error(`two appends should count 2 at head 2, got ${JSON.stringify(afterAppends)}`);
    await page.reload();
    const reloaded = await ready();
    if (reloaded.count !== 2 || reloaded.head !== 2 || reloaded.storage !== "indexeddb") {
      throw new Error(`after a reload the store should hold 2 events in IndexedDB, got ${JSON.stringify(reloaded)}`);
    }
    if (errors.length) throw new Error(`the page reported errors:\n${errors.join("\n")}`);
    return reloaded;
  } finally {
    await context.close();
  }
}

export { dirname };
