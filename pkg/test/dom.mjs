// A DOM for the React Testing Library tests (not a test file itself). Import it before
// React: react-dom decides at load whether it runs in a browser.
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>", { url: "http://localhost/" });
const { window } = dom;
globalThis.window = window;
globalThis.document = window.document;
for (const name of ["HTMLElement", "Element", "Node", "Event", "MutationObserver", "getComputedStyle"]) {
  globalThis[name] ??= window[name];
}
globalThis.navigator ??= window.navigator;
globalThis.requestAnimationFrame ??= (callback) => setTimeout(() => callback(Date.now()), 0);
globalThis.cancelAnimationFrame ??= (id) => clearTimeout(id);
// Tells React that updates are wrapped in act() (what RTL's own setup does under Jest).
globalThis.IS_REACT_ACT_ENVIRONMENT = true;
