// Ids the wrapper makes: random command ids, and event ids derived from a command id so
// that executing the same command twice (a retry, a process manager handling an event
// again after a crash, two devices running the same process manager) writes its events
// once: the log and the sync server both treat a known event id as a duplicate.

/** A random UUID (v4). */
export function randomUuid(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === "function") {
    try {
      return c.randomUUID();
    } catch {
      // randomUUID exists but is refused outside secure contexts in some browsers.
    }
  }
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  return formatUuid(bytes);
}

/**
 * The id of the `index`-th event of command `commandId`: a UUIDv8 made of the first 122
 * bits of SHA-256(`annals:command:<commandId>:<index>`). Deterministic everywhere.
 */
export function commandEventId(commandId: string, index: number): string {
  const digest = sha256(new TextEncoder().encode(`annals:command:${commandId}:${index}`));
  const bytes = digest.subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x80;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  return formatUuid(bytes);
}

function formatUuid(bytes: Uint8Array): string {
  let hex = "";
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) hex += "-";
    hex += bytes[i]!.toString(16).padStart(2, "0");
  }
  return hex;
}

// ---- SHA-256 (FIPS 180-4), synchronous ------------------------------------------------
// Web Crypto's digest is asynchronous and missing outside secure contexts, so the ids
// use this small implementation. Its round constants are the first 32 bits of the
// fractional parts of the cube roots of the first 64 primes, its initial hash those of
// the square roots of the first 8: computed here rather than spelled out.

let ROUND: Uint32Array | undefined;
let INITIAL: Uint32Array | undefined;

function constants(): [Uint32Array, Uint32Array] {
  if (!ROUND || !INITIAL) {
    const primes: number[] = [];
    for (let n = 2; primes.length < 64; n++) {
      if (primes.every((p) => n % p !== 0)) primes.push(n);
    }
    const frac32 = (x: number) => Math.floor((x - Math.floor(x)) * 0x1_0000_0000) >>> 0;
    ROUND = Uint32Array.from(primes, (p) => frac32(Math.cbrt(p)));
    INITIAL = Uint32Array.from(primes.slice(0, 8), (p) => frac32(Math.sqrt(p)));
  }
  return [ROUND, INITIAL];
}

const rotr = (x: number, n: number) => (x >>> n) | (x << (32 - n));

/** SHA-256 of `message`. */
export function sha256(message: Uint8Array): Uint8Array {
  const [k, initial] = constants();
  const bitLength = message.length * 8;
  const padded = new Uint8Array(((message.length + 9 + 63) >> 6) << 6);
  padded.set(message);
  padded[message.length] = 0x80;
  const view = new DataView(padded.buffer);
  // Lengths beyond 2^32 bits do not occur here; write the 64-bit length as two halves.
  view.setUint32(padded.length - 8, Math.floor(bitLength / 0x1_0000_0000));
  view.setUint32(padded.length - 4, bitLength >>> 0);
  const h = Uint32Array.from(initial);
  const w = new Uint32Array(64);
  for (let offset = 0; offset < padded.length; offset += 64) {
    for (let t = 0; t < 16; t++) w[t] = view.getUint32(offset + t * 4);
    for (let t = 16; t < 64; t++) {
      const w15 = w[t - 15]!;
      const w2 = w[t - 2]!;
      const s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >>> 3);
      const s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >>> 10);
      w[t] = (w[t - 16]! + s0 + w[t - 7]! + s1) >>> 0;
    }
    let a = h[0]!;
    let b = h[1]!;
    let c = h[2]!;
    let d = h[3]!;
    let e = h[4]!;
    let f = h[5]!;
    let g = h[6]!;
    let hh = h[7]!;
    for (let t = 0; t < 64; t++) {
      const s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const choice = (e & f) ^ (~e & g);
      const t1 = (hh + s1 + choice + k[t]! + w[t]!) >>> 0;
      const s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const majority = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (s0 + majority) >>> 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    h[0] = (h[0]! + a) >>> 0;
    h[1] = (h[1]! + b) >>> 0;
    h[2] = (h[2]! + c) >>> 0;
    h[3] = (h[3]! + d) >>> 0;
    h[4] = (h[4]! + e) >>> 0;
    h[5] = (h[5]! + f) >>> 0;
    h[6] = (h[6]! + g) >>> 0;
    h[7] = (h[7]! + hh) >>> 0;
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) outView.setUint32(i * 4, h[i]!);
  return out;
}
