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
