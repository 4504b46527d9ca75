// Divergence: does this replica fold the log into the same states as the other tabs, and as
// a replica freshly folded from the server's log? Compares fingerprints of every
// projection; where they differ, bisects to the first differing position and shows that
// event (the nondeterministic reducer's input, or where a rebase went wrong).

import { debugAccess } from "../debug.js";
import type { AnnalsEvent } from "../types.js";
import { findFirstDivergence, type BisectResult, type FingerprintOracle } from "./bisect.js";
import { h, replaceChildren } from "./dom.js";
import { diffView } from "./diff-view.js";
import { formatCount, shortId } from "./format.js";
import type { Source } from "./model.js";
import type { DiffFunction } from "./travel.js";

export interface DivergenceFinding {
  peer: string;
  projection: string;
  /** Compared up to this position. */
  to: number;
  result: BisectResult;
  /** This replica's event at the first differing position. */
  event?: AnnalsEvent | undefined;
  /** The peer's event there, when it can tell and it is another one (the logs' orders differ). */
  peerEvent?: AnnalsEvent | undefined;
  /** This replica's state → the peer's, at the first differing position (server only). */
  stateDiff?: ReturnType<DiffFunction> | undefined;
}

export class Divergence {
  readonly element: HTMLElement;
  readonly #doc: Document;
  readonly #source: Source;
  readonly #diff: DiffFunction;
  readonly #onJump: (position: number) => void;
  readonly #results: HTMLElement;
  readonly #status: HTMLElement;
  readonly #run: HTMLButtonElement;
  #controller: AbortController | undefined;

  constructor(doc: Document, source: Source, diff: DiffFunction, onJump: (position: number) => void) {
    this.#doc = doc;
    this.#source = source;
    this.#diff = diff;
    this.#onJump = onJump;
    this.#run = h(
      doc,
      "button",
      { type: "button", class: "primary", "data-testid": "devtools-divergence-run", onclick: () => void this.check() },
      "Compare with other tabs and the server",
    );
    this.#status = h(doc, "span", { class: "muted", "data-testid": "devtools-divergence-status" }, "");
    this.#results = h(doc, "div", { class: "divergence-results", "data-testid": "devtools-divergence" });
    this.element = h(
      doc,
      "section",
      { class: "divergence" },
      h(
        doc,
        "p",
        { class: "explain" },
        "Every replica folding the same log must reach the same states. This compares the fingerprints of each projection here with the other tabs of this store and with a replica folded from the server's log, and bisects to the first position where they part.",
      ),
      h(doc, "div", { class: "actions" }, this.#run, this.#status),
      this.#results,
    );
  }

  destroy(): void {
    this.#controller?.abort();
  }

  /** Runs every comparison; resolves with what it found (also rendered). */
  async check(): Promise<DivergenceFinding[]> {
    this.#controller?.abort();
    const controller = new AbortController();
    this.#controller = controller;
    const { signal } = controller;
    const { store, access } = this.#source;
    const findings: DivergenceFinding[] = [];
    const notes: string[] = [];
    this.#run.disabled = true;
    this.#status.textContent = "comparing…";
    replaceChildren(this.#results);
    try {
      const projections = access.projections().map((p) => p.name);
      const local = (name: string): FingerprintOracle => (positions) => access.fingerprints(name, positions);

      // Other tabs: one question says who is there and how far each one got. An answer
      // only comes back when the wait is over, so the rounds wait briefly, and longer once
      // if a tab was too slow (its fingerprints may take a fold).
      const heads = projections.length > 0 ? await access.tabFingerprints(projections[0]!, [0], 1000) : [];
      signal.throwIfAborted();
      notes.push(heads.length === 0 ? "no other tab answered" : `${heads.length} other tab${heads.length === 1 ? "" : "s"}`);
      for (const name of projections) {
        for (const tab of heads) {
          const to = Math.min(store.head, tab.head);
          const other: FingerprintOracle = async (positions) => {
            for (const wait of [400, 3000]) {
              const answers = await access.tabFingerprints(name, positions, wait);
              const answer = answers.find((a) => a.tab === tab.tab);
              if (answer) return answer.fingerprints;
            }
            throw new Error(`tab ${shortId(tab.tab)} stopped answering`);
          };
          const result = await findFirstDivergence(local(name), other, { to, signal });
          findings.push(this.#withEvent({ peer: `tab ${shortId(tab.tab)}`, projection: name, to, result }));
          this.#render(findings, notes);
        }
      }

      // The server: only a synced store has one.
      let replica;
      try {
        replica = await access.serverReplica();
      } catch (error) {
        if ((error as { code?: string }).code !== "INVALID_ARGUMENT") throw error;
        notes.push("this store does not sync: no server to compare with");
      }
      if (replica) {
        try {
          const remote = debugAccess(replica);
          const to = Math.min(store.confirmedHead, replica.head);
          notes.push(`server replica of ${formatCount(replica.head)} events`);
          for (const name of projections) {
            signal.throwIfAborted();
            const result = await findFirstDivergence(local(name), (positions) => remote.fingerprints(name, positions), { to, signal });
            const finding = this.#withEvent({ peer: "server", projection: name, to, result });
            if (result.position !== null) {
              const p = result.position;
              const theirs = p > 0 ? remote.range(p - 1, p)[0] : undefined;
              if (theirs && finding.event && theirs.id !== finding.event.id) finding.peerEvent = theirs;
              const [mine, server] = await Promise.all([store.stateAt(name, p), replica.stateAt(name, p)]);
              finding.stateDiff = this.#diff(mine, server);
            }
            findings.push(finding);
            this.#render(findings, notes);
          }
        } finally {
          await replica.close().catch(() => {});
        }
      }
      this.#render(findings, notes);
      const differing = findings.filter((f) => f.result.position !== null).length;
      this.#status.textContent =
        findings.length === 0 ? "nothing to compare with" : differing === 0 ? "✓ no divergence found" : `${differing} divergence${differing === 1 ? "" : "s"} found`;
      return findings;
    } catch (error) {
      if (signal.aborted) return findings;
      this.#status.textContent = `failed: ${error instanceof Error ? error.message : String(error)}`;
      throw error;
    } finally {
      if (this.#controller === controller) this.#run.disabled = false;
    }
  }

  #withEvent(finding: DivergenceFinding): DivergenceFinding {
    const p = finding.result.position;
    if (p !== null && p > 0) finding.event = this.#source.access.range(p - 1, p)[0];
    return finding;
  }

  #render(findings: DivergenceFinding[], notes: string[]): void {
    const doc = this.#doc;
    const cards = findings.map((f) => {
      const p = f.result.position;
      if (p === null) {
        return h(
          doc,
          "div",
          { class: "finding same", "data-testid": "devtools-divergence-result", "data-peer": f.peer, "data-projection": f.projection },
          h(doc, "span", { class: "chip confirmed" }, "same"),
          h(doc, "span", { class: "peer" }, f.peer),
          h(doc, "span", { class: "muted" }, ` ${f.projection}: equal at every compared position up to #${formatCount(f.to)} (${f.result.asked} positions, ${f.result.rounds} round${f.result.rounds === 1 ? "" : "s"})`),
        );
      }
      const event = f.event;
      return h(
        doc,
        "div",
        {
          class: "finding differs",
          "data-testid": "devtools-divergence-result",
          "data-peer": f.peer,
          "data-projection": f.projection,
          "data-position": p,
        },
        h(
          doc,
          "div",
          { class: "line" },
          h(doc, "span", { class: "chip rejected" }, "differs"),
          h(doc, "span", { class: "peer" }, f.peer),
          ` ${f.projection}: first differs at `,
          h(doc, "strong", {}, `#${formatCount(p)}`),
          event ? ` — ${event.type} on ${event.stream} (v${event.version})` : p === 0 ? " — the initial states differ" : "",
          h(
            doc,
            "button",
            { type: "button", class: "link", "data-testid": "devtools-divergence-jump", onclick: () => this.#onJump(p) },
            `jump to #${formatCount(p)}`,
          ),
        ),
        h(
          doc,
          "div",
          { class: "line muted mono" },
          `here ${f.result.fingerprints?.[0] ?? "?"} · ${f.peer} ${f.result.fingerprints?.[1] ?? "?"}` +
            (f.result.lastEqual !== null ? ` · equal at #${formatCount(f.result.lastEqual)}` : "") +
            ` · ${f.result.rounds} rounds`,
        ),
        f.peerEvent
          ? h(doc, "div", { class: "line warn" }, `the server has another event there: ${f.peerEvent.type} on ${f.peerEvent.stream} (${shortId(f.peerEvent.id)}) — the logs' orders differ`)
          : null,
        f.stateDiff ? diffView(doc, f.stateDiff, "this replica → server:") : null,
      );
    });
    replaceChildren(this.#results, ...(notes.length ? [h(doc, "div", { class: "muted notes" }, notes.join(" · "))] : []), ...cards);
  }
}
