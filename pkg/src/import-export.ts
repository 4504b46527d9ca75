// Moving a store's events in and out as NDJSON: `store.exportEvents()` streams a header line
// and then every event as stored (or, with `upcast`, as this build reads it), a page of the
// core's log at a time; `store.importEvents(source)` appends the events of such a file (or a
// bug bundle, or an array of events) in batches, keeping their ids, times, origins and
// schema versions, so that importing the same file again adds nothing. `annals-server export`
// and `annals-server import` read and write the same format (src/server/transfer.rs).

import { BUNDLE_FORMAT } from "./bundle.js";
import { AnnalsError, fromWasmError } from "./errors.js";
import { invalidArgument } from "./options.js";
import { EVENT_PAGE, eventLinePages, jsonLine, readLines, type NdjsonSource, type NumberedLine } from "./ndjson.js";
import type { AnnalsEvent, EventsHeader, ExportEventsOptions, ImportEventsOptions, ImportReport } from "./types.js";

export const EVENTS_FORMAT = "annals-events";
export const EVENTS_FORMAT_VERSION = 1;
/** Events per append while importing (and per progress report). */
const IMPORT_BATCH = 1_000;
/** The core's default bounds on an event (`Limits` in src/event.rs). */
const DEFAULT_MAX_EVENT_BYTES = 1024 * 1024;
const MAX_NAME_BYTES = 1024;
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** What exporting and importing need from the store. */
export interface TransferHost {
  name: string;
  /** CLOSED when the store is closed. */
  checkOpen(): void;
  /** FROZEN while the store shows the past (imports write). */
  frozenError(): AnnalsError | undefined;
  /** Resolves once every event is loaded (a lazy open). */
  whenComplete(): Promise<void>;
  head(): number;
  /** Events `after + 1 ..= to` as stored: the core's JSON array. */
  rangeJson(after: number, to: number): string;
  /** The last position retention dropped here (0: none). */
  dropped(): number;
  /** Events `after + 1 ..= to`, all dropped here, as stored, from the sync server (else NOT_RETAINED). */
  fetchStored(after: number, to: number, what: string): Promise<AnnalsEvent[]>;
  /** Events as this build reads them (the store's upcasters). */
  upcast(events: AnnalsEvent[]): AnnalsEvent[];
  /** Where each id is in the log, 0 where it is not. */
  positionsOf(ids: string[]): ArrayLike<number>;
  /** Appends a batch of events as stored (JSON), keeping ids, times and origins. */
  appendJson(batchJson: string): Promise<unknown>;
  /** The store's `maxEventBytes` option, if given. */
  maxEventBytes: number | undefined;
}

// ---- export ------------------------------------------------------------------------------

function exportOptions(options: unknown): { upcast: boolean } {
  if (options === undefined) return { upcast: false };
  if (typeof options !== "object" || options === null) throw invalidArgument("exportEvents' options must be an object such as { upcast: true }");
  const { upcast } = options as ExportEventsOptions;
  if (upcast !== undefined && typeof upcast !== "boolean") throw invalidArgument("exportEvents' `upcast` must be true or false");
  return { upcast: upcast === true };
}

/**
 * The store's events as NDJSON: the header line, then positions `1 ..= head` (the head when
 * the export starts), each chunk whole lines ending in "\n". Pulled a page at a time: memory
 * stays bounded by a page, whatever the log's size.
 */
export function exportEvents(host: TransferHost, options?: ExportEventsOptions): ReadableStream<string> {
  host.checkOpen();
  const { upcast } = exportOptions(options);
  let head = 0;
  /** The positions written so far: `1 ..= written`. */
  let written = 0;
  let page: ((after: number, to: number) => string) | undefined;
  return new ReadableStream<string>(
    {
      async start(controller) {
        await host.whenComplete();
        host.checkOpen();
        head = host.head();
        const header: EventsHeader = {
          format: EVENTS_FORMAT,
          formatVersion: EVENTS_FORMAT_VERSION,
          store: host.name,
          count: head,
          exportedAt: Date.now(),
        };
        controller.enqueue(jsonLine(header));
        page = upcast
          ? (after: number, to: number) => JSON.stringify(host.upcast(JSON.parse(host.rangeJson(after, to)) as AnnalsEvent[]))
          : (after: number, to: number) => host.rangeJson(after, to);
      },
      async pull(controller) {
        // A page at a time, until one has lines (a pull that enqueues nothing is not called again).
        while (written < head) {
          // What retention dropped here comes from the sync server; the line is looked at
          // for each page, as a cut may come while the export runs.
          const dropped = Math.min(host.dropped(), head);
          let lines: string | undefined;
          if (written < dropped) {
            const to = Math.min(written + EVENT_PAGE, dropped);
            const fetched = await host.fetchStored(written, to, "exportEvents");
            host.checkOpen();
            const events = upcast ? host.upcast(fetched) : fetched;
            written = to;
            if (events.length > 0) lines = events.map((event) => jsonLine(event)).join("");
          } else {
            host.checkOpen();
            const to = Math.min(written + EVENT_PAGE, head);
            try {
              lines = eventLinePages(to, page!, EVENT_PAGE, written).next().value;
            } catch (error) {
              throw fromWasmError(error);
            }
            written = to;
          }
          if (lines !== undefined) {
            controller.enqueue(lines);
            return;
          }
        }
        controller.close();
      },
    },
    // One page queued ahead at most.
    { highWaterMark: 1 },
  );
}

// ---- import ------------------------------------------------------------------------------

interface ImportSettings {
  dryRun: boolean;
  batchSize: number;
  onProgress: ((progress: { done: number; total?: number }) => void) | undefined;
}

function importSettings(options: unknown): ImportSettings {
  if (options === undefined) return { dryRun: false, batchSize: IMPORT_BATCH, onProgress: undefined };
  if (typeof options !== "object" || options === null) throw invalidArgument("importEvents' options must be an object such as { dryRun: true }");
  const { dryRun, batchSize, onProgress } = options as ImportEventsOptions;
  if (dryRun !== undefined && typeof dryRun !== "boolean") throw invalidArgument("importEvents' `dryRun` must be true or false");
  if (onProgress !== undefined && typeof onProgress !== "function") throw invalidArgument("importEvents' `onProgress` must be a function");
  if (batchSize !== undefined && (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > 100_000)) {
    throw invalidArgument("importEvents' `batchSize` must be a whole number from 1 to 100000");
  }
  return { dryRun: dryRun === true, batchSize: batchSize ?? IMPORT_BATCH, onProgress };
}

/** An event to append, as the core's `append` takes it back, with where it came from. */
interface Parsed {
  /** "line 12" or "event 3" (an array's index). */
  where: string;
  id: string;
  json: string;
  /** What makes it the same event as a stored one with its id (as the core compares). */
  same: string;
  /** What is left to compare when either was erased: stream, type and schema version. */
  shape: string;
  /** An erased event: imported erased, without data or meta. */
  erased: boolean;
}

/** The parts that make two events with one id the same event: stream, type, schema version, data, meta. */
function sameKey(stream: string, type: string, schemaVersion: number, dataJson: string, metaJson: string | undefined): string {
  return JSON.stringify([stream, type, schemaVersion, dataJson, metaJson ?? null]);
}

function utf8Length(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) n += c >= 0x800 && (c < 0xd800 || c > 0xdfff) ? 2 : 1;
  }
  return n;
}

/** Checks an event as stored and returns what `append` takes (or throws naming `where`). */
function parseEvent(value: unknown, where: string, maxEventBytes: number): Parsed {
  const bad = (message: string) => new AnnalsError("INVALID_EVENT", `importEvents: ${where}: ${message}`);
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw bad("not an event (a JSON object)");
  const e = value as Record<string, unknown>;
  const { id, stream, type, data, meta, time, origin, schemaVersion, erased } = e;
  if (typeof id !== "string" || !UUID.test(id)) {
    throw bad(`\`id\` must be a UUID (imports keep ids, so that importing again adds nothing), got ${JSON.stringify(id)}`);
  }
  for (const [name, text] of [
    ["stream", stream],
    ["type", type],
  ] as const) {
    if (typeof text !== "string" || text.trim() === "") throw bad(`\`${name}\` must be a non-empty string`);
    if (utf8Length(text) > MAX_NAME_BYTES) throw bad(`\`${name}\` is longer than ${MAX_NAME_BYTES} bytes`);
  }
  if (!("data" in e) || data === undefined) throw bad("`data` is missing");
  if (meta !== undefined && meta !== null && (typeof meta !== "object" || Array.isArray(meta))) throw bad("`meta` must be an object");
  if (time !== undefined && (!Number.isSafeInteger(time) || (time as number) < 0)) {
    throw bad(`\`time\` must be a whole number of milliseconds since the epoch, got ${JSON.stringify(time)}`);
  }
  if (origin !== undefined && origin !== null && (typeof origin !== "string" || origin === "")) throw bad("`origin` must be a non-empty string");
  if (
    schemaVersion !== undefined &&
    (!Number.isSafeInteger(schemaVersion) || (schemaVersion as number) < 1 || (schemaVersion as number) > 0xffff_ffff)
  ) {
    throw bad(`\`schemaVersion\` must be a whole number from 1, got ${JSON.stringify(schemaVersion)}`);
  }
  const dataJson = JSON.stringify(data);
  const metaJson = meta === undefined || meta === null ? undefined : JSON.stringify(meta);
  const size = utf8Length(stream as string) + utf8Length(type as string) + utf8Length(dataJson) + (metaJson === undefined ? 0 : utf8Length(metaJson));
  if (size > maxEventBytes) throw bad(`the event is ${size} bytes (stream + type + data + meta); the store's limit is ${maxEventBytes} bytes`);
  // Built by hand so that `data` and `meta` are serialised once. Left out: what the target
  // store assigns (position, version, pending) and what only reading adds (upcastFrom).
  let json = `{"id":${JSON.stringify(id)},"stream":${JSON.stringify(stream)},"type":${JSON.stringify(type)}`;
  if (schemaVersion !== undefined && schemaVersion !== 1) json += `,"schemaVersion":${schemaVersion as number}`;
  json += `,"data":${dataJson}`;
  if (metaJson !== undefined) json += `,"meta":${metaJson}`;
  if (time !== undefined) json += `,"time":${time as number}`;
  if (typeof origin === "string") json += `,"origin":${JSON.stringify(origin)}`;
  // An erased event stays erased: the core stores it without data or meta.
  if (erased === true) json += `,"erased":true`;
  const same = sameKey(stream as string, type as string, (schemaVersion as number | undefined) ?? 1, dataJson, metaJson);
  const shape = sameKey(stream as string, type as string, (schemaVersion as number | undefined) ?? 1, "", undefined);
  return { where, id, json: json + "}", same, shape, erased: erased === true };
}

/** A header line: `{ format, formatVersion, count | events }`, or undefined for an event. */
function readHeader(value: unknown): { total: number | undefined } | undefined {
  if (typeof value !== "object" || value === null || typeof (value as { format?: unknown }).format !== "string") return undefined;
  const header = value as { format: string; formatVersion?: unknown; count?: unknown; events?: unknown; annals?: unknown };
  if (header.format !== EVENTS_FORMAT && header.format !== BUNDLE_FORMAT) {
    throw invalidArgument(`importEvents: line 1 is a header of format ${JSON.stringify(header.format)}; this reads "${EVENTS_FORMAT}" and "${BUNDLE_FORMAT}"`);
  }
  const version = header.formatVersion;
  if (typeof version !== "number" || !Number.isSafeInteger(version) || version < 1) {
    throw invalidArgument("importEvents: line 1 is a header without a valid formatVersion");
  }
  if (version > EVENTS_FORMAT_VERSION) {
    throw new AnnalsError(
      "FORMAT_TOO_NEW",
      `importEvents: the file's formatVersion ${version} is newer than this annals reads (${EVENTS_FORMAT_VERSION}); import it with a newer release`,
    );
  }
  const total = header.format === EVENTS_FORMAT ? header.count : header.events;
  return { total: typeof total === "number" && Number.isSafeInteger(total) && total >= 0 ? total : undefined };
}

type Item = { where: string; value: unknown; first: boolean };

/** The items of the source: parsed lines, or an array's events. */
async function* items(source: unknown): AsyncGenerator<Item> {
  if (Array.isArray(source)) {
    for (let i = 0; i < source.length; i++) yield { where: `event ${i}`, value: source[i], first: false };
    return;
  }
  let lines: AsyncGenerator<NumberedLine>;
  try {
    lines = readLines(source as NdjsonSource);
  } catch (error) {
    throw invalidArgument(`importEvents: ${error instanceof Error ? error.message : String(error)}`);
  }
  let first = true;
  try {
    for await (const { line, text } of lines) {
      if (text.trim() === "") continue;
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        throw new AnnalsError("INVALID_EVENT", `importEvents: line ${line}: not JSON`);
      }
      yield { where: `line ${line}`, value, first: first && line === 1 };
      first = false;
    }
  } catch (error) {
    if (error instanceof TypeError) throw invalidArgument(`importEvents: ${error.message}`);
    throw error;
  }
}

function reusedId(event: Parsed, why: string): AnnalsError {
  return new AnnalsError(
    "DUPLICATE_ID",
    `importEvents: ${event.where}: id ${event.id} is already taken by another event (${why}); an id names one event, so a line with a known id must be that same event (stream, type, schemaVersion, data and meta)`,
  );
}

/**
 * Lines whose id the store has must be the events stored under it (as an append of a known
 * id must be: see the core's idempotency rules); otherwise DUPLICATE_ID names the line. The
 * stored events are read in runs of consecutive positions, one crossing per run (a second
 * import of the same file reads each batch in one).
 */
function checkStored(host: TransferHost, stored: { event: Parsed; position: number }[]): void {
  if (stored.length === 0) return;
  const sorted = [...stored].sort((a, b) => a.position - b.position);
  let i = 0;
  while (i < sorted.length) {
    let j = i + 1;
    while (j < sorted.length && sorted[j]!.position - sorted[j - 1]!.position <= 1) j += 1;
    const from = sorted[i]!.position;
    const events = JSON.parse(host.rangeJson(from - 1, sorted[j - 1]!.position)) as AnnalsEvent[];
    for (const { event, position } of sorted.slice(i, j)) {
      const e = events[position - from];
      if (e === undefined) continue;
      // An erased event (stored or imported) has only its stream, type and schema version left.
      const key =
        e.erased === true || event.erased
          ? sameKey(e.stream, e.type, e.schemaVersion ?? 1, "", undefined)
          : sameKey(e.stream, e.type, e.schemaVersion ?? 1, JSON.stringify(e.data), e.meta === undefined ? undefined : JSON.stringify(e.meta));
      if (key !== (e.erased === true || event.erased ? event.shape : event.same)) throw reusedId(event, `the store holds another event under it at position ${position}`);
    }
    i = j;
  }
}

/** The core refused a batch (`event 3: ...`): name the line instead of the batch index. */
function refusal(error: unknown, batch: Parsed[]): unknown {
  const converted = fromWasmError(error);
  if (converted instanceof AnnalsError && converted.code === "INVALID_EVENT") {
    const match = /event (\d+): ([\s\S]*)$/.exec(converted.message);
    const at = match ? batch[Number(match[1])] : undefined;
    if (at && match) return new AnnalsError("INVALID_EVENT", `importEvents: ${at.where}: ${match[2]}`, { cause: converted });
  }
  return converted;
}

/**
 * Appends the events of `source` in batches (each checked whole first: a bad line stops
 * the import with its number, nothing of its batch written, earlier batches kept). Known
 * ids are duplicates that write nothing. With `dryRun`, checks everything and counts what
 * would be imported, writing nothing.
 */
export async function importEvents(host: TransferHost, source: unknown, options?: ImportEventsOptions): Promise<ImportReport> {
  host.checkOpen();
  const settings = importSettings(options);
  if (!settings.dryRun) {
    const frozen = host.frozenError();
    if (frozen) throw frozen;
  }
  if (source === undefined || source === null) throw invalidArgument("importEvents needs NDJSON text, a Blob or File, a ReadableStream or an array of events");
  await host.whenComplete();
  const maxEventBytes = host.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
  const report: ImportReport = { imported: 0, duplicates: 0, lines: 0 };
  let total: number | undefined = Array.isArray(source) ? source.length : undefined;
  // A dry run writes nothing, so it remembers the ids it counted as new to count repeats.
  const newInDryRun = new Set<string>();
  let batch: Parsed[] = [];

  const flush = async () => {
    host.checkOpen();
    const positions = host.positionsOf(batch.map((e) => e.id));
    // First occurrences of ids the store does not have: the rest write nothing.
    const fresh: Parsed[] = [];
    const stored: { event: Parsed; position: number }[] = [];
    const inBatch = new Map<string, Parsed>();
    batch.forEach((event, i) => {
      const position = positions[i]!;
      const earlier = inBatch.get(event.id);
      if (position > 0) stored.push({ event, position });
      else if (earlier !== undefined && earlier.same !== event.same) throw reusedId(event, `${earlier.where} has another event with this id`);
      if (earlier === undefined) inBatch.set(event.id, event);
      if (position === 0 && earlier === undefined && !newInDryRun.has(event.id)) fresh.push(event);
    });
    checkStored(host, stored);
    if (settings.dryRun) {
      for (const event of fresh) newInDryRun.add(event.id);
    } else if (fresh.length > 0) {
      try {
        await host.appendJson(`[${fresh.map((e) => e.json).join(",")}]`);
      } catch (error) {
        throw refusal(error, fresh);
      }
    }
    report.imported += fresh.length;
    report.duplicates += batch.length - fresh.length;
    report.lines += batch.length;
    batch = [];
    settings.onProgress?.(total === undefined ? { done: report.lines } : { done: report.lines, total });
  };

  for await (const { where, value, first } of items(source)) {
    if (first) {
      const header = readHeader(value);
      if (header) {
        total = header.total;
        continue;
      }
    }
    batch.push(parseEvent(value, where, maxEventBytes));
    if (batch.length >= settings.batchSize) await flush();
  }
  if (batch.length > 0) await flush();
  const read = report.lines;
  if (total !== undefined && total !== read && !Array.isArray(source)) {
    throw invalidArgument(
      `importEvents: the header announces ${total} events but ${read} follow (a cut-off file?); ${
        settings.dryRun ? "nothing was written (dry run)" : `the ${read} read were imported (${report.imported} new)`
      }`,
    );
  }
  return report;
}
