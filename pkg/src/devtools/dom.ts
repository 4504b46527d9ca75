// The panel's only DOM helper: builds elements in the panel's document (the host page's,
// which may be a jsdom in tests), so no module touches the global `document` directly.

export type Child = Node | string | number | null | undefined | false;

export interface Attrs {
  [name: string]: string | number | boolean | null | undefined | ((event: Event) => void);
}

/**
 * `h(doc, "button", { class: "x", "data-testid": "y", onclick: f }, "label")`: attributes
 * whose name starts with `on` become listeners; `false`/`null`/`undefined` ones are left out.
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  doc: Document,
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = doc.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "value") {
      (element as unknown as { value: string }).value = String(value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, ...children);
  return element;
}

export function append(parent: Node, ...children: Child[]): void {
  const doc = parent.ownerDocument ?? (parent as Document);
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === "object" ? child : doc.createTextNode(String(child)));
  }
}

/** Replaces every child of `parent`. */
export function replaceChildren(parent: Element, ...children: Child[]): void {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
  append(parent, ...children);
}

/** Shows or hides an element (the `hidden` attribute; the stylesheet makes it stick). */
export function show(element: Element, visible: boolean): void {
  if (visible) element.removeAttribute("hidden");
  else element.setAttribute("hidden", "");
}

const ICONS = {
  first: "M2 2h2v12H2zM14 2v12L5 8z",
  prev: "M12 2v12L3 8z",
  next: "M4 2v12l9-6z",
  last: "M12 2h2v12h-2zM2 2v12l9-6z",
} as const;

/** A small inline SVG icon (no icon font: glyphs like ⏮ are missing from many systems). */
export function icon(doc: Document, name: keyof typeof ICONS): SVGSVGElement {
  const svg = doc.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("aria-hidden", "true");
  const path = doc.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.appendChild(path);
  return svg;
}
