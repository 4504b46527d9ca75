// The panel's stylesheet. It lives in the panel's shadow root: the host page's CSS cannot
// reach in, and none of this leaks out. `:host` resets what inherits through the boundary.

import { ROW_HEIGHT } from "./timeline.js";

export const STYLES = /* css */ `
:host {
  all: initial;
  --bg: #17181b;
  --bg-1: #1d1e22;
  --bg-2: #25262b;
  --bg-3: #2e3036;
  --line: #34363d;
  --text: #d7d9de;
  --muted: #8a8f99;
  --faint: #5d616b;
  --accent: #7aa7ff;
  --accent-bg: #24345a;
  --green: #63c58a;
  --amber: #e5b45a;
  --red: #f07171;
  --violet: #b794f6;
  --cyan: #56c8e0;
  --mono: ui-monospace, "SF Mono", "Cascadia Code", Menlo, Consolas, "DejaVu Sans Mono", monospace;
  --sans: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color-scheme: dark;
  display: block;
  font: 12px/1.4 var(--sans);
  color: var(--text);
}
:host(.docked) { min-height: 34px; box-shadow: 0 -8px 24px rgba(0, 0, 0, 0.35); }
:host(.embedded) { min-height: 320px; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
button, input, select { font: inherit; color: inherit; }

.panel { position: relative; display: flex; flex-direction: column; height: 100%; background: var(--bg); border-top: 1px solid var(--line); overflow: hidden; }
.resize { position: absolute; top: -3px; left: 0; right: 0; height: 7px; cursor: ns-resize; z-index: 2; }
.resize:hover { background: linear-gradient(var(--accent), var(--accent)) center / 100% 2px no-repeat; }

/* toolbar */
.toolbar { display: flex; align-items: center; gap: 8px; height: 34px; flex: none; padding: 0 8px; background: var(--bg-1); border-bottom: 1px solid var(--line); white-space: nowrap; }
.brand { font-weight: 600; letter-spacing: 0.02em; color: var(--text); display: flex; align-items: center; gap: 6px; margin-right: 4px; }
.brand .logo { width: 14px; height: 14px; border-radius: 3px; background: linear-gradient(135deg, var(--accent), var(--violet)); }
.brand b { font-weight: 400; color: var(--muted); }
.toolbar .sep { width: 1px; height: 18px; background: var(--line); }
.grow { flex: 1; }
select, input[type="search"], input[type="number"] {
  height: 22px; background: var(--bg-2); border: 1px solid var(--line); border-radius: 4px; padding: 0 6px; outline: none;
}
select:focus, input:focus { border-color: var(--accent); }
button { height: 22px; padding: 0 8px; background: var(--bg-2); border: 1px solid var(--line); border-radius: 4px; cursor: pointer; }
button:hover:not(:disabled) { background: var(--bg-3); border-color: #454851; }
button:disabled { opacity: 0.5; cursor: default; }
button.primary { background: var(--accent-bg); border-color: #35508a; color: #dbe6ff; }
button.primary:hover:not(:disabled) { background: #2d4170; }
button.icon { width: 24px; padding: 0; display: inline-flex; align-items: center; justify-content: center; }
button.icon svg { width: 12px; height: 12px; fill: currentColor; }
button.link { background: none; border: none; color: var(--accent); padding: 0 4px; height: auto; text-decoration: underline; }
button.ghost { background: none; border-color: transparent; color: var(--muted); }
button.ghost:hover:not(:disabled) { color: var(--text); }
.stat { font-family: var(--mono); font-size: 11px; color: var(--muted); }
.stat b { color: var(--text); font-weight: 500; }
.dot { display: inline-block; width: 7px; height: 7px; border-radius: 50%; background: var(--faint); margin-right: 4px; vertical-align: 0; }
.dot.online { background: var(--green); }
.dot.offline { background: var(--red); }
.badge { display: inline-flex; align-items: center; gap: 6px; height: 22px; padding: 0 4px 0 8px; border-radius: 11px; font-weight: 500; }
.badge button { height: 18px; border-radius: 9px; font-size: 11px; padding: 0 8px; }
.badge.whatif { background: rgba(183, 148, 246, 0.16); color: var(--violet); border: 1px solid rgba(183, 148, 246, 0.4); }
.badge.frozen { background: rgba(86, 200, 224, 0.14); color: var(--cyan); border: 1px solid rgba(86, 200, 224, 0.4); }

.notice { flex: none; padding: 6px 10px; border-bottom: 1px solid var(--line); background: var(--bg-1); font-size: 12px; }
.notice .download { color: var(--accent); margin-left: 6px; }
.notice.error { color: var(--red); }
.bundle-summary .line { margin: 2px 0; }
.bundle-summary .good { color: var(--green); }
.bundle-summary.warn { border-left: 3px solid var(--amber); padding-left: 8px; }
.differences { margin: 4px 0 0; padding: 0; list-style: none; }
.difference { margin: 2px 0; color: #f2c6c6; }

/* body */
.body { display: flex; flex: 1; min-height: 0; }
.timeline { display: flex; flex-direction: column; flex: 1 1 56%; min-width: 0; border-right: 1px solid var(--line); }
.travel { display: flex; flex-direction: column; flex: 1 1 44%; min-width: 340px; }

.filters { display: flex; gap: 6px; padding: 6px 8px; border-bottom: 1px solid var(--line); align-items: center; flex: none; }
.filters input { min-width: 0; }
.filter-stream, .filter-type { flex: 1 1 120px; }
.filter-text { flex: 2 1 200px; }
.count { font-family: var(--mono); font-size: 11px; color: var(--muted); white-space: nowrap; min-width: 90px; text-align: right; }

.row {
  display: grid;
  grid-template-columns: 26px 64px minmax(70px, 1.1fr) minmax(90px, 1.4fr) 36px 96px 80px minmax(60px, 0.8fr);
  align-items: center;
  height: ${ROW_HEIGHT}px;
  padding-right: 8px;
  font-family: var(--mono);
  font-size: 11.5px;
  white-space: nowrap;
  cursor: default;
}
.row > span { overflow: hidden; text-overflow: ellipsis; padding-right: 8px; }
.row.header > span { color: var(--muted); }
.row.header { flex: none; height: 22px; font-family: var(--sans); font-size: 11px; color: var(--muted); background: var(--bg-1); border-bottom: 1px solid var(--line); text-transform: uppercase; letter-spacing: 0.04em; }
.row.header .c-toggle { text-align: center; padding: 0; }
.viewport { position: relative; flex: 1; min-height: 0; overflow-y: auto; overflow-x: hidden; outline: none; contain: strict; }
.spacer { width: 1px; }
.rows { position: absolute; top: 0; left: 0; right: 0; will-change: transform; }
.rows .row { border-bottom: 1px solid rgba(255, 255, 255, 0.03); }
.rows .row:hover { background: var(--bg-2); }
.rows .row.selected { background: var(--accent-bg); box-shadow: inset 2px 0 var(--accent); }
.rows .row.future { color: var(--faint); }
.rows .row.future .chip { opacity: 0.6; }
.rows .row.off .c-stream, .rows .row.off .c-type, .rows .row.off .c-pos { text-decoration: line-through; color: var(--violet); }
.c-toggle { justify-self: center; margin: 0; accent-color: var(--accent); }
.c-pos { text-align: right; color: var(--muted); }
.rows .row.selected .c-pos { color: var(--text); }
.c-type { color: #e6e8ec; }
.c-stream { color: #9fc1ff; }
.c-ver { color: var(--muted); text-align: right; }
.c-time { color: var(--muted); }
.c-origin { color: var(--faint); }
.chip { display: inline-block; padding: 0 6px; height: 16px; line-height: 16px; border-radius: 8px; font-family: var(--sans); font-size: 10.5px; font-weight: 500; }
.row .chip { justify-self: start; }
.chip.confirmed { color: var(--green); background: rgba(99, 197, 138, 0.12); }
.chip.pending { color: var(--amber); background: rgba(229, 180, 90, 0.14); }
.chip.rejected { color: var(--red); background: rgba(240, 113, 113, 0.14); }
.chip.changed { color: var(--amber); background: rgba(229, 180, 90, 0.12); }
.chip.added { color: var(--green); background: rgba(99, 197, 138, 0.12); }
.chip.removed { color: var(--red); background: rgba(240, 113, 113, 0.12); }
.empty { position: absolute; inset: 40px 0 auto; text-align: center; color: var(--muted); font-family: var(--sans); }

.rejected-box { flex: none; border-top: 1px solid var(--line); max-height: 40%; overflow: auto; background: rgba(240, 113, 113, 0.04); }
.rejected-list { padding-bottom: 4px; }
.rejected-box summary { padding: 4px 8px; color: var(--red); cursor: pointer; font-weight: 500; }
.rejected-row { grid-template-columns: 26px 64px minmax(70px, 1fr) minmax(90px, 1.2fr) minmax(120px, 2fr) 78px; }
.c-reason { color: #f2c6c6; }

/* travel */
.travel-controls { display: flex; align-items: center; gap: 4px; padding: 6px 8px; border-bottom: 1px solid var(--line); flex: none; }
.slider { flex: 1; min-width: 60px; accent-color: var(--accent); height: 22px; margin: 0 4px; }
input.position { width: 84px; font-family: var(--mono); text-align: right; }
.of { font-family: var(--mono); font-size: 11px; color: var(--muted); white-space: nowrap; }
.follow { color: var(--muted); font-size: 11px; border-radius: 11px; }
.follow.on { color: var(--green); border-color: rgba(99, 197, 138, 0.5); }
.tabs { display: flex; align-items: flex-end; gap: 2px; padding: 0 8px; height: 32px; border-bottom: 1px solid var(--line); flex: none; }
.tabs .primary { align-self: center; }
.tab { height: 28px; border: none; border-bottom: 2px solid transparent; border-radius: 0; background: none; color: var(--muted); padding: 0 10px; }
.tab:hover:not(:disabled) { background: none; color: var(--text); }
.tab.active { color: var(--text); border-bottom-color: var(--accent); }
.diff-controls { display: flex; gap: 8px; align-items: center; padding: 6px 8px; border-bottom: 1px solid var(--line); flex: none; color: var(--muted); }
.meta-row { flex: none; display: flex; align-items: center; gap: 10px; padding: 0 6px 0 10px; min-height: 26px; border-bottom: 1px solid var(--line); font-family: var(--mono); font-size: 11px; color: var(--muted); }
.meta { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.checkpoints { color: var(--faint); white-space: nowrap; }
button.small { height: 20px; font-size: 11px; padding: 0 6px; font-family: var(--sans); }
.meta.busy::after { content: " · folding…"; color: var(--amber); }
.content { flex: 1; min-height: 0; overflow: auto; padding: 6px 4px 16px 8px; }
.error { color: var(--red); font-family: var(--mono); padding: 8px; white-space: pre-wrap; }
.muted { color: var(--muted); }
.mono { font-family: var(--mono); }

/* JSON tree */
.json { font-family: var(--mono); font-size: 11.5px; line-height: 18px; }
.jn { white-space: nowrap; }
.jh { cursor: pointer; border-radius: 3px; }
.jh:hover { background: var(--bg-2); }
.jc { padding-left: 14px; border-left: 1px solid #2b2d33; margin-left: 6px; }
.tw { display: inline-block; width: 14px; height: 14px; padding: 0; border: none; background: none; color: var(--faint); font-size: 9px; vertical-align: 0; }
.tw:hover:not(:disabled) { background: none; color: var(--text); }
button.tw::before { content: "▶"; display: inline-block; transition: transform 0.1s; }
.jn.open > .jh > button.tw::before { transform: rotate(90deg); }
button.tw:disabled::before { content: ""; }
.k { color: #9fc1ff; }
.k-index { color: var(--muted); }
.colon { color: var(--faint); }
.sum { color: var(--muted); }
.peek { color: var(--faint); margin-left: 8px; overflow: hidden; text-overflow: ellipsis; display: inline-block; max-width: 50%; vertical-align: bottom; }
.jn.open > .jh > .peek { display: none; }
.v-string { color: #e9b97a; }
.v-number { color: #b5e08c; }
.v-boolean { color: var(--violet); }
.v-null, .v-undefined { color: var(--faint); font-style: italic; }
.more { margin: 2px 0 2px 14px; height: 18px; font-size: 11px; color: var(--accent); background: none; border-color: transparent; }

/* diff */
.diff-summary { display: flex; gap: 6px; align-items: center; margin: 2px 0 8px; }
.diff-summary .caption { color: var(--muted); }
.diff-entry { display: flex; gap: 8px; align-items: baseline; font-family: var(--mono); font-size: 11.5px; padding: 2px 6px; border-radius: 3px; margin-bottom: 1px; }
.diff-entry .sign { width: 10px; font-weight: 700; }
.diff-entry .path { color: var(--text); min-width: 120px; max-width: 40%; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.diff-entry .before, .diff-entry .after { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; min-width: 0; }
.diff-entry .arrow { color: var(--faint); }
.diff-entry.changed { background: rgba(229, 180, 90, 0.06); }
.diff-entry.changed .sign { color: var(--amber); }
.diff-entry.changed .before { color: #e69b9b; text-decoration: line-through; text-decoration-color: rgba(240, 113, 113, 0.5); }
.diff-entry.changed .after { color: #9fe0b5; }
.diff-entry.added { background: rgba(99, 197, 138, 0.07); }
.diff-entry.added .sign, .diff-entry.added .after { color: var(--green); }
.diff-entry.removed { background: rgba(240, 113, 113, 0.07); }
.diff-entry.removed .sign, .diff-entry.removed .before { color: var(--red); }
.empty-inline { color: var(--muted); padding: 8px 0; }

/* event */
.fields { display: grid; grid-template-columns: 80px 1fr; gap: 2px 10px; margin-bottom: 8px; }
.field { display: contents; }
.field .name { color: var(--muted); }
.field .value { font-family: var(--mono); font-size: 11.5px; overflow-wrap: anywhere; }
.field .strong { color: #fff; font-weight: 600; }
.subhead { margin: 8px 0 2px; color: var(--muted); text-transform: uppercase; font-size: 10.5px; letter-spacing: 0.05em; }

/* divergence */
.divergence { padding: 4px 2px; }
.divergence .explain { color: var(--muted); margin: 0 0 8px; max-width: 70ch; }
.divergence .actions { display: flex; gap: 10px; align-items: center; margin-bottom: 10px; }
.finding { padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; margin-bottom: 6px; background: var(--bg-1); }
.finding.differs { border-color: rgba(240, 113, 113, 0.45); }
.finding .peer { font-weight: 600; margin: 0 4px; }
.finding .line { margin: 2px 0; }
.finding .warn { color: var(--amber); }
.finding .diff { margin-top: 6px; }
.notes { margin-bottom: 6px; }
`;
