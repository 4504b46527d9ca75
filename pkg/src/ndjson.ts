// NDJSON, as annals writes and reads it: a header line, then one event per line, each line
// ending in "\n". Shared by event exports (import-export.ts) and bug bundles (bundle.ts).
// Lines are read from text, a Blob, a stream or an async iterable without holding more than
// one chunk and one line at a time; events are written from the core's JSON pages without
// re-encoding them, so an exported event is byte for byte what the core stores.

/** Where NDJSON can come from. */
export type NdjsonSource =
  | string
  | Blob
  | ReadableStream<string | Uint8Array | ArrayBuffer>
  | AsyncIterable<string | Uint8Array | ArrayBuffer>
  | Iterable<string>;

/** A line read, numbered from 1, without its line end. */
export interface NumberedLine {
  line: number;
  text: string;
}

function isReadableStream(value: unknown): value is ReadableStream<unknown> {
  return typeof (value as ReadableStream | null)?.getReader === "function";
}

/** The chunks of a source, as strings. */
async function* chunks(source: NdjsonSource): AsyncGenerator<string> {
  if (typeof source === "string") {
    yield source;
    return;
  }
  const decoder = new TextDecoder();
  const decode = (chunk: unknown): string => {
    if (typeof chunk === "string") return chunk;
    if (chunk instanceof Uint8Array) return decoder.decode(chunk, { stream: true });
    if (chunk instanceof ArrayBuffer) return decoder.decode(new Uint8Array(chunk), { stream: true });
    throw new TypeError(`expected text or bytes, got ${typeof chunk}`);
  };
  if (typeof Blob !== "undefined" && source instanceof Blob) {
    // `stream()` reads the Blob (a File) piece by piece instead of all at once.
    yield* chunks(source.stream() as ReadableStream<Uint8Array>);
    return;
  }
  if (isReadableStream(source)) {
    // getReader rather than `for await`: not every browser makes streams async iterable.
    const reader = source.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        yield decode(value);
      }
    } finally {
      reader.releaseLock();
    }
  } else if (typeof (source as AsyncIterable<unknown>)[Symbol.asyncIterator] === "function") {
    for await (const chunk of source as AsyncIterable<unknown>) yield decode(chunk);
  } else if (typeof (source as Iterable<unknown>)[Symbol.iterator] === "function") {
    for (const chunk of source as Iterable<unknown>) yield decode(chunk);
  } else {
    throw new TypeError("expected NDJSON text, a Blob or File, a ReadableStream or an (async) iterable of chunks");
  }
  const rest = decoder.decode();
  if (rest !== "") yield rest;
}

/** The lines of `source`, numbered from 1 (blank lines included; "\r\n" ends a line too). */
export async function* readLines(source: NdjsonSource): AsyncGenerator<NumberedLine> {
  let pending = "";
  let line = 0;
  for await (const chunk of chunks(source)) {
    let text = pending === "" ? chunk : pending + chunk;
    let start = 0;
    for (let end = text.indexOf("\n"); end >= 0; end = text.indexOf("\n", start)) {
      line += 1;
      yield { line, text: lineText(text, start, end) };
      start = end + 1;
    }
    pending = start === 0 ? text : text.slice(start);
    text = "";
  }
  if (pending !== "") {
    line += 1;
    yield { line, text: lineText(pending, 0, pending.length) };
  }
}

function lineText(text: string, start: number, end: number): string {
  return text.charCodeAt(end - 1) === 13 /* \r */ && end > start ? text.slice(start, end - 1) : text.slice(start, end);
}

/** The lines of a whole text, numbered from 1 (for text already in memory). */
export function splitLines(text: string): NumberedLine[] {
  return text.split("\n").map((t, i) => ({ line: i + 1, text: t.endsWith("\r") ? t.slice(0, -1) : t }));
}

/**
 * The items of a JSON array's text (`[{...},{...}]`, as the core's `range` answers), each
 * as its own text, unchanged: the top-level commas are found by tracking strings and
 * nesting, so nothing is parsed or re-encoded.
 */
export function jsonArrayItems(json: string): string[] {
  const items: string[] = [];
  let depth = 0;
  let inString = false;
  let start = -1;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i += 1;
      else if (c === 34 /* " */) inString = false;
      continue;
    }
    if (c === 34) {
      inString = true;
    } else if (c === 123 /* { */ || c === 91 /* [ */) {
      depth += 1;
      if (depth === 2 && start < 0) start = i;
    } else if (c === 125 /* } */ || c === 93 /* ] */) {
      if (depth === 2 && c === 125 && start >= 0) {
        items.push(json.slice(start, i + 1));
        start = -1;
      }
      depth -= 1;
    }
  }
  return items;
}

/** One NDJSON line: `value` as JSON and "\n". */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value) + "\n";
}

/** Events per page read from the core while writing. */
export const EVENT_PAGE = 1_000;

/**
 * The event lines of positions `from + 1 ..= head`, one page of whole lines at a time:
 * `page(after, to)` gives the events `after + 1 ..= to` as a JSON array's text (as the
 * core's `range`).
 */
export function* eventLinePages(
  head: number,
  page: (after: number, to: number) => string,
  size = EVENT_PAGE,
  from = 0,
): Generator<string> {
  for (let after = from; after < head; after += size) {
    const items = jsonArrayItems(page(after, Math.min(after + size, head)));
    if (items.length > 0) yield items.join("\n") + "\n";
  }
}
