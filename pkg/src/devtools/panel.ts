// The panel: a shadow root (docked to the bottom of the page, or inside the element given),
// a toolbar (source, projection, the store's counters, the what-if and frozen badges,
// bundle export and import), and for the selected source the timeline beside the
// inspector (travel, state, diff, event, divergence).

import { debugAccess } from "../debug.js";
import { h, replaceChildren, show } from "./dom.js";
import { bundleSummary, exportBundleToFile } from "./bundle.js";
import { Divergence } from "./divergence.js";
import { formatCount } from "./format.js";
import { Signal, WhatIf, type AnyStore, type Source } from "./model.js";
import { STYLES } from "./styles.js";
import { Timeline } from "./timeline.js";
import { Travel, type DiffFunction } from "./travel.js";

export interface MountedDevtools {
  /** Removes the panel, stops listening to the store and closes opened bundles. */
  unmount(): void;
}

/** The views of the source on screen. */
interface SourceViews {
  timeline: Timeline;
  travel: Travel;
  divergence: Divergence | undefined;
}

const HEIGHT_KEY = "annals-devtools-height";
const DOCKED_HEIGHT = "var(--devtools-height, 44vh)";

export function mountPanel(store: AnyStore, element: Element | undefined, diff: DiffFunction): MountedDevtools {
  const doc = (element?.ownerDocument ?? globalThis.document) as Document | undefined;
  if (!doc) throw new Error("mountDevtools needs a DOM (a document to render in)");
  const access = debugAccess(store);

  // A tag of its own: the page's rules for div, section, ... do not match it; and inline
  // styles (above any page rule but !important ones) set what the shadow root's :host cannot.
  const host = doc.createElement("annals-devtools");
  host.setAttribute("data-annals-devtools", "");
  host.setAttribute("data-testid", "devtools-host");
  host.className = element ? "embedded" : "docked";
  host.style.cssText = element
    ? "display:block;position:relative;height:100%;margin:0;padding:0;border:0;"
    : `display:block;position:fixed;left:0;right:0;bottom:0;top:auto;width:auto;height:${DOCKED_HEIGHT};margin:0;padding:0;border:0;z-index:2147483000;`;
  const shadow = host.attachShadow({ mode: "open" });
  const style = doc.createElement("style");
  style.textContent = STYLES;
  shadow.appendChild(style);

  const cleanup: (() => void)[] = [];
  const makeSource = (kind: Source["kind"], label: string, target: AnyStore): Source => {
    const targetAccess = kind === "app" ? access : debugAccess(target);
    return {
      kind,
      label,
      store: target,
      access: targetAccess,
      position: new Signal(target.head),
      follow: new Signal(true),
      projection: new Signal(targetAccess.projections()[0]?.name ?? ""),
      whatIf: new WhatIf(),
    };
  };
  const app = makeSource("app", `this app (${store.name})`, store);
  const sources: Source[] = [app];
  const summaries = new Map<Source, HTMLElement>();
  let current = app;
  let views: SourceViews | undefined;
  let sourceCleanup: (() => void)[] = [];

  // ---- toolbar ------------------------------------------------------------------------
  const sourceSelect = h(doc, "select", {
    "data-testid": "devtools-source",
    "aria-label": "source",
    title: "What the panel shows: this app's store, or a bug bundle you opened",
    onchange: () => select(sources[Number(sourceSelect.value)]!),
  });
  const projectionSelect = h(doc, "select", {
    "data-testid": "devtools-projection",
    "aria-label": "projection",
    title: "The projection whose state the inspector shows",
    onchange: () => current.projection.set(projectionSelect.value),
  });
  const stats = h(doc, "span", { class: "stat", "data-testid": "devtools-stats" });
  const whatIfLabel = h(doc, "span", {});
  const whatIfBadge = h(
    doc,
    "span",
    { class: "badge whatif", "data-testid": "devtools-whatif-badge", hidden: true, title: "Events switched off in the timeline: the inspector folds the state without them" },
    whatIfLabel,
    h(doc, "button", { type: "button", "data-testid": "devtools-whatif-restore", onclick: () => current.whatIf.clear() }, "restore"),
  );
  const frozenLabel = h(doc, "span", {});
  const frozenBadge = h(
    doc,
    "span",
    { class: "badge frozen", "data-testid": "devtools-frozen-badge", hidden: true, title: "The app shows this position; its appends fail with FROZEN" },
    frozenLabel,
    h(doc, "button", { type: "button", "data-testid": "devtools-unfreeze", onclick: () => store.unfreeze() }, "back to the present"),
  );
  const fileInput = h(doc, "input", {
    type: "file",
    accept: ".ndjson,.json,.txt,application/x-ndjson",
    "data-testid": "devtools-import",
    hidden: true,
    onchange: () => {
      const file = fileInput.files?.[0];
      fileInput.value = "";
      if (file) void openBundle(file, file.name);
    },
  });
  const exportButton = h(
    doc,
    "button",
    { type: "button", "data-testid": "devtools-export", title: "Save this store's log and fingerprints to a file (a bug bundle)", onclick: () => void exportBundle() },
    "Export bundle",
  );
  const importButton = h(
    doc,
    "button",
    { type: "button", "data-testid": "devtools-import-button", title: "Open a bug bundle and browse it here", onclick: () => fileInput.click() },
    "Open bundle…",
  );
  const minimize = h(doc, "button", {
    type: "button",
    class: "ghost",
    "data-testid": "devtools-minimize",
    title: "Minimise / restore",
    onclick: () => {
      const minimized = host.classList.toggle("minimized");
      host.style.height = minimized ? "34px" : DOCKED_HEIGHT;
      minimize.textContent = minimized ? "▴" : "▾";
    },
  }, "▾");
  const close = h(doc, "button", { type: "button", class: "ghost", "data-testid": "devtools-close", title: "Close the devtools", onclick: () => mounted.unmount() }, "✕");
  const toolbar = h(
    doc,
    "header",
    { class: "toolbar" },
    h(doc, "span", { class: "brand" }, h(doc, "span", { class: "logo" }), "annals", h(doc, "b", {}, "devtools")),
    sourceSelect,
    projectionSelect,
    h(doc, "span", { class: "sep" }),
    stats,
    whatIfBadge,
    frozenBadge,
    h(doc, "span", { class: "grow" }),
    exportButton,
    importButton,
    fileInput,
    element ? null : minimize,
    element ? null : close,
  );
  const notice = h(doc, "div", { class: "notice", "data-testid": "devtools-notice", hidden: true });
  const body = h(doc, "div", { class: "body" });
  const resize = element ? null : h(doc, "div", { class: "resize", "data-testid": "devtools-resize", title: "Drag to resize" });
  const panel = h(doc, "div", { class: "panel", "data-testid": "devtools" }, resize, toolbar, notice, body);
  shadow.appendChild(panel);

  // ---- the selected source ------------------------------------------------------------
  function renderSources(): void {
    replaceChildren(
      sourceSelect,
      ...sources.map((source, i) => h(doc!, "option", { value: i, selected: source === current }, source.label)),
    );
  }

  function renderProjections(): void {
    const names = current.access.projections();
    replaceChildren(
      projectionSelect,
      ...names.map((p) => h(doc!, "option", { value: p.name, selected: p.name === current.projection.value }, `${p.name}  v${p.version}`)),
    );
    projectionSelect.disabled = names.length === 0;
  }

  function renderStats(): void {
    const s = current.store;
    const status = s.syncStatus;
    const synced = current.kind === "app" && debugAccess(s).synced;
    replaceChildren(
      stats,
      "head ",
      h(doc!, "b", {}, formatCount(s.head)),
      s.confirmedHead !== s.head ? ` · confirmed ${formatCount(s.confirmedHead)}` : "",
      synced ? ` · ${formatCount(status.pending)} pending · ` : "",
      synced ? h(doc!, "span", { class: `dot ${status.online ? "online" : "offline"}` }) : null,
      synced ? (status.online ? "online" : "offline") : "",
    );
  }

  function renderWhatIf(): void {
    const n = current.whatIf.count;
    whatIfLabel.textContent = `what-if: ${n} event${n === 1 ? "" : "s"} off`;
    show(whatIfBadge, n > 0);
  }

  function renderFrozen(): void {
    const at = store.frozenAt;
    frozenLabel.textContent = at === undefined ? "" : `❄ app frozen at #${formatCount(at)}`;
    show(frozenBadge, at !== undefined);
  }

  function setNotice(content: HTMLElement | string | null, kind: "info" | "error" = "info"): void {
    if (content === null) {
      replaceChildren(notice);
      show(notice, false);
      return;
    }
    notice.className = `notice ${kind}`;
    replaceChildren(notice, content);
    show(notice, true);
  }

  function select(source: Source): void {
    if (views) {
      views.timeline.destroy();
      views.travel.destroy();
      views.divergence?.destroy();
    }
    for (const off of sourceCleanup) off();
    current = source;
    const timeline = new Timeline(doc!, source);
    const divergence =
      source.kind === "app"
        ? new Divergence(doc!, source, diff, (position) => {
            source.follow.set(false);
            source.position.set(position);
            timeline.reveal(position);
          })
        : undefined;
    const travel = new Travel(
      doc!,
      source,
      diff,
      divergence ? { name: "divergence", label: "Divergence", element: divergence.element } : undefined,
      (text) => timeline.setFilter({ stream: "", type: "", text }),
    );
    views = { timeline, travel, divergence };
    replaceChildren(body, timeline.element, travel.element);
    sourceCleanup = [
      source.whatIf.changed.subscribe(renderWhatIf),
      source.store.on("change", renderStats),
      source.store.on("sync", renderStats),
      // A position picked by the user scrolls into view; the head, while following it, is
      // kept in view by the timeline itself unless the user scrolled away to read.
      source.position.subscribe((position) => {
        if (!source.follow.value) timeline.reveal(position);
      }),
    ];
    exportButton.disabled = source.kind !== "app";
    setNotice(summaries.get(source) ?? null);
    renderSources();
    renderProjections();
    renderStats();
    renderWhatIf();
  }

  async function exportBundle(): Promise<void> {
    exportButton.disabled = true;
    try {
      const link = h(doc!, "span", {});
      const exported = await exportBundleToFile(store, doc!, link);
      setNotice(
        h(doc!, "span", { "data-testid": "devtools-export-done" }, `Exported ${formatCount(store.head)} events (${formatCount(Math.ceil(exported.bytes / 1024))} KB) to`, link),
      );
    } catch (error) {
      setNotice(`Export failed: ${error instanceof Error ? error.message : String(error)}`, "error");
    } finally {
      exportButton.disabled = current.kind !== "app";
    }
  }

  async function openBundle(bundle: Blob | string, fileName: string): Promise<void> {
    setNotice(`Opening ${fileName}…`);
    try {
      const opened = await access.openBundle(bundle);
      const source = makeSource("bundle", `bundle ${fileName}`, opened.store as AnyStore);
      sources.push(source);
      summaries.set(source, bundleSummary(doc!, opened.header, opened.differences, fileName));
      select(source);
    } catch (error) {
      setNotice(`Could not open ${fileName}: ${error instanceof Error ? error.message : String(error)}`, "error");
    }
  }

  // ---- docking: resizing, remembered height -------------------------------------------
  if (resize) {
    try {
      const saved = globalThis.localStorage?.getItem(HEIGHT_KEY);
      if (saved) host.style.setProperty("--devtools-height", saved);
    } catch {
      // Storage may be off (privacy modes): the default height it is.
    }
    resize.addEventListener("pointerdown", (down) => {
      down.preventDefault();
      const view = doc.defaultView;
      const move = (event: PointerEvent) => {
        const height = Math.max(120, Math.min((view?.innerHeight ?? 800) - 40, (view?.innerHeight ?? 800) - event.clientY));
        host.style.setProperty("--devtools-height", `${height}px`);
      };
      const up = () => {
        doc.removeEventListener("pointermove", move);
        doc.removeEventListener("pointerup", up);
        try {
          globalThis.localStorage?.setItem(HEIGHT_KEY, host.style.getPropertyValue("--devtools-height"));
        } catch {
          // Not remembered, that is all.
        }
      };
      doc.addEventListener("pointermove", move);
      doc.addEventListener("pointerup", up);
    });
  }

  cleanup.push(store.on("frozen", renderFrozen));
  (element ?? doc.body).appendChild(host);
  select(app);
  renderFrozen();

  let unmounted = false;
  const mounted: MountedDevtools = {
    unmount() {
      if (unmounted) return;
      unmounted = true;
      if (views) {
        views.timeline.destroy();
        views.travel.destroy();
        views.divergence?.destroy();
      }
      for (const off of [...sourceCleanup, ...cleanup]) off();
      for (const source of sources) if (source.kind === "bundle") void source.store.close().catch(() => {});
      host.remove();
    },
  };
  return mounted;
}
