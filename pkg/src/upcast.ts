// Upcasting: events are stored as they were written, and read as this build knows them.
// An upcaster turns an event of one type at schema version v into version v + 1 (keeping
// the type, or renaming it: the chain continues under the new name). The chains are
// checked once, at open (a gap, a duplicate, a loop or an ambiguous end is INVALID_ARGUMENT
// naming the type and versions); after that, `upcastEvents` is the one place where events
// read from the core become what the app sees: replay and folds, `events()`, `stateAt`,
// change events, the devtools, events arriving by sync. A store without upcasters pays one
// branch per batch. Stored bytes never change. The same rules as the Rust core's
// `annals::upcast` (tests/fixtures/upcasters.json).

import { AnnalsError } from "./errors.js";
import { invalidArgument, wholeNumber } from "./options.js";
import type { RebuildSettings } from "./projections.js";
import type { AnnalsEvent, RenamingUpcaster, UnknownEventPolicy, Upcaster as UpcastFn, Upcasters as UpcasterMap } from "./types.js";

/** annals' own event types (stream lifecycle): known to every build, schema or not. */
const LIFECYCLE_TYPES: ReadonlySet<string> = new Set(["$StreamDeleted", "$StreamClosed", "$StreamErased"]);

export type { UnknownEventPolicy, UpcasterMap };

interface Step {
  fn: UpcastFn;
  /** The type after this step (the same one unless renamed). */
  to: string;
}

/** An event as upcasting sees it (type, schema version). */
interface Typed {
  type: string;
  schemaVersion?: number;
}

function invalid(message: string): AnnalsError {
  return new AnnalsError("INVALID_ARGUMENT", `upcasters: ${message}`);
}

/** Upcasters compiled from the open options (checked). */
export class Upcasters {
  /** Steps by type, then by version. */
  readonly #steps = new Map<string, Map<number, Step>>();
  /** The version a new event of each type is appended at (null: renamed away). */
  readonly #current = new Map<string, number | null>();
  /** Known event types when the app gave `events` schemas, else undefined (every type is known). */
  readonly #known: ReadonlySet<string> | undefined;
  /** Types renamed into another one, or reached by a rename (queries by type read through them). */
  readonly #renamed = new Set<string>();
  /** Events (as read from the core) whose upcaster threw, with what it threw: left as stored and unknown. */
  readonly #failed = new WeakMap<object, string>();
  #anyFailed = false;

  /** Compiles and checks `map` (INVALID_ARGUMENT naming the type and versions). */
  constructor(map: UpcasterMap | undefined, knownTypes?: Iterable<string>) {
    this.#known = knownTypes === undefined ? undefined : new Set(knownTypes);
    if (map === undefined) return;
    if (typeof map !== "object" || map === null || Array.isArray(map)) {
      throw invalid("must be an object of { [type]: { [version]: upcaster } }");
    }
    const declared: { type: string; from: number; renameTo?: string }[] = [];
    for (const [type, byVersion] of Object.entries(map)) {
      if (typeof byVersion !== "object" || byVersion === null || Array.isArray(byVersion)) {
        throw invalid(`${type} must be an object of { [version]: upcaster }`);
      }
      const steps = new Map<number, Step>();
      for (const [key, value] of Object.entries(byVersion)) {
        const from = Number(key);
        if (!Number.isSafeInteger(from) || from < 1 || key.trim() === "") {
          throw invalid(`${type}: ${JSON.stringify(key)} is not a schema version (an integer from 1)`);
        }
        let step: Step;
        if (typeof value === "function") {
          step = { fn: value, to: type };
        } else if (typeof value === "object" && value !== null && (value as RenamingUpcaster).type === type) {
          throw invalid(`${type} ${from} -> ${from + 1} renames ${type} to itself (ambiguous): give a function to keep the type`);
        } else if (
          typeof value === "object" &&
          value !== null &&
          typeof (value as RenamingUpcaster).upcast === "function" &&
          typeof (value as RenamingUpcaster).type === "string" &&
          (value as RenamingUpcaster).type !== ""
        ) {
          step = { fn: (value as RenamingUpcaster).upcast, to: (value as RenamingUpcaster).type };
        } else {
          throw invalid(`${type} ${from} -> ${from + 1} must be a function (data) => data, or { type, upcast }`);
        }
        if (steps.has(from)) {
          throw invalid(`${type} has two upcasters from version ${from} to ${from + 1} (a duplicate)`);
        }
        steps.set(from, step);
        declared.push(step.to === type ? { type, from } : { type, from, renameTo: step.to });
      }
      if (steps.size > 0) this.#steps.set(type, steps);
    }
    for (const [type, version] of checkChains(declared)) this.#current.set(type, version);
    for (const d of declared) {
      if (d.renameTo !== undefined) {
        this.#renamed.add(d.type);
        this.#renamed.add(d.renameTo);
      }
    }
  }

  /** Whether any upcaster is declared. */
  get active(): boolean {
    return this.#steps.size > 0;
  }

  /**
   * Whether every event at schema version 1 (absent) is known: no upcasters, no `events`
   * schemas, no upcaster has thrown (the folds' fast path).
   */
  get plain(): boolean {
    return this.#current.size === 0 && this.#known === undefined && !this.#anyFailed;
  }

  /** Whether `event`'s upcaster threw when it was read (it is then left as stored). */
  threw(event: object): boolean {
    return this.#failed.has(event);
  }

  /** Whether some type's new events are stamped with a schema version above 1. */
  get stamps(): boolean {
    return this.#current.size > 0;
  }

  /** Whether event types are checked against `events` schemas. */
  get checksTypes(): boolean {
    return this.#known !== undefined;
  }

  /** Whether reads by `type` must look at other stored types too (a rename involves it). */
  renames(type: string): boolean {
    return this.#renamed.has(type);
  }

  /** The version new events of `type` are appended at: 1 without upcasters, null once renamed away. */
  currentVersion(type: string): number | null {
    const current = this.#current.get(type);
    return current === undefined ? 1 : current;
  }

  /**
   * Why this build cannot read `event` (already upcast), or undefined when it can: its type
   * has no schema, or its version is above what its upcasters reach.
   */
  unknown(event: Typed): string | undefined {
    if (this.#anyFailed) {
      const failed = this.#failed.get(event);
      if (failed !== undefined) return failed;
    }
    const version = event.schemaVersion ?? 1;
    if (version !== 1 || this.#current.size > 0) {
      const current = this.currentVersion(event.type);
      if (current === null) return `${event.type} is renamed away, and no upcaster takes version ${version}`;
      if (version > current) return `${event.type} version ${version} is newer than this build knows (${current})`;
    }
    // The lifecycle events are annals' own: every build knows them (projections see deletes).
    if (this.#known !== undefined && !this.#known.has(event.type) && !LIFECYCLE_TYPES.has(event.type)) {
      return `${event.type} has no schema in \`events\``;
    }
    return undefined;
  }

  /** `event` as this build reads it (itself when nothing applies). */
  upcast<T extends AnnalsEvent>(event: T): T {
    let steps = this.#steps.get(event.type);
    if (steps === undefined) return event;
    let version = event.schemaVersion ?? 1;
    let step = steps.get(version);
    if (step === undefined) return event;
    let type = event.type;
    let data: unknown = event.data;
    while (step !== undefined) {
      try {
        data = step.fn(data, event);
      } catch (error) {
        // App code: the event stays as stored, and counts as one this build cannot read.
        const reason = error instanceof Error ? error.message : String(error);
        this.#anyFailed = true;
        this.#failed.set(event, `its upcaster ${type} ${version} -> ${version + 1} threw (${reason})`);
        return event;
      }
      version += 1;
      type = step.to;
      steps = this.#steps.get(type);
      step = steps?.get(version);
    }
    return { ...event, type, schemaVersion: version, data, upcastFrom: { type: event.type, schemaVersion: event.schemaVersion ?? 1 } };
  }

  /**
   * `events` as this build reads them: the same array when the store has no upcasters (or
   * none applies). An upcaster that throws is reported by the caller's catch: it is app code.
   */
  upcastEvents<T extends AnnalsEvent>(events: T[]): T[] {
    if (this.#steps.size === 0 || events.length === 0) return events;
    let out: T[] | undefined;
    for (let i = 0; i < events.length; i++) {
      const event = events[i]!;
      // An erased event has no data left to upcast: it stays as stored.
      const upcast = this.#steps.has(event.type) && event.erased !== true ? this.upcast(event) : event;
      if (upcast !== event) {
        out ??= events.slice(0, i);
      }
      if (out) out.push(upcast);
    }
    return out ?? events;
  }

  /**
   * New events as they are written: a type with upcasters gets its current schema version
   * unless the app gave one (version 1 is not written: absent means 1).
   */
  stamp(events: readonly unknown[]): readonly unknown[] {
    if (this.#current.size === 0) return events;
    let out: unknown[] | undefined;
    for (let i = 0; i < events.length; i++) {
      const event = events[i] as { type?: unknown; schemaVersion?: unknown } | null;
      let stamped: unknown = event;
      if (typeof event === "object" && event !== null && typeof event.type === "string" && event.schemaVersion === undefined) {
        const current = this.#current.get(event.type);
        if (typeof current === "number" && current > 1) stamped = { ...event, schemaVersion: current };
      }
      if (stamped !== event) out ??= events.slice(0, i) as unknown[];
      if (out) out.push(stamped);
    }
    return out ?? events;
  }
}

/** One upcaster as declared: from `from` to `from + 1`, under `renameTo` if renamed. */
export interface DeclaredUpcaster {
  type: string;
  from: number;
  renameTo?: string;
}

/**
 * Checks the chains and returns each involved type's current version (null: renamed away).
 * The rules (the same as the core's): a type's upcasters take consecutive versions starting
 * at 1, or at the version a rename brings it in at; a rename is the last step of its type;
 * a type reached by renames has one current version at or above every version it is
 * reached at, and is not itself renamed away.
 */
export function checkChains(declared: readonly DeclaredUpcaster[]): Map<string, number | null> {
  const byType = new Map<string, Map<number, DeclaredUpcaster>>();
  for (const d of declared) {
    let versions = byType.get(d.type);
    if (!versions) byType.set(d.type, (versions = new Map()));
    if (versions.has(d.from)) {
      throw invalid(`${d.type} has two upcasters from version ${d.from} to ${d.from + 1} (a duplicate)`);
    }
    versions.set(d.from, d);
  }
  /** Where renames bring each type in: version -> the type renamed into it. */
  const entries = new Map<string, Map<number, string>>();
  for (const d of declared) {
    if (d.renameTo === undefined) continue;
    let at = entries.get(d.renameTo);
    if (!at) entries.set(d.renameTo, (at = new Map()));
    if (!at.has(d.from + 1)) at.set(d.from + 1, d.type);
  }
  const current = new Map<string, number | null>();
  for (const [type, versions] of byType) {
    const sorted = [...versions.keys()].sort((a, b) => a - b);
    const lo = sorted[0]!;
    const hi = sorted[sorted.length - 1]!;
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i] !== sorted[i - 1]! + 1) {
        const missing = sorted[i - 1]! + 1;
        throw invalid(`${type} has no upcaster from version ${missing} to ${missing + 1} (a gap: it goes from ${sorted[i - 1]} to ${sorted[i]})`);
      }
    }
    const reached = entries.get(type);
    const firstEntry = reached ? Math.min(...reached.keys()) : undefined;
    if (lo > 1) {
      if (firstEntry === undefined) {
        throw invalid(`${type}'s upcasters start at version ${lo}: nothing takes version 1 to 2 (a gap)`);
      }
      if (firstEntry < lo) {
        throw invalid(
          `${reached!.get(firstEntry)} is renamed to ${type} at version ${firstEntry}, but ${type}'s upcasters start at version ${lo} (a gap)`,
        );
      }
    }
    for (const v of sorted) {
      const d = versions.get(v)!;
      if (d.renameTo !== undefined && v !== hi) {
        throw invalid(
          `${type} is renamed to ${d.renameTo} from version ${v}, but ${type} still has upcasters after it (from ${hi}): where its events end is ambiguous`,
        );
      }
    }
    const last = versions.get(hi)!;
    current.set(type, last.renameTo !== undefined ? null : hi + 1);
  }
  // A loop through names: following renames from any type never comes back to it.
  for (const start of byType.keys()) {
    const seen = new Set<string>([start]);
    let type = start;
    for (;;) {
      const versions = byType.get(type);
      if (!versions) break;
      const last = versions.get(Math.max(...versions.keys()))!;
      if (last.renameTo === undefined) break;
      if (seen.has(last.renameTo)) {
        throw invalid(
          `${type} ${last.from} -> ${last.from + 1} renames it back to ${last.renameTo}, at version ${last.from + 1}: the chain loops (ambiguous)`,
        );
      }
      seen.add(last.renameTo);
      type = last.renameTo;
    }
  }
  for (const [type, at] of entries) {
    const versions = [...at.keys()].sort((a, b) => a - b);
    const own = current.get(type);
    if (own === null) {
      // Renamed away itself: a rename may land inside its chain, not past its own rename.
      const renamedAt = Math.max(...byType.get(type)!.keys());
      const past = versions.find((v) => v > renamedAt);
      if (past !== undefined) {
        throw invalid(
          `${at.get(past)} is renamed to ${type} at version ${past}, but ${type} is itself renamed away from version ${renamedAt} (ambiguous)`,
        );
      }
      continue;
    }
    if (own === undefined) {
      // No upcasters of its own: every rename must bring it in at the same version.
      if (versions.length > 1) {
        throw invalid(
          `${type} is reached by renames at versions ${versions.join(" and ")} (from ${versions.map((v) => at.get(v)).join(" and ")}) with no upcasters between them: its current version is ambiguous`,
        );
      }
      current.set(type, versions[0]!);
      continue;
    }
    const above = versions.find((v) => v > own);
    if (above !== undefined) {
      throw invalid(
        `${at.get(above)} is renamed to ${type} at version ${above}, above ${type}'s current version ${own} (ambiguous)`,
      );
    }
    // Below its first upcaster was checked with the type's own chain.
  }
  return current;
}

/** How a store reads events as they evolve: its upcasters, its unknown-event policy, its rebuilds. */
export interface Evolution {
  upcasters: Upcasters;
  unknownEvents: UnknownEventPolicy;
  rebuild: RebuildSettings;
}

const DEFAULT_REBUILD: RebuildSettings = { background: 10_000, slice: 2_000, saveEvery: 20_000 };

/**
 * Checks `upcasters`, `unknownEvents` and `rebuild` of the open options; `schemaTypes`: the
 * types of the `events` schemas when the app gave them (other types are then unknown).
 */
export function parseEvolution(
  options: { upcasters?: unknown; unknownEvents?: unknown; rebuild?: unknown },
  schemaTypes: Iterable<string> | undefined,
): Evolution {
  const upcasters = new Upcasters(options.upcasters as UpcasterMap | undefined, schemaTypes);
  const unknownEvents = options.unknownEvents ?? "warn";
  if (unknownEvents !== "skip" && unknownEvents !== "warn" && unknownEvents !== "fail") {
    throw invalidArgument(`\`unknownEvents\` must be "skip", "warn" or "fail", got ${String(unknownEvents)}`);
  }
  const rebuild = { ...DEFAULT_REBUILD };
  if (options.rebuild !== undefined) {
    const given = options.rebuild as Record<string, unknown> | null;
    if (typeof given !== "object" || given === null || Array.isArray(given)) {
      throw invalidArgument("`rebuild` must be an object such as { background: 10000, slice: 2000, saveEvery: 20000 }");
    }
    for (const key of Object.keys(given)) {
      if (!(key in DEFAULT_REBUILD)) throw invalidArgument(`unknown rebuild option \`${key}\``);
    }
    for (const key of ["background", "slice", "saveEvery"] as const) {
      if (given[key] === undefined) continue;
      rebuild[key] = wholeNumber(`rebuild.${key}`, given[key]);
      if (key !== "background" && rebuild[key] === 0) throw invalidArgument(`\`rebuild.${key}\` must be positive`);
    }
  }
  return { upcasters, unknownEvents, rebuild };
}
