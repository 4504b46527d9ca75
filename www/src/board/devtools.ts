// The devtools button: loads `annals/devtools` on first use (a dynamic import, so the
// board's own bundle carries none of the panel's bytes) and mounts or unmounts the panel.
// While the panel is docked, the page keeps room for it (`--dock`: its height), so that
// the board and the notices stay above it.
import type { BoardStore } from "./commands";
import { toast } from "./toasts";

interface Mounted {
  store: BoardStore;
  unmount: () => void;
  watchers: { disconnect(): void }[];
}

let mounted: Mounted | undefined;
let loading = false;

function setOpen(button: HTMLButtonElement, open: boolean): void {
  button.dataset.state = open ? "open" : "closed";
  button.setAttribute("aria-pressed", String(open));
}

/** Forgets the panel (closed by this button, by its own ✕, or when the store is replaced). */
function closed(button: HTMLButtonElement): void {
  const was = mounted;
  mounted = undefined;
  for (const watcher of was?.watchers ?? []) watcher.disconnect();
  document.documentElement.style.removeProperty("--dock");
  setOpen(button, false);
}

/** Removes the panel if it is open. */
export function closeDevtools(button: HTMLButtonElement): void {
  if (!mounted) return;
  const { unmount } = mounted;
  closed(button);
  unmount();
}

/** Opens the panel on `store`, or closes it if it is open. */
export async function toggleDevtools(store: BoardStore, button: HTMLButtonElement): Promise<void> {
  if (loading) return;
  if (mounted) {
    closeDevtools(button);
    return;
  }
  loading = true;
  button.dataset.state = "loading";
  try {
    const { mountDevtools } = await import("annals/devtools");
    const panel = mountDevtools(store);
    const host = document.querySelector<HTMLElement>('[data-testid="devtools-host"]');
    const watchers: Mounted["watchers"] = [];
    if (host) {
      const resize = new ResizeObserver(() => {
        document.documentElement.style.setProperty("--dock", `${host.getBoundingClientRect().height}px`);
      });
      resize.observe(host);
      // The panel's own close button removes it from the page.
      const removal = new MutationObserver(() => {
        if (!host.isConnected && mounted?.store === store) closed(button);
      });
      removal.observe(document.body, { childList: true });
      watchers.push(resize, removal);
    }
    mounted = { store, unmount: () => panel.unmount(), watchers };
    setOpen(button, true);
  } catch (err) {
    button.dataset.state = "failed";
    toast("error", "The devtools did not load", err instanceof Error ? err.message : String(err));
    console.error(err);
  } finally {
    loading = false;
  }
}
