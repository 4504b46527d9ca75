// The browser side of `make bench`: annals and the two plain-IndexedDB baselines, on the
// same deterministic events, with the same reducer. bench/run.mjs loads this page in
// headless Chromium and calls `window.bench.<scenario>(options)`, one scenario per page load.
//
// - annals: the npm package as built in pkg/ (dist + wasm), IndexedDB storage.
// - per-record baseline: one IndexedDB record per event (out of line: key = position),
//   one transaction per batch (1,000 puts for batches of 1,000), read back with `getAll`.
// - raw chunked limit: one record per batch holding the batch's events as one JSON string,
//   read back with `getAll` + `JSON.parse`.
//
// Every contender assigns what annals assigns (an id, the position, the stream version and
// the time) and folds the same reducer. Timings are wall-clock `performance.now()`.

import { diff, openStore } from "../../pkg/dist/browser.js";
import init from "../../pkg/wasm/annals.js";

import {
  apply,
  batchAt,
  eventAt,
  immutableProjection,
  initialKeys,
  initialState,
  keyOf,
  projection,
} from "./workload.mjs";

const now = () => performance.now();

// ---- plain IndexedDB helpers -------------------------------------------------------------

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = tx.onerror = () => reject(tx.error ?? new Error("transaction aborted"));
  });
}

function openDb(name, stores) {
  const req = indexedDB.open(name, 1);
  req.onupgradeneeded = () => {
    for (const s of stores) if (!req.result.objectStoreNames.contains(s)) req.result.createObjectStore(s);
  };
  return request(req);
}

async function deleteDb(name) {
  await request(indexedDB.deleteDatabase(name));
}

/** What the baselines assign to each new event, as annals does. */
class Assigner {
  head = 0;
  versions = new Map();
  records(batch) {
    const time = Date.now();
    const out = new Array(batch.length);
    for (let i = 0; i < batch.length; i++) {
      const e = batch[i];
      const version = (this.versions.get(e.stream) ?? 0) + 1;
      this.versions.set(e.stream, version);
      out[i] = {
        id: crypto.randomUUID(),
        position: ++this.head,
        stream: e.stream,
        version,
        type: e.type,
        data: e.data,
        time,
        pending: false,
      };
    }
    return out;
  }
}

/**
 * The least a log shared by several tabs must do per append, in plain JS: in one
 * transaction, read the head (another tab may have moved it), then write the event and
 * the new head. What annals' single append is measured against besides the bare put.
 */
class CheckedLog {
  static async open(name) {
    return new CheckedLog(await openDb(name, ["events", "meta"]));
  }
  constructor(db) {
    this.db = db;
    this.assign = new Assigner();
    this.state = initialState();
  }
  async append(event) {
    const tx = this.db.transaction(["events", "meta"], "readwrite", { durability: "default" });
    const committed = done(tx);
    const meta = tx.objectStore("meta");
    const head = (await request(meta.get("head"))) ?? 0;
    this.assign.head = head;
    const [record] = this.assign.records([event]);
    tx.objectStore("events").put(record, record.position);
    meta.put(record.position, "head");
    tx.commit();
    await committed;
    this.state = apply(this.state, record);
    return record;
  }
  close() {
    this.db.close();
  }
}

/** A baseline log: `perRecord` (one record per event) or `chunked` (one JSON string per batch). */
class Baseline {
  static async open(kind, name) {
    const b = new Baseline(kind, await openDb(name, ["events", "snapshots"]));
    return b;
  }
  constructor(kind, db) {
    this.kind = kind;
    this.db = db;
    this.assign = new Assigner();
    this.state = initialState();
  }
  async append(batch) {
    const records = this.assign.records(batch);
    const tx = this.db.transaction("events", "readwrite", { durability: "default" });
    const os = tx.objectStore("events");
    if (this.kind === "perRecord") {
      for (const r of records) os.put(r, r.position);
    } else {
      os.put(JSON.stringify(records), records[0].position);
    }
    tx.commit();
    await done(tx);
    for (const r of records) this.state = apply(this.state, r);
    return records;
  }
  /** Folds every event after `after` up to `to` into `state` (getAll by pages). */
  async fold(state, after = 0, to = Infinity) {
    const tx = this.db.transaction("events", "readonly");
    const os = tx.objectStore("events");
    // Per record: 10,000 records a page. Chunked: 10 chunks (10,000 events) a page.
    const page = this.kind === "perRecord" ? 10_000 : 10;
    let lower = after;
    let folded = after;
    for (;;) {
      const range = IDBKeyRange.lowerBound(lower, true);
      const [keys, rows] = await Promise.all([request(os.getAllKeys(range, page)), request(os.getAll(range, page))]);
      if (rows.length === 0) break;
      let stop = false;
      for (const row of rows) {
        const events = this.kind === "perRecord" ? [row] : JSON.parse(row);
        for (const e of events) {
          if (e.position <= folded) continue;
          if (e.position > to) {
            stop = true;
            break;
          }
          state = apply(state, e);
          folded = e.position;
        }
        if (stop) break;
      }
      lower = keys[keys.length - 1];
      if (stop || rows.length < page) break;
    }
    return { state, head: folded };
  }
  async putSnapshot() {
    const tx = this.db.transaction("snapshots", "readwrite");
    tx.objectStore("snapshots").put({ position: this.assign.head, state: JSON.stringify(this.state) }, "counter");
    await done(tx);
  }
  /** Open the way a plain-JS app would: the snapshot, then the tail after it. */
  async openFromSnapshot() {
    const tx = this.db.transaction("snapshots", "readonly");
    const snapshot = await request(tx.objectStore("snapshots").get("counter"));
    const base = snapshot ? JSON.parse(snapshot.state) : initialState();
    const { state } = await this.fold(base, snapshot?.position ?? 0);
    this.state = state;
    return state;
  }
  close() {
    this.db.close();
  }
}

// ---- scenarios ---------------------------------------------------------------------------

function summary(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { n: sorted.length, p50: at(0.5), p95: at(0.95), max: sorted[sorted.length - 1], mean: samples.reduce((a, b) => a + b, 0) / samples.length };
}

function check(state, expected, what) {
  if (state.count !== expected) throw new Error(`${what}: folded ${state.count} events, expected ${expected}`);
}

// ---- time travel helpers ---------------------------------------------------------------------

/** Every event of the time-travel log bumps one key: the keys sum to the events folded. */
function checkKeys(state, expected, what) {
  let sum = 0;
  for (const k in state) sum += state[k];
  if (sum !== expected) throw new Error(`${what}: folded ${sum} events, expected ${expected}`);
}

/** Events read per `store.events` call by the replay baseline. */
const BASELINE_CHUNK = 10_000;

/**
 * The baseline of time travel: what an app does without annals' checkpoints, folding the
 * immutable reducer over events 1..target from the start (read from the same store, so only
 * the folding differs), leaving out the event at `skipPosition` (what-if).
 */
async function replayFromStart(store, target, skipPosition) {
  let state = initialKeys();
  for (let after = 0; after < target; after += BASELINE_CHUNK) {
    const events = await store.events({ after, to: Math.min(after + BASELINE_CHUNK, target) });
    for (const e of events) if (e.position !== skipPosition) state = baselineApply(state, e);
  }
  return state;
}

/**
 * `applyImmutable`'s body, as a function of its own: V8 keeps type feedback per function,
 * and the spread in the shared one has also seen the states annals restores (objects of
 * other shapes), which sends it down a generic path about 20× slower per event. The
 * baseline is an app replaying with its own reducer, so it gets its own feedback.
 */
function baselineApply(state, event) {
  const key = keyOf(event.stream);
  return { ...state, [key]: state[key] + 1 };
}

/** Resolves at the next animation frame. */
const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));

/** Resolves once `ready()` is true, checked each frame; rejects after `timeoutMs`. */
async function untilFrame(ready, timeoutMs, what) {
  const t0 = now();
  while (!ready()) {
    if (now() - t0 > timeoutMs) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await frame();
  }
}

/** Long tasks (the Long Tasks API reports those of 50 ms and more) starting in [from, to]. */
function tasksIn(tasks, from, to) {
  const inside = tasks.filter((t) => t.startTime >= from && t.startTime <= to).map((t) => t.duration);
  return { count: inside.length, longest: inside.length ? Math.max(...inside) : 0, over50: inside.filter((d) => d > 50).length };
}

/** A seeded generator of numbers in [0, 1) (xorshift32): the same positions in every run. */
function seededRandom(seed) {
  let x = seed >>> 0;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

let wasmExports;
let wasmInitMs = 0;

const bench = {
  /** JSON bytes of the workload's events (the app's input: stream, type, data). */
  eventBytes(n = 10_000) {
    let total = 0;
    for (let i = 0; i < n; i++) total += JSON.stringify(eventAt(i)).length;
    return total / n;
  },

  wasmInitMs: () => wasmInitMs,

  /** Cross-origin isolated pages get 5 µs timers (100 µs otherwise). */
  isolated: () => globalThis.crossOriginIsolated === true,

  /** Wasm linear memory in bytes (the engine's heap: it never shrinks). */
  wasmMemory: () => wasmExports.memory.buffer.byteLength,

  deleteDb,

  /** Appends events `start .. start + n` in batches of `batch`; events/s of the append calls. */
  async append({ contender, name, n, batch, start = 0, fresh = true }) {
    if (fresh) await deleteDb(name);
    let ms = 0;
    let closeMs = 0;
    if (contender === "annals") {
      // The travel log's big store is filled in batches of 10,000 (over the default maxBatch).
      const store = await openStore({ name, projections: { counter: projection(1) }, maxBatch: Math.max(batch, 1000) });
      for (let i = 0; i < n; i += batch) {
        const events = batchAt(start + i, Math.min(batch, n - i));
        const t0 = now();
        if (batch === 1) await store.append(events[0]);
        else await store.appendMany(events);
        ms += now() - t0;
      }
      check(store.get("counter"), start + n, "annals append");
      const t0 = now();
      await store.close();
      closeMs = now() - t0;
    } else {
      const log = await Baseline.open(contender, name);
      if (!fresh) {
        const { state, head } = await log.fold(initialState());
        log.state = state;
        log.assign.head = head;
      }
      for (let i = 0; i < n; i += batch) {
        const events = batchAt(start + i, Math.min(batch, n - i));
        const t0 = now();
        await log.append(events);
        ms += now() - t0;
      }
      check(log.state, start + n, `${contender} append`);
      await log.putSnapshot();
      log.close();
    }
    return { ms, eventsPerSecond: (n / ms) * 1000, closeMs };
  },

  /** Cold open and full replay (no snapshot): ms until the first `get`. */
  async replay({ contender, name, n, version }) {
    const t0 = now();
    let state;
    if (contender === "annals") {
      // A projection version no snapshot has: the whole log is replayed, before the open
      // resolves (a rebuild of more than `background` events would go on after it).
      const store = await openStore({ name, projections: { counter: projection(version) }, rebuild: { background: n } });
      state = store.get("counter");
      const ms = now() - t0;
      check(state, n, "annals replay");
      await store.close();
      return { ms, eventsPerSecond: (n / ms) * 1000 };
    }
    const log = await Baseline.open(contender, name);
    ({ state } = await log.fold(initialState()));
    const ms = now() - t0;
    check(state, n, `${contender} replay`);
    log.close();
    return { ms, eventsPerSecond: (n / ms) * 1000 };
  },

  /** Open with a snapshot at the head: ms until the first `get`. */
  async snapshotOpen({ contender, name, n, version }) {
    const t0 = now();
    if (contender === "annals") {
      const store = await openStore({ name, projections: { counter: projection(version) } });
      const state = store.get("counter");
      const ms = now() - t0;
      check(state, n, "annals snapshot open");
      await store.close();
      return { ms };
    }
    const log = await Baseline.open(contender, name);
    const state = await log.openFromSnapshot();
    const ms = now() - t0;
    check(state, n, `${contender} snapshot open`);
    log.close();
    return { ms };
  },

  /**
   * Single-event appends, one at a time: annals `append`, a bare one-put transaction
   * (the per-record baseline's write of one event) and the chunked baseline's one-record
   * write, interleaved so that drift hits all three alike.
   */
  /**
   * The first appends on a freshly loaded page: open a fresh store (its time apart), then
   * time each of the first `n` single appends; beside them, a bare one-put transaction's
   * first puts on a fresh database in the same page.
   */
  async firstAppend({ name, n = 5 }) {
    await deleteDb(name);
    await deleteDb(`${name}-bare`);
    let t = now();
    const store = await openStore({ name, projections: { counter: projection(1) } });
    const openMs = now() - t;
    const annals = [];
    for (let i = 0; i < n; i++) {
      t = now();
      await store.append(eventAt(i));
      annals.push(now() - t);
    }
    await store.close();
    const bare = await Baseline.open("perRecord", `${name}-bare`);
    const bareTimes = [];
    for (let i = 0; i < n; i++) {
      t = now();
      await bare.append([eventAt(i)]);
      bareTimes.push(now() - t);
    }
    bare.close();
    await deleteDb(name);
    await deleteDb(`${name}-bare`);
    return { openMs, annals, bare: bareTimes };
  },

  async latency({ name, samples, warmup = 20 }) {
    const names = [`${name}-annals`, `${name}-perRecord`, `${name}-chunked`, `${name}-checked`];
    for (const n of names) await deleteDb(n);
    const store = await openStore({ name: names[0], projections: { counter: projection(1) } });
    const perRecord = await Baseline.open("perRecord", names[1]);
    const chunked = await Baseline.open("chunked", names[2]);
    const checked = await CheckedLog.open(names[3]);
    const times = { annals: [], perRecord: [], chunked: [], checked: [] };
    for (let i = 0; i < warmup + samples; i++) {
      const event = eventAt(i);
      let t0 = now();
      await store.append(event);
      const a = now() - t0;
      t0 = now();
      await perRecord.append([event]);
      const b = now() - t0;
      t0 = now();
      await chunked.append([event]);
      const c = now() - t0;
      t0 = now();
      await checked.append(event);
      const d = now() - t0;
      if (i >= warmup) {
        times.annals.push(a);
        times.perRecord.push(b);
        times.chunked.push(c);
        times.checked.push(d);
      }
    }
    await store.close();
    perRecord.close();
    chunked.close();
    checked.close();
    for (const n of names) await deleteDb(n);
    return {
      annals: summary(times.annals),
      perRecord: summary(times.perRecord),
      chunked: summary(times.chunked),
      checked: summary(times.checked),
    };
  },

  /** `stateAt` at random positions (seeded) of a log of `n` events. */
  async stateAt({ contender, name, n, version, samples, seed = 42 }) {
    const random = seededRandom(seed);
    const positions = Array.from({ length: samples }, () => 1 + Math.floor(random() * (n - 1)));
    const times = [];
    let first;
    if (contender === "annals") {
      const t0 = now();
      const store = await openStore({ name, projections: { counter: projection(version) } });
      const openMs = now() - t0;
      for (const p of positions) {
        const t = now();
        const state = await store.stateAt("counter", p);
        times.push(now() - t);
        check(state, p, "annals stateAt");
      }
      first = times[0];
      await store.close();
      return { openMs, first, ...summary(times) };
    }
    const log = await Baseline.open(contender, name);
    for (const p of positions) {
      const t = now();
      const { state } = await log.fold(initialState(), 0, p);
      times.push(now() - t);
      check(state, p, `${contender} stateAt`);
    }
    first = times[0];
    log.close();
    return { first, ...summary(times) };
  },

  /** Opens `name` and keeps it open (for heap measurements); returns what it folded. */
  async hold({ contender, name, n, version }) {
    if (contender === "annals") {
      const store = await openStore({ name, projections: { counter: projection(version) } });
      // Every event is in the engine once a read of the whole log succeeds.
      await store.events({ after: n - 1 });
      check(store.get("counter"), n, "annals hold");
      globalThis.held = store;
      return { head: store.head };
    }
    const log = await Baseline.open(contender, name);
    const { state } = await log.fold(initialState());
    check(state, n, `${contender} hold`);
    log.state = state;
    globalThis.held = log;
    return { head: n };
  },

  /** Bytes of the stored segments of annals store `name`, read straight from IndexedDB. */
  async annalsEncodedBytes(name) {
    // At the version annals left it (no upgrade).
    const db = await request(indexedDB.open(name));
    const tx = db.transaction("segments", "readonly");
    const os = tx.objectStore("segments");
    let lower = 0;
    let bytes = 0;
    let segments = 0;
    for (;;) {
      const range = IDBKeyRange.lowerBound(lower, true);
      const [keys, rows] = await Promise.all([request(os.getAllKeys(range, 200)), request(os.getAll(range, 200))]);
      for (const r of rows) bytes += r.byteLength;
      segments += rows.length;
      if (rows.length < 200) break;
      lower = keys[keys.length - 1];
    }
    db.close();
    return { bytes, segments };
  },

  // ---- time travel -------------------------------------------------------------------------

  /** Builds the time-travel log: `n` events appended by `batch`, folded by the immutable reducer. */
  async travelBuild({ name, n, batch }) {
    await deleteDb(name);
    const t0 = now();
    const store = await openStore({ name, projections: { keys: immutableProjection(1) } });
    for (let i = 0; i < n; i += batch) await store.appendMany(batchAt(i, Math.min(batch, n - i)));
    checkKeys(store.get("keys"), n, "travel build");
    await store.close();
    return { ms: now() - t0 };
  },

  /**
   * Time travel on the log `travelBuild` wrote, opened cold (from its snapshot at the head,
   * no checkpoint yet): `stateAt` at random positions, stepping ±1, what-if with the middle
   * event off, `diff` of two states, and what the checkpoints then hold. Beside each, the
   * baseline: replaying from the start with the same reducer.
   */
  async travel({ name, n, samples = 200, replays = 10, seed = 7 }) {
    const random = seededRandom(seed);
    const randomPosition = (margin = 0) => 1 + margin + Math.floor(random() * (n - 1 - 2 * margin));
    const t0 = now();
    const store = await openStore({ name, projections: { keys: immutableProjection(1) } });
    const openMs = now() - t0;
    // The whole log in the engine first, so that loading it is not billed to the first query.
    const t1 = now();
    await store.events({ after: n - 1 });
    const loadMs = now() - t1;
    const timed = async (p, options) => {
      const t = now();
      const state = await store.stateAt("keys", p, options);
      return { state, ms: now() - t };
    };

    // Random positions, and the baseline replaying to the first `replays` of them.
    const positions = Array.from({ length: samples }, () => randomPosition());
    const randomTimes = [];
    for (const p of positions) {
      const { state, ms } = await timed(p);
      randomTimes.push(ms);
      checkKeys(state, p, "travel stateAt");
    }
    const replayTimes = [];
    for (const p of positions.slice(0, replays)) {
      const t = now();
      const state = await replayFromStart(store, p);
      replayTimes.push(now() - t);
      checkKeys(state, p, "travel replay baseline");
    }

    // Stepping: after each jump (untimed), 50 steps forward then 50 back.
    const stepTimes = [];
    for (let jump = 0; jump < 3; jump++) {
      const start = randomPosition(50);
      await store.stateAt("keys", start);
      for (let i = 1; i <= 50; i++) stepTimes.push((await timed(start + i)).ms);
      for (let i = 49; i >= 0; i--) {
        const { state, ms } = await timed(start + i);
        stepTimes.push(ms);
        if (i === 0) checkKeys(state, start, "travel step");
      }
    }

    // What-if: the middle event switched off, viewed a little after it and at the head.
    const middle = Math.floor(n / 2);
    const [middleEvent] = await store.events({ after: middle - 1, to: middle });
    const skip = { skip: [middleEvent.id] };
    const whatIf = [];
    for (const k of [1, 10, 100, 1000]) {
      const times = [];
      for (let r = 0; r < 10; r++) {
        const { state, ms } = await timed(middle + k, skip);
        times.push(ms);
        checkKeys(state, middle + k - 1, `travel what-if +${k}`);
      }
      whatIf.push({ k, first: times[0], ...summary(times) });
    }
    const headTimes = [];
    for (let r = 0; r < 3; r++) {
      const { state, ms } = await timed(n, skip);
      headTimes.push(ms);
      checkKeys(state, n - 1, "travel what-if at the head");
    }
    const whatIfBaseline = { near: [], head: [] };
    for (let r = 0; r < 3; r++) {
      let t = now();
      checkKeys(await replayFromStart(store, middle + 100, middle), middle + 99, "what-if baseline");
      whatIfBaseline.near.push(now() - t);
      if (r < 2) {
        t = now();
        checkKeys(await replayFromStart(store, n, middle), n - 1, "what-if baseline at the head");
        whatIfBaseline.head.push(now() - t);
      }
    }

    // Diff of the states 100 events apart.
    const diffTimes = [];
    let stateBytes = 0;
    for (let i = 0; i < 20; i++) {
      const p = randomPosition() % (n - 100) || 1;
      const a = await store.stateAt("keys", p);
      const b = await store.stateAt("keys", p + 100);
      const t = now();
      const d = diff(a, b);
      diffTimes.push(now() - t);
      if (d.changed.length < 1 || d.changed.length > 100 || d.added.length || d.removed.length) {
        throw new Error(`travel diff: ${d.changed.length} changed, ${d.added.length} added, ${d.removed.length} removed`);
      }
      stateBytes = JSON.stringify(b).length;
    }

    const checkpoints = store[Symbol.for("annals.debug")].checkpointStats("keys");
    await store.close();
    return {
      openMs,
      loadMs,
      stateBytes,
      stateAt: { first: randomTimes[0], ...summary(randomTimes) },
      // Where the slowest queries were (query number, position): warm-up or not.
      slowest: randomTimes
        .map((ms, i) => ({ i, position: positions[i], ms }))
        .sort((a, b) => b.ms - a.ms)
        .slice(0, 5),
      replay: summary(replayTimes),
      step: summary(stepTimes),
      whatIf,
      whatIfHead: summary(headTimes),
      whatIfBaseline: { near: summary(whatIfBaseline.near), head: summary(whatIfBaseline.head) },
      diff: summary(diffTimes),
      checkpoints,
    };
  },

  /**
   * The devtools panel on the log `name` (n events): main-thread long tasks while it mounts
   * until its first timeline rows show, and while its timeline scrolls from top to bottom in
   * 50 steps, a frame apart. The panel is imported here only, so that no other scenario loads it.
   */
  async travelPanel({ name, n, steps = 50 }) {
    const missing = [];
    const devtools = await import("../../pkg/dist/devtools.js").catch((error) => {
      missing.push(`pkg/dist/devtools.js: ${error.message}`);
      return {};
    });
    if (typeof devtools.mountDevtools !== "function") {
      missing.push("mountDevtools");
      return { missing };
    }
    const longTasksSupported = PerformanceObserver.supportedEntryTypes.includes("longtask");
    const tasks = [];
    const observer = new PerformanceObserver((list) => tasks.push(...list.getEntries()));
    observer.observe({ type: "longtask", buffered: true });

    const store = await openStore({ name, projections: { counter: projection(1) } });
    await store.events({ after: n - 1 });
    check(store.get("counter"), n, "travel panel open");
    // Let opening the store finish its own work before the panel is timed.
    await new Promise((resolve) => setTimeout(resolve, 500));
    // Mounting runs in a frame's task that starts after `mountWindow`: its long task, if
    // any, is counted (a task is stamped with its start, before the code inside it runs).
    const mountWindow = now();
    await frame();

    const host = () => document.querySelector('[data-testid="devtools-host"]');
    const find = (testId) => host()?.shadowRoot?.querySelector(`[data-testid="${testId}"]`);
    // A row shows an event once it is filled in (its title names the event's id).
    const shownRows = () => [...(host()?.shadowRoot?.querySelectorAll('[data-testid="devtools-row"][title^="id "]') ?? [])];

    const mountStart = now();
    const panel = devtools.mountDevtools(store);
    const mountCallMs = now() - mountStart;
    await untilFrame(() => shownRows().length > 0, 30_000, "the panel's first rows");
    const firstRowsMs = now() - mountStart;
    const rowsShown = shownRows().length;
    // Work the panel does right after its first rows (the state at the head, ...) counts too.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const mountEnd = now();

    const viewport = find("devtools-timeline");
    let scroll;
    if (!viewport) {
      missing.push('data-testid="devtools-timeline" (the scrolling timeline)');
    } else {
      viewport.scrollTop = 0;
      await untilFrame(() => shownRows().some((r) => r.dataset.position === "1"), 10_000, "the top of the timeline");
      await new Promise((resolve) => setTimeout(resolve, 300));
      const scrollStart = now();
      await frame();
      let longestFrame = 0;
      let last = now();
      for (let i = 1; i <= steps; i++) {
        viewport.scrollTop = ((viewport.scrollHeight - viewport.clientHeight) * i) / steps;
        await frame();
        longestFrame = Math.max(longestFrame, now() - last);
        last = now();
      }
      await untilFrame(() => shownRows().some((r) => r.dataset.position === String(n)), 10_000, "the bottom of the timeline");
      const scrollMs = now() - scrollStart;
      await new Promise((resolve) => setTimeout(resolve, 300));
      scroll = { ms: scrollMs, longestFrame, steps, ...tasksIn([...tasks, ...observer.takeRecords()], scrollStart, now()) };
    }
    const all = [...tasks, ...observer.takeRecords()];
    observer.disconnect();
    const domRows = host()?.shadowRoot?.querySelectorAll('[data-testid="devtools-row"]').length ?? 0;
    panel.unmount();
    await store.close();
    return {
      longTasksSupported,
      missing,
      mountCallMs,
      firstRowsMs,
      rowsShown,
      domRows,
      mount: tasksIn(all, mountWindow, mountEnd),
      mountWindowMs: mountEnd - mountStart,
      scroll,
    };
  },

  /** Pull `n` events from an annals-server into a fresh synced store. */
  async pull({ name, url, store: remote, token, n, pullLimit }) {
    await deleteDb(name);
    const t0 = now();
    const sync = { url, store: remote, token };
    if (pullLimit) sync.pullLimit = pullLimit;
    const store = await openStore({ name, projections: { counter: projection(1) }, sync });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`pull: only ${store.confirmedHead} of ${n} after 120 s`)), 120_000);
      const poll = () => {
        if (store.confirmedHead >= n) {
          clearTimeout(timer);
          resolve();
        }
      };
      store.on("change", poll);
      poll();
    });
    const ms = now() - t0;
    check(store.get("counter"), n, "annals pull");
    const t1 = now();
    await store.close();
    const closeMs = now() - t1;
    await deleteDb(name);
    return { ms, eventsPerSecond: (n / ms) * 1000, closeMs };
  },

  /** The transfer ceiling: the same pulls with fetch + JSON.parse, folded, nothing stored. */
  async pullRaw({ url, store: remote, token, n, pullLimit = 10_000 }) {
    const t0 = now();
    let after = 0;
    let state = initialState();
    while (after < n) {
      const res = await fetch(`${url}/v1/stores/${remote}/pull?after=${after}&limit=${pullLimit}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      const body = await res.json();
      for (const e of body.events) state = apply(state, e);
      after = body.events.length ? body.events[body.events.length - 1].position : n;
    }
    const ms = now() - t0;
    check(state, n, "raw pull");
    return { ms, eventsPerSecond: (n / ms) * 1000 };
  },
};

const t0 = now();
wasmExports = await init({ module_or_path: new URL("../../pkg/wasm/annals_bg.wasm", import.meta.url) });
wasmInitMs = now() - t0;
globalThis.bench = bench;
globalThis.benchReady = true;
