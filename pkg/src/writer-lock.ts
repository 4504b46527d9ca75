// The writer lock of an IndexedDB store (Web Lock `annals-writer:<name>`): the tab that holds
// it is the store's only writer, so the core writes without first reading what other tabs
// wrote, and an append is one `put` (src/storage/indexeddb.rs). The holder keeps it between
// writes and lets go when another tab asks for it (a message on `annals-writer:<name>`), when
// the page freezes, and when the store closes; a tab that wants it asks again every
// ASK_AGAIN_MS while it waits, so that an ask sent before the holder took the lock is not lost.

import type { LockManagerLike } from "./reactor.js";
import type { ChannelLike } from "./tabs.js";

/** How often a tab waiting for the lock asks the holder again. */
export const ASK_AGAIN_MS = 100;

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
  readonly #abort = new AbortController();
  /** Bumped each time the lock is taken: the core reads again under a new lease. */
  #lease = 0;
  /** Resolves the lock's callback, letting go; set while held. */
  #release: (() => void) | undefined;
  /** The wait for the lock, while this tab asks for it. */
  #taking: Promise<number> | undefined;
  /** Writes entered under the current lease and not left yet. */
  #inFlight = 0;
  /** Let go once no write is in flight (another tab asked, or the page froze). */
  #yielding = false;

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
      return this.#lease;
    }
    return this.#take();
  }

  leave(): void {
    this.#inFlight = Math.max(0, this.#inFlight - 1);
    this.#letGoIfIdle();
  }

  /** Lets go as soon as no write is in flight; a later write takes the lock again. */
  yield(): void {
    if (!this.#release) return;
    this.#yielding = true;
    this.#letGoIfIdle();
  }

  /** The store closed: lets go and stops asking; a write still waiting fails (`AbortError`). */
  close(): void {
    this.#abort.abort();
    this.#release?.();
    this.#release = undefined;
    this.#channel?.close();
  }

  #letGoIfIdle(): void {
    if (!this.#release || !this.#yielding || this.#inFlight > 0) return;
    const release = this.#release;
    this.#release = undefined;
    release();
  }

  #take(): Promise<number> {
    if (this.#taking) return this.#taking;
    const ask = (): void => this.#channel?.postMessage({ kind: "writer?" });
    ask();
    const asking = setInterval(ask, ASK_AGAIN_MS);
    const taking = new Promise<number>((resolve, reject) => {
      this.#locks
        .request(this.#lockName, { signal: this.#abort.signal }, () => {
          clearInterval(asking);
          this.#taking = undefined;
          this.#lease += 1;
          this.#yielding = false;
          resolve(this.#lease);
          // Held until asked for, frozen or closed (see the module comment).
          return new Promise<void>((release) => {
            this.#release = release;
          });
        })
        .catch((error: unknown) => {
          clearInterval(asking);
          this.#taking = undefined;
          reject(error);
        });
    });
    this.#taking = taking;
    return taking;
  }
}
