// Which tab syncs: one tab per store holds the Web Lock `annals-sync:<name>` and runs the
// core's sync loop while it does. A frozen page runs no script, so holding the lock (or being
// handed it) while frozen would stop every tab from syncing: the tab lets go on `pause` and
// queues again on `resume`. Also the store's sync status, from this tab or the syncing one.

import { fromWasmError } from "./errors.js";
import { checkSyncHeaders, checkSyncToken } from "./options.js";
import { type LockManagerLike, webLocks } from "./reactor.js";
import type { SyncOptions, SyncStatus, SyncStatusError, SyncTokenRequest } from "./types.js";
import type { CoreSyncStatus, WasmStoreHandle, WasmSyncAuth } from "./wasm-contract.js";

/** How long `stopped()` waits for the sync loop to end (a request in flight). */
export const SYNC_STOP_MS = 2_000;

/** The wait before asking the token function again, after the n-th refusal in a row (n ≥ 2; the first is asked at once). */
export function tokenRetryDelay(refusals: number): number {
  return Math.min(TOKEN_RETRY_MAX_MS, 1_000 * 2 ** Math.max(0, refusals - 2));
}
const TOKEN_RETRY_MAX_MS = 60_000;

const AUTH_CODES: ReadonlySet<string> = new Set(["UNAUTHORIZED", "FORBIDDEN"]);

/** Where `online` and `offline` arrive (the window). */
export interface OnlineEvents {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

export type LeaderCore = Pick<
  WasmStoreHandle,
  "startSync" | "stopSync" | "setOnline" | "syncStatus" | "wakeSync" | "setSyncAuth"
>;

/** What the leader needs from its store. */
export interface LeaderHost {
  readonly storeName: string;
  readonly core: LeaderCore;
  head(): number;
  confirmedHead(): number;
  isClosed(): boolean;
  /** This tab's sync status changed while it syncs: tell the other tabs. */
  broadcastStatus(status: CoreSyncStatus): void;
  /** The core refused a pending event (JSON of a Rejection). */
  onRejected(json: string): void;
  /** The status apps see changed. */
  onStatus(status: SyncStatus): void;
  reportError(error: unknown): void;
}

/** The platform, looked up when needed (as the browser's can change), replaceable in tests. */
export interface LeaderPlatform {
  locks(): LockManagerLike | undefined;
  online(): boolean;
  events(): OnlineEvents | undefined;
}

/** `navigator.onLine` where it exists; true elsewhere. */
export function platformOnline(): boolean {
  const nav = (globalThis as { navigator?: { onLine?: unknown } }).navigator;
  return typeof nav?.onLine === "boolean" ? nav.onLine : true;
}

/** The window's online/offline events, where there are any. */
function windowEvents(): OnlineEvents | undefined {
  const target = globalThis as Partial<OnlineEvents>;
  return typeof target.addEventListener === "function" && typeof target.removeEventListener === "function"
    ? (target as OnlineEvents)
    : undefined;
}

export const browserPlatform: LeaderPlatform = { locks: webLocks, online: platformOnline, events: windowEvents };

export class Leader {
  readonly #host: LeaderHost;
  readonly #config: SyncOptions | undefined;
  readonly #platform: LeaderPlatform;
  readonly #signal: AbortSignal;
  #leader = false;
  #leaderStatus: CoreSyncStatus | undefined;
  #remoteStatus: CoreSyncStatus | undefined;
  #statusCache: SyncStatus | undefined;
  #statusKey = "";
  #emittedStatusKey = "";
  #syncLoop: Promise<void> | undefined;
  #lockAbort: AbortController | undefined;
  /** Lets go of the sync lock this tab holds now (see pause). */
  #lockRelease: (() => void) | undefined;
  /** Counts this tab's turns at the lock: a turn that ended leaves a newer one alone. */
  #turn = 0;
  #paused = false;
  /** Token refreshes in a row that did not end in a success (for their backoff). */
  #refusals = 0;
  /** The core's refusal count last acted on: each new refusal asks for a token once. */
  #seenAuthFailures = 0;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  #refreshing = false;

  /** `config` undefined: a store without sync (it never leads; its status says so). */
  constructor(host: LeaderHost, config: SyncOptions | undefined, signal: AbortSignal, platform = browserPlatform) {
    this.#host = host;
    this.#config = config;
    this.#signal = signal;
    this.#platform = platform;
  }

  get isLeader(): boolean {
    return this.#leader;
  }

  /** This tab's core status while it syncs. */
  get leaderStatus(): CoreSyncStatus | undefined {
    return this.#leader ? this.#leaderStatus : undefined;
  }

  /** Queues for the lock and follows online/offline (a synced store), until the signal aborts. */
  start(): void {
    const config = this.#config;
    if (!config || this.#signal.aborted) return;
    const host = this.#host;
    const platform = this.#platform;
    const events = platform.events();
    const onlineChanged = () => {
      if (host.isClosed()) return;
      if (this.#leader) host.core.setOnline(platform.online());
      this.statusChanged();
    };
    events?.addEventListener("online", onlineChanged);
    events?.addEventListener("offline", onlineChanged);
    this.#signal.addEventListener("abort", () => {
      events?.removeEventListener("online", onlineChanged);
      events?.removeEventListener("offline", onlineChanged);
      this.#lockAbort?.abort();
      host.core.stopSync();
    });
    this.#takeTurn(config);
  }

  /** Ends this tab's turn at once: its sync client sends nothing more, and the lock (or its queue) is left. */
  pause(): void {
    if (!this.#config) return;
    this.#paused = true;
    this.#turn += 1;
    this.#lockAbort?.abort();
    this.#lockAbort = undefined;
    this.#lockRelease?.();
    this.#lockRelease = undefined;
    if (this.#leader) {
      this.#host.core.stopSync();
      this.#endLeadership();
    }
  }

  /** Queues for the lock again after `pause`. */
  resume(): void {
    if (this.#config && this.#paused) {
      this.#paused = false;
      this.#takeTurn(this.#config);
    }
  }

  /** Another tab wrote, or this one did: the syncing tab pushes it now. */
  wake(): void {
    if (this.#leader && !this.#host.isClosed()) this.#host.core.wakeSync();
  }

  /** The syncing tab's status, heard over the channel (ignored while this tab syncs). */
  setRemoteStatus(status: CoreSyncStatus): void {
    if (this.#leader) return;
    this.#remoteStatus = status;
    this.statusChanged();
  }

  /** Resolves when the sync loop ended, or after SYNC_STOP_MS (a request still in flight). */
  async stopped(): Promise<void> {
    if (!this.#syncLoop) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#syncLoop, new Promise((resolve) => (timer = setTimeout(resolve, SYNC_STOP_MS)))]);
    clearTimeout(timer);
  }

  /** The status apps see; the same object while nothing in it changes. */
  get status(): SyncStatus {
    const status = this.#computeStatus();
    const key = JSON.stringify(status);
    if (key !== this.#statusKey || !this.#statusCache) {
      this.#statusKey = key;
      this.#statusCache = Object.freeze(status);
    }
    return this.#statusCache;
  }

  /** Tells the host if the status changed since it last heard. */
  statusChanged(): void {
    if (!this.#config) return;
    const status = this.status;
    if (this.#statusKey === this.#emittedStatusKey) return;
    this.#emittedStatusKey = this.#statusKey;
    this.#host.onStatus(status);
  }

  #computeStatus(): SyncStatus {
    const confirmedHead = this.#host.confirmedHead();
    const pending = this.#host.head() - confirmedHead;
    if (!this.#config) {
      return {
        online: false,
        syncing: false,
        pending,
        lastPulled: confirmedHead,
        lastError: null,
        lastErrorCode: null,
        error: null,
        leader: false,
      };
    }
    const base = this.#leader ? this.#leaderStatus : this.#remoteStatus;
    const error: SyncStatusError | null =
      base?.lastErrorCode != null ? { code: base.lastErrorCode, message: base.lastError ?? base.lastErrorCode } : null;
    return {
      online: (base?.online ?? false) && this.#platform.online(),
      syncing: base?.syncing ?? false,
      pending,
      lastPulled: base?.lastPulled ?? confirmedHead,
      lastError: base?.lastError ?? null,
      lastErrorCode: base?.lastErrorCode ?? null,
      error,
      leader: this.#leader,
    };
  }

  /** Queues for the store's sync lock (without Web Locks, syncs at once) and syncs while holding it. */
  #takeTurn(config: SyncOptions): void {
    const host = this.#host;
    const turn = ++this.#turn;
    const run = async (): Promise<void> => {
      if (host.isClosed() || turn !== this.#turn) return;
      // A token function that fails at start leaves the token empty: the server refuses it,
      // and the refusal asks the function again (with backoff).
      const auth = await this.#credentials(config, { reason: "start" }).catch((error: unknown) => {
        host.reportError(error);
        return { token: "" } satisfies WasmSyncAuth;
      });
      if (host.isClosed() || turn !== this.#turn) return;
      this.#refusals = 0;
      this.#seenAuthFailures = 0;
      let loop: Promise<unknown>;
      // `onMismatch` was for the open (the core checked the database's server store then).
      const { onMismatch: _onMismatch, ...wire } = config;
      try {
        loop = host.core.startSync(
          JSON.stringify({ ...wire, ...auth }),
          (json) => {
            if (turn === this.#turn) this.#onLeaderStatus(json, turn);
          },
          (json) => host.onRejected(json),
        );
      } catch (error) {
        host.reportError(fromWasmError(error));
        return;
      }
      this.#leader = true;
      host.core.setOnline(this.#platform.online());
      const status = host.core.syncStatus();
      if (status) this.#leaderStatus = JSON.parse(status) as CoreSyncStatus;
      this.statusChanged();
      if (this.#leaderStatus) host.broadcastStatus(this.#leaderStatus);
      try {
        await loop;
      } catch (error) {
        if (!host.isClosed()) host.reportError(fromWasmError(error));
      } finally {
        if (turn === this.#turn) this.#endLeadership();
      }
    };
    const locks = this.#platform.locks();
    if (!locks) {
      this.#syncLoop = run();
      return;
    }
    const abort = new AbortController();
    this.#lockAbort = abort;
    // Settles when this turn must end at once (pause): the lock is released then, even while
    // the loop still waits for an answer that a frozen page cannot take in.
    const released = new Promise<void>((resolve) => {
      this.#lockRelease = resolve;
    });
    this.#syncLoop = locks
      .request(`annals-sync:${host.storeName}`, { signal: abort.signal }, () => Promise.race([run(), released]))
      .then(
        () => undefined,
        (error: unknown) => {
          if (!abort.signal.aborted && !host.isClosed()) host.reportError(error);
        },
      )
      .finally(() => {
        if (turn === this.#turn) this.#lockRelease = undefined;
      });
  }

  /** The token and headers to send now: the options' values, or what their functions give. */
  async #credentials(config: SyncOptions, request: SyncTokenRequest): Promise<WasmSyncAuth> {
    const [token, headers] = await Promise.all([
      typeof config.token === "function" ? config.token(request) : config.token,
      typeof config.headers === "function" ? config.headers(request) : config.headers,
    ]);
    const auth: WasmSyncAuth = { token: checkSyncToken(token) };
    if (headers !== undefined) auth.headers = checkSyncHeaders(headers);
    return auth;
  }

  /** The core counted another refused token: ask the functions for new credentials, once per refusal, with backoff. */
  #onAuthStatus(status: CoreSyncStatus, turn: number): void {
    const failures = status.authFailures;
    if (failures === 0) {
      this.#refusals = 0;
      this.#seenAuthFailures = 0;
      return;
    }
    if (failures <= this.#seenAuthFailures || !AUTH_CODES.has(status.lastErrorCode ?? "")) return;
    this.#seenAuthFailures = failures;
    const config = this.#config;
    if (!config || (typeof config.token !== "function" && typeof config.headers !== "function")) return;
    if (this.#refreshing || this.#refreshTimer !== undefined) return;
    const error: SyncStatusError = { code: status.lastErrorCode ?? "UNAUTHORIZED", message: status.lastError ?? "" };
    this.#scheduleRefresh(config, error, turn);
  }

  #scheduleRefresh(config: SyncOptions, error: SyncStatusError, turn: number): void {
    this.#refusals += 1;
    const refresh = async (): Promise<void> => {
      this.#refreshTimer = undefined;
      if (turn !== this.#turn || !this.#leader || this.#host.isClosed()) return;
      this.#refreshing = true;
      try {
        const auth = await this.#credentials(config, { reason: "refused", error });
        if (turn !== this.#turn || !this.#leader || this.#host.isClosed()) return;
        this.#host.core.setSyncAuth(JSON.stringify(auth));
      } catch (failure) {
        // No request goes out without new credentials, so no refusal will come: try again later.
        if (turn !== this.#turn || this.#host.isClosed()) return;
        this.#host.reportError(failure);
        this.#refreshing = false;
        this.#scheduleRefresh(config, error, turn);
        return;
      } finally {
        this.#refreshing = false;
      }
    };
    const delay = this.#refusals <= 1 ? 0 : tokenRetryDelay(this.#refusals);
    this.#refreshTimer = setTimeout(() => void refresh(), delay);
  }

  #endLeadership(): void {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = undefined;
    this.#leader = false;
    this.#leaderStatus = undefined;
    if (!this.#host.isClosed()) this.statusChanged();
  }

  #onLeaderStatus(json: string, turn: number): void {
    if (this.#host.isClosed()) return;
    try {
      this.#leaderStatus = JSON.parse(json) as CoreSyncStatus;
    } catch (error) {
      this.#host.reportError(error);
      return;
    }
    this.#onAuthStatus(this.#leaderStatus, turn);
    this.#host.broadcastStatus(this.#leaderStatus);
    this.statusChanged();
  }
}
