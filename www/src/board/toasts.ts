// Notices in the corner: a refused command, a change the server refused, a failure.

export type ToastKind = "refused" | "rejected" | "error" | "info";

const LIMIT = 4;
/** Refusals and information fade after this long (unless hovered); failures stay until closed. */
const FADE_MS = 12_000;

function container(): HTMLElement {
  const box = document.querySelector<HTMLElement>('[data-testid="toasts"]');
  if (!box) throw new Error('missing element [data-testid="toasts"]');
  return box;
}

/** Shows a notice; `code` is the error code it stands for (shown small, kept in `data-code`). */
export function toast(kind: ToastKind, title: string, message: string, code?: string): HTMLElement {
  const box = container();
  const item = document.createElement("div");
  item.className = `toast ${kind}`;
  item.dataset.testid = "toast";
  item.dataset.kind = kind;
  if (code) item.dataset.code = code;
  item.setAttribute("role", kind === "info" ? "status" : "alert");

  const head = document.createElement("div");
  head.className = "toast-head";
  const strong = document.createElement("strong");
  strong.textContent = title;
  head.append(strong);
  if (code) {
    const chip = document.createElement("code");
    chip.textContent = code;
    head.append(chip);
  }
  const close = document.createElement("button");
  close.type = "button";
  close.className = "toast-close";
  close.dataset.testid = "toast-dismiss";
  close.setAttribute("aria-label", "dismiss");
  close.textContent = "✕";
  close.addEventListener("click", () => item.remove());
  head.append(close);

  const body = document.createElement("p");
  body.dataset.testid = "toast-message";
  body.textContent = message;
  item.append(head, body);
  box.append(item);
  while (box.children.length > LIMIT) box.firstElementChild?.remove();

  if (kind === "refused" || kind === "info") {
    let timer = setTimeout(() => item.remove(), FADE_MS);
    item.addEventListener("mouseenter", () => clearTimeout(timer));
    item.addEventListener("mouseleave", () => {
      timer = setTimeout(() => item.remove(), FADE_MS / 2);
    });
  }
  return item;
}
