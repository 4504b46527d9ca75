// Process managers: a handler runs once per matching event, in log order, and the
// commands it returns are executed as caused by that event.
//
// Delivery: the checkpoint (the last position handled) is stored as the snapshot record
// `react:<name>` after the event's commands succeeded. A crash between the commands and
// the checkpoint runs the handler again on reload; its commands then do nothing new,
// because each one carries the deterministic command id `<name>:<event id>:<index>`:
// `execute` recognises a command id already in the aggregate's stream, and derives its
// events' ids from the command id, so the log (and the sync server) keep one copy.
// Only confirmed events are handled: pending ones may still move or be refused.

import { AnnalsError, ReactorError, isAnnalsError } from "./errors.js";
import type { AnnalsEvent, CommandRequest, ExecuteOptions, Reactor } from "./types.js";

/** What a reactor needs from its store. */
export interface ReactorHost {
  readonly storeName: string;
  /** The last position a reactor may handle: the confirmed head. */
  limit(): number;
  /** Changes when the confirmed log restarts (a new server epoch). */
  generation(): number;
  isClosed(): boolean;
  /** Confirmed events `after + 1 ..= to`, at most `limit`, of `type` if given. */
  read(after: number, to: number, limit: number, type: string | undefined): AnnalsEvent[];
  loadCheckpoint(name: string): Promise<number | undefined>;
  saveCheckpoint(name: string, position: number): Promise<void>;
  execute(request: CommandRequest, options: ExecuteOptions): Promise<unknown>;
  reportError(error: unknown): void;
}

export interface ReactorSpec {
  name: string;
  on: readonly string[];
  handle: (event: AnnalsEvent) => unknown;
  initialMs: number;
  maxMs: number;
  startAt: "beginning" | "end";
}

/** Events read at a time while catching up. */
const CHUNK = 256;

/** The part of `navigator.locks` annals uses (tests pass a fake). */
export interface LockManagerLike {
  request(
    name: string,
    options: { signal?: AbortSignal; ifAvailable?: boolean },
    callback: (lock: unknown) => Promise<unknown>,
  ): Promise<unknown>;
  /** The locks held and asked for (Web Locks' `query`), where the manager has it. */
  query?(): Promise<{ pending?: { name?: string }[] }>;
}

/** `navigator.locks` where it exists. */
export function webLocks(): LockManagerLike | undefined {
  const nav = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator;
  return nav?.locks && typeof nav.locks.request === "function" ? nav.locks : undefined;
}

/** The correlation and causation of a command caused by `event`. */
export function causedBy(event: { id: string; meta?: Record<string, unknown> | undefined }): ExecuteOptions {
  const correlation = event.meta?.["correlationId"];
  return {
    correlationId: typeof correlation === "string" && correlation !== "" ? correlation : event.id,
    causationId: event.id,
  };
}

export class ReactorRuntime implements Reactor {
  position = 0;
  readonly #host: ReactorHost;
  readonly #spec: ReactorSpec;
  readonly #types: ReadonlySet<string>;
  #stopped = false;
  #woken = false;
  #wake: (() => void) | undefined;
  #idle = false;
  #idleWaiters: (() => void)[] = [];
  #sleepCancel: (() => void) | undefined;
  #lockAbort: AbortController | undefined;
  /** Lets go of the lock this reactor holds now (see `pause`). */
  #release: (() => void) | undefined;
  /** Counts turns at the lock: a loop whose turn is over stops before its next event. */
  #turn = 0;
  #paused = false;
  #done: Promise<void> = Promise.resolve();
  #onStop: () => void;

  constructor(host: ReactorHost, spec: ReactorSpec, onStop: () => void) {
    this.#host = host;
    this.#spec = spec;
    this.#types = new Set(spec.on);
    this.#onStop = onStop;
  }

  get name(): string {
    return this.#spec.name;
  }

  start(): void {
    const turn = ++this.#turn;
    const previous = this.#done;
    const run = this.#run(turn).catch((error: unknown) => this.#report(error));
    // stop() waits for a paused turn's loop too: it may still be finishing its event.
    this.#done = Promise.all([previous, run]).then(() => undefined);
  }

  #report(error: unknown): void {
    if (!this.#stopped && !this.#host.isClosed()) this.#host.reportError(error);
  }

  /**
   * The page froze: leave the lock (or its queue) now, so that another tab runs this
   * reactor; the loop here stops before its next event. The event in hand may then be
   * handled twice: its commands' ids make the second time write nothing.
   */
  pause(): void {
    if (this.#stopped || this.#paused) return;
    this.#paused = true;
    this.#turn += 1;
    this.#lockAbort?.abort();
    this.#lockAbort = undefined;
    this.#release?.();
    this.#release = undefined;
    this.#sleepCancel?.();
    this.wake();
  }

  /** The page resumed: queue for the lock again. */
  resume(): void {
    if (this.#stopped || !this.#paused) return;
    this.#paused = false;
    this.start();
  }

  /** New events may be there. */
  wake(): void {
    this.#woken = true;
    this.#idle = false;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  idle(): Promise<void> {
    if (this.#stopped || (this.#idle && this.position >= this.#host.limit())) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.#lockAbort?.abort();
      this.#sleepCancel?.();
      this.wake();
      this.#settleIdle();
      this.#onStop();
    }
    return this.#done;
  }

  #settleIdle(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  async #run(turn: number): Promise<void> {
    const locks = webLocks();
    if (!locks) return this.#loop(turn);
    const abort = new AbortController();
    this.#lockAbort = abort;
    // Settles when the turn must end at once (pause): the lock goes then, not when the loop ends.
    const released = new Promise<void>((resolve) => {
      this.#release = resolve;
    });
    const lock = `annals-react:${this.#host.storeName}:${this.#spec.name}`;
    try {
      await locks.request(lock, { signal: abort.signal }, () =>
        Promise.race([this.#loop(turn).catch((error: unknown) => this.#report(error)), released]),
      );
    } catch (error) {
      if (!abort.signal.aborted) throw error;
    }
  }

  /** This turn is over: stopped, or paused (and maybe resumed as a new turn). */
  #over(turn: number): boolean {
    return this.#stopped || turn !== this.#turn || this.#host.isClosed();
  }

  #waitForWake(): Promise<void> {
    if (this.#woken || this.#stopped) {
      this.#woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.#wake = () => {
        this.#woken = false;
        resolve();
      };
    });
  }

  async #loop(turn: number): Promise<void> {
    if (this.#over(turn)) return;
    const host = this.#host;
    const name = this.#spec.name;
    let generation = host.generation();
    const saved = await host.loadCheckpoint(name);
    let persisted = saved ?? -1;
    this.position = saved ?? (this.#spec.startAt === "end" ? host.limit() : 0);
    const single = this.#spec.on.length === 1 ? this.#spec.on[0] : undefined;
    while (!this.#over(turn)) {
      if (host.generation() !== generation) {
        // The confirmed log restarted (a new server epoch): its positions mean other events.
        generation = host.generation();
        this.position = 0;
        persisted = -1;
      }
      const limit = host.limit();
      if (this.position > limit) this.position = limit;
      if (this.position >= limit) {
        if (persisted !== this.position) {
          await host.saveCheckpoint(name, this.position);
          persisted = this.position;
          continue; // look again: events may have come while saving
        }
        this.#idle = true;
        this.#settleIdle();
        await this.#waitForWake();
        continue;
      }
      this.#idle = false;
      const events = host.read(this.position, limit, CHUNK, single);
      if (events.length === 0) {
        this.position = limit; // nothing of this type up to the limit
        continue;
      }
      let completed = true;
      for (const event of events) {
        if (this.#over(turn) || host.generation() !== generation) {
          completed = false;
          break;
        }
        if (this.#types.has(event.type)) {
          if (!(await this.#handle(event, turn))) {
            completed = false;
            break;
          }
          this.position = event.position;
          await host.saveCheckpoint(name, this.position);
          persisted = this.position;
        } else {
          this.position = event.position;
        }
      }
      if (completed && single !== undefined && events.length < CHUNK && host.generation() === generation) {
        this.position = Math.max(this.position, limit); // the typed read saw everything up to the limit
      }
    }
    this.#settleIdle();
  }

  /** Runs the handler and its commands until they succeed; false when the turn ends first. */
  async #handle(event: AnnalsEvent, turn: number): Promise<boolean> {
    const host = this.#host;
    const name = this.#spec.name;
    let attempt = 0;
    while (!this.#over(turn)) {
      try {
        const commands = (await this.#spec.handle(event)) ?? [];
        if (!Array.isArray(commands)) {
          throw new AnnalsError("INVALID_ARGUMENT", "a reactor's handle must return an array of commands, or nothing");
        }
        const context = causedBy(event);
        for (let i = 0; i < commands.length; i++) {
          const request = commands[i] as CommandRequest;
          try {
            await host.execute(request, { ...context, commandId: `${name}:${event.id}:${i}` });
          } catch (error) {
            // decide refused: a business answer, not a failure to retry; report it and go on.
            if (isAnnalsError(error, "COMMAND_REJECTED")) host.reportError(new ReactorError(name, event, 1, -1, error));
            else throw error;
          }
        }
        return true;
      } catch (error) {
        if (this.#over(turn)) return false;
        attempt += 1;
        const ceiling = Math.min(this.#spec.maxMs, this.#spec.initialMs * 2 ** Math.min(attempt - 1, 30));
        const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
        host.reportError(new ReactorError(name, event, attempt, delay, error));
        await this.#sleep(delay);
      }
    }
    return false;
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#sleepCancel = done;
    });
  }
}
