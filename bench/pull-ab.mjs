// The pull benchmark of two builds, alternated in the same minutes: the machine is shared
// and noisy, so a build is only compared with another measured beside it. One annals-server
// (seeded once), one Chromium; each round runs `pullRaw` then `pull` of build A and of
// build B in fresh pages (the order flips every round), and reads the CPU time of the
// renderers' main threads from /proc, steadier than wall clock under load.
//
//   node bench/pull-ab.mjs <dirA> <dirB> [rounds]
//
// Each directory holds `bench/` (a copy of this one) and `pkg/` (`dist/`, `wasm/` and
// `package.json` of a built package): copy them aside after `scripts/build-pkg.sh` of each
// build. The server: ANNALS_SERVER_BIN, else target/perf/annals-server.

import { createReadStream, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, resolve, sep } from "node:path";
import { chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS } from "../scripts/chromium.mjs";
import { ROOT, chromiumCpu, log, seedStore, startSyncServer } from "./harness.mjs";

if (process.argv.length < 4) {
  log("usage: node bench/pull-ab.mjs <dirA> <dirB> [rounds]");
  process.exit(2);
}
const roots = { A: resolve(process.argv[2]), B: resolve(process.argv[3]) };
const ROUNDS = Number(process.argv[4] ?? 4);
const N = Number(process.env.N ?? 100_000);
const SERVER_BIN = process.env.ANNALS_SERVER_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(ROOT, "target"), "perf", "annals-server");
const PROFILE_TAG = "annals-bench-profile-ab-";
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json", ".wasm": "application/wasm" };

/** CPU ms so far of the renderers' main threads of this script's Chromium. */
const mainThreadCpu = () => chromiumCpu(PROFILE_TAG).main;

// /A/... and /B/... serve the two builds from one origin (one CORS origin for the server).
const files = createServer(async (req, res) => {
  const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
  const [, which, ...rest] = path.split("/");
  const root = roots[which];
  const file = root ? resolve(join(root, rest.join("/"))) : undefined;
  const info = file?.startsWith(root + sep) ? await stat(file).catch(() => null) : null;
  if (!info?.isFile()) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, {
    "content-type": TYPES[extname(file)] ?? "application/octet-stream",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
  });
  createReadStream(file).pipe(res);
});
await new Promise((ok) => files.listen(0, "127.0.0.1", () => ok(undefined)));
const origin = `http://127.0.0.1:${/** @type {import("node:net").AddressInfo} */ (files.address()).port}`;
const profileDir = mkdtempSync(join(tmpdir(), PROFILE_TAG));
const context = await chromium.launchPersistentContext(profileDir, { executablePath: CHROMIUM, args: CHROMIUM_ARGS });
const loadavg = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const server = await startSyncServer(SERVER_BIN, origin);
const { url, token } = server;
try {
  await seedStore(server, "bench", N);
  /** Runs `bench[fn]` of build `which` in a fresh page: events/s and main-thread CPU ms. */
  const run = async (which, fn) => {
    const page = await context.newPage();
    page.on("pageerror", (e) => log("page error:", e.message));
    try {
      await page.goto(`${origin}/${which}/bench/page/index.html`);
      await page.waitForFunction(() => globalThis.benchReady === true, undefined, { timeout: 60_000 });
      const cpu0 = mainThreadCpu();
      const out = await page.evaluate(([f, o]) => globalThis.bench[f](o), [fn, { name: `bench-ab-${which}`, url, store: "bench", token, n: N }]);
      return { rate: out.eventsPerSecond, cpu: mainThreadCpu() - cpu0 };
    } finally {
      await page.close();
    }
  };
  const runs = { A: [], B: [] };
  log(`Chromium ${context.browser()?.version() ?? "?"}, ${N} events, ${ROUNDS} rounds`);
  for (let r = 0; r < ROUNDS; r++) {
    for (const which of r % 2 === 0 ? ["A", "B"] : ["B", "A"]) {
      const raw = await run(which, "pullRaw");
      const pull = await run(which, "pull");
      runs[which].push({ pull, raw });
      log(
        `round ${r + 1} ${which}: ${Math.round(pull.rate)}/s (${pull.cpu} ms CPU), fetch + parse ${Math.round(raw.rate)}/s (${raw.cpu} ms CPU), ratio ${(pull.rate / raw.rate).toFixed(2)}; load ${loadavg()}`,
      );
    }
  }
  for (const which of ["A", "B"]) {
    const xs = runs[which];
    log(
      `${which}: median ${Math.round(median(xs.map((x) => x.pull.rate)))}/s, ratio ${median(xs.map((x) => x.pull.rate / x.raw.rate)).toFixed(2)}, main-thread CPU ${median(xs.map((x) => x.pull.cpu))} ms (fetch + parse: ${median(xs.map((x) => x.raw.cpu))} ms)`,
    );
  }
  log(`B ÷ A by round: ${runs.B.map((b, i) => (b.pull.rate / runs.A[i].pull.rate).toFixed(2)).join(", ")}`);
} finally {
  server.stop();
  await context.close();
  files.close();
  rmSync(profileDir, { recursive: true, force: true });
}
