// Bug bundles: a store's log with the facts needed to reproduce its states elsewhere, as
// NDJSON (a header line, then one event per line as stored, the lines read and written by
// ndjson.ts as event exports are), and opening one into a fresh memory store that says how
// the app opening it differs from the app that wrote it. `store.importEvents` reads a
// bundle's events too (into the store itself, without the comparison).

import { AnnalsError } from "./errors.js";
import { EVENT_PAGE, jsonLine, splitLines } from "./ndjson.js";
import type { AnnalsEvent, BundleDifference, BundleHeader, OpenedBundle, Store } from "./types.js";

export const BUNDLE_FORMAT = "annals-bundle";
export const BUNDLE_FORMAT_VERSION = 1;
/** Fingerprints a header holds per projection by default (spread over the log). */
const DEFAULT_FINGERPRINTS = 64;
/** Events per append when a bundle is opened. */
const IMPORT_BATCH = 1_000;

/** What writing a bundle needs from its store. */
export interface BundleSource {
  name: string;
  annalsVersion: string;
  head: number;
  confirmedHead: number;
  projections: { name: string; version: number }[];
  /** The events `after + 1 ..= to` as stored. */
  range(after: number, to: number): AnnalsEvent[] | Promise<AnnalsEvent[]>;
  fingerprints(name: string, positions: number[]): Promise<string[]>;
}

/** The positions a header fingerprints: every `every` and the head. */
export function fingerprintPositions(head: number, every: number): number[] {
  const out: number[] = [];
  for (let p = every; p < head; p += every) out.push(p);
  if (head > 0) out.push(head);
  return out;
}

export function defaultFingerprintEvery(head: number): number {
  return Math.max(1, Math.ceil(head / DEFAULT_FINGERPRINTS));
}

/** The bundle of `source` as NDJSON text. */
export async function writeBundle(source: BundleSource, fingerprintEvery: number): Promise<string> {
  const head = source.head;
  const positions = fingerprintPositions(head, fingerprintEvery);
  const fingerprints: Record<string, [number, string][]> = {};
  for (const { name } of source.projections) {
    const list = await source.fingerprints(name, positions);
    fingerprints[name] = positions.map((p, i) => [p, list[i]!]);
  }
  const header: BundleHeader = {
    format: BUNDLE_FORMAT,
    formatVersion: BUNDLE_FORMAT_VERSION,
    annals: source.annalsVersion,
    store: source.name,
    exportedAt: Date.now(),
    events: head,
    confirmedHead: source.confirmedHead,
    projections: source.projections,
    fingerprintEvery,
    fingerprints,
  };
  const lines = [jsonLine(header)];
  for (let after = 0; after < head; after += EVENT_PAGE) {
    for (const event of await source.range(after, Math.min(after + EVENT_PAGE, head))) lines.push(jsonLine(event));
  }
  return lines.join("");
}

function badBundle(message: string): AnnalsError {
  return new AnnalsError("INVALID_ARGUMENT", `not a readable annals bundle: ${message}`);
}

/** Parses a bundle's text: its header and events, or INVALID_ARGUMENT naming the line. */
export function readBundle(text: string): { header: BundleHeader; events: AnnalsEvent[] } {
  if (typeof text !== "string") throw badBundle("expected NDJSON text, a Blob or a File");
  const lines = splitLines(text);
  let header: BundleHeader;
  try {
    header = JSON.parse(lines[0]?.text ?? "") as BundleHeader;
  } catch {
    throw badBundle("line 1 (the header) is not JSON");
  }
  if (typeof header !== "object" || header === null || header.format !== BUNDLE_FORMAT) {
    throw badBundle(`line 1 does not start an "${BUNDLE_FORMAT}" (is this an events export rather than a bug bundle?)`);
  }
  if (typeof header.formatVersion !== "number" || header.formatVersion > BUNDLE_FORMAT_VERSION) {
    throw new AnnalsError(
      "FORMAT_TOO_NEW",
      `the bundle's format version ${String(header.formatVersion)} is newer than this annals reads (${BUNDLE_FORMAT_VERSION}); open it with annals ${String(header.annals)} or newer`,
    );
  }
  if (!Array.isArray(header.projections) || typeof header.fingerprints !== "object" || header.fingerprints === null) {
    throw badBundle("the header lacks its projections or fingerprints");
  }
  const events: AnnalsEvent[] = [];
  for (const { line, text: lineText } of lines.slice(1)) {
    if (lineText.trim() === "") continue;
    let event: AnnalsEvent;
    try {
      event = JSON.parse(lineText) as AnnalsEvent;
    } catch {
      throw badBundle(`line ${line} is not JSON`);
    }
    if (typeof event !== "object" || event === null || event.position !== events.length + 1) {
      throw badBundle(`line ${line} is not event ${events.length + 1} of the log`);
    }
    events.push(event);
  }
  if (events.length !== header.events) {
    throw badBundle(`the header announces ${header.events} events but ${events.length} follow (a cut-off file?)`);
  }
  return { header, events };
}

/** The text of a bundle given as text, a Blob or a File. */
export async function bundleText(bundle: string | Blob): Promise<string> {
  if (typeof bundle === "string") return bundle;
  // Any Blob-like (a File of another realm, jsdom's) reads as text.
  if (typeof bundle === "object" && bundle !== null && typeof (bundle as Blob).text === "function") {
    const text: unknown = await (bundle as Blob).text();
    if (typeof text === "string") return text;
  }
  throw badBundle("expected NDJSON text, a Blob or a File");
}

/** What opening a bundle needs: a fresh memory store with the app's projections. */
export interface BundleTarget {
  store: Store;
  projections: { name: string; version: number }[];
  /** Appends events as stored (ids, times and origins kept). */
  appendStored(events: AnnalsEvent[]): Promise<unknown>;
  fingerprints(name: string, positions: number[]): Promise<string[]>;
}

/** Fills `target` with the bundle's events and compares the app's projections with the bundle's. */
export async function fillFromBundle(
  target: BundleTarget,
  header: BundleHeader,
  events: AnnalsEvent[],
): Promise<OpenedBundle> {
  for (let i = 0; i < events.length; i += IMPORT_BATCH) {
    await target.appendStored(events.slice(i, i + IMPORT_BATCH));
  }
  const differences: BundleDifference[] = [];
  const ours = new Map(target.projections.map((p) => [p.name, p.version]));
  for (const theirs of header.projections) {
    const version = ours.get(theirs.name);
    if (version === undefined) {
      differences.push({
        projection: theirs.name,
        kind: "missing",
        message: `the bundle has projection "${theirs.name}" (version ${theirs.version}), which this app does not define`,
      });
    } else if (version !== theirs.version) {
      differences.push({
        projection: theirs.name,
        kind: "version",
        message: `projection "${theirs.name}" is version ${version} here but was version ${theirs.version} in the bundle: states may differ`,
      });
    } else {
      const pairs = header.fingerprints[theirs.name] ?? [];
      const here = await target.fingerprints(
        theirs.name,
        pairs.map(([p]) => p),
      );
      const first = pairs.findIndex(([, fp], i) => fp !== here[i]);
      if (first >= 0) {
        const [position] = pairs[first]!;
        differences.push({
          projection: theirs.name,
          kind: "fingerprint",
          position,
          message: `projection "${theirs.name}" folds the bundle's events into another state by position ${position} (the reducer changed, or it is not deterministic)`,
        });
      }
    }
  }
  for (const name of ours.keys()) {
    if (!header.projections.some((p) => p.name === name)) {
      differences.push({ projection: name, kind: "extra", message: `this app's projection "${name}" was not in the bundle's app` });
    }
  }
  return { store: target.store, header, differences };
}
