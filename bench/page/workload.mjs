// The workload of the browser benchmarks, shared by the page and by bench/run.mjs (which
// seeds the sync server with the same events): events of about 200 bytes of JSON over
// 1,000 streams, and the one reducer (a counter plus a per-stream map).

const STREAMS = 1000;
const TYPES = ["ItemAdded", "ItemRenamed", "ItemMoved", "ItemRemoved"];
const NOTE = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor";

/** Event `i` of the workload (0-based): about 200 bytes of JSON, over 1,000 streams. */
export function eventAt(i) {
  return {
    stream: `stream-${String((i * 7919) % STREAMS).padStart(4, "0")}`,
    type: TYPES[i % 4],
    data: {
      item: `item-${i}`,
      qty: (i % 9) + 1,
      price: ((i * 37) % 10000) / 100,
      tags: ["bench", TYPES[(i >> 2) % 4].toLowerCase()],
      note: NOTE.slice(0, 40 + (i % 30)),
    },
  };
}

export function batchAt(start, size) {
  const out = new Array(size);
  for (let j = 0; j < size; j++) out[j] = eventAt(start + j);
  return out;
}

/** The one reducer: a counter plus a per-stream map (events per stream). */
export function initialState() {
  return { count: 0, streams: {} };
}
export function apply(state, event) {
  state.count += 1;
  state.streams[event.stream] = (state.streams[event.stream] ?? 0) + 1;
  return state;
}
export const projection = (version = 1) => ({ initial: initialState(), apply, version });

// The time-travel reducer: immutable, over a 1,000-key map `{ k0 .. k999 }` (full from the
// start), each event returning a new object with every key copied and its stream's key
// bumped: the Redux style, whose folds cost far more per event than the counter above.
const KEYS = Array.from({ length: STREAMS }, (_, i) => `k${i}`);
/** The map key an event bumps: its stream's number ("stream-0042" → "k42"). */
export const keyOf = (stream) => KEYS[Number(stream.slice(7))];
export function initialKeys() {
  const state = {};
  for (const k of KEYS) state[k] = 0;
  return state;
}
export function applyImmutable(state, event) {
  const key = keyOf(event.stream);
  return { ...state, [key]: state[key] + 1 };
}
export const immutableProjection = (version = 1) => ({ initial: initialKeys(), apply: applyImmutable, version });
