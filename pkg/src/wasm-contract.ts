// The wasm core as the TypeScript runtime sees it: the handle `WasmStore.open` resolves
// to, the free functions and the `CheckpointPlan` class the core exports, and (re-exported
// from ./generated/contract.ts) the JSON shapes of its replies and messages. Those shapes
// are generated from the Rust types in src/contract.rs by scripts/build-pkg.sh: change the
// Rust type, never the TS one. Every `string` reply below is `JSON.stringify` of the named
// type.

import type { WasmWriterLock } from "./writer-lock.js";

export type { WasmWriterLock };

export type {
  AppendReply,
  ChangeMessage,
  CommandPlanRequest,
  CommandResultReply,
  CompactionReply,
  CoreSyncStatus,
  DecidedEvent,
  OutboxEvent,
  PlannedEvent,
  RejectionMessage,
  SnapshotReply,
  SyncReportReply,
  WasmOpenOptions,
  WasmSyncAuth,
  WasmSyncConfig,
} from "./generated/contract.js";
export { ANNALS_ERROR_CODES, SERVER_ERROR_CODES } from "./generated/error-codes.js";
export type { AnnalsErrorCode, ServerErrorCode } from "./generated/error-codes.js";

/** One open store in the core (`WasmStore` in src/wasm/mod.rs). */
export interface WasmStoreHandle {
  readonly head: number;
  readonly confirmedHead: number;
  readonly pendingCount: number;
  readonly synced: boolean;
  readonly clientId: string | undefined;
  readonly isClosed: boolean;
  readonly isComplete: boolean;
  readonly loadedAfter: number;
  loadFrom(after: number): Promise<unknown>;
  readableTo(after: number): number;
  readonly logGeneration: number;
  loadStep(): Promise<unknown>;
  complete(): Promise<unknown>;
  /** `json` is a `ChangeMessage`. */
  setListener(listener: (json: string | null, error?: unknown) => void): void;
  /**
   * A view of `len` bytes of wasm memory to write a batch's UTF-8 into (`encodeInto`) for
   * `append`; good only until the next call into the core.
   */
  inputBuffer(len: number): Uint8Array;
  /**
   * Appends the batch (JSON) in the first `len` bytes of the input buffer, read before
   * this returns; resolves to an `AppendReply` (JSON). `tag`: 0, or a number unique among
   * the appends in flight; the change that carries exactly this batch then comes as its
   * stamps (`ChangeMessage.own`).
   */
  append(len: number, tag: number): Promise<unknown>;
  catchUp(): Promise<unknown>;
  /** An `AnnalsEvent[]` (JSON). */
  read(queryJson: string): string;
  /** An `AnnalsEvent[]` (JSON): positions `after + 1 ..= to`. */
  range(after: number, to: number): string;
  /** The stream's version in this replica (0 when none), from the index; needs the complete log. */
  streamVersion(stream: string): number;
  /** Resolves to a `RejectionMessage[]` (JSON). */
  rejected(): Promise<unknown>;
  /** `configJson` is a `WasmSyncConfig`; `onStatus` hears `CoreSyncStatus`, `onRejected` `RejectionMessage` (JSON). */
  startSync(configJson: string, onStatus: (json: string) => void, onRejected: (json: string) => void): Promise<unknown>;
  /** Resolves to a `SyncReportReply` (JSON). */
  syncNow(): Promise<unknown>;
  /** A `CoreSyncStatus` (JSON), or undefined when sync is not started in this tab. */
  syncStatus(): string | undefined;
  /** `authJson` is a `WasmSyncAuth`: the credentials of the next requests (a refreshed token). */
  setSyncAuth(authJson: string): void;
  setOnline(online: boolean): void;
  wakeSync(): void;
  stopSync(): void;
  putSnapshot(name: string, version: number, position: number, stateJson: string): Promise<unknown>;
  /** Resolves to a `SnapshotReply` (JSON) or undefined. */
  snapshot(name: string): Promise<unknown>;
  deleteSnapshot(name: string): Promise<unknown>;
  /** Resolves to a `CompactionReply` (JSON). */
  compact(): Promise<unknown>;
  /** Confirmed positions up to this one were dropped by retention (0: none). */
  readonly dropped: number;
  /**
   * Retention: drops the confirmed events every listed projection's snapshot (`names[i]` at
   * `versions[i]`) covers, keeping the newest `events`; resolves to the last position dropped, or 0.
   */
  retain(events: number, names: string[], versions: Float64Array): Promise<unknown>;
  /** Called once with "deleted", "upgraded" or "lost" if the IndexedDB connection is taken away. */
  setOnClosed(listener: (reason: string) => void): void;
  /** The outbox as an `OutboxEvent[]` (JSON), read from memory (it still reads once the database is gone). */
  outbox(): string;
  /**
   * What command `commandId` wrote to `stream` before: a `CommandResultReply` (JSON), or
   * undefined when the stream holds none of its events (then decide). Needs `isComplete`.
   */
  commandResult(stream: string, commandId: string): string | undefined;
  /** Where each id stands in the log (pending ones at their provisional positions); 0 where unknown. Needs `isComplete`. */
  positionsOf(ids: string[]): Float64Array | number[];
  close(): Promise<unknown>;
  free(): void;
}

/** `WasmStore.open`: `optionsJson` is a `WasmOpenOptions`; `writer`, the IndexedDB store's writer lock (writer-lock.ts). */
export type WasmOpen = (
  name: string,
  storage: string,
  optionsJson: string,
  writer?: WasmWriterLock,
) => Promise<WasmStoreHandle>;

/**
 * One projection's checkpoint bookkeeping, positions only (src/checkpoints.rs); the
 * runtime keeps the states (as JSON) by position. Per batch of confirmed events folded
 * over `(after, to]`: take checkpoints at `due(after, to)`, then `record` them and drop the
 * states of the positions it returns. `stateAt(target)`: start from `baseFor(target)`
 * (or the initial state), reading the stored snapshot first when `wantsSnapshot(target,
 * base)` and `snapshotTrusted(...)`.
 */
export interface WasmCheckpointPlan {
  /** The current spacing in events (it adapts to the measured costs, and doubles as the log grows). */
  readonly every: number;
  /** What the kept checkpoints weigh together (the sum of the recorded `bytes`). */
  readonly bytes: number;
  /** The most they may weigh together. */
  readonly maxBytes: number;
  /** Positions in `after + 1 ..= to` at which to take a checkpoint, ascending. */
  due(after: number, to: number): Float64Array;
  /** Before a long replay: widens the spacing to what the replay will end with. */
  prepareReplay(from: number, to: number): void;
  /**
   * Records the checkpoints just taken (`bytes[i]`: the JSON length; `costs[i]`: ms of
   * folding per event on the way to it; `takeMs[i]`: ms taking it cost; the last two may be
   * empty). Returns the positions whose states to drop, ascending.
   */
  record(positions: Float64Array, bytes: Float64Array, costs: Float64Array, takeMs: Float64Array): Float64Array;
  /** The kept checkpoint nearest at or before `target`, or undefined. */
  baseFor(target: number): number | undefined;
  /** Whether the replay from `base` to `target` is long enough to look at the stored snapshot first. */
  wantsSnapshot(target: number, base: number): boolean;
  /** The kept positions, ascending. */
  positions(): Float64Array;
  /** The confirmed log was reset: forget every checkpoint, back to the first spacing. */
  reset(): void;
  free(): void;
}

/** The free functions and classes of the core module (`pkg/wasm/annals.js`) besides `WasmStore`. */
export interface WasmRules {
  /** The core's `AnnalsError` codes: equal to {@link ANNALS_ERROR_CODES} (checked by a test). */
  errorCodes(): string[];
  /** Ids of events 0 .. count-1 of a command: UUIDv8 from SHA-256("annals:command:<commandId>:<index>"). */
  commandEventIds(commandId: string, count: number): string[];
  /** The batch for a command's decided events: `CommandPlanRequest` JSON in, `PlannedEvent[]` JSON out (what `append` takes). */
  planCommand(requestJson: string): string;
  /** The crate's version, equal to the npm package's (a test checks it). */
  annalsVersion(): string;
  /** The 16-hex-digit fingerprint of a state given as JSON (canonical: keys sorted). */
  fingerprint(stateJson: string): string;
  /** Whether a stored snapshot may stand for the projection's state. */
  snapshotTrusted(version: number, position: number, projectionVersion: number, confirmedHead: number): boolean;
  /** `new CheckpointPlan(every, maxCount, maxBytes)` (0 for a default). */
  CheckpointPlan: new (every: number, maxCount: number, maxBytes: number) => WasmCheckpointPlan;
}

/** A checkpoint the projection runtime keeps: the state at `position`. */
export interface Checkpoint {
  position: number;
  /** JSON, so that later mutation of a state cannot change it. */
  json: string;
}
