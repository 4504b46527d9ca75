// `annals/devtools`: the time-travel panel. An app that never imports this entry ships none
// of it.
//
//   import { mountDevtools } from "annals/devtools";
//   const devtools = mountDevtools(store);          // docked at the bottom of the page
//   mountDevtools(store, document.querySelector("#debug")!); // or inside an element
//   devtools.unmount();
//
// Test ids (`data-testid`, inside the panel's open shadow root; Playwright's locators pierce it):
//   devtools-host            the element holding the shadow root
//   devtools                 the panel
//   toolbar: devtools-source (select: this app / opened bundles), devtools-projection (select),
//     devtools-stats, devtools-whatif-badge ("what-if: N events off"), devtools-whatif-restore,
//     devtools-frozen-badge ("app frozen at #N"), devtools-unfreeze, devtools-export,
//     devtools-import (the file input), devtools-import-button, devtools-minimize,
//     devtools-close, devtools-resize (docked only)
//   devtools-notice          export result (devtools-export-done, devtools-bundle-link) or the
//     opened bundle's summary (devtools-bundle-summary, devtools-bundle-same,
//     devtools-bundle-differences > devtools-bundle-difference)
//   timeline: devtools-filter-stream, devtools-filter-type, devtools-filter-text,
//     devtools-timeline-count, devtools-timeline (the scrolling viewport), devtools-row
//     (data-position; class "selected", "off"), devtools-row-toggle (what-if checkbox),
//     devtools-rejected-toggle, devtools-rejected > devtools-rejected-row
//   travel: devtools-first, devtools-prev, devtools-slider, devtools-next, devtools-last,
//     devtools-position (number input), devtools-follow, devtools-freeze,
//     devtools-tab-state, devtools-tab-diff, devtools-tab-event, devtools-tab-divergence,
//     devtools-state-meta, devtools-checkpoints, devtools-copy, devtools-content, devtools-json, devtools-json-toggle,
//     devtools-json-more, devtools-diff-mode, devtools-diff-a, devtools-diff-b,
//     devtools-diff-summary, devtools-diff > devtools-diff-changed / -added / -removed,
//     devtools-diff-more, devtools-event, devtools-event-flow (filters the timeline to
//     the event's correlationId), devtools-error
//   divergence: devtools-divergence-run, devtools-divergence-status, devtools-divergence >
//     devtools-divergence-result (data-peer, data-projection, data-position),
//     devtools-divergence-jump

import { diff } from "./diff.js";
import type { MountedDevtools } from "./devtools/panel.js";
import { mountPanel } from "./devtools/panel.js";
import type { EventShape, Store } from "./types.js";

export { diff };
export { connectReduxDevtools } from "./devtools/redux.js";
export type {
  ReduxDevtoolsConnection,
  ReduxDevtoolsExtension,
  ReduxDevtoolsExtensionConnection,
  ReduxDevtoolsOptions,
} from "./devtools/redux.js";
export { findFirstDivergence } from "./devtools/bisect.js";
export type { BisectOptions, BisectResult, FingerprintOracle } from "./devtools/bisect.js";
export type { MountedDevtools };

/**
 * Shows the time-travel panel for `store`: docked at the bottom of the page, or inside
 * `element`. Its styles live in a shadow root: the page's CSS does not reach it, and its
 * CSS does not leak. `unmount()` removes it and stops listening.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function mountDevtools(store: Store<any, any, any> | Store<EventShape>, element?: Element): MountedDevtools {
  return mountPanel(store as never, element, diff);
}
