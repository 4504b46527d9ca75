// Where a pull's time goes: starts annals-server (as bench/run.mjs does), seeds it, then
// alternates the `pull` and `pullRaw` scenarios of bench/page (fresh pages), tracing each
// annals pull: every page request's timings (Resource Timing: sent, first byte, last
// byte) and every change the store announces, so that the idle gaps between pages show.
// With PROFILE=1 the annals pulls are also CPU-profiled (self time by function).
//
//   ANNALS_SERVER_BIN=target/perf/annals-server REPS=3 node bench/pull-trace.mjs

import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { ROOT, chromiumCpu, launch, log, seedStore, selfTimes, startSyncServer } from "./harness.mjs";

const SERVER_BIN = process.env.ANNALS_SERVER_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(ROOT, "target"), "perf", "annals-server");
const N = Number(process.env.N ?? 100_000);
const REPS = Number(process.env.REPS ?? 3);
const PROFILE = process.env.PROFILE === "1";
const TRACE = process.env.TRACE !== "0";

const browser = await launch();
const cpuNow = (serverPid) => chromiumCpu("annals-bench-profile-", serverPid);
const cpuSince = (a, b) => Object.keys(a).map((k) => `${k} ${b[k] - a[k]}`).join(", ") + " ms CPU";
const server = await startSyncServer(SERVER_BIN, browser.origin);
const { url, token } = server;
try {
  const remote = "bench";
  await seedStore(server, remote, N);
  // The server alone, from Node: one page of 10,000 events, a few times.
  const serverMs = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const res = await fetch(`${url}/v1/stores/${remote}/pull?after=${i * 10_000}&limit=10000`, { headers: { authorization: `Bearer ${token}` } });
    const body = await res.arrayBuffer();
    serverMs.push(`${(performance.now() - t0).toFixed(1)} ms (${(body.byteLength / 2 ** 20).toFixed(2)} MiB)`);
  }
  log(`server page of 10k, fetched from Node: ${serverMs.join(", ")}`);

  const ratios = [];
  const sums = { annals: cpuNow(-1), raw: cpuNow(-1) };
  for (const k in sums.annals) sums.annals[k] = sums.raw[k] = 0;
  for (let r = 0; r < REPS; r++) {
    const page = await browser.newPage();
    const cpu0 = cpuNow(server.pid);
    let cdp;
    if (PROFILE) {
      cdp = await browser.context.newCDPSession(page);
      await cdp.send("Profiler.enable");
      await cdp.send("Profiler.setSamplingInterval", { interval: 100 });
      await cdp.send("Profiler.start");
    }
    const trace = await page.evaluate(
      async ({ url, remote, token, n, wrap }) => {
        const { openStore } = await import("../../pkg/dist/browser.js");
        const { projection } = await import("./workload.mjs");
        const name = "bench-trace";
        await new Promise((ok) => {
          const req = indexedDB.deleteDatabase(name);
          req.onsuccess = req.onerror = () => ok();
        });
        // WRAP=1: the time spent inside the synchronous IndexedDB calls, by call.
        const calls = {};
        if (wrap) {
          const timed = (proto, name) => {
            const original = proto[name];
            proto[name] = function (...args) {
              const t = performance.now();
              try {
                return original.apply(this, args);
              } finally {
                const c = (calls[name] ??= { n: 0, ms: 0 });
                c.n += 1;
                c.ms += performance.now() - t;
              }
            };
          };
          timed(IDBDatabase.prototype, "transaction");
          timed(IDBObjectStore.prototype, "put");
          timed(IDBObjectStore.prototype, "get");
          timed(IDBObjectStore.prototype, "getAll");
          timed(IDBTransaction.prototype, "objectStore");
          timed(JSON, "parse");
          timed(TextDecoder.prototype, "decode");
        }
        performance.clearResourceTimings();
        performance.setResourceTimingBufferSize(10_000);
        const changes = [];
        const t0 = performance.now();
        const store = await openStore({ name, projections: { counter: projection(1) }, sync: { url, store: remote, token } });
        const opened = performance.now();
        await new Promise((resolve) => {
          const poll = () => {
            if (store.confirmedHead >= n) resolve();
          };
          store.on("change", (c) => {
            changes.push({ at: performance.now(), events: c.events.length, head: c.confirmedHead });
            poll();
          });
          poll();
        });
        const ms = performance.now() - t0;
        await store.close();
        const pulls = performance
          .getEntriesByType("resource")
          .filter((e) => e.name.includes("/pull?"))
          .map((e) => ({
            after: Number(new URL(e.name).searchParams.get("after")),
            start: e.startTime,
            firstByte: e.responseStart,
            end: e.responseEnd,
            bytes: e.encodedBodySize,
          }));
        return { t0, opened, ms, changes, pulls, calls };
      },
      { url, remote, token, n: N, wrap: process.env.WRAP === "1" },
    );
    const cpu1 = cpuNow(server.pid);
    if (cdp) {
      const { profile } = await cdp.send("Profiler.stop");
      await cdp.detach();
      mkdirSync(join(ROOT, "target", "bench"), { recursive: true });
      writeFileSync(join(ROOT, "target", "bench", `pull-trace-${r}.cpuprofile`), JSON.stringify(profile));
      for (const row of selfTimes(profile, Number(process.env.TOP ?? 25))) {
        console.log(`${(row.share * 100).toFixed(1).padStart(5)}%  ${row.ms.toFixed(1).padStart(8)} ms  ${row.name}  ${row.where}`);
      }
    }
    await page.close();
    const rawPage = await browser.newPage();
    const cpu2 = cpuNow(server.pid);
    const raw = await rawPage.evaluate((o) => globalThis.bench.pullRaw(o), { url, store: remote, token, n: N });
    const cpu3 = cpuNow(server.pid);
    await rawPage.close();
    for (const k in sums.annals) {
      sums.annals[k] += cpu1[k] - cpu0[k];
      sums.raw[k] += cpu3[k] - cpu2[k];
    }
    const rate = (N / trace.ms) * 1000;
    ratios.push(rate / raw.eventsPerSecond);
    log(
      `run ${r + 1}: annals ${trace.ms.toFixed(0)} ms = ${Math.round(rate)}/s (open ${(trace.opened - trace.t0).toFixed(0)} ms); raw ${raw.ms.toFixed(0)} ms = ${Math.round(raw.eventsPerSecond)}/s; ratio ${(rate / raw.eventsPerSecond).toFixed(2)}`,
    );
    if (Object.keys(trace.calls).length) log(`  calls: ${Object.entries(trace.calls).map(([k, c]) => `${k} ${c.n}× ${c.ms.toFixed(1)} ms`).join(", ")}`);
    log(`  annals: ${cpuSince(cpu0, cpu1)}; raw: ${cpuSince(cpu2, cpu3)}`);
    if (TRACE) {
      const rel = (t) => (t - trace.t0).toFixed(0).padStart(5);
      for (const p of trace.pulls) {
        log(`  pull after=${String(p.after).padStart(6)}: sent ${rel(p.start)}, first byte ${rel(p.firstByte)}, done ${rel(p.end)} (${(p.bytes / 2 ** 20).toFixed(2)} MiB)`);
      }
      for (const c of trace.changes) log(`  change at ${rel(c.at)}: ${c.events} events, confirmed ${c.head}`);
    }
  }
  log(`ratios: ${ratios.map((x) => x.toFixed(2)).join(" ")}`);
  const per = (x) => Object.entries(x).map(([k, v]) => `${k} ${(v / REPS).toFixed(0)}`).join(", ");
  log(`CPU ms per run: annals ${per(sums.annals)}; raw ${per(sums.raw)}`);
} finally {
  server.stop();
  await browser.close();
}
