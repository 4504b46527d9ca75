// Travel: moves the selected position (slider, ±1, first/last, a typed position), shows the
// selected projection's state there as a JSON tree, its diff against the previous position
// or between two picked positions, and the event itself; folds without the events switched
// off (what-if); and, on the app's own store, freezes the app at the selected position.

import type { AnnalsEvent, StateDiff } from "../types.js";
import { h, icon, replaceChildren, show } from "./dom.js";
import { diffView } from "./diff-view.js";
import { formatBytes, formatCount, formatDateTime } from "./format.js";
import { jsonTree } from "./json-tree.js";
import { clampPosition, type Source } from "./model.js";
import { now } from "./schedule.js";

export type DiffFunction = (a: unknown, b: unknown) => StateDiff;

type Tab = "state" | "diff" | "event" | "extra";

/** A tab of the inspector that shows an element of its own (the divergence view). */
export interface ExtraTab {
  name: string;
  label: string;
  element: HTMLElement;
}

export class Travel {
  readonly element: HTMLElement;
  readonly #doc: Document;
  readonly #source: Source;
  readonly #diff: DiffFunction;
  readonly #slider: HTMLInputElement;
  readonly #input: HTMLInputElement;
  readonly #headLabel: HTMLElement;
  readonly #follow: HTMLButtonElement;
  readonly #freeze: HTMLButtonElement | undefined;
  readonly #tabs: Partial<Record<Tab, HTMLButtonElement>>;
  readonly #extra: ExtraTab | undefined;
  readonly #onFilter: ((text: string) => void) | undefined;
  readonly #meta: HTMLElement;
  readonly #metaRow: HTMLElement;
  readonly #checkpoints: HTMLElement;
  readonly #copy: HTMLButtonElement;
  /** What the copy button copies: the state or event on screen. */
  #shown: unknown = undefined;
  readonly #content: HTMLElement;
  readonly #diffControls: HTMLElement;
  readonly #diffMode: HTMLSelectElement;
  readonly #diffA: HTMLInputElement;
  readonly #diffB: HTMLInputElement;
  readonly #cleanup: (() => void)[] = [];
  #tab: Tab = "state";
  /** The state tree's open nodes, kept while it re-renders (new events, other positions). */
  readonly #expanded = new Set<string>(["[]"]);
  #head: number;
  #running = false;
  #dirty = false;
  #destroyed = false;

  constructor(
    doc: Document,
    source: Source,
    diff: DiffFunction,
    extra?: ExtraTab,
    /** Filters the timeline by a text (an event's command flow). */
    onFilter?: (text: string) => void,
  ) {
    this.#doc = doc;
    this.#onFilter = onFilter;
    this.#extra = extra;
    this.#source = source;
    this.#diff = diff;
    this.#head = source.store.head;

    const move = (to: (current: number) => number) => () => {
      const target = clampPosition(to(source.position.value), this.#head);
      source.follow.set(target === this.#head);
      source.position.set(target);
    };
    const button = (testid: string, glyph: Parameters<typeof icon>[1], title: string, onclick: () => void) =>
      h(doc, "button", { type: "button", class: "icon", "data-testid": testid, title, "aria-label": title, onclick }, icon(doc, glyph));

    this.#slider = h(doc, "input", {
      type: "range",
      class: "slider",
      min: 0,
      max: this.#head,
      step: 1,
      value: source.position.value,
      "data-testid": "devtools-slider",
      "aria-label": "position",
      oninput: () => move(() => Number(this.#slider.value))(),
    });
    this.#input = h(doc, "input", {
      type: "number",
      class: "position",
      min: 0,
      value: source.position.value,
      "data-testid": "devtools-position",
      "aria-label": "go to position",
      title: "Type a position and press Enter (0: the initial state)",
      onchange: () => move(() => Number(this.#input.value))(),
    });
    this.#headLabel = h(doc, "span", { class: "of" });
    this.#follow = h(
      doc,
      "button",
      {
        type: "button",
        class: "follow",
        "data-testid": "devtools-follow",
        title: "Follow the head: the selection moves as new events arrive",
        onclick: () => {
          const on = !source.follow.value;
          source.follow.set(on);
          if (on) source.position.set(this.#head);
        },
      },
      "● live",
    );
    const controls = h(
      doc,
      "div",
      { class: "travel-controls" },
      button("devtools-first", "first", "First: the initial state (0)", move(() => 0)),
      button("devtools-prev", "prev", "Step back one event", move((p) => p - 1)),
      this.#slider,
      button("devtools-next", "next", "Step forward one event", move((p) => p + 1)),
      button("devtools-last", "last", "Last: the head", move(() => this.#head)),
      this.#input,
      this.#headLabel,
      this.#follow,
    );

    if (source.kind === "app") {
      this.#freeze = h(
        doc,
        "button",
        {
          type: "button",
          class: "primary",
          "data-testid": "devtools-freeze",
          title: "Freeze the app: its UI shows the state at this position; appends fail with FROZEN until you return",
          onclick: () => {
            void source.store.freeze(source.position.value).catch((error: unknown) => this.#showError(error));
          },
        },
        "Show the app here",
      );
    }

    const tab = (name: Tab, testid: string, label: string) =>
      h(
        doc,
        "button",
        { type: "button", class: "tab", role: "tab", "data-testid": `devtools-tab-${testid}`, onclick: () => this.#setTab(name) },
        label,
      );
    this.#tabs = { state: tab("state", "state", "State"), diff: tab("diff", "diff", "Diff"), event: tab("event", "event", "Event") };
    if (extra) this.#tabs.extra = tab("extra", extra.name, extra.label);

    this.#diffMode = h(
      doc,
      "select",
      {
        "data-testid": "devtools-diff-mode",
        "aria-label": "diff against",
        onchange: () => {
          if (this.#diffMode.value === "pair") {
            this.#diffA.value = String(Math.max(0, source.position.value - 1));
            this.#diffB.value = String(source.position.value);
          }
          this.#renderDiffControls();
          this.refresh();
        },
      },
      h(doc, "option", { value: "previous" }, "vs the previous position"),
      h(doc, "option", { value: "pair" }, "between two positions"),
    );
    this.#diffA = h(doc, "input", { type: "number", min: 0, class: "position", "data-testid": "devtools-diff-a", "aria-label": "from position", onchange: () => this.refresh() });
    this.#diffB = h(doc, "input", { type: "number", min: 0, class: "position", "data-testid": "devtools-diff-b", "aria-label": "to position", onchange: () => this.refresh() });
    this.#diffControls = h(
      doc,
      "div",
      { class: "diff-controls", hidden: true },
      this.#diffMode,
      h(doc, "span", { class: "pair" }, "from ", this.#diffA, " to ", this.#diffB),
    );

    this.#meta = h(doc, "span", { class: "meta", "data-testid": "devtools-state-meta" });
    this.#checkpoints = h(doc, "span", {
      class: "checkpoints",
      "data-testid": "devtools-checkpoints",
      title: "The states time travel keeps in memory for this projection, and the most they may weigh",
    });
    this.#copy = h(
      doc,
      "button",
      {
        type: "button",
        class: "ghost small",
        "data-testid": "devtools-copy",
        title: "Copy what is shown as JSON",
        onclick: () => void this.#copyShown(),
      },
      "copy JSON",
    );
    this.#metaRow = h(doc, "div", { class: "meta-row" }, this.#meta, this.#checkpoints, this.#copy);
    this.#content = h(doc, "div", { class: "content", "data-testid": "devtools-content" });
    this.element = h(
      doc,
      "section",
      { class: "travel" },
      controls,
      h(doc, "div", { class: "tabs", role: "tablist" }, this.#tabs.state, this.#tabs.diff, this.#tabs.event, this.#tabs.extra, h(doc, "span", { class: "grow" }), this.#freeze ?? null),
      this.#diffControls,
      this.#metaRow,
      this.#content,
    );

    this.#cleanup.push(
      source.position.subscribe(() => this.refresh()),
      source.projection.subscribe(() => {
        this.#expanded.clear();
        this.#expanded.add("[]");
        this.refresh();
      }),
      source.whatIf.changed.subscribe(() => this.refresh()),
      source.follow.subscribe(() => this.#renderControls()),
      source.store.on("change", (change) => {
        this.#head = change.head;
        if (source.follow.value) source.position.set(change.head);
        else if (source.position.value > change.head) source.position.set(change.head);
        this.#renderControls();
        // The selected state may have changed too (a rebase), or the head's did.
        if (source.position.value > change.previousHead || change.rebased || change.reset) this.refresh();
      }),
    );
    if (this.#freeze) this.#cleanup.push(source.store.on("frozen", () => this.#renderControls()));
    this.#setTab("state");
  }

  destroy(): void {
    this.#destroyed = true;
    for (const off of this.#cleanup) off();
  }

  /** Recomputes what the tab shows; at most one computation at a time, the latest wins. */
  refresh(): void {
    this.#renderControls();
    if (this.#running) {
      this.#dirty = true;
      return;
    }
    this.#running = true;
    void (async () => {
      try {
        do {
          this.#dirty = false;
          await this.#compute();
        } while (this.#dirty && !this.#destroyed);
      } finally {
        this.#running = false;
      }
    })();
  }

  #setTab(tab: Tab): void {
    this.#tab = tab;
    for (const [name, element] of Object.entries(this.#tabs)) {
      element!.classList.toggle("active", name === tab);
      element!.setAttribute("aria-selected", String(name === tab));
    }
    this.#renderDiffControls();
    this.refresh();
  }

  #renderDiffControls(): void {
    show(this.#diffControls, this.#tab === "diff");
    show(this.#diffControls.querySelector(".pair")!, this.#diffMode.value === "pair");
  }

  #renderControls(): void {
    const position = this.#source.position.value;
    this.#slider.max = String(this.#head);
    this.#slider.value = String(position);
    // Not while the user types a position (in a shadow root, its own activeElement says so).
    const root = this.#input.getRootNode() as Document | ShadowRoot;
    if (root.activeElement !== this.#input) this.#input.value = String(position);
    this.#input.max = String(this.#head);
    this.#headLabel.textContent = `/ ${formatCount(this.#head)}`;
    this.#follow.classList.toggle("on", this.#source.follow.value);
    this.#follow.setAttribute("aria-pressed", String(this.#source.follow.value));
    if (this.#freeze) {
      const frozenAt = this.#source.store.frozenAt;
      this.#freeze.textContent = frozenAt === position ? `App shown at #${position}` : `Show the app at #${position}`;
      this.#freeze.disabled = frozenAt === position;
    }
  }

  /** The state of the selected projection right after `position`, without the events switched off. */
  async #stateAt(position: number): Promise<unknown> {
    const { store, whatIf, projection } = this.#source;
    const skip = whatIf.skip();
    // The present without what-if is already folded (unless frozen: then `get` shows the past).
    if (position === store.head && skip.length === 0 && store.frozenAt === undefined) return store.get(projection.value);
    return store.stateAt(projection.value, position, skip.length > 0 ? { skip } : undefined);
  }

  async #compute(): Promise<void> {
    const doc = this.#doc;
    const source = this.#source;
    const position = source.position.value;
    const name = source.projection.value;
    const whatIf = source.whatIf.count;
    if (this.#tab === "extra") {
      show(this.#metaRow, false);
      if (this.#extra && this.#content.firstChild !== this.#extra.element) replaceChildren(this.#content, this.#extra.element);
      return;
    }
    show(this.#metaRow, true);
    show(this.#copy, this.#tab !== "diff");
    this.#renderCheckpoints();
    const started = now();
    const slow = setTimeout(() => this.#meta.classList.add("busy"), 80);
    try {
      if (!name && this.#tab !== "event") {
        this.#meta.textContent = "this store has no projections";
        replaceChildren(this.#content);
        return;
      }
      const ifNote = whatIf > 0 ? ` · what-if: ${whatIf} off` : "";
      if (this.#tab === "state") {
        const state = await this.#stateAt(position);
        if (this.#dirty || this.#destroyed) return;
        this.#meta.textContent = `${name} after #${formatCount(position)}${ifNote} · ${took(started)}`;
        this.#shown = state;
        this.#replaceContent(jsonTree(doc, state, { expanded: this.#expanded }));
      } else if (this.#tab === "diff") {
        const pair = this.#diffMode.value === "pair";
        const a = pair ? clampPosition(Number(this.#diffA.value), this.#head) : Math.max(0, position - 1);
        const b = pair ? clampPosition(Number(this.#diffB.value), this.#head) : position;
        const [before, after] = await Promise.all([this.#stateAt(a), this.#stateAt(b)]);
        if (this.#dirty || this.#destroyed) return;
        const changes = this.#diff(before, after);
        this.#meta.textContent = `${name}: #${formatCount(a)} → #${formatCount(b)}${ifNote} · ${took(started)}`;
        const event = !pair && b > 0 ? source.access.range(b - 1, b)[0] : undefined;
        const caption = pair
          ? `${name} from #${formatCount(a)} to #${formatCount(b)}:`
          : event
            ? `${event.type} on ${event.stream} (v${event.version})${source.whatIf.isOff(event.id) ? ", switched off," : ""} made:`
            : "the initial state:";
        this.#replaceContent(diffView(doc, changes, caption));
      } else {
        const event = position === 0 ? undefined : source.access.range(position - 1, position)[0];
        this.#meta.textContent = position === 0 ? "position 0 is the initial state: no event" : `event #${formatCount(position)}`;
        replaceChildren(this.#content, event ? eventView(doc, event, source.whatIf.isOff(event.id), this.#onFilter) : null);
        this.#shown = event;
      }
    } catch (error) {
      this.#showError(error);
    } finally {
      clearTimeout(slow);
      this.#meta.classList.remove("busy");
    }
  }

  #renderCheckpoints(): void {
    const name = this.#source.projection.value;
    let text = "";
    try {
      if (name) {
        const stats = this.#source.access.checkpointStats(name);
        text = `checkpoints ${formatCount(stats.count)} · ${formatBytes(stats.bytes)} of ${formatBytes(stats.budgetBytes)}`;
      }
    } catch {
      // A closed store has none to report.
    }
    this.#checkpoints.textContent = text;
  }

  async #copyShown(): Promise<void> {
    const text = JSON.stringify(this.#shown, null, 2) ?? "undefined";
    const clipboard = this.#doc.defaultView?.navigator.clipboard;
    try {
      if (!clipboard) throw new Error("no clipboard here");
      await clipboard.writeText(text);
      this.#copy.textContent = "copied ✓";
    } catch {
      this.#copy.textContent = "copy failed";
    }
    setTimeout(() => (this.#copy.textContent = "copy JSON"), 1200);
  }

  /** New content at the same scroll offset: stepping through positions keeps the place. */
  #replaceContent(element: HTMLElement): void {
    const top = this.#content.scrollTop;
    replaceChildren(this.#content, element);
    this.#content.scrollTop = top;
  }

  #showError(error: unknown): void {
    const message = error instanceof Error ? `${(error as { code?: string }).code ?? error.name}: ${error.message}` : String(error);
    this.#meta.textContent = "";
    replaceChildren(this.#content, h(this.#doc, "div", { class: "error", "data-testid": "devtools-error" }, message));
  }
}

function took(started: number): string {
  const ms = now() - started;
  return ms < 1 ? "<1 ms" : `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

/** The selected event: its envelope as a table, its data and meta as trees. */
export function eventView(doc: Document, event: AnnalsEvent, off: boolean, onFilter?: (text: string) => void): HTMLElement {
  const field = (name: string, value: Node | string, cls = "") =>
    h(doc, "div", { class: "field" }, h(doc, "span", { class: "name" }, name), h(doc, "span", { class: `value ${cls}` }, value));
  // Commands and process managers tag their events: one click lists the whole flow.
  const correlation = typeof event.meta?.["correlationId"] === "string" ? (event.meta["correlationId"] as string) : undefined;
  const flow =
    correlation && onFilter
      ? h(
          doc,
          "span",
          {},
          correlation,
          " ",
          h(
            doc,
            "button",
            { type: "button", class: "link", "data-testid": "devtools-event-flow", title: "Filter the timeline to the events of this flow", onclick: () => onFilter(correlation) },
            "show the flow",
          ),
        )
      : correlation;
  return h(
    doc,
    "div",
    { class: "event", "data-testid": "devtools-event" },
    h(
      doc,
      "div",
      { class: "fields" },
      field("type", event.type, "strong"),
      field("stream", `${event.stream} v${event.version}`),
      field("position", `#${event.position}`),
      field("status", `${event.pending ? "pending" : "confirmed"}${off ? " · switched off (what-if)" : ""}`),
      field("time", formatDateTime(event.time)),
      field("id", event.id, "mono"),
      event.origin ? field("origin", event.origin, "mono") : null,
      flow ? field("flow", flow, "mono") : null,
    ),
    h(doc, "div", { class: "subhead" }, "data"),
    jsonTree(doc, event.data, { open: 2 }),
    event.meta ? h(doc, "div", { class: "subhead" }, "meta") : null,
    event.meta ? jsonTree(doc, event.meta, { open: 2 }) : null,
  );
}
