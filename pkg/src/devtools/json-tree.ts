// A collapsible JSON tree that builds nothing it does not show: a node's children are
// rendered when it is first expanded, and big objects and arrays a page at a time, so a
// state with a million keys costs one page of DOM.

import { h } from "./dom.js";
import { formatCount, preview } from "./format.js";

export interface JsonTreeOptions {
  /** Levels open from the start (1: the root's children are listed). Default 1. */
  open?: number;
  /** Children rendered per page. Default 100. */
  pageSize?: number;
  /**
   * The open nodes by path (`JSON.stringify(path)`), kept up to date as the user expands
   * and collapses: pass the same set to the next tree and it opens the same nodes (the
   * state view re-renders as events arrive). Replaces `open` when given.
   */
  expanded?: Set<string>;
}

/** The tree of `value` in a `<div class="json">`. */
export function jsonTree(doc: Document, value: unknown, options: JsonTreeOptions = {}): HTMLElement {
  const pageSize = options.pageSize ?? 100;
  const root = h(doc, "div", { class: "json", "data-testid": "devtools-json" });
  root.appendChild(node(doc, null, value, [], options.open ?? 1, pageSize, options.expanded));
  return root;
}

function isContainer(value: unknown): value is object {
  return typeof value === "object" && value !== null;
}

function summary(value: object): string {
  if (Array.isArray(value)) return `Array(${formatCount(value.length)})`;
  const keys = Object.keys(value).length;
  return `{${formatCount(keys)} ${keys === 1 ? "key" : "keys"}}`;
}

function leaf(doc: Document, value: unknown): HTMLElement {
  const kind = value === null ? "null" : typeof value;
  const text = typeof value === "string" ? JSON.stringify(value) : value === undefined ? "undefined" : String(value);
  return h(doc, "span", { class: `v v-${kind}`, title: typeof value === "string" && text.length > 120 ? text : undefined }, text);
}

function node(
  doc: Document,
  key: string | number | null,
  value: unknown,
  path: (string | number)[],
  open: number,
  pageSize: number,
  expanded: Set<string> | undefined,
): HTMLElement {
  const pathKey = JSON.stringify(path);
  const row = h(doc, "div", { class: "jn", "data-path": pathKey });
  const label =
    key === null
      ? null
      : h(doc, "span", { class: typeof key === "number" ? "k k-index" : "k" }, typeof key === "number" ? String(key) : key);
  if (!isContainer(value)) {
    row.append(h(doc, "span", { class: "tw" }), ...(label ? [label, h(doc, "span", { class: "colon" }, ": ")] : []), leaf(doc, value));
    return row;
  }
  const entries = Array.isArray(value) ? null : Object.keys(value);
  const size = entries ? entries.length : (value as unknown[]).length;
  const toggle = h(doc, "button", {
    class: "tw",
    type: "button",
    "data-testid": "devtools-json-toggle",
    "aria-expanded": "false",
    "aria-label": "expand",
    disabled: size === 0,
  });
  const head = h(
    doc,
    "div",
    { class: "jh" },
    toggle,
    ...(label ? [label, h(doc, "span", { class: "colon" }, ": ")] : []),
    h(doc, "span", { class: "sum" }, size === 0 ? (entries ? "{}" : "[]") : summary(value)),
    h(doc, "span", { class: "peek" }, size === 0 ? "" : preview(value, 60)),
  );
  const children = h(doc, "div", { class: "jc", hidden: true });
  row.append(head, children);

  let shown = 0;
  const more = h(doc, "button", { class: "more", type: "button", "data-testid": "devtools-json-more" });
  const showPage = () => {
    const end = Math.min(size, shown + pageSize);
    const fragment = doc.createDocumentFragment();
    for (let i = shown; i < end; i++) {
      const childKey = entries ? entries[i]! : i;
      const childValue = entries ? (value as Record<string, unknown>)[entries[i]!] : (value as unknown[])[i];
      fragment.appendChild(node(doc, childKey, childValue, [...path, childKey], open - 1, pageSize, expanded));
    }
    shown = end;
    if (more.parentNode) more.remove();
    children.appendChild(fragment);
    if (shown < size) {
      more.textContent = `show ${formatCount(Math.min(pageSize, size - shown))} more (${formatCount(shown)} of ${formatCount(size)})`;
      children.appendChild(more);
    }
  };
  more.addEventListener("click", (event) => {
    event.stopPropagation();
    showPage();
  });
  const setOpen = (isOpen: boolean) => {
    if (isOpen && shown === 0) showPage();
    toggle.setAttribute("aria-expanded", String(isOpen));
    toggle.setAttribute("aria-label", isOpen ? "collapse" : "expand");
    row.classList.toggle("open", isOpen);
    if (isOpen) children.removeAttribute("hidden");
    else children.setAttribute("hidden", "");
  };
  head.addEventListener("click", () => {
    if (size === 0) return;
    const isOpen = toggle.getAttribute("aria-expanded") !== "true";
    setOpen(isOpen);
    if (isOpen) expanded?.add(pathKey);
    else expanded?.delete(pathKey);
  });
  if (size > 0 && (expanded ? expanded.has(pathKey) : open > 0)) setOpen(true);
  return row;
}
