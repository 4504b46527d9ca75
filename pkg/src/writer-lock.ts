// The writer lock of an IndexedDB store (Web Lock `annals-writer:<name>`): the tab that holds
// it is the store's only writer, so the core writes without first reading what other tabs
// wrote, and an append is one `put` (src/storage/indexeddb.rs). The holder keeps it between
// writes and lets go when another tab asks for it (a message on `annals-writer:<name>`), when
// the page freezes, when the store closes, and after IDLE_MS without a write (a tab that
// cannot ask, having no BroadcastChannel or its messages held up, waits at most that long);
// a tab that wants it asks again every ASK_AGAIN_MS while it waits, so that an ask sent before
// the holder took the lock is not lost.

import type { LockManagerLike } from "./reactor.js";
import type { ChannelLike } from "./tabs.js";

/** How often a tab waiting for the lock asks the holder again. */
export const ASK_AGAIN_MS = 100;

/** How long the holder keeps the lock without a write. */
export const IDLE_MS = 200;

/** The lock as the core uses it (src/wasm/storage.rs). */
export interface WasmWriterLock {
  /**
   * The lease when the lock is held: the write counts as in flight until `leave()`. Else a
   * promise that settles once it is held, after which the core enters again (a write
   * dropped while it waited so counts for nothing).
   */
  enter(): number | Promise<unknown>;
  /** The write `enter` counted is over. */
  leave(): void;
}

/** The lock for IndexedDB store `name`, where the platform has Web Locks; else none (then no tab has one, and the core reads before every write). */
export function writerLockFor(name: string, locks: LockManagerLike | undefined): WriterLock | undefined {
  if (!locks) return undefined;
  let channel: ChannelLike | undefined;
  if (typeof BroadcastChannel !== "undefined") {
    const opened = new BroadcastChannel(`annals-writer:${name}`);
    (opened as { unref?: () => void }).unref?.();
    channel = opened;
  }
  return new WriterLock(name, locks, channel);
}

export class WriterLock implements WasmWriterLock {
  readonly #lockName: string;
  readonly #locks: LockManagerLike;
  readonly #channel: ChannelLike | undefined;
  #closed = false;
  /** Frozen: out of the lock's queue (a frozen page granted the lock would block every tab). */
  #paused = false;
  /** Bumped each time the lock is taken: the core reads again under a new lease. */
  #lease = 0;
  /** Resolves the lock's callback, letting go; set while held. */
  #release: (() => void) | undefined;
  /** What writes waiting for the lock wait on, and how it ends. */
  #waiting: { promise: Promise<void>; granted: () => void; failed: (error: unknown) => void } | undefined;
  /** Withdraws the request in the lock's queue, while there is one. */
  #withdraw: AbortController | undefined;
  /** Writes entered under the current lease and not left yet. */
  #inFlight = 0;
  /** Let go once no write is in flight (another tab asked, or the page froze). */
  #yielding = false;
  /** Counts writes entered: the idle timer lets go only if none entered since it was set. */
  #entered = 0;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(name: string, locks: LockManagerLike, channel: ChannelLike | undefined) {
    this.#lockName = `annals-writer:${name}`;
    this.#locks = locks;
    this.#channel = channel;
    if (channel) {
      channel.onmessage = (message: MessageEvent) => {
        if ((message.data as { kind?: unknown } | null)?.kind === "writer?") this.yield();
      };
    }
  }

  get held(): boolean {
    return this.#release !== undefined;
  }

  enter(): number | Promise<unknown> {
    if (this.#release && !this.#yielding) {
      this.#inFlight += 1;
      this.#entered += 1;
      return this.#lease;
    }
    if (this.#closed) return Promise.reject(abortError());
    if (!this.#waiting) {
      let granted!: () => void;
      let failed!: (error: unknown) => void;
      const promise = new Promise<void>((resolve, reject) => {
        granted = resolve;
        failed = reject;
      });
      this.#waiting = { promise, granted, failed };
      if (!this.#paused) this.#request();
    }
    return this.#waiting.promise;
  }

  leave(): void {
    this.#inFlight = Math.max(0, this.#inFlight - 1);
    this.#letGoIfIdle();
    this.#letGoLater();
  }

  /** Another tab asked: lets go as soon as no write is in flight; a later write takes the lock again. */
  yield(): void {
    if (!this.#release) return;
    this.#yielding = true;
    this.#letGoIfIdle();
  }

  /** The page froze: lets go when idle, and leaves the lock's queue until `resume`. */
  pause(): void {
    this.#paused = true;
    this.yield();
    this.#withdraw?.abort();
    this.#withdraw = undefined;
  }

  /** The page resumed: the writes that waited ask for the lock again. */
  resume(): void {
    this.#paused = false;
    if (this.#waiting && !this.#withdraw) this.#request();
  }

  /** The store closed: lets go and stops asking; a write still waiting fails (`AbortError`). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#idleTimer);
    this.#withdraw?.abort();
    this.#withdraw = undefined;
    this.#release?.();
    this.#release = undefined;
    this.#channel?.close();
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.failed(abortError());
  }

  /** Lets go after IDLE_MS if no write entered meanwhile (one timer at a time). */
  #letGoLater(): void {
    if (!this.#release || this.#idleTimer !== undefined) return;
    const entered = this.#entered;
    const timer = setTimeout(() => {
      this.#idleTimer = undefined;
      if (this.#entered === entered && this.#inFlight === 0) this.yield();
      else this.#letGoLater();
    }, IDLE_MS);
    // Node: the timer must not keep the process alive.
    (timer as { unref?: () => void }).unref?.();
    this.#idleTimer = timer;
  }

  #letGoIfIdle(): void {
    if (!this.#release || !this.#yielding || this.#inFlight > 0) return;
    const release = this.#release;
    this.#release = undefined;
    release();
  }

  /** Queues for the lock, asking the holder for it now and every ASK_AGAIN_MS until granted. */
  #request(): void {
    const withdraw = new AbortController();
    this.#withdraw = withdraw;
    const ask = (): void => this.#channel?.postMessage({ kind: "writer?" });
    ask();
    const asking = setInterval(ask, ASK_AGAIN_MS);
    const stopAsking = (): void => {
      clearInterval(asking);
      if (this.#withdraw === withdraw) this.#withdraw = undefined;
    };
    this.#locks
      .request(this.#lockName, { signal: withdraw.signal }, () => {
        stopAsking();
        // Granted as the page froze or the store closed, or held already: let go at once.
        if (this.#paused || this.#closed || !this.#waiting || this.#release) return Promise.resolve();
        return this.#hold();
      })
      .catch((error: unknown) => {
        stopAsking();
        // Withdrawn for a freeze: the writes wait for `resume`. Closed: they failed already.
        if (withdraw.signal.aborted) return;
        const waiting = this.#waiting;
        this.#waiting = undefined;
        waiting?.failed(error);
      });
  }

  /**
   * Takes the lock if nobody holds it, without waiting (as the store opens): the first write
   * then finds it held instead of asking for it.
   */
  prime(): void {
    if (this.#release || this.#waiting || this.#paused || this.#closed) return;
    this.#locks
      .request(this.#lockName, { ifAvailable: true }, (lock) => {
        if (lock === null || this.#release || this.#paused || this.#closed) return Promise.resolve();
        return this.#hold();
      })
      .catch(() => undefined);
  }

  /** The lock was granted: a new lease; the writes that waited go on. Resolves when let go. */
  #hold(): Promise<void> {
    this.#lease += 1;
    this.#yielding = false;
    // Held until asked for, frozen or closed (see the module comment).
    const held = new Promise<void>((release) => {
      this.#release = release;
    });
    // A request of this tab's still queued (the lock came another way) is withdrawn.
    this.#withdraw?.abort();
    this.#withdraw = undefined;
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.granted();
    this.#yieldIfOthersWait();
    this.#letGoLater();
    return held;
  }

  /** An ask sent before this tab held the lock reached nobody: whoever queued since gets it next. */
  #yieldIfOthersWait(): void {
    const query = this.#locks.query?.bind(this.#locks);
    if (!query) return;
    query().then(
      (state) => {
        if (state.pending?.some((lock) => lock.name === this.#lockName)) this.yield();
      },
      () => undefined,
    );
  }
}

function abortError(): Error {
  const error = new Error("the store closed while this write waited for the writer lock");
  error.name = "AbortError";
  return error;
}
