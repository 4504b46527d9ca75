// A state diff as a list a developer reads top to bottom: changed, added, removed paths,
// each with its values before and after; long lists a page at a time.

import type { DiffEntry, StateDiff } from "../types.js";
import { h } from "./dom.js";
import { formatCount, formatPath, preview } from "./format.js";

const PAGE = 200;

export function diffView(doc: Document, diff: StateDiff, caption: string): HTMLElement {
  const total = diff.added.length + diff.removed.length + diff.changed.length;
  const counts = h(
    doc,
    "div",
    { class: "diff-summary", "data-testid": "devtools-diff-summary" },
    h(doc, "span", { class: "caption" }, caption),
    h(doc, "span", { class: "chip changed" }, `~ ${formatCount(diff.changed.length)} changed`),
    h(doc, "span", { class: "chip added" }, `+ ${formatCount(diff.added.length)} added`),
    h(doc, "span", { class: "chip removed" }, `− ${formatCount(diff.removed.length)} removed`),
  );
  const list = h(doc, "div", { class: "diff-list", "data-testid": "devtools-diff" });
  const root = h(doc, "div", { class: "diff" }, counts, list);
  if (total === 0) {
    list.appendChild(h(doc, "div", { class: "empty-inline" }, "the states are equal"));
    return root;
  }
  const entries: [kind: "changed" | "added" | "removed", entry: DiffEntry][] = [
    ...diff.changed.map((e) => ["changed", e] as ["changed", DiffEntry]),
    ...diff.added.map((e) => ["added", e] as ["added", DiffEntry]),
    ...diff.removed.map((e) => ["removed", e] as ["removed", DiffEntry]),
  ];
  let shown = 0;
  const more = h(doc, "button", { class: "more", type: "button", "data-testid": "devtools-diff-more" });
  const page = () => {
    const end = Math.min(entries.length, shown + PAGE);
    for (let i = shown; i < end; i++) {
      const [kind, entry] = entries[i]!;
      const sign = kind === "changed" ? "~" : kind === "added" ? "+" : "−";
      list.appendChild(
        h(
          doc,
          "div",
          { class: `diff-entry ${kind}`, "data-testid": `devtools-diff-${kind}` },
          h(doc, "span", { class: "sign" }, sign),
          h(doc, "span", { class: "path", title: formatPath(entry.path) }, formatPath(entry.path)),
          kind !== "added" ? h(doc, "span", { class: "before", title: preview(entry.before, 2000) }, preview(entry.before)) : null,
          kind === "changed" ? h(doc, "span", { class: "arrow" }, "→") : null,
          kind !== "removed" ? h(doc, "span", { class: "after", title: preview(entry.after, 2000) }, preview(entry.after)) : null,
        ),
      );
    }
    shown = end;
    more.remove();
    if (shown < entries.length) {
      more.textContent = `show more (${formatCount(shown)} of ${formatCount(entries.length)})`;
      list.appendChild(more);
    }
  };
  more.addEventListener("click", page);
  page();
  return root;
}
