// The core opens lazily (the projections' snapshots decide which events are read first);
// the rest of the log is read and indexed in the background, a step per task, so that the
// app's first reads come before it. Reads that need the whole log wait for `whenComplete`.

import { fromWasmError } from "./errors.js";
import type { WasmStoreHandle } from "./wasm-contract.js";

export interface CompletionHost {
  readonly core: Pick<WasmStoreHandle, "isComplete" | "loadStep" | "complete">;
  isClosed(): boolean;
  reportError(error: unknown): void;
}

export class LogCompletion {
  readonly #host: CompletionHost;
  #done: Promise<void> = Promise.resolve();

  constructor(host: CompletionHost) {
    this.#host = host;
  }

  /** Reads the events the open left out, a step per task, until done or the store closes. */
  start(): void {
    const { core } = this.#host;
    if (core.isComplete) return;
    const run = async () => {
      // A task boundary before each step: the app gets its first `get` (and everything
      // else it queued) before the core reads and indexes.
      do await new Promise((resolve) => setTimeout(resolve, 0));
      while (!this.#host.isClosed() && !((await core.loadStep().catch(rethrow)) as boolean));
    };
    this.#done = run();
    this.#done.catch((error: unknown) => {
      if (!this.#host.isClosed()) this.#host.reportError(error);
    });
  }

  /** Resolves once the core holds and indexes the whole log. */
  async whenComplete(): Promise<void> {
    const { core } = this.#host;
    if (core.isComplete) return;
    try {
      await this.#done;
    } catch {
      // Reported already; try again here so that the caller sees the error.
    }
    if (!core.isComplete) await core.complete().catch(rethrow);
  }
}

function rethrow(error: unknown): never {
  throw fromWasmError(error);
}
