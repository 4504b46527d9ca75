// Messages between the tabs of one store over a BroadcastChannel. Every message carries the
// protocol version `v`: a tab built from another annals version may share the channel, and a
// message whose shape this tab does not know must be ignored (and reported), never misread.
// While the page is frozen, messages are held (few of them) and acted on when it resumes.

import { AnnalsError, fromWasmError, isAnnalsError } from "./errors.js";
import { randomUuid } from "./ids.js";
import type { TabFingerprints } from "./debug.js";
import type { Rejection, SyncReport } from "./types.js";
import type { CoreSyncStatus } from "./wasm-contract.js";

/** The version of the tab messages below; bump it whenever their shape or meaning changes. */
export const TAB_PROTOCOL_VERSION = 1;

/** How long `ask()` waits for the syncing tab's answer. */
export const SYNC_ANSWER_MS = 30_000;

/** What a tab says (without the version, which `post` adds). */
export type TabMessageBody =
  // `dropped`: where retention cut the log (absent: no cut), so that a cut alone, which moves
  // no head, still makes the other tabs read it.
  | { kind: "change"; head: number; confirmed: number; dropped?: number }
  | { kind: "hello" }
  | { kind: "here"; head: number; confirmed: number }
  | { kind: "status"; status: CoreSyncStatus }
  | { kind: "status?" }
  | { kind: "rejected"; rejection: Rejection }
  | { kind: "sync?"; id: string }
  | { kind: "synced"; id: string; report?: SyncReport; error?: { code: string; message: string } }
  // Time-travel debugging: every other tab answers with its fingerprints of a projection
  // (tabs of an older annals ignore both kinds, as they ignore any kind they do not know).
  | { kind: "fingerprints?"; id: string; name: string; positions: number[] }
  | { kind: "fingerprints"; id: string; tab: string; head: number; fingerprints: (string | null)[] };

/** A message on the channel `annals:<name>`. */
export type TabMessage = TabMessageBody & { v: typeof TAB_PROTOCOL_VERSION };

/** The part of a BroadcastChannel this module uses (tests pass a fake). */
export interface ChannelLike {
  onmessage: ((message: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
}

/** What the tabs module needs from its store. */
export interface TabsHost {
  head(): number;
  confirmedHead(): number;
  /** Confirmed positions up to this one were dropped by retention (0: none). */
  dropped?(): number;
  isClosed(): boolean;
  /** Another tab's heads (or retention cut) differ from this one's: read what it wrote. */
  onPeerHeads(kind: "here" | "change", head: number, confirmed: number): void;
  /** The syncing tab's status, heard by a tab that does not sync. */
  onRemoteStatus(status: CoreSyncStatus): void;
  /** This tab's sync status if it syncs, else undefined. */
  leaderStatus(): CoreSyncStatus | undefined;
  /** A rejection the syncing tab reported. */
  onRemoteRejection(rejection: Rejection): void;
  /** Syncs now if this tab syncs (else undefined): answers another tab's `sync()`. */
  syncHere(): Promise<SyncReport> | undefined;
  /** This tab's fingerprints of projection `name` (null past its head); rejects for an unknown projection. */
  fingerprints(name: string, positions: number[]): Promise<(string | null)[]>;
  reportError(error: unknown): void;
}

interface SyncRequest {
  resolve: (report: SyncReport) => void;
  reject: (error: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** The store's BroadcastChannel, where there is one (Node 18+ and browsers). */
export function openBroadcastChannel(name: string): ChannelLike | undefined {
  if (typeof BroadcastChannel === "undefined") return undefined;
  const channel = new BroadcastChannel(`annals:${name}`);
  // Node: a channel must not keep the process alive.
  (channel as { unref?: () => void }).unref?.();
  return channel;
}

export class Tabs {
  readonly #host: TabsHost;
  #channel: ChannelLike | undefined;
  #announcing: ReturnType<typeof setTimeout> | undefined;
  /** Another tab of this store has been heard from (it then hears of every change). */
  #peers = false;
  /** Frozen: the other tabs' messages, held until the page resumes. */
  #held: TabMessage[] | undefined;
  readonly #requests = new Map<string, SyncRequest>();
  /** Fingerprint questions this tab asked, collecting the answers until their time is up. */
  readonly #fingerprintQuestions = new Map<string, { answers: TabFingerprints[]; done: () => void }>();
  /** Tabs that answered a fingerprint question: a later question is done once they all answer. */
  readonly #answeringTabs = new Set<string>();
  /** How this tab names itself in its answers. */
  readonly #tabId = randomUuid();
  /** Unknown versions reported already (once each: a newer tab sends many messages). */
  readonly #reportedVersions = new Set<unknown>();

  constructor(host: TabsHost, signal: AbortSignal) {
    this.#host = host;
    signal.addEventListener("abort", () => {
      this.#flushChange();
      this.#channel?.close();
      this.#channel = undefined;
      this.#held = undefined;
      for (const [id, request] of this.#requests) {
        clearTimeout(request.timer);
        request.reject(new AnnalsError("CLOSED", "the store is closed"));
        this.#requests.delete(id);
      }
    });
  }

  /** Listens on `channel` and says hello: other tabs answer, and tell of their changes from then on. */
  start(channel: ChannelLike, askStatus: boolean): void {
    this.#channel = channel;
    channel.onmessage = (message: MessageEvent) => this.#receive(message.data);
    this.#post({ kind: "hello" });
    if (askStatus) this.#post({ kind: "status?" });
  }

  get connected(): boolean {
    return this.#channel !== undefined;
  }

  /**
   * Tells the other tabs that the log changed, once per task: posting costs the sender
   * about as much as a small IndexedDB request, so it is kept off the path of the append
   * (or pull) that caused it, and a burst of changes sends one message with the newest heads.
   * Alone (no other tab has shown up), there is nobody to tell: a tab that opens later says
   * hello and hears the heads in the answer.
   */
  announceChange(): void {
    if (this.#announcing !== undefined || !this.#channel || !this.#peers) return;
    this.#announcing = setTimeout(() => this.#flushChange(), 0);
  }

  postStatus(status: CoreSyncStatus): void {
    this.#post({ kind: "status", status });
  }

  postRejection(rejection: Rejection): void {
    this.#post({ kind: "rejected", rejection });
  }

  /** Asks the syncing tab to sync now; resolves with its report. */
  ask(): Promise<SyncReport> {
    if (!this.#channel) {
      return Promise.reject(new AnnalsError("OFFLINE", "no tab syncs this store"));
    }
    const id = randomUuid();
    return new Promise<SyncReport>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#requests.delete(id);
        reject(new AnnalsError("OFFLINE", `the tab that syncs this store did not answer within ${SYNC_ANSWER_MS} ms`));
      }, SYNC_ANSWER_MS);
      this.#requests.set(id, { resolve, reject, timer });
      this.#post({ kind: "sync?", id });
    });
  }

  /**
   * Asks every other tab for its fingerprints of `name` at `positions`; resolves with the
   * answers heard within `timeoutMs` (none when there is no channel).
   */
  askFingerprints(name: string, positions: number[], timeoutMs: number): Promise<TabFingerprints[]> {
    if (!this.#channel) return Promise.resolve([]);
    const id = randomUuid();
    const answers: TabFingerprints[] = [];
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#fingerprintQuestions.delete(id);
        resolve(answers);
      };
      const timer = setTimeout(done, timeoutMs);
      (timer as { unref?: () => void }).unref?.();
      this.#fingerprintQuestions.set(id, { answers, done });
      this.#post({ kind: "fingerprints?", id, name, positions });
    });
  }

  /**
   * The page froze. It still gets messages (Chromium delivers a BroadcastChannel's messages
   * to a frozen page) but must not act on them: a catch-up would open an IndexedDB
   * transaction whose answers the frozen page cannot take in, stalling every other tab's
   * writes until this one resumes.
   */
  hold(): void {
    this.#held ??= [];
  }

  /** The page resumed: acts on the held messages, in order. */
  release(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const message of held) this.#act(message);
  }

  #post(body: TabMessageBody): void {
    if (body.kind !== "change") this.#flushChange(); // keep the order of messages
    try {
      this.#channel?.postMessage({ v: TAB_PROTOCOL_VERSION, ...body });
    } catch (error) {
      this.#host.reportError(error);
    }
  }

  #flushChange(): void {
    if (this.#announcing === undefined) return;
    clearTimeout(this.#announcing);
    this.#announcing = undefined;
    const dropped = this.#host.dropped?.() ?? 0;
    const heads = { head: this.#host.head(), confirmed: this.#host.confirmedHead() };
    this.#post(dropped > 0 ? { kind: "change", ...heads, dropped } : { kind: "change", ...heads });
  }

  #receive(data: unknown): void {
    if (typeof data !== "object" || data === null) return;
    const version = (data as { v?: unknown }).v;
    if (version !== TAB_PROTOCOL_VERSION) {
      this.#reportVersion(version);
      return;
    }
    const message = data as TabMessage;
    const held = this.#held;
    if (!held) {
      this.#act(message);
      return;
    }
    // What is kept stays small however long the freeze: the newest `change`, `status` and
    // `hello` stand for the older ones; questions for the syncing tab are dropped (a frozen
    // tab let go of sync), and so are answers to questions this tab did not ask.
    switch (message.kind) {
      case "sync?":
      case "status?":
      case "fingerprints?":
      case "fingerprints":
        return;
      case "synced":
        if (!this.#requests.has(message.id)) return;
        break;
      case "change":
      case "status":
      case "hello": {
        const older = held.findIndex((m) => m.kind === message.kind);
        if (older >= 0) held.splice(older, 1);
        break;
      }
      default:
        break;
    }
    held.push(message);
  }

  #reportVersion(version: unknown): void {
    if (this.#host.isClosed() || this.#reportedVersions.has(version)) return;
    this.#reportedVersions.add(version);
    const newer = typeof version === "number" && version > TAB_PROTOCOL_VERSION;
    const which = version === undefined ? "no protocol version (an older annals)" : `protocol version ${JSON.stringify(version)}`;
    this.#host.reportError(
      new AnnalsError(
        newer ? "FORMAT_TOO_NEW" : "CORRUPT",
        `another tab sent a message with ${which}; this tab speaks version ${TAB_PROTOCOL_VERSION}, so it ignores such messages`,
      ),
    );
  }

  #act(message: TabMessage): void {
    const host = this.#host;
    if (host.isClosed()) return;
    this.#peers = true;
    switch (message.kind) {
      case "hello":
        // A tab opened: it learns of this one, and of what this one wrote since it read.
        this.#flushChange();
        this.#post({ kind: "here", head: host.head(), confirmed: host.confirmedHead() });
        return;
      case "here":
      case "change":
        if (
          message.head !== host.head() ||
          message.confirmed !== host.confirmedHead() ||
          (message.kind === "change" && (message.dropped ?? 0) > (host.dropped?.() ?? 0))
        ) {
          host.onPeerHeads(message.kind, message.head, message.confirmed);
        }
        return;
      case "status":
        host.onRemoteStatus(message.status);
        return;
      case "status?": {
        const status = host.leaderStatus();
        if (status) this.#post({ kind: "status", status });
        return;
      }
      case "rejected":
        host.onRemoteRejection(message.rejection);
        return;
      case "sync?":
        void this.#answer(message.id);
        return;
      case "fingerprints?":
        void this.#answerFingerprints(message.id, message.name, message.positions);
        return;
      case "fingerprints": {
        const question = this.#fingerprintQuestions.get(message.id);
        if (!question) return;
        question.answers.push({ tab: message.tab, head: message.head, fingerprints: message.fingerprints });
        const known = this.#answeringTabs.size;
        this.#answeringTabs.add(message.tab);
        // Every tab heard from before has answered (and none is new): nobody else is coming.
        const heard = new Set(question.answers.map((a) => a.tab));
        if (known > 0 && this.#answeringTabs.size === known && heard.size === known) question.done();
        return;
      }
      case "synced": {
        const request = this.#requests.get(message.id);
        if (!request) return;
        this.#requests.delete(message.id);
        clearTimeout(request.timer);
        if (message.error) {
          const { code, message: text } = message.error;
          request.reject(fromWasmError(Object.assign(new Error(text), { name: "AnnalsError", code })));
        } else {
          request.resolve(message.report ?? { pushed: 0, pulled: 0, rejected: 0, restarts: 0 });
        }
        return;
      }
      default:
        return;
    }
  }

  async #answerFingerprints(id: string, name: unknown, positions: unknown): Promise<void> {
    if (typeof name !== "string" || !Array.isArray(positions)) return;
    try {
      const fingerprints = await this.#host.fingerprints(name, positions as number[]);
      this.#post({ kind: "fingerprints", id, tab: this.#tabId, head: this.#host.head(), fingerprints });
    } catch {
      // A tab without that projection (another app on the same store) has nothing to compare.
    }
  }

  async #answer(id: string): Promise<void> {
    const syncing = this.#host.syncHere();
    if (!syncing) return;
    try {
      const report = await syncing;
      this.#post({ kind: "synced", id, report });
    } catch (error) {
      const code = isAnnalsError(error) ? error.code : "SERVER";
      this.#post({ kind: "synced", id, error: { code, message: error instanceof Error ? error.message : String(error) } });
    }
  }
}
