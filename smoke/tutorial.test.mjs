// The tutorial (docs/tutorial.md) is true: its app (docs/tutorial/app/, installed from the
// packed tarball into target/smoke/tutorial) type-checks and, on Vite's dev server with an
// annals-server on SQLite in a temp dir, two browsers (two devices: each its own IndexedDB)
// converge through the server. And every code block the tutorial labels with a file is
// that file, byte for byte.
//   node --test smoke/tutorial.test.mjs   (ANNALS_SERVER_BIN: the server, default target/debug)

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  closeBrowser, freePort, launchBrowser, listFiles, openPage, prepareApp, root, run, startProcess,
} from "./harness.mjs";

const tutorialFile = join(root, "docs", "tutorial.md");
const appTemplate = join(root, "docs", "tutorial", "app");
const serverBin = process.env.ANNALS_SERVER_BIN ?? join(root, "target", "debug", "annals-server");

/** The tutorial's code blocks whose info string names a file: ```ts file=src/main.ts */
function labelledBlocks() {
  const text = readFileSync(tutorialFile, "utf8");
  const blocks = [];
  const fence = /^```[\w-]* file=(\S+)\n([\s\S]*?)^```$/gm;
  for (let m; (m = fence.exec(text)); ) blocks.push({ file: m[1], code: m[2] });
  return blocks;
}

test("every file of the tutorial's app is quoted in docs/tutorial.md exactly as it is", () => {
  const blocks = labelledBlocks();
  const quoted = new Set();
  for (const { file, code } of blocks) {
    const path = join(appTemplate, file);
    assert.ok(existsSync(path), `the tutorial quotes ${file}, which docs/tutorial/app/ does not have`);
    assert.equal(code, readFileSync(path, "utf8"), `the tutorial's ${file} differs from docs/tutorial/app/${file}`);
    quoted.add(file);
  }
  const unquoted = listFiles(appTemplate).filter((f) => !quoted.has(f));
  assert.deepEqual(unquoted, [], "files of docs/tutorial/app/ that the tutorial does not show");
});

let appDir;
let dataDir;
before(() => {
  appDir = prepareApp("tutorial", { templateDir: appTemplate, shared: false }).appDir;
  dataDir = mkdtempSync(join(tmpdir(), "annals-tutorial-"));
});
after(async () => {
  await closeBrowser();
  rmSync(dataDir, { recursive: true, force: true });
});

test("the tutorial's app type-checks against the package's types (tsc --strict)", () => {
  run(process.execPath, [join(appDir, "node_modules", "typescript", "bin", "tsc"), "--noEmit", "-p", "."], { cwd: appDir });
});

test("the tutorial's app: two browsers converge through annals-server (SQLite, --dev-token, --cors-origin)", async () => {
  assert.ok(existsSync(serverBin), `${serverBin} is missing: build it (make server) or set ANNALS_SERVER_BIN`);
  const [serverPort, vitePort] = [await freePort(), await freePort()];
  const serverUrl = `http://127.0.0.1:${serverPort}`;
  const appUrl = `http://127.0.0.1:${vitePort}/`;
  // The same command as the tutorial's, on free ports.
  const server = await startProcess(serverBin, [
    "--listen", `127.0.0.1:${serverPort}`,
    "--database", `sqlite://${join(dataDir, "annals.db")}`,
    "--dev-token", "dev",
    "--cors-origin", `http://127.0.0.1:${vitePort}`,
  ], { cwd: dataDir, url: `${serverUrl}/health` });
  const vite = await startProcess(process.execPath, [
    join(appDir, "node_modules", "vite", "bin", "vite.js"), "--host", "127.0.0.1", "--port", String(vitePort), "--strictPort",
  ], { cwd: appDir, url: appUrl, env: { VITE_ANNALS_URL: serverUrl } });
  const browser = await launchBrowser();
  const contexts = [];
  try {
    const open = async () => {
      const context = await browser.newContext();
      contexts.push(context);
      const opened = await openPage(appUrl, context);
      await opened.page.waitForSelector("#status:text('online')", { timeout: 30_000 });
      return opened;
    };
    const alice = await open();
    const bob = await open();

    await alice.page.fill("#title", "buy milk");
    await alice.page.click("#add button");
    const bobsTodo = bob.page.locator("#todos li", { hasText: "buy milk" });
    await bobsTodo.waitFor({ timeout: 15_000 });
    assert.equal(await bobsTodo.getAttribute("data-done"), "false");

    await bobsTodo.locator("input[type=checkbox]").check();
    await alice.page.locator("#todos li[data-done=true]", { hasText: "buy milk" }).waitFor({ timeout: 15_000 });
    await bob.page.waitForSelector("#status:text('0 pending')", { timeout: 15_000 });

    // The server holds both events, once each.
    const pulled = await (await fetch(`${serverUrl}/v1/stores/todos/pull?after=0`, { headers: { authorization: "Bearer dev" } })).json();
    assert.deepEqual(pulled.events.map((e) => e.type), ["TodoAdded", "TodoCompleted"]);

    // A reload opens the store from this browser's IndexedDB and still shows the todo done.
    await alice.page.reload();
    await alice.page.locator("#todos li[data-done=true]", { hasText: "buy milk" }).waitFor({ timeout: 15_000 });
    for (const { errors } of [alice, bob]) assert.deepEqual(errors, []);
  } finally {
    for (const context of contexts) await context.close();
    await vite.stop();
    await server.stop();
  }
});
