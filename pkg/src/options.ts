// Validation of what apps pass in: open options, sync options, queries, batches, execute
// and reactor options. Each check lives here once, so that every entry point refuses bad
// input with the same clear INVALID_ARGUMENT / INVALID_EVENT message before the core sees it.

import { AnnalsError, type AnnalsErrorDetails, type EventIssue, isAnnalsError } from "./errors.js";
import type { StandardSchemaV1 } from "./standard-schema.js";
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
  RetainOptions,
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
  /** Bounded local storage (`retain`), checked: only with `sync` (absent without `retain`). */
  retain?: RetainOptions;
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
  /** The `events` option: validators of `data` by event type (undefined: none). */
  schemas: EventSchemaMap | undefined;
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
  const retain = parseRetain(options.retain, sync !== undefined);

  const core: Record<string, unknown> = {};
  if (options.maxEventBytes !== undefined) core.maxEventBytes = wholeNumber("maxEventBytes", options.maxEventBytes);
  if (options.maxBatch !== undefined) core.maxBatch = wholeNumber("maxBatch", options.maxBatch);
  if (options.origin !== undefined) {
    if (typeof options.origin !== "string") throw invalidArgument("`origin` must be a string");
    core.origin = options.origin;
  }
  if (shared) core.sharedMemory = true;
  if (sync) {
    core.synced = true;
    // The core records which server store the database copies, and refuses another one
    // (STORE_MISMATCH) unless the app asked to reset.
    core.syncServer = sync.url;
    core.syncStore = sync.store;
    if (sync.onMismatch === "reset") core.resetOnMismatch = true;
  }
  // The core reads no event at open: the projections' snapshots decide which ones come
  // first; the rest is read in the background.
  core.lazy = true;
  const schemas = parseEventSchemas((options as { events?: unknown }).events);
  const settings: Settings = { name, storage, shared, snapshotEvery, sync };
  if (retain) settings.retain = retain;
  return { settings, checkpointEvery, projections, aggregates, schemas, core };
}

/** Checks `retain`: `{ events: N }`, N a whole number of at least 1, on a synced store. */
export function parseRetain(retain: unknown, synced: boolean): RetainOptions | undefined {
  if (retain === undefined) return undefined;
  if (typeof retain !== "object" || retain === null || Array.isArray(retain)) {
    throw invalidArgument("`retain` must be an object such as { events: 10000 }");
  }
  const unknown = Object.keys(retain).filter((k) => k !== "events");
  if (unknown.length > 0) throw invalidArgument(`\`retain\` takes { events }, not ${unknown.map((k) => `\`${k}\``).join(", ")}`);
  const { events } = retain as { events?: unknown };
  if (typeof events !== "number" || !Number.isInteger(events) || events < 1 || events > Number.MAX_SAFE_INTEGER) {
    throw invalidArgument(`\`retain.events\` must be a whole number of at least 1 (the newest confirmed events kept), got ${String(events)}`);
  }
  if (!synced) {
    throw invalidArgument(
      "`retain` needs `sync`: it drops confirmed events that the sync server keeps, and a store without sync has no other copy of its log",
    );
  }
  return { events };
}

export function parseSyncOptions(sync: unknown): SyncOptions {
  if (typeof sync !== "object" || sync === null || Array.isArray(sync)) {
    throw invalidArgument("`sync` must be an object such as { url, store, token }");
  }
  const s = sync as Record<string, unknown>;
  const known = new Set(["url", "store", "token", "headers", "pushBatch", "pullLimit", "longPollSeconds", "onMismatch"]);
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
  if (s.onMismatch !== undefined && s.onMismatch !== "fail" && s.onMismatch !== "reset") {
    throw invalidArgument(`\`sync.onMismatch\` must be "fail" or "reset", got ${String(s.onMismatch)}`);
  }
  try {
    new URL(s.url as string);
  } catch {
    throw invalidArgument(`\`sync.url\` is not a URL: ${String(s.url)}`);
  }
  const out: SyncOptions = { url: s.url as string, store: s.store as string, token: s.token as SyncOptions["token"] };
  if (s.headers !== undefined) out.headers = s.headers as SyncOptions["headers"];
  // Not sent to the sync loop: the core checks it at open (see parseOpenOptions).
  if (s.onMismatch === "reset") out.onMismatch = "reset";
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

/**
 * Whether `value` is data that `JSON.stringify` writes faithfully: strings, booleans, null,
 * finite numbers, arrays (without `undefined`) and plain objects of them (properties that
 * are `undefined` are left out, as always). `NOT_PLAIN` for anything {@link unfaithful}
 * must look at: a function, symbol, BigInt, non-finite number, a class instance (`Date`,
 * `Map`, typed arrays, ...), `undefined` in an array, or nesting past 64 levels (cycles).
 * `EXACT` when parsing the JSON would also give it back as it is: no `undefined` property,
 * no `-0`, no null-prototype object. One look at each value: the append path's fast path.
 */
function jsonVerdict(value: unknown, depth: number): JsonVerdict {
  switch (typeof value) {
    case "string":
    case "boolean":
      return EXACT;
    case "undefined":
      return PLAIN; // at the top of a field: left out
    case "number":
      return !Number.isFinite(value) ? NOT_PLAIN : Object.is(value, -0) ? PLAIN : EXACT;
    case "object": {
      if (value === null) return EXACT;
      if (depth > 64) return NOT_PLAIN;
      let verdict: JsonVerdict = EXACT;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i];
          if (item === undefined) return NOT_PLAIN;
          verdict = Math.min(verdict, jsonVerdict(item, depth + 1)) as JsonVerdict;
          if (verdict === NOT_PLAIN) return NOT_PLAIN;
        }
        return verdict;
      }
      // A plain object (or one with a null prototype, which parsing does not give back);
      // anything else, and an own `constructor` key, is for the close look.
      if ((value as { constructor?: unknown }).constructor !== Object) {
        if (Object.getPrototypeOf(value) !== null) return NOT_PLAIN;
        verdict = PLAIN;
      }
      const record = value as Record<string, unknown>;
      for (const key in record) {
        if (!Object.prototype.hasOwnProperty.call(record, key)) continue;
        verdict = Math.min(verdict, jsonVerdict(record[key], depth + 1)) as JsonVerdict;
        if (verdict === NOT_PLAIN) return NOT_PLAIN;
      }
      return verdict;
    }
    default:
      return NOT_PLAIN;
  }
}

/** What {@link jsonVerdict} finds, worst first. */
const NOT_PLAIN = 0;
const PLAIN = 1;
const EXACT = 2;
type JsonVerdict = typeof NOT_PLAIN | typeof PLAIN | typeof EXACT;

/** Why JSON cannot carry `value` faithfully (a primitive), or undefined if it can. */
function unfaithfulPrimitive(value: unknown): string | undefined {
  switch (typeof value) {
    case "function":
      return "is a function; JSON would drop it";
    case "symbol":
      return "is a symbol; JSON would drop it";
    case "bigint":
      return "is a BigInt; JSON cannot carry it: store it as a string (value.toString())";
    case "number":
      return Number.isFinite(value) ? undefined : `is ${String(value)}; JSON would turn it into null`;
    default:
      return undefined;
  }
}

const TYPED_ARRAY = Object.getPrototypeOf(Uint8Array) as abstract new () => unknown;

/** Why JSON cannot carry the object `value` faithfully (not a plain object or array), or undefined. */
function unfaithfulObject(value: object): string | undefined {
  if (Array.isArray(value)) return undefined;
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) return undefined;
  // A plain object of another realm (an iframe, a vm context).
  if (Object.getPrototypeOf(proto) === null && (proto as { constructor?: { name?: unknown } }).constructor?.name === "Object") return undefined;
  if (value instanceof Date) {
    return "is a Date; JSON would turn it into a string: store date.toISOString() or date.getTime()";
  }
  if (value instanceof Map) {
    return "is a Map; JSON would turn it into {}: store an object (Object.fromEntries(map)) or an array of pairs ([...map])";
  }
  if (value instanceof Set) return "is a Set; JSON would turn it into {}: store an array ([...set])";
  if (value instanceof TYPED_ARRAY) {
    const name = (value as { constructor?: { name?: string } }).constructor?.name ?? "typed array";
    return `is a ${name}; JSON would turn it into an object of indexes: store an array (Array.from(value)) or a base64 string`;
  }
  if (value instanceof ArrayBuffer || value instanceof DataView) {
    return `is ${value instanceof DataView ? "a DataView" : "an ArrayBuffer"}; JSON would turn it into {}: store an array of its bytes or a base64 string`;
  }
  if (typeof SharedArrayBuffer !== "undefined" && value instanceof SharedArrayBuffer) {
    return "is a SharedArrayBuffer; JSON would turn it into {}: store an array of its bytes or a base64 string";
  }
  const ctor = (proto as { constructor?: { name?: unknown } }).constructor;
  const name = typeof ctor?.name === "string" && ctor.name !== "" ? ctor.name : "class";
  return `is a ${name} instance, not a plain object; JSON would not bring it back as one: store a plain object`;
}

/** Where JSON cannot carry a value faithfully: the first such place in `root`, depth first. */
function unfaithful(root: unknown): { path: (string | number)[]; message: string } | undefined {
  const path: (string | number)[] = [];
  const ancestors = new Set<object>();
  const walk = (value: unknown, inArray: boolean): string | undefined => {
    if (value === undefined) return inArray ? "is undefined in an array; JSON would turn it into null: use null" : undefined;
    if (typeof value !== "object" || value === null) return unfaithfulPrimitive(value);
    if (ancestors.has(value)) return "is circular (it refers back to an object that contains it); JSON cannot carry cycles";
    const own = unfaithfulObject(value);
    if (own !== undefined) return own;
    ancestors.add(value);
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        path.push(i);
        const found = walk(value[i], true);
        if (found !== undefined) return found;
        path.pop();
      }
    } else {
      const record = value as Record<string, unknown>;
      for (const key in record) {
        if (!Object.prototype.hasOwnProperty.call(record, key)) continue;
        path.push(key);
        const found = walk(record[key], false);
        if (found !== undefined) return found;
        path.pop();
      }
    }
    ancestors.delete(value);
    return undefined;
  };
  const message = walk(root, false);
  return message === undefined ? undefined : { path, message };
}

/** `data.items[2]["a b"]` for a path from an event. */
export function formatPath(path: readonly (string | number)[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(key)) out += out === "" ? key : `.${key}`;
    else out += `[${JSON.stringify(key)}]`;
  }
  return out === "" ? "the event" : out;
}

function eventType(event: unknown): string | undefined {
  const type = (event as { type?: unknown }).type;
  return typeof type === "string" ? type : undefined;
}

/**
 * INVALID_EVENT for event `index` of a batch, with its issues in the message and as
 * `issues`: a validator's (`data.title: Too small ...`) or a value JSON cannot carry
 * (`data.due is a Date ...`: `sentence`, the message continues the path).
 */
export function invalidEvent(index: number, event: unknown, issues: EventIssue[], cause?: unknown, sentence = false): AnnalsError {
  const type = eventType(event);
  const reasons = issues.map((issue) => `${formatPath(issue.path)}${sentence ? " " : ": "}${issue.message}`);
  const details: AnnalsErrorDetails = { index, issues };
  if (type !== undefined) details.type = type;
  if (cause !== undefined) details.cause = cause;
  return new AnnalsError("INVALID_EVENT", `event ${index}${type === undefined ? "" : ` (${type})`}: ${reasons.join("; ")}`, details);
}

/** One JSON.stringify for the whole batch; INVALID_EVENT, naming the path, for what JSON cannot carry faithfully. */
export function serializeBatch(events: readonly unknown[]): string {
  return serializeBatchAs(events).json;
}

/**
 * {@link serializeBatch}, and whether parsing the JSON gives the events back exactly
 * (`exact`: plain objects with no `undefined` fields, no `-0`), so that the events'
 * objects can stand for what the core stores.
 */
export function serializeBatchAs(events: readonly unknown[]): { json: string; exact: boolean } {
  for (let i = 0; i < events.length; i++) {
    const event = events[i];
    if (typeof event !== "object" || event === null || Array.isArray(event)) {
      throw new AnnalsError("INVALID_EVENT", `event ${i}: an event must be an object with \`stream\` and \`type\``, { index: i });
    }
  }
  // Plain JSON data (the common case) is checked in one pass and written by the native
  // serialiser's fast path. Anything else is looked at closely, event by event, and refused
  // with the path and the reason if JSON would change it.
  const verdict = jsonVerdict(events, 0);
  if (verdict === NOT_PLAIN) {
    for (let i = 0; i < events.length; i++) {
      const found = unfaithful(events[i]);
      if (found) throw invalidEvent(i, events[i], [found], undefined, true);
    }
  }
  try {
    return { json: JSON.stringify(events), exact: verdict === EXACT };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new AnnalsError("INVALID_EVENT", `the events are not JSON-serialisable: ${reason}`, { cause: error });
  }
}

// ---- event schemas (Standard Schema validators) ----------------------------------------

/** The `events` option, checked: a validator of `data` by event type. */
export type EventSchemaMap = ReadonlyMap<string, StandardSchemaV1>;

/** Checks the `events` option (`{ [type]: a Standard Schema validator of its data }`). */
export function parseEventSchemas(events: unknown): EventSchemaMap | undefined {
  if (events === undefined) return undefined;
  if (typeof events !== "object" || events === null || Array.isArray(events)) {
    throw invalidArgument("`events` must be an object of Standard Schema validators by event type, e.g. { TodoAdded: z.object({ title: z.string() }) }");
  }
  const schemas = new Map<string, StandardSchemaV1>();
  for (const [type, schema] of Object.entries(events)) {
    const props = (schema as { "~standard"?: { version?: unknown; validate?: unknown } } | null)?.["~standard"];
    if (typeof props !== "object" || props === null || typeof props.validate !== "function") {
      throw invalidArgument(
        `\`events.${type}\` is not a Standard Schema validator (it has no \`~standard.validate\`): use zod >= 3.24, valibot >= 1, arktype, or another library that implements https://standardschema.dev`,
      );
    }
    if (props.version !== 1) {
      throw invalidArgument(`\`events.${type}\` implements Standard Schema version ${String(props.version)}; annals supports version 1`);
    }
    schemas.set(type, schema as StandardSchemaV1);
  }
  return schemas.size === 0 ? undefined : schemas;
}

function issuePath(path: StandardSchemaV1.Issue["path"]): (string | number)[] {
  const out: (string | number)[] = ["data"];
  for (const segment of path ?? []) {
    const key = typeof segment === "object" && segment !== null ? segment.key : segment;
    out.push(typeof key === "number" || typeof key === "string" ? key : String(key));
  }
  return out;
}

function toIssues(issues: StandardSchemaV1.Result<unknown>["issues"]): EventIssue[] {
  const list = issues ?? [];
  if (list.length === 0) return [{ message: "refused by its schema (no issue given)", path: ["data"] }];
  return list.map((issue) => ({ message: String(issue.message), path: issuePath(issue.path) }));
}

/** The event with its data replaced by the validator's output (a copy only when it differs). */
function withData(event: object, result: StandardSchemaV1.Result<unknown>, index: number): object {
  if (result.issues !== undefined) throw invalidEvent(index, event, toIssues(result.issues));
  const value = (result as StandardSchemaV1.SuccessResult<unknown>).value;
  return value === (event as { data?: unknown }).data ? event : { ...event, data: value };
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

function threw(index: number, event: object, error: unknown): AnnalsError {
  const reason = error instanceof Error ? error.message : String(error);
  return invalidEvent(index, event, [{ message: `its validator threw: ${reason}`, path: ["data"] }], error);
}

/**
 * Validates each event of a batch whose type has a schema, before anything is written:
 * the batch with each such event's `data` replaced by its validator's output. Synchronous
 * when every validator is; otherwise a promise that waits for all of them. Events of types
 * without a schema pass as they are. The first refused event (by batch index) throws
 * INVALID_EVENT with its issues.
 */
export function validateBatch(events: readonly unknown[], schemas: EventSchemaMap): readonly unknown[] | Promise<readonly unknown[]> {
  let out: unknown[] | undefined;
  let waiting: { index: number; event: object; result: PromiseLike<unknown> }[] | undefined;
  let refused: AnnalsError | undefined;
  for (let i = 0; i < events.length && refused === undefined; i++) {
    const event = events[i];
    if (typeof event !== "object" || event === null) continue; // serializeBatch says why
    const type = (event as { type?: unknown }).type;
    const schema = typeof type === "string" ? schemas.get(type) : undefined;
    if (schema === undefined) continue;
    try {
      const result = schema["~standard"].validate((event as { data?: unknown }).data);
      out ??= [...events];
      if (isThenable(result)) (waiting ??= []).push({ index: i, event, result });
      else out[i] = withData(event, result, i);
    } catch (error) {
      refused = isAnnalsError(error, "INVALID_EVENT") ? error : threw(i, event, error);
    }
  }
  if (waiting === undefined) {
    if (refused) throw refused;
    return out ?? events;
  }
  // Some validators are async: wait for all of them (an earlier event's refusal comes first).
  const batch = out!;
  const pending = waiting;
  return Promise.all(
    pending.map(({ result }) =>
      Promise.resolve(result).then(
        (value) => ({ ok: true as const, value: value as StandardSchemaV1.Result<unknown> }),
        (error: unknown) => ({ ok: false as const, error }),
      ),
    ),
  ).then((settled) => {
    for (let k = 0; k < pending.length; k++) {
      const { index, event } = pending[k]!;
      const s = settled[k]!;
      if (!s.ok) throw threw(index, event, s.error);
      batch[index] = withData(event, s.value, index);
    }
    if (refused) throw refused;
    return batch;
  });
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
