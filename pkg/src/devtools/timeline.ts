// The timeline: every event of the log in a virtualised list (fixed row height, a spacer
// for the scroll height, and a small pool of rows showing only what is on screen, read
// with `range` as they scroll into view), a filter by stream, type and text scanned in the
// background, a what-if checkbox per row, live as the log grows, and the events the server
// rejected (no longer in the log) in a list of their own.

import type { AnnalsEvent, Change, Rejection } from "../types.js";
import { h, replaceChildren, show } from "./dom.js";
import { compileFilter, FilterIndex, isEmptyFilter, NO_FILTER, type EventFilter } from "./filter.js";
import { formatCount, formatDateTime, formatTime, preview, shortId } from "./format.js";
import type { Source } from "./model.js";

/** Pixels per row; the stylesheet uses the same. */
export const ROW_HEIGHT = 24;
/** The tallest spacer used: past it, scrolling maps onto rows proportionally (browsers cap element heights). */
const MAX_SPACER_PX = 6_000_000;
/** Viewport height assumed where layout gives none (jsdom). */
const FALLBACK_VIEWPORT_PX = 480;
/** Rows drawn beyond the viewport's edges. */
const OVERSCAN = 4;

interface RowElements {
  row: HTMLElement;
  toggle: HTMLInputElement;
  position: HTMLElement;
  stream: HTMLElement;
  type: HTMLElement;
  version: HTMLElement;
  time: HTMLElement;
  status: HTMLElement;
  origin: HTMLElement;
  event: AnnalsEvent | undefined;
}

export class Timeline {
  readonly element: HTMLElement;
  readonly #doc: Document;
  readonly #source: Source;
  readonly #viewport: HTMLElement;
  readonly #spacer: HTMLElement;
  readonly #layer: HTMLElement;
  readonly #count: HTMLElement;
  readonly #empty: HTMLElement;
  readonly #rejectedList: HTMLElement;
  readonly #rejectedSummary: HTMLElement;
  readonly #rejectedBox: HTMLDetailsElement;
  readonly #pool: RowElements[] = [];
  readonly #cleanup: (() => void)[] = [];
  #head: number;
  #filter: EventFilter = NO_FILTER;
  #index: FilterIndex | undefined;
  #frame = 0;
  #filterTimer: ReturnType<typeof setTimeout> | undefined;
  #stickToEnd = true;
  #rejected: Rejection[] = [];
  #loadError: string | undefined;

  constructor(doc: Document, source: Source) {
    this.#doc = doc;
    this.#source = source;
    this.#head = source.store.head;

    const input = (field: keyof EventFilter, placeholder: string) =>
      h(doc, "input", {
        type: "search",
        class: `filter filter-${field}`,
        placeholder,
        spellcheck: "false",
        "data-testid": `devtools-filter-${field}`,
        oninput: (event: Event) => {
          this.#filter = { ...this.#filter, [field]: (event.target as HTMLInputElement).value };
          // Typing restarts the scan once, not per keystroke.
          clearTimeout(this.#filterTimer);
          this.#filterTimer = setTimeout(() => this.#applyFilter(), 120);
        },
      });
    this.#count = h(doc, "span", { class: "count", "data-testid": "devtools-timeline-count" });
    const bar = h(
      doc,
      "div",
      { class: "filters" },
      input("stream", "stream"),
      input("type", "type"),
      input("text", "search data, ids…"),
      this.#count,
    );
    const header = h(
      doc,
      "div",
      { class: "row header", role: "row" },
      h(doc, "span", { class: "c-toggle", title: "Uncheck an event to fold the state without it (what-if)" }, "on"),
      h(doc, "span", { class: "c-pos" }, "#"),
      h(doc, "span", { class: "c-stream" }, "stream"),
      h(doc, "span", { class: "c-type" }, "type"),
      h(doc, "span", { class: "c-ver" }, "v"),
      h(doc, "span", { class: "c-time" }, "time"),
      h(doc, "span", { class: "c-status" }, "status"),
      h(doc, "span", { class: "c-origin" }, "origin"),
    );
    this.#spacer = h(doc, "div", { class: "spacer" });
    this.#layer = h(doc, "div", { class: "rows", role: "rowgroup" });
    this.#empty = h(doc, "div", { class: "empty", hidden: true });
    this.#viewport = h(
      doc,
      "div",
      { class: "viewport", "data-testid": "devtools-timeline", role: "grid", tabindex: "0" },
      this.#spacer,
      this.#layer,
      this.#empty,
    );
    this.#viewport.addEventListener("scroll", () => {
      const max = this.#spacerHeight() - this.#viewportHeight();
      this.#stickToEnd = this.#viewport.scrollTop >= max - ROW_HEIGHT;
      this.#schedule();
    });
    this.#viewport.addEventListener("keydown", (event) => this.#onKey(event));
    // The viewport changes size with the panel (resizing, the rejected list opening): draw
    // the rows that now fit, still at the end if following it.
    const view = doc.defaultView as (Window & { ResizeObserver?: typeof ResizeObserver }) | null;
    if (view?.ResizeObserver) {
      const observer = new view.ResizeObserver(() => this.#schedule());
      observer.observe(this.#viewport);
      this.#cleanup.push(() => observer.disconnect());
    }

    this.#rejectedSummary = h(doc, "summary", { "data-testid": "devtools-rejected-toggle" });
    this.#rejectedList = h(doc, "div", { class: "rejected-list", "data-testid": "devtools-rejected" });
    this.#rejectedBox = h(doc, "details", { class: "rejected-box", hidden: true }, this.#rejectedSummary, this.#rejectedList);

    this.element = h(doc, "section", { class: "timeline" }, bar, header, this.#viewport, this.#rejectedBox);

    this.#cleanup.push(
      source.store.on("change", (change) => this.#onChange(change)),
      source.store.on("rejected", (event, reason, actualVersion) => {
        this.#rejected.push({ event, reason, ...(actualVersion !== undefined ? { actualVersion } : {}) });
        this.#renderRejected();
      }),
      source.position.subscribe(() => this.#schedule()),
      source.follow.subscribe((follow) => {
        // Following the head again (live, last): back to the end of the log.
        if (follow) this.#stickToEnd = true;
        this.#schedule();
      }),
      source.whatIf.changed.subscribe(() => this.#schedule()),
    );
    source.store.rejected().then(
      (rejections) => {
        // Those heard live meanwhile are in both: keep one of each.
        const ids = new Set(rejections.map((r) => r.event.id));
        this.#rejected = [...rejections, ...this.#rejected.filter((r) => !ids.has(r.event.id))];
        this.#renderRejected();
      },
      () => {},
    );
    this.#schedule();
  }

  /** Sets the filter's fields (as if typed) and applies it at once. */
  setFilter(filter: Partial<EventFilter>): void {
    this.#filter = { ...this.#filter, ...filter };
    for (const field of ["stream", "type", "text"] as const) {
      const input = this.element.querySelector<HTMLInputElement>(`.filter-${field}`);
      if (input) input.value = this.#filter[field];
    }
    clearTimeout(this.#filterTimer);
    this.#applyFilter();
  }

  /** Scrolls `position` into view (the middle of the viewport, unless it is already visible). */
  reveal(position: number): void {
    const index = this.#indexOf(position);
    if (index < 0) return;
    const height = this.#viewportHeight();
    const rowsVisible = Math.floor(height / ROW_HEIGHT);
    const first = this.#firstIndex();
    if (index >= first && index < first + rowsVisible - 1) return;
    this.#scrollToIndex(Math.max(0, index - Math.floor(rowsVisible / 2)));
  }

  /** The rows in the DOM (for tests: bounded at any log size). */
  get renderedRows(): number {
    return this.#layer.childElementCount;
  }

  destroy(): void {
    cancelFrame(this.#frame);
    clearTimeout(this.#filterTimer);
    this.#index?.stop();
    for (const off of this.#cleanup) off();
  }

  // ---- the rows -------------------------------------------------------------------------

  get #filtered(): boolean {
    return this.#index !== undefined;
  }

  #rowCount(): number {
    return this.#index ? this.#index.length : this.#head;
  }

  #positionAt(index: number): number {
    return this.#index ? this.#index.at(index) : index + 1;
  }

  /** The row index showing `position`, or -1 when filtered out. */
  #indexOf(position: number): number {
    if (!this.#index) return position >= 1 && position <= this.#head ? position - 1 : -1;
    const index = this.#index.indexOf(position);
    return index < this.#index.length && this.#index.at(index) === position ? index : -1;
  }

  #viewportHeight(): number {
    return this.#viewport.clientHeight || FALLBACK_VIEWPORT_PX;
  }

  #spacerHeight(): number {
    return Math.min(this.#rowCount() * ROW_HEIGHT, MAX_SPACER_PX);
  }

  /** The first row on screen (fractional past the spacer cap). */
  #firstExact(): number {
    const count = this.#rowCount();
    const height = this.#viewportHeight();
    if (count * ROW_HEIGHT <= MAX_SPACER_PX) return this.#viewport.scrollTop / ROW_HEIGHT;
    const maxScroll = Math.max(1, MAX_SPACER_PX - height);
    const rowsVisible = height / ROW_HEIGHT;
    return (Math.min(this.#viewport.scrollTop, maxScroll) / maxScroll) * Math.max(0, count - rowsVisible);
  }

  #firstIndex(): number {
    return Math.floor(this.#firstExact());
  }

  #scrollToIndex(index: number): void {
    const count = this.#rowCount();
    const height = this.#viewportHeight();
    if (count * ROW_HEIGHT <= MAX_SPACER_PX) {
      this.#viewport.scrollTop = index * ROW_HEIGHT;
    } else {
      const maxScroll = Math.max(1, MAX_SPACER_PX - height);
      const rowsVisible = height / ROW_HEIGHT;
      this.#viewport.scrollTop = (index / Math.max(1, count - rowsVisible)) * maxScroll;
    }
    this.#schedule();
  }

  #schedule(): void {
    if (this.#frame) return;
    this.#frame = requestFrame(() => {
      this.#frame = 0;
      this.#render();
    });
  }

  #render(): void {
    const count = this.#rowCount();
    this.#spacer.style.height = `${this.#spacerHeight()}px`;
    if (this.#stickToEnd && !this.#filtered && count > 0) {
      // Following the log: the newest events stay in view as they arrive.
      const end = this.#spacerHeight() - this.#viewportHeight();
      if (end > 0 && Math.abs(this.#viewport.scrollTop - end) > 1) this.#viewport.scrollTop = end;
    }
    this.#renderCount();

    const height = this.#viewportHeight();
    const exact = this.#firstExact();
    const first = Math.max(0, Math.floor(exact) - OVERSCAN);
    const last = Math.min(count, Math.ceil(exact + height / ROW_HEIGHT) + OVERSCAN);
    const wanted = Math.max(0, last - first);

    // Where the first drawn row sits: in the scaled range the rows move with scrollTop.
    const offset =
      count * ROW_HEIGHT <= MAX_SPACER_PX
        ? first * ROW_HEIGHT
        : this.#viewport.scrollTop - (exact - first) * ROW_HEIGHT;
    this.#layer.style.transform = `translateY(${Math.max(0, offset)}px)`;

    while (this.#pool.length < wanted) this.#pool.push(this.#makeRow());
    while (this.#layer.childElementCount > wanted) this.#layer.lastElementChild!.remove();
    for (let i = this.#layer.childElementCount; i < wanted; i++) this.#layer.appendChild(this.#pool[i]!.row);

    const events = this.#read(first, last);
    const selected = this.#source.position.value;
    for (let i = 0; i < wanted; i++) this.#fill(this.#pool[i]!, events[i], this.#positionAt(first + i), selected);

    const emptyText = this.#loadError
      ? this.#loadError
      : count === 0
        ? this.#filtered
          ? this.#index!.scanned < this.#head
            ? "searching…"
            : "no event matches the filter"
          : "the log is empty: append an event and it shows up here"
        : "";
    this.#empty.textContent = emptyText;
    show(this.#empty, emptyText !== "");
  }

  /** The events of rows `first..last`: one range read unfiltered, else one per row. */
  #read(first: number, last: number): (AnnalsEvent | undefined)[] {
    if (last <= first) return [];
    try {
      this.#loadError = undefined;
      if (!this.#index) return this.#source.access.range(first, last);
      const out: (AnnalsEvent | undefined)[] = [];
      for (let i = first; i < last; i++) {
        const position = this.#index.at(i);
        out.push(this.#source.access.range(position - 1, position)[0]);
      }
      return out;
    } catch (error) {
      if ((error as { code?: string }).code === "CLOSED" || this.#source.store.closed) {
        this.#loadError = "the store is closed";
        return [];
      }
      // Rows below what retention keeps here (the message names the range kept).
      if ((error as { code?: string }).code === "NOT_RETAINED") {
        this.#loadError = (error as Error).message;
        return [];
      }
      // A lazily opened log still loading: draw when it is complete.
      this.#loadError = "loading the log…";
      this.#source.access.whenComplete().then(
        () => this.#schedule(),
        () => {},
      );
      return [];
    }
  }

  #makeRow(): RowElements {
    const doc = this.#doc;
    const cell = (cls: string) => h(doc, "span", { class: cls });
    const toggle = h(doc, "input", {
      type: "checkbox",
      class: "c-toggle",
      "data-testid": "devtools-row-toggle",
      title: "Uncheck to fold the state without this event (what-if)",
    });
    const elements: RowElements = {
      row: h(doc, "div", { class: "row", role: "row", "data-testid": "devtools-row" }),
      toggle,
      position: cell("c-pos"),
      stream: cell("c-stream"),
      type: cell("c-type"),
      version: cell("c-ver"),
      time: cell("c-time"),
      status: cell("c-status"),
      origin: cell("c-origin"),
      event: undefined,
    };
    elements.row.append(
      toggle,
      elements.position,
      elements.stream,
      elements.type,
      elements.version,
      elements.time,
      elements.status,
      elements.origin,
    );
    toggle.addEventListener("click", (event) => event.stopPropagation());
    toggle.addEventListener("change", () => {
      const shown = elements.event;
      if (shown) this.#source.whatIf.set(shown.id, shown.position, !toggle.checked);
    });
    elements.row.addEventListener("click", () => {
      const shown = elements.event;
      if (!shown) return;
      this.#source.follow.set(false);
      this.#source.position.set(shown.position);
    });
    return elements;
  }

  #fill(row: RowElements, event: AnnalsEvent | undefined, position: number, selected: number): void {
    row.event = event;
    row.row.dataset.position = String(position);
    if (!event) {
      for (const cell of [row.stream, row.type, row.version, row.time, row.status, row.origin]) cell.textContent = "";
      row.position.textContent = String(position);
      row.row.title = "";
      row.toggle.disabled = true;
      return;
    }
    const off = this.#source.whatIf.isOff(event.id);
    const status = event.pending ? "pending" : "confirmed";
    row.toggle.disabled = false;
    row.toggle.checked = !off;
    row.row.className = `row${position === selected ? " selected" : ""}${off ? " off" : ""}${
      position > selected ? " future" : ""
    }`;
    row.row.title = `id ${event.id}`;
    row.position.textContent = String(event.position);
    row.stream.textContent = event.stream;
    row.stream.title = event.stream;
    row.type.textContent = event.type;
    row.type.title = event.type;
    row.version.textContent = String(event.version);
    row.time.textContent = formatTime(event.time);
    row.time.title = formatDateTime(event.time);
    row.status.textContent = status;
    row.status.className = `c-status chip ${status}`;
    row.origin.textContent = shortId(event.origin);
    row.origin.title = event.origin ?? "";
  }

  #renderCount(): void {
    const head = this.#head;
    if (!this.#index) {
      this.#count.textContent = `${formatCount(head)} events`;
      return;
    }
    const scanning = this.#index.scanned < head;
    const percent = head === 0 ? 100 : Math.floor((this.#index.scanned / head) * 100);
    this.#count.textContent = `${formatCount(this.#index.length)} of ${formatCount(head)}${
      scanning ? ` · searching ${percent}%` : ""
    }`;
  }

  // ---- filter and live updates ------------------------------------------------------------

  #applyFilter(): void {
    this.#index?.stop();
    if (isEmptyFilter(this.#filter)) {
      this.#index = undefined;
      this.reveal(this.#source.position.value);
      this.#schedule();
      return;
    }
    const index = new FilterIndex((after, to) => this.#readKept(after, to), compileFilter(this.#filter), {
      onProgress: () => this.#schedule(),
    });
    this.#index = index;
    this.#viewport.scrollTop = 0;
    this.#source.access.whenComplete().then(
      () => index.extend(this.#head),
      () => {},
    );
    this.#schedule();
  }

  /** Events `after + 1 ..= to` this store still holds: those below what retention keeps are skipped. */
  #readKept(after: number, to: number): AnnalsEvent[] {
    try {
      return this.#source.access.range(after, to);
    } catch (error) {
      const below = error as { code?: string; retainedFrom?: number };
      if (below.code !== "NOT_RETAINED" || typeof below.retainedFrom !== "number") throw error;
      const from = Math.min(below.retainedFrom - 1, to);
      return from > after ? this.#source.access.range(from, to) : [];
    }
  }

  #onChange(change: Change): void {
    this.#head = change.head;
    if (this.#index) {
      if (change.rebased || change.reset || change.previousHead < this.#index.scanned) {
        this.#index.truncate(change.previousHead, change.head);
      }
      void this.#index.extend(change.head);
    }
    this.#schedule();
  }

  #onKey(event: KeyboardEvent): void {
    const position = this.#source.position;
    const delta =
      event.key === "ArrowDown" ? 1 : event.key === "ArrowUp" ? -1 : event.key === "PageDown" ? 20 : event.key === "PageUp" ? -20 : 0;
    if (delta === 0) return;
    event.preventDefault();
    const current = Math.max(0, this.#indexOf(position.value));
    const next = Math.max(0, Math.min(this.#rowCount() - 1, current + delta));
    if (this.#rowCount() === 0) return;
    this.#source.follow.set(false);
    position.set(this.#positionAt(next));
    this.reveal(this.#positionAt(next));
  }

  #renderRejected(): void {
    const doc = this.#doc;
    show(this.#rejectedBox, this.#rejected.length > 0);
    this.#rejectedSummary.textContent = `Rejected by the server (${formatCount(this.#rejected.length)}) — no longer in the log`;
    // The latest first: that is what the developer just saw fail.
    const items = this.#rejected
      .slice(-200)
      .reverse()
      .map((rejection) =>
        h(
          doc,
          "div",
          {
            class: "row rejected-row",
            "data-testid": "devtools-rejected-row",
            title: `${rejection.reason}\nid ${rejection.event.id}\ndata ${preview(rejection.event.data, 500)}`,
          },
          h(doc, "span", { class: "c-toggle" }),
          h(doc, "span", { class: "c-pos" }, "—"),
          h(doc, "span", { class: "c-stream" }, rejection.event.stream),
          h(doc, "span", { class: "c-type" }, rejection.event.type),
          h(doc, "span", { class: "c-reason" }, rejection.reason + (rejection.actualVersion !== undefined ? ` (server at v${rejection.actualVersion})` : "")),
          h(doc, "span", { class: "c-status chip rejected" }, "rejected"),
        ),
      );
    replaceChildren(this.#rejectedList, ...items);
  }
}

function requestFrame(callback: () => void): number {
  if (typeof requestAnimationFrame === "function") return requestAnimationFrame(callback);
  return setTimeout(callback, 16) as unknown as number;
}

function cancelFrame(id: number): void {
  if (!id) return;
  if (typeof cancelAnimationFrame === "function") cancelAnimationFrame(id);
  else clearTimeout(id);
}
