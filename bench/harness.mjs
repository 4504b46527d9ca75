// Shared by bench/run.mjs and bench/profile.mjs: a static server for the repository (the
// page in bench/page/ imports the built package from pkg/dist and pkg/wasm) and headless
// Chromium with an on-disk profile, driven by playwright-core.

import { spawn } from "node:child_process";
import { createReadStream, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS } from "../scripts/chromium.mjs";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export { CHROMIUM };

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
};

export const log = (...args) => console.error("[bench]", ...args);

/**
 * Serves the repository on 127.0.0.1 (a free port). Cross-origin isolated (COOP + COEP), so
 * that `performance.now()` has 5 µs resolution rather than 100 µs.
 */
async function serveRepository() {
  const server = createServer(async (req, res) => {
    try {
      const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
      const file = resolve(join(ROOT, path));
      const info = file.startsWith(ROOT + sep) ? await stat(file).catch(() => null) : null;
      if (!info?.isFile()) {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found");
        return;
      }
      res.writeHead(200, {
        "content-type": TYPES[extname(file)] ?? "application/octet-stream",
        "content-length": info.size,
        "cache-control": "no-store",
        "cross-origin-opener-policy": "same-origin",
        "cross-origin-embedder-policy": "require-corp",
      });
      createReadStream(file).pipe(res);
    } catch {
      res.writeHead(500).end();
    }
  });
  await new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => ok(undefined));
  });
  const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((ok) => {
        server.closeAllConnections();
        server.close(() => ok(undefined));
      }),
  };
}

/** Starts the server and the browser. */
export async function launch() {
  const server = await serveRepository();
  const profileDir = mkdtempSync(join(tmpdir(), "annals-bench-profile-"));
  // An on-disk profile: in a default (incognito-like) context IndexedDB lives in memory.
  const context = await chromium.launchPersistentContext(profileDir, { executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const pageUrl = `${server.origin}/bench/page/index.html`;

  async function newPage() {
    const page = await context.newPage();
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") log(`page ${m.type()}:`, m.text());
    });
    page.on("pageerror", (e) => log("page error:", e.message));
    await page.goto(pageUrl);
    await page.waitForFunction(() => globalThis.benchReady === true, undefined, { timeout: 60_000 });
    return page;
  }

  /**
   * Runs `bench[fn](options)` in a fresh page (a cold JS heap, a fresh wasm instance). With
   * `profile`, records a CPU profile of the call (CDP `Profiler`) and returns it too.
   */
  async function inPage(fn, options, { profile = false, samplingUs = 200 } = {}) {
    // BENCH_PROFILE=<scenario>: profile every run of that scenario, print where time goes.
    if (!profile && process.env.BENCH_PROFILE === fn) {
      const out = await inPage(fn, options, { profile: true, samplingUs: 100 });
      const dir = join(ROOT, "target", "bench");
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, `${fn}.cpuprofile`), JSON.stringify(out.cpuProfile));
      for (const row of selfTimes(out.cpuProfile, Number(process.env.TOP ?? 30))) {
        log(`  ${(row.share * 100).toFixed(1).padStart(5)}%  ${row.ms.toFixed(1).padStart(8)} ms  ${row.name}  ${row.where}`);
      }
      return out.value;
    }
    const page = await newPage();
    try {
      let cdp;
      if (profile) {
        cdp = await context.newCDPSession(page);
        await cdp.send("Profiler.enable");
        await cdp.send("Profiler.setSamplingInterval", { interval: samplingUs });
        await cdp.send("Profiler.start");
      }
      const value = await page.evaluate(([f, o]) => globalThis.bench[f](o), [fn, options]);
      if (!cdp) return value;
      const { profile: cpuProfile } = await cdp.send("Profiler.stop");
      await cdp.detach();
      return { value, cpuProfile };
    } finally {
      await page.close();
    }
  }

  return {
    context,
    origin: server.origin,
    pageUrl,
    newPage,
    inPage,
    async close() {
      await context.close();
      await server.close();
      rmSync(profileDir, { recursive: true, force: true });
    },
  };
}

/**
 * Self time by function of a CDP CPU profile, largest first: `[{ name, where, ms, share }]`.
 * Functions with the same name and location are summed.
 */
export function selfTimes(profile, top = 25) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const sums = new Map();
  for (const [id, us] of self) {
    const f = byId.get(id).callFrame;
    const file = f.url ? f.url.replace(/^.*\/(?=[^/]+$)/, "") : "";
    const key = `${f.functionName || "(anonymous)"}\u0000${file}:${f.lineNumber + 1}`;
    sums.set(key, (sums.get(key) ?? 0) + us);
  }
  return [...sums]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([key, us]) => {
      const [name, where] = key.split("\u0000");
      return { name, where, ms: us / 1000, share: us / total };
    });
}

/**
 * Starts annals-server (`bin`) on a throwaway SQLite database, answering pages of
 * `origin`. Resolves to `{ url, token, pid, stop }`; `stop()` ends it and removes the
 * database.
 */
export async function startSyncServer(bin, origin) {
  const dir = mkdtempSync(join(tmpdir(), "annals-bench-server-"));
  const token = "bench-token";
  const child = spawn(
    bin,
    ["--listen", "127.0.0.1:0", "--database", `sqlite://${join(dir, "bench.db")}`, "--dev-token", token, "--cors-origin", origin],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } },
  );
  const stop = () => {
    child.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const url = await new Promise((ok, fail) => {
      let out = "";
      const timer = setTimeout(() => fail(new Error(`annals-server did not start: ${out}`)), 15_000);
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (chunk) => {
        out += chunk;
        const m = /listening on (http:\/\/[\d.:]+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          ok(m[1]);
        }
      });
      child.stderr.resume();
      child.on("exit", (code) => fail(new Error(`annals-server exited with ${code}: ${out}`)));
    });
    return { url, token, pid: child.pid, stop };
  } catch (error) {
    stop();
    throw error;
  }
}

/** Pushes the workload's first `n` events into `store` of `server`, 1,000 per request (the server's default limit). */
export async function seedStore({ url, token }, store, n) {
  const { eventAt } = await import("./page/workload.mjs");
  for (let i = 0; i < n; i += 1000) {
    const events = [];
    for (let j = i; j < Math.min(n, i + 1000); j++) events.push({ id: crypto.randomUUID(), ...eventAt(j), time: Date.now() });
    const res = await fetch(`${url}/v1/stores/${store}/push`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ clientId: "bench-seed", events }),
    });
    if (!res.ok) throw new Error(`seeding: ${res.status} ${await res.text()}`);
  }
}

const TICK_MS = 10; // USER_HZ = 100 on Linux

/**
 * CPU time (ms) used so far, read from /proc (steadier than wall clock on a shared machine),
 * by the Chromium whose command line holds `profileTag` (its profile directory's prefix),
 * by kind: the renderers' main threads (where annals and the page run), the renderers' other
 * threads, the browser process (IndexedDB, network), other Chromium processes; and by the
 * process `serverPid` (-1: none).
 */
export function chromiumCpu(profileTag, serverPid = -1) {
  const out = { main: 0, renderer: 0, browser: 0, other: 0, server: 0 };
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let cmdline;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      continue; // the process ended meanwhile
    }
    const isServer = Number(pid) === serverPid;
    if (!isServer && !cmdline.includes(profileTag)) continue;
    const type = isServer ? "server" : (/--type=([a-z-]+)/.exec(cmdline)?.[1] ?? "browser");
    let tasks = [];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      let stat;
      try {
        stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      } catch {
        continue;
      }
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ms = (Number(fields[11]) + Number(fields[12])) * TICK_MS;
      if (isServer) out.server += ms;
      else if (type === "renderer") out[tid === pid ? "main" : "renderer"] += ms;
      else if (type === "browser") out.browser += ms;
      else out.other += ms;
    }
  }
  return out;
}
