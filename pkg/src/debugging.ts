// The store's debugging surface: bug bundles written and opened, replicas folded from a
// bundle or from the server's log, this tab's fingerprints for another tab's divergence
// search, and the `DebugAccess` the devtools read. It sees its store through a small host;
// the store makes the replicas (only it can open a store and append events as stored).

import { bundleText, defaultFingerprintEvery, fillFromBundle, readBundle, writeBundle } from "./bundle.js";
import type { DebugAccess, TabFingerprints } from "./debug.js";
import { invalidArgument, wholeNumber } from "./options.js";
import { readAcrossCut } from "./retention.js";
import { pullServerLog } from "./server-log.js";
import type { AnnalsEvent, ExportBundleOptions, OpenedBundle, Store, SyncOptions } from "./types.js";

/** A fresh memory store with the app's definitions, and what filling it needs. */
export interface Replica {
  store: Store;
  projections(): { name: string; version: number }[];
  /** Appends events as stored elsewhere: their ids, times, origins and schema versions kept. */
  appendStored(events: readonly AnnalsEvent[]): Promise<unknown>;
  fingerprints(name: string, positions: number[]): Promise<string[]>;
}

/** What debugging needs from its store. */
export interface DebuggingHost {
  readonly name: string;
  readonly sync: SyncOptions | undefined;
  annalsVersion(): string;
  head(): number;
  confirmedHead(): number;
  checkOpen(): void;
  whenComplete(): Promise<void>;
  projections(): { name: string; version: number }[];
  /** Throws INVALID_ARGUMENT for a projection the store does not have. */
  checkProjection(name: string): void;
  fingerprints(name: string, positions: readonly number[], skip?: readonly string[]): Promise<string[]>;
  checkpointStats(name: string): { count: number; bytes: number; budgetBytes: number };
  /** Events `after + 1 ..= to` as the app reads them (upcast). */
  range(after: number, to: number): AnnalsEvent[];
  /** Events `after + 1 ..= to` as stored. */
  storedRange(after: number, to: number): AnnalsEvent[];
  /** The last position retention dropped here (0: none). */
  dropped(): number;
  /** Events `after + 1 ..= to`, all dropped here, as stored, from the sync server (else NOT_RETAINED). */
  fetchStored(after: number, to: number, what: string): Promise<AnnalsEvent[]>;
  askTabs(name: string, positions: number[], timeoutMs: number): Promise<TabFingerprints[]>;
  openReplica(name: string): Promise<Replica>;
}

export class Debugging {
  readonly #host: DebuggingHost;

  constructor(host: DebuggingHost) {
    this.#host = host;
  }

  async exportBundle(options: ExportBundleOptions = {}): Promise<string> {
    const host = this.#host;
    host.checkOpen();
    if (typeof options !== "object" || options === null) throw invalidArgument("exportBundle's options must be an object");
    await host.whenComplete();
    const head = host.head();
    const every =
      options.fingerprintEvery === undefined
        ? defaultFingerprintEvery(head)
        : Math.max(1, wholeNumber("fingerprintEvery", options.fingerprintEvery));
    return writeBundle(
      {
        name: host.name,
        annalsVersion: host.annalsVersion(),
        head,
        confirmedHead: host.confirmedHead(),
        projections: host.projections(),
        // What retention dropped here comes from the sync server.
        range: async (after, to) => {
          const { fetched, held } = await readAcrossCut(
            after,
            Math.min(to, head),
            () => host.dropped(),
            (from, end) => host.fetchStored(from, end, "exportBundle"),
            (from, end) => host.storedRange(from, end),
          );
          return fetched.concat(held);
        },
        fingerprints: (name, positions) => host.fingerprints(name, positions),
      },
      every,
    );
  }

  /** This tab's fingerprints for another tab's divergence search (null past this tab's head). */
  async peerFingerprints(name: string, positions: number[]): Promise<(string | null)[]> {
    const head = this.#host.head();
    const known = positions.filter((p) => Number.isSafeInteger(p) && p >= 0 && p <= head);
    const fingerprints = await this.#host.fingerprints(name, known);
    const byPosition = new Map(known.map((p, i) => [p, fingerprints[i]!]));
    return positions.map((p) => byPosition.get(p) ?? null);
  }

  async #openBundle(bundle: string | Blob): Promise<OpenedBundle> {
    const { header, events } = readBundle(await bundleText(bundle));
    const replica = await this.#host.openReplica(`bundle:${header.store}`);
    try {
      return await fillFromBundle(
        {
          store: replica.store,
          projections: replica.projections(),
          appendStored: (batch) => replica.appendStored(batch),
          fingerprints: (name, positions) => replica.fingerprints(name, positions),
        },
        header,
        events,
      );
    } catch (error) {
      await replica.store.close();
      throw error;
    }
  }

  async #serverReplica(): Promise<Store> {
    const sync = this.#host.sync;
    if (!sync) throw invalidArgument("this store was opened without `sync` options: there is no server log to compare with");
    const replica = await this.#host.openReplica(`server:${sync.store}`);
    try {
      await pullServerLog(sync, (events) => replica.appendStored(events).then(() => undefined));
    } catch (error) {
      await replica.store.close();
      throw error;
    }
    return replica.store;
  }

  /** What `annals/devtools` sees of the store (see debug.ts). */
  access(): DebugAccess {
    const host = this.#host;
    return {
      synced: host.sync !== undefined,
      projections: () => host.projections(),
      range: (after, to) => {
        host.checkOpen();
        return host.range(wholeNumber("after", after), Math.min(wholeNumber("to", to), host.head()));
      },
      whenComplete: () => host.whenComplete(),
      fingerprints: (name, positions, skip) => host.fingerprints(name, positions, skip),
      tabFingerprints: (name, positions, timeoutMs = 2_000) => {
        host.checkOpen();
        host.checkProjection(name);
        return host.askTabs(name, [...positions], timeoutMs);
      },
      serverReplica: () => this.#serverReplica(),
      openBundle: (bundle) => this.#openBundle(bundle),
      checkpointStats: (name) => host.checkpointStats(name),
    };
  }
}
