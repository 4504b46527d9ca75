// What the wasm core takes and returns, in one place: every module that talks to the core
// imports these shapes from here, so that declarations generated from the Rust types can
// replace this one file.

import type { AnnalsEvent } from "./types.js";

/** The surface of the wasm `WasmStore` this package uses. */
export interface WasmStoreHandle {
  readonly head: number;
  readonly confirmedHead: number;
  readonly pendingCount: number;
  readonly synced: boolean;
  readonly isComplete: boolean;
  readonly loadedAfter: number;
  loadFrom(after: number): Promise<unknown>;
  readableTo(after: number): number;
  readonly logGeneration: number;
  loadStep(): Promise<unknown>;
  complete(): Promise<unknown>;
  setListener(listener: (json: string | null, error?: unknown) => void): void;
  /** The batch as JSON, UTF-8 encoded. */
  append(batchJson: Uint8Array): Promise<unknown>;
  catchUp(): Promise<unknown>;
  read(queryJson: string): string;
  range(after: number, to: number): string;
  rejected(): Promise<unknown>;
  startSync(configJson: string, onStatus: (json: string) => void, onRejected: (json: string) => void): Promise<unknown>;
  syncNow(): Promise<unknown>;
  syncStatus(): string | undefined;
  setOnline(online: boolean): void;
  wakeSync(): void;
  stopSync(): void;
  putSnapshot(name: string, version: number, position: number, stateJson: string): Promise<unknown>;
  snapshot(name: string): Promise<unknown>;
  deleteSnapshot(name: string): Promise<unknown>;
  compact(): Promise<unknown>;
  /** Called once with "deleted", "upgraded" or "lost" if the IndexedDB connection is taken away. */
  setOnClosed(listener: (reason: string) => void): void;
  /** The outbox as JSON, read from memory (it still reads once the database is gone). */
  outbox(): string;
  close(): Promise<unknown>;
  free(): void;
}

export type WasmOpen = (name: string, storage: string, optionsJson: string) => Promise<WasmStoreHandle>;

/** An outbox entry as the core reports it: what to append again. */
export interface OutboxEvent {
  id: string;
  stream: string;
  type: string;
  data: unknown;
  meta?: Record<string, unknown>;
  expectedVersion?: number | "no_stream" | "exists";
}

/** What the core's listener reports (see `setListener` in src/wasm/mod.rs). */
export interface ChangeMessage {
  seq: number;
  reset: boolean;
  rebased: boolean;
  previousHead: number;
  head: number;
  confirmed: number;
  confirmedEvents: AnnalsEvent[];
  pendingEvents: AnnalsEvent[];
}

export interface AppendReply {
  results: number[];
  duplicates: AnnalsEvent[];
  seq: number | null;
}

export interface SnapshotReply {
  version: number;
  position: number;
  state: unknown;
}

/** The core's sync status (the wrapper adds `leader`). */
export interface CoreSyncStatus {
  online: boolean;
  syncing: boolean;
  pending: number;
  lastPulled: number;
  lastError: string | null;
  lastErrorCode: string | null;
}

export interface Checkpoint {
  position: number;
  /** JSON, so that later mutation of a state cannot change it. */
  json: string;
}
