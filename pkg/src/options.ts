// Validation of what apps pass in: open options, sync options, queries, batches, execute
// and reactor options. Each check lives here once, so that every entry point refuses bad
// input with the same clear INVALID_ARGUMENT / INVALID_EVENT message before the core sees it.

import { AnnalsError } from "./errors.js";
import type { ReactorSpec } from "./reactor.js";
import type {
  AggregateMap,
  AnnalsEvent,
  CommandRejection,
  CommandRequest,
  EventShape,
  ExecuteOptions,
  OpenOptions,
  Projection,
  SyncOptions,
} from "./types.js";

const DEFAULT_INTERVAL = 1_000;
/** Snapshot records of process managers' checkpoints are named with this prefix. */
export const REACTOR_PREFIX = "react:";

export type AnyProjection = Projection<unknown, EventShape>;

export interface AnyAggregate {
  initial: unknown;
  evolve: (state: unknown, event: AnnalsEvent) => unknown;
  decide: (command: { type: string }, state: unknown) => readonly unknown[];
  onRejected?: (rejection: CommandRejection) => readonly CommandRequest[] | void;
}

export interface Settings {
  name: string;
  storage: "indexeddb" | "memory";
  shared: boolean;
  snapshotEvery: number;
  sync: SyncOptions | undefined;
}

export interface ProjectionSpec {
  name: string;
  def: AnyProjection;
  version: number;
}

/** Open options, checked: what the store and each module start from. */
export interface OpenPlan {
  settings: Settings;
  checkpointEvery: number;
  projections: ProjectionSpec[];
  aggregates: Map<string, AnyAggregate>;
  /** The options the wasm core opens with (JSON). */
  core: Record<string, unknown>;
}

export function invalidArgument(message: string): AnnalsError {
  return new AnnalsError("INVALID_ARGUMENT", message);
}

export function wholeNumber(name: string, value: unknown, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > max) {
    throw invalidArgument(`\`${name}\` must be an integer from 0 to ${max}, got ${String(value)}`);
  }
  return value;
}

/** Checks `openStore`'s options; `hasIndexedDb` says whether this platform has IndexedDB. */
export function parseOpenOptions(options: OpenOptions<EventShape, unknown, AggregateMap>, hasIndexedDb: boolean): OpenPlan {
  if (typeof options !== "object" || options === null) {
    throw invalidArgument("openStore needs an options object such as { name: \"todos\" }");
  }
  const { name } = options;
  if (typeof name !== "string" || name.trim() === "") {
    throw invalidArgument("`name` must be a non-empty string");
  }
  const storage = options.storage ?? (hasIndexedDb ? "indexeddb" : "memory");
  if (storage !== "indexeddb" && storage !== "memory") {
    throw invalidArgument(`\`storage\` must be "indexeddb" or "memory", got ${String(storage)}`);
  }
  if (storage === "indexeddb" && !hasIndexedDb) {
    throw invalidArgument('IndexedDB is not available here: use storage: "memory"');
  }
  const shared = options.sharedMemory === true;
  const snapshotEvery = wholeNumber("snapshotEvery", options.snapshotEvery ?? DEFAULT_INTERVAL);
  // 0 leaves the first spacing to the core (1,024 events: it then adapts to the reducer's cost).
  const checkpointEvery = wholeNumber("checkpointEvery", options.checkpointEvery ?? 0);
  if (snapshotEvery === 0 || options.checkpointEvery === 0) {
    throw invalidArgument("`snapshotEvery` and `checkpointEvery` must be positive");
  }
  const projections: ProjectionSpec[] = [];
  const projectionDefs = (options.projections ?? {}) as Record<string, unknown>;
  if (typeof projectionDefs !== "object" || projectionDefs === null) {
    throw invalidArgument("`projections` must be an object of { initial, apply, version? }");
  }
  for (const [key, def] of Object.entries(projectionDefs)) {
    if (typeof def !== "object" || def === null || typeof (def as AnyProjection).apply !== "function") {
      throw invalidArgument(`projection "${key}" needs an \`apply(state, event)\` function`);
    }
    if (key.startsWith(REACTOR_PREFIX)) {
      throw invalidArgument(`projection names starting with "${REACTOR_PREFIX}" are reserved for process managers`);
    }
    const version = wholeNumber(`projections.${key}.version`, (def as AnyProjection).version ?? 1, 0xffff_ffff);
    projections.push({ name: key, def: def as AnyProjection, version });
  }
  const aggregates = new Map<string, AnyAggregate>();
  const aggregateDefs = (options.aggregates ?? {}) as Record<string, unknown>;
  if (typeof aggregateDefs !== "object" || aggregateDefs === null || Array.isArray(aggregateDefs)) {
    throw invalidArgument("`aggregates` must be an object of { initial, evolve, decide }");
  }
  for (const [key, def] of Object.entries(aggregateDefs)) {
    const d = def as Partial<AnyAggregate> | null;
    if (typeof d !== "object" || d === null || typeof d.evolve !== "function" || typeof d.decide !== "function") {
      throw invalidArgument(`aggregate "${key}" needs \`evolve(state, event)\` and \`decide(command, state)\` functions`);
    }
    if (d.onRejected !== undefined && typeof d.onRejected !== "function") {
      throw invalidArgument(`aggregate "${key}": \`onRejected\` must be a function`);
    }
    aggregates.set(key, d as AnyAggregate);
  }
  const sync = options.sync === undefined ? undefined : parseSyncOptions(options.sync);

  const core: Record<string, unknown> = {};
  if (options.maxEventBytes !== undefined) core.maxEventBytes = wholeNumber("maxEventBytes", options.maxEventBytes);
  if (options.origin !== undefined) {
    if (typeof options.origin !== "string") throw invalidArgument("`origin` must be a string");
    core.origin = options.origin;
  }
  if (shared) core.sharedMemory = true;
  if (sync) core.synced = true;
  // The core reads no event at open: the projections' snapshots decide which ones come
  // first; the rest is read in the background.
  core.lazy = true;
  return { settings: { name, storage, shared, snapshotEvery, sync }, checkpointEvery, projections, aggregates, core };
}

export function parseSyncOptions(sync: unknown): SyncOptions {
  if (typeof sync !== "object" || sync === null || Array.isArray(sync)) {
    throw invalidArgument("`sync` must be an object such as { url, store, token }");
  }
  const s = sync as Record<string, unknown>;
  const known = new Set(["url", "store", "token", "headers", "pushBatch", "pullLimit", "longPollSeconds"]);
  for (const key of Object.keys(s)) {
    if (!known.has(key)) throw invalidArgument(`unknown sync option \`${key}\``);
  }
  for (const key of ["url", "store"] as const) {
    if (typeof s[key] !== "string" || (s[key] as string).trim() === "") {
      throw invalidArgument(`\`sync.${key}\` must be a non-empty string`);
    }
  }
  if (typeof s.token !== "string" && typeof s.token !== "function") {
    throw invalidArgument("`sync.token` must be a string or a function returning one (or a promise of one)");
  }
  if (s.headers !== undefined && typeof s.headers !== "function") checkSyncHeaders(s.headers);
  try {
    new URL(s.url as string);
  } catch {
    throw invalidArgument(`\`sync.url\` is not a URL: ${String(s.url)}`);
  }
  const out: SyncOptions = { url: s.url as string, store: s.store as string, token: s.token as SyncOptions["token"] };
  if (s.headers !== undefined) out.headers = s.headers as SyncOptions["headers"];
  for (const key of ["pushBatch", "pullLimit", "longPollSeconds"] as const) {
    if (s[key] === undefined) continue;
    const n = wholeNumber(`sync.${key}`, s[key], key === "longPollSeconds" ? 0xffff_ffff : Number.MAX_SAFE_INTEGER);
    if (n === 0 && key !== "longPollSeconds") throw invalidArgument(`\`sync.${key}\` must be positive`);
    out[key] = n;
  }
  return out;
}

/** What `sync.token` (a string, or what its function gave) must be. */
export function checkSyncToken(token: unknown): string {
  if (typeof token !== "string") {
    throw invalidArgument(`the \`sync.token\` function must return a string (or a promise of one), not ${describeValue(token)}`);
  }
  return token;
}

/** What `sync.headers` (an object, or what its function gave) must be: header names to string values. */
export function checkSyncHeaders(headers: unknown): Record<string, string> {
  if (typeof headers !== "object" || headers === null || Array.isArray(headers)) {
    throw invalidArgument(`\`sync.headers\` must be an object of header names to strings, not ${describeValue(headers)}`);
  }
  for (const [name, value] of Object.entries(headers)) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) throw invalidArgument(`\`sync.headers\`: ${JSON.stringify(name)} is not a header name`);
    if (name.toLowerCase() === "authorization") {
      throw invalidArgument("`sync.headers` cannot set Authorization: give the token as `sync.token`");
    }
    if (typeof value !== "string" || /[\r\n\0]/.test(value)) {
      throw invalidArgument(`\`sync.headers.${name}\` must be a string on one line`);
    }
  }
  return headers as Record<string, string>;
}

function describeValue(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`;
}

function describeKey(key: string): string {
  return key === "" ? "the batch" : `the value at key ${JSON.stringify(key)}`;
}

/** Throws INVALID_EVENT on anything JSON cannot carry faithfully. */
function eventReplacer(key: string, value: unknown): unknown {
  switch (typeof value) {
    case "function":
      throw new AnnalsError("INVALID_EVENT", `${describeKey(key)} is a function; events must be JSON`);
    case "symbol":
      throw new AnnalsError("INVALID_EVENT", `${describeKey(key)} is a symbol; events must be JSON`);
    case "bigint":
      throw new AnnalsError(
        "INVALID_EVENT",
        `${describeKey(key)} is a BigInt; events must be JSON (store it as a string)`,
      );
    case "number":
      if (!Number.isFinite(value)) {
        throw new AnnalsError("INVALID_EVENT", `${describeKey(key)} is ${String(value)}; events must be JSON`);
      }
      return value;
    default:
      return value;
  }
}

/**
 * Whether `value` is data that `JSON.stringify` writes faithfully with no replacer: strings,
 * booleans, null, finite numbers, arrays and objects of them (properties that are
 * `undefined` are left out, as always). `false` for anything the replacer must look at: a
 * function, symbol, BigInt, non-finite number, `toJSON`, or nesting past 64 levels (cycles).
 */
function isPlainJson(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case "string":
    case "boolean":
    case "undefined":
      return true;
    case "number":
      return Number.isFinite(value);
    case "object": {
      if (value === null) return true;
      if (depth > 64) return false;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) if (!isPlainJson(value[i], depth + 1)) return false;
        return true;
      }
      const record = value as Record<string, unknown>;
      if (typeof record.toJSON === "function") return false;
      for (const key in record) {
        if (Object.prototype.hasOwnProperty.call(record, key) && !isPlainJson(record[key], depth + 1)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

/** One JSON.stringify for the whole batch. */
export function serializeBatch(events: readonly unknown[]): string {
  for (let i = 0; i < events.length; i++) {
    const event = events[i];
    if (typeof event !== "object" || event === null || Array.isArray(event)) {
      throw new AnnalsError("INVALID_EVENT", `event ${i}: an event must be an object with \`stream\` and \`type\``);
    }
  }
  try {
    // Plain JSON data (the common case) needs no replacer: the native serialiser's fast
    // path is several times quicker. Anything else goes through the checking replacer,
    // which refuses what JSON cannot carry with the reason.
    return isPlainJson(events, 0) ? JSON.stringify(events) : JSON.stringify(events, eventReplacer);
  } catch (error) {
    if (error instanceof AnnalsError) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new AnnalsError("INVALID_EVENT", `the events are not JSON-serialisable: ${reason}`, { cause: error });
  }
}

export function serializeQuery(query: unknown): string {
  if (query === undefined || query === null) return "{}";
  if (typeof query !== "object" || Array.isArray(query)) {
    throw invalidArgument("a query must be an object such as { after: 0, limit: 100 }");
  }
  return JSON.stringify(query, (key: string, value: unknown) => {
    if (typeof value === "number" && !Number.isFinite(value)) {
      throw invalidArgument(`query \`${key}\` must be a finite number, got ${String(value)}`);
    }
    if (typeof value === "bigint" || typeof value === "function" || typeof value === "symbol") {
      throw invalidArgument(`query \`${key}\` must be a number or a string`);
    }
    return value;
  });
}

/** Checks `execute`'s arguments but the aggregate name. */
export function checkExecuteArguments(id: unknown, command: unknown, options: unknown): asserts options is ExecuteOptions {
  if (typeof id !== "string" || id === "") throw invalidArgument("`id` (the aggregate's stream) must be a non-empty string");
  const cmd = command as { type?: unknown } | null;
  if (typeof cmd !== "object" || cmd === null || typeof cmd.type !== "string") {
    throw invalidArgument("a command must be an object with a string `type`");
  }
  if (typeof options !== "object" || options === null) throw invalidArgument("execute options must be an object");
  const o = options as Record<string, unknown>;
  for (const key of ["commandId", "correlationId", "causationId"] as const) {
    const value = o[key];
    if (value !== undefined && (typeof value !== "string" || value === "")) {
      throw invalidArgument(`\`${key}\` must be a non-empty string`);
    }
  }
}

/** Checks `react`'s options (the name's uniqueness is the store's to check). */
export function parseReactorOptions(options: unknown): ReactorSpec {
  if (typeof options !== "object" || options === null) throw invalidArgument("react needs { name, on, handle }");
  const { name, on, handle, retry, startAt } = options as {
    name?: unknown;
    on?: unknown;
    handle?: unknown;
    retry?: { initialMs?: unknown; maxMs?: unknown };
    startAt?: unknown;
  };
  if (typeof name !== "string" || name === "") throw invalidArgument("a reactor needs a non-empty `name`");
  if (!Array.isArray(on) || on.length === 0 || !on.every((t) => typeof t === "string" && t !== "")) {
    throw invalidArgument("a reactor's `on` must be a non-empty array of event types");
  }
  if (typeof handle !== "function") throw invalidArgument("a reactor needs a `handle(event)` function");
  if (startAt !== undefined && startAt !== "beginning" && startAt !== "end") {
    throw invalidArgument('`startAt` must be "beginning" or "end"');
  }
  const initialMs = wholeNumber("retry.initialMs", retry?.initialMs ?? 250);
  const maxMs = wholeNumber("retry.maxMs", retry?.maxMs ?? 30_000);
  return {
    name,
    on: [...(on as string[])],
    handle: handle as ReactorSpec["handle"],
    initialMs: Math.max(1, initialMs),
    maxMs: Math.max(initialMs, maxMs),
    startAt: startAt ?? "beginning",
  };
}
