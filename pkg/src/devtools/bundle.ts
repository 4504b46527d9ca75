// Bug bundles in the panel: export the store's log and fingerprints to a file a colleague
// can open, and describe what an opened bundle is and how it differs from this app.

import type { BundleDifference, BundleHeader } from "../types.js";
import { h } from "./dom.js";
import { formatCount } from "./format.js";
import type { AnyStore } from "./model.js";

/** `todos-2026-12-07T13-04-05.annals.ndjson`: the store and when, sortable, safe on every file system. */
export function bundleFileName(storeName: string, at: Date): string {
  const stamp = at.toISOString().slice(0, 19).replace(/:/g, "-");
  const safe = storeName.replace(/[^\w.-]+/g, "_") || "store";
  return `${safe}-${stamp}.annals.ndjson`;
}

export interface ExportedBundle {
  fileName: string;
  bytes: number;
  /** The object URL of the file (revoked after a minute). */
  url: string;
}

/**
 * Writes `store.exportBundle()` to a file: a Blob behind a download link that is clicked
 * for the user. The link stays in `container` (hidden) so tests and users can use it again.
 */
export async function exportBundleToFile(store: AnyStore, doc: Document, container: Element): Promise<ExportedBundle> {
  const text = await store.exportBundle();
  const blob = new Blob([text], { type: "application/x-ndjson" });
  const fileName = bundleFileName(store.name, new Date());
  const url = URL.createObjectURL(blob);
  const link = h(doc, "a", { href: url, download: fileName, "data-testid": "devtools-bundle-link", class: "download" }, fileName);
  container.querySelector("a.download")?.remove();
  container.appendChild(link);
  link.click();
  // Long enough for the download to start; the link then stops working (it is a stale file anyway).
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { fileName, bytes: blob.size, url };
}

/** What an opened bundle holds and, prominently, where it disagrees with this app. */
export function bundleSummary(doc: Document, header: BundleHeader, differences: BundleDifference[], fileName: string): HTMLElement {
  const exported = new Date(header.exportedAt).toLocaleString();
  const projections = header.projections.map((p) => `${p.name} v${p.version}`).join(", ") || "none";
  return h(
    doc,
    "div",
    { class: `bundle-summary ${differences.length ? "warn" : "ok"}`, "data-testid": "devtools-bundle-summary" },
    h(
      doc,
      "div",
      { class: "line" },
      h(doc, "strong", {}, fileName),
      ` · store “${header.store}” · ${formatCount(header.events)} events (${formatCount(header.confirmedHead)} confirmed) · exported ${exported} · annals ${header.annals} · projections ${projections}`,
    ),
    differences.length === 0
      ? h(doc, "div", { class: "line good", "data-testid": "devtools-bundle-same" }, "✓ this app's projections reproduce every fingerprint of the bundle")
      : h(
          doc,
          "ul",
          { class: "differences", "data-testid": "devtools-bundle-differences" },
          ...differences.map((d) =>
            h(
              doc,
              "li",
              { class: `difference ${d.kind}`, "data-testid": "devtools-bundle-difference" },
              h(doc, "span", { class: "chip rejected" }, d.kind),
              ` ${d.projection}: ${d.message}`,
              d.position !== undefined ? ` (first at #${formatCount(d.position)})` : "",
            ),
          ),
        ),
  );
}
