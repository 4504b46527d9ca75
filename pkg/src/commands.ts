// The write model: `execute` folds an aggregate's stream, lets `decide` choose the events,
// and appends them at the version decide saw, retrying when another writer moved the stream.
// A command id is executed once: its events' ids derive from it, and a command id already
// in the stream returns the earlier result. Both rules are the core's (the execute plan,
// src/command_plan.rs): this asks it for the batch and for the earlier result. Refused
// events run the aggregate's compensation.

import { AnnalsError, type AnnalsErrorDetails, fromWasmError, isAnnalsError } from "./errors.js";
import { randomUuid } from "./ids.js";
import { type AnyAggregate, checkExecuteArguments, type EventSchemaMap, invalidArgument, serializeBatch, validateBatch } from "./options.js";
import { copyState } from "./projection-runtime.js";
import type { AnnalsEvent, CommandRequest, ExecuteOptions, ExecuteResult, Rejection } from "./types.js";
import type { CommandPlanRequest, CommandResultReply } from "./wasm-contract.js";

/** `execute` decides at most this many times when other writers keep moving the stream. */
export const MAX_ATTEMPTS = 5;

/** A read of the log, as `events()` takes it. */
export interface LogQuery {
  stream?: string;
  type?: string;
  after?: number;
  to?: number;
}

/** What commands need from their store. */
export interface CommandsHost {
  /** The `events` option's validators by type: decided events are validated like appended ones. */
  readonly schemas?: EventSchemaMap | undefined;
  head(): number;
  confirmedHead(): number;
  /** Changes when the confirmed log restarts. */
  generation(): number;
  isClosed(): boolean;
  /** Throws CLOSED once the store is closed. */
  checkOpen(): void;
  /** Whether the core holds the whole log (else `whenComplete` first: decide reads a stream). */
  isComplete(): boolean;
  whenComplete(): Promise<void>;
  /** Confirmed positions up to this one were dropped by retention (0: none). */
  dropped?(): number;
  read(query: LogQuery): AnnalsEvent[];
  /** The core's execute plan: `CommandPlanRequest` JSON in, the batch to append (`PlannedEvent[]` JSON) out. */
  planCommand(requestJson: string): string;
  /** What command `commandId` wrote to `stream` before (`CommandResultReply` JSON), or undefined: the core's stream index. */
  commandResult(stream: string, commandId: string): string | undefined;
  /** Appends a batch already serialised (a planned one). */
  appendJson(batchJson: string): Promise<AnnalsEvent[]>;
  catchUp(): Promise<unknown>;
  /** Lets close wait for work started here. */
  track<T>(promise: Promise<T>): Promise<T>;
  reportError(error: unknown): void;
}

/** An aggregate instance's state folded from its confirmed events. */
interface AggregateCache {
  state: unknown;
  /** The confirmed head this state was brought up to. */
  position: number;
  /** The stream's version among confirmed events. */
  version: number;
  /**
   * Command ids found on the stream's confirmed events: an execute whose id is not among
   * them (nor the pending ones) decides without asking the core for an earlier result.
   */
  commands: Set<string>;
  generation: number;
}

interface LoadedAggregate {
  state: unknown;
  version: number;
  known: (commandId: string) => boolean;
}

/** An INVALID_EVENT of a decided event, its message naming the aggregate. */
function inAggregate(aggregate: string, error: unknown): unknown {
  if (!isAnnalsError(error, "INVALID_EVENT")) return error;
  const details: AnnalsErrorDetails = { cause: error.cause };
  if (error.index !== undefined) details.index = error.index;
  if (error.type !== undefined) details.type = error.type;
  if (error.issues !== undefined) details.issues = error.issues;
  return new AnnalsError("INVALID_EVENT", `aggregate "${aggregate}" decided an invalid ${error.message}`, details);
}

export class Commands {
  readonly #host: CommandsHost;
  readonly #aggregates: ReadonlyMap<string, AnyAggregate>;
  readonly #cache = new Map<string, AggregateCache>();

  constructor(host: CommandsHost, aggregates: ReadonlyMap<string, AnyAggregate>, signal: AbortSignal) {
    this.#host = host;
    this.#aggregates = aggregates;
    signal.addEventListener("abort", () => this.#cache.clear());
  }

  /** The confirmed log restarted: cached states are of the old one. */
  reset(): void {
    this.#cache.clear();
  }

  #aggregate(name: string): AnyAggregate {
    const def = this.#aggregates.get(name);
    if (!def) {
      const known = [...this.#aggregates.keys()].map((k) => `"${k}"`).join(", ") || "none";
      throw invalidArgument(`no aggregate named ${JSON.stringify(name)} (known: ${known})`);
    }
    return def;
  }

  /**
   * The aggregate instance's state and version as `decide` sees them: its confirmed events
   * folded incrementally into a cached state, and its pending events folded on a copy of
   * it, every time (they may still move or be refused).
   */
  #load(name: string, def: AnyAggregate, stream: string): LoadedAggregate {
    const host = this.#host;
    const key = `${name}\u0000${stream}`;
    let cache = this.#cache.get(key);
    if (!cache || cache.generation !== host.generation()) {
      cache = { state: copyState(def.initial), position: 0, version: 0, commands: new Set(), generation: host.generation() };
      this.#cache.set(key, cache);
    }
    const confirmed = host.confirmedHead();
    try {
      if (confirmed > cache.position) {
        const deleted = lastDelete(host, stream, cache.position, confirmed);
        if (deleted !== undefined) {
          cache.state = copyState(def.initial);
          cache.version = deleted.version;
        }
        const events = host.read({ stream, after: cache.position, to: confirmed });
        for (const event of events) {
          cache.state = evolveStep(def, cache.state, event);
          cache.version = event.version;
          const commandId = event.meta?.["commandId"];
          if (typeof commandId === "string") cache.commands.add(commandId);
        }
        cache.position = confirmed;
      }
    } catch (error) {
      this.#cache.delete(key); // half folded: start again next time
      throw error;
    }
    const commands = cache.commands;
    if (host.head() === confirmed) {
      return { state: cache.state, version: cache.version, known: (id) => commands.has(id) };
    }
    const pending = host.read({ stream, after: confirmed });
    const deleted = lastDelete(host, stream, confirmed);
    if (pending.length === 0 && deleted === undefined) {
      return { state: cache.state, version: cache.version, known: (id) => commands.has(id) };
    }
    let state = copyState(deleted === undefined ? cache.state : def.initial);
    const pendingCommands = new Set<string>();
    for (const event of pending) {
      state = evolveStep(def, state, event);
      const commandId = event.meta?.["commandId"];
      if (typeof commandId === "string") pendingCommands.add(commandId);
    }
    return {
      state,
      version: pending.length > 0 ? pending[pending.length - 1]!.version : deleted!.version,
      known: (id) => commands.has(id) || pendingCommands.has(id),
    };
  }

  async execute(aggregate: string, id: string, command: unknown, options: ExecuteOptions = {}): Promise<ExecuteResult> {
    const host = this.#host;
    host.checkOpen();
    const def = this.#aggregate(aggregate);
    checkExecuteArguments(id, command, options);
    const commandId = options.commandId ?? randomUuid();
    if (!host.isComplete()) await host.whenComplete(); // decide reads the aggregate's stream
    for (let attempt = 1; ; attempt++) {
      host.checkOpen();
      const loaded = this.#load(aggregate, def, id);
      if (loaded.known(commandId)) {
        // The core's stream index answers (it is the authority: if it knows none, decide).
        const earlier = this.#earlierResult(id, commandId);
        if (earlier) return { commandId, events: earlier.events, version: earlier.version };
      }
      let decided: readonly unknown[];
      try {
        decided = def.decide(command as { type: string }, loaded.state);
      } catch (error) {
        throw new AnnalsError("COMMAND_REJECTED", error instanceof Error ? error.message : String(error), { cause: error });
      }
      if (!Array.isArray(decided)) {
        throw invalidArgument(`aggregate "${aggregate}": decide must return an array of events`);
      }
      if (decided.length === 0) return { commandId, events: [], version: loaded.version };
      const decidedEvents = decided.map((d, i) => {
        if (typeof d !== "object" || d === null) {
          throw new AnnalsError("INVALID_EVENT", `aggregate "${aggregate}": decide returned a non-object at ${i}`);
        }
        const { type, data, meta } = d as { type?: unknown; data?: unknown; meta?: unknown };
        if (typeof type !== "string") {
          throw new AnnalsError("INVALID_EVENT", `aggregate "${aggregate}": event ${i} needs a string \`type\``);
        }
        if (meta !== undefined && (typeof meta !== "object" || meta === null || Array.isArray(meta))) {
          throw new AnnalsError("INVALID_EVENT", `aggregate "${aggregate}": event ${i}'s meta must be an object`);
        }
        return { type, data, meta };
      });
      // The core plans the batch: ids derived from the command id, the command's ids in meta
      // (unset flow ids default to the command id), the first event expecting the version
      // decide saw. The decided events go through the append path's JSON checks
      // (INVALID_EVENT for what JSON cannot carry), spliced in as they are serialised.
      const fields: Omit<CommandPlanRequest, "events"> = {
        stream: id,
        aggregate,
        commandId,
        correlationId: options.correlationId,
        causationId: options.causationId,
        expectedVersion: loaded.version,
      };
      let events: readonly unknown[] = decidedEvents;
      let batchJson: string;
      try {
        if (host.schemas !== undefined) {
          const checked = validateBatch(decidedEvents, host.schemas);
          events = checked instanceof Promise ? await checked : checked;
        }
        batchJson = serializeBatch(events);
      } catch (error) {
        throw inAggregate(aggregate, error);
      }
      const request = `${JSON.stringify(fields).slice(0, -1)},"events":${batchJson}}`;
      let batch: string;
      try {
        batch = host.planCommand(request);
      } catch (error) {
        throw fromWasmError(error);
      }
      try {
        const events = await host.appendJson(batch);
        return { commandId, events, version: events[events.length - 1]!.version };
      } catch (error) {
        if (isAnnalsError(error, "WRONG_EXPECTED_VERSION") && error.stream === id && attempt < MAX_ATTEMPTS) {
          // Another tab or a sync moved the stream: look at what is new and decide again.
          await host.catchUp().catch(() => undefined);
          continue;
        }
        throw error;
      }
    }
  }

  #earlierResult(stream: string, commandId: string): CommandResultReply | undefined {
    let reply: string | undefined;
    try {
      reply = this.#host.commandResult(stream, commandId);
    } catch (error) {
      throw fromWasmError(error);
    }
    return reply === undefined ? undefined : (JSON.parse(reply) as CommandResultReply);
  }

  /** Executes a `{ aggregate, id, command }` request (a process manager's, a compensation). */
  executeRequest(request: CommandRequest, options: ExecuteOptions): Promise<ExecuteResult> {
    if (typeof request !== "object" || request === null || typeof request.aggregate !== "string") {
      return Promise.reject(invalidArgument("a command request must be { aggregate, id, command }"));
    }
    return this.execute(request.aggregate, request.id, request.command, options);
  }

  /** Runs the compensating commands of the aggregate whose command produced a refused event. */
  compensate(rejection: Rejection): void {
    const host = this.#host;
    const meta = rejection.event.meta;
    const aggregate = meta?.["aggregate"];
    const commandId = meta?.["commandId"];
    if (typeof aggregate !== "string" || typeof commandId !== "string") return;
    const def = this.#aggregates.get(aggregate);
    if (!def?.onRejected) return;
    let commands: readonly CommandRequest[] | void;
    try {
      commands = def.onRejected({ ...rejection, aggregate, id: rejection.event.stream, commandId });
    } catch (error) {
      host.reportError(error);
      return;
    }
    if (commands === undefined || commands === null) return;
    if (!Array.isArray(commands)) {
      host.reportError(invalidArgument(`aggregate "${aggregate}": onRejected must return an array of commands`));
      return;
    }
    const correlation = meta?.["correlationId"];
    const context: ExecuteOptions = {
      correlationId: typeof correlation === "string" ? correlation : rejection.event.id,
      causationId: rejection.event.id,
    };
    const list = commands;
    void host.track(
      (async () => {
        for (let i = 0; i < list.length; i++) {
          if (host.isClosed()) return;
          try {
            await this.executeRequest(list[i]!, { ...context, commandId: `compensate:${rejection.event.id}:${i}` });
          } catch (error) {
            if (!host.isClosed()) host.reportError(error);
          }
        }
      })(),
    );
  }
}

/**
 * One event of an aggregate's stream folded into `state`, by the rule the core's aggregates
 * and server authorities follow (src/command.rs `DeciderStep`): `$StreamDeleted` and
 * `$StreamErased` start again from the initial state (an erasure leaves no data to fold);
 * `$StreamClosed` and erased events are not the aggregate's to fold.
 */
function evolveStep(def: AnyAggregate, state: unknown, event: AnnalsEvent): unknown {
  if (event.type === "$StreamDeleted" || event.type === "$StreamErased") return copyState(def.initial);
  if (event.erased === true || event.type === "$StreamClosed") return state;
  return def.evolve(state, event);
}

/**
 * The last `$StreamDeleted` of `stream` after `after` (up to `to`). Stream reads hide it
 * (they start after it), so an aggregate asks for it by type: a deleted stream's aggregate
 * starts again from its initial state, at the delete's version. Deletes are rare, so the
 * type's index holds few.
 */
function lastDelete(host: CommandsHost, stream: string, after: number, to?: number): AnnalsEvent | undefined {
  let last: AnnalsEvent | undefined;
  // Deletes that retention dropped need not be found: the stream's reads skip up to them
  // already, and right after one `no_stream` (what version 0 appends with) holds.
  const from = Math.max(after, host.dropped?.() ?? 0);
  for (const event of host.read({ type: "$StreamDeleted", after: from, ...(to === undefined ? {} : { to }) })) {
    if (event.stream === stream) last = event;
  }
  return last;
}
