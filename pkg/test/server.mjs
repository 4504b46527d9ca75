// A real annals-server for the sync tests (not a test file itself). Set ANNALS_SERVER_URL
// (and ANNALS_SERVER_TOKEN, default "dev-token") to use a running server, or
// ANNALS_SERVER_BIN to the built binary (`cargo build --features server --bin
// annals-server`) to start one per test file on a free loopback port with a throwaway
// SQLite database. Without either, the sync tests are skipped.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";

import { openStore } from "annals";

import { uniqueName } from "./helpers.mjs";

export const serverConfigured = Boolean(process.env.ANNALS_SERVER_URL || process.env.ANNALS_SERVER_BIN);
export const skipWithoutServer = serverConfigured ? false : "set ANNALS_SERVER_URL or ANNALS_SERVER_BIN to run sync tests";
/** Tests that start a server with flags of their own need the binary. */
export const skipWithoutBinary = process.env.ANNALS_SERVER_BIN ? false : "set ANNALS_SERVER_BIN to run tests that start servers with their own flags";

/**
 * Starts (or points at) a server: `{ url, token, restart(), stop() }`. `args`: extra flags for
 * a server started here (with ANNALS_SERVER_URL such a test cannot run: see `needsBinary`).
 */
export async function startServer({ args = [] } = {}) {
  if (process.env.ANNALS_SERVER_URL && args.length === 0) {
    return {
      url: process.env.ANNALS_SERVER_URL.replace(/\/$/, ""),
      token: process.env.ANNALS_SERVER_TOKEN ?? "dev-token",
      canRestart: false,
      async restart() {
        throw new Error("cannot restart a server given by ANNALS_SERVER_URL");
      },
      async stop() {},
    };
  }
  const bin = process.env.ANNALS_SERVER_BIN;
  const dir = mkdtempSync(join(tmpdir(), "annals-pkg-sync-"));
  const token = "pkg-test-token";
  let child;
  let listen = "127.0.0.1:0";
  let generation = 0;
  const launch = () =>
    new Promise((resolve, reject) => {
      generation += 1;
      const database = `sqlite://${join(dir, `annals-${generation}.db`)}`;
      child = spawn(bin, ["--listen", listen, "--database", database, "--dev-token", token, ...args], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      const timer = setTimeout(() => reject(new Error(`annals-server did not start: ${out}`)), 15_000);
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (chunk) => {
        out += chunk;
        const match = /listening on (http:\/\/[\d.:]+)/.exec(out);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      child.stderr.resume();
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`annals-server exited with ${code}: ${out}`));
      });
    });
  const stopChild = () =>
    new Promise((resolve) => {
      if (!child || child.exitCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    });
  const url = await launch();
  listen = url.replace("http://", ""); // restarts keep the port
  return {
    url,
    token,
    /** The running server's database URL (for `annals-server export` / `import`). */
    get database() {
      return `sqlite://${join(dir, `annals-${generation}.db`)}`;
    },
    canRestart: true,
    /** A new server on the same port with an empty database: a new epoch. */
    async restart() {
      await stopChild();
      await launch();
    },
    async stop() {
      await stopChild();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Emulates `navigator.onLine` and the window's online/offline events (Node has neither). */
export function installOnlineSwitch() {
  const bus = new EventTarget();
  globalThis.addEventListener = bus.addEventListener.bind(bus);
  globalThis.removeEventListener = bus.removeEventListener.bind(bus);
  globalThis.navigator ??= {};
  globalThis.navigator.onLine = true;
  return (online) => {
    globalThis.navigator.onLine = online;
    bus.dispatchEvent(new Event(online ? "online" : "offline"));
  };
}

/**
 * A server for the tests of one `describe` block, and synced memory stores on it that close
 * with it. Call it in the block's body (it adds `before` and `after` hooks):
 * `const fixture = serverFixture("lifecycle"); ... const store = await fixture.client(name);`.
 * `defaults`: open options every client gets (projections, say).
 */
export function serverFixture(prefix, defaults = {}) {
  const stores = [];
  const fixture = {
    /** The server, once `before` ran. */
    server: undefined,
    /** A memory store synced with `storeName` on the server. */
    async client(storeName) {
      const { url, token } = fixture.server;
      const store = await openStore({
        name: uniqueName(prefix),
        storage: "memory",
        ...defaults,
        sync: { url, store: storeName, token, longPollSeconds: 1 },
      });
      stores.push(store);
      return store;
    },
  };
  before(async () => {
    fixture.server = await startServer();
  });
  after(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await fixture.server?.stop();
  });
  return fixture;
}
