// The devtools button: loads `annals/devtools` on first use (a dynamic import, so the
// board's own bundle carries none of the panel's bytes) and mounts or unmounts the panel.
import type { BoardStore } from "./commands";
import { toast } from "./toasts";

let mounted: { store: BoardStore; unmount: () => void } | undefined;
let loading = false;

export async function toggleDevtools(store: BoardStore, button: HTMLButtonElement): Promise<void> {
  if (loading) return;
  if (mounted) {
    const was = mounted;
    mounted = undefined;
    was.unmount();
    button.dataset.state = "closed";
    button.setAttribute("aria-pressed", "false");
    return;
  }
  loading = true;
  button.dataset.state = "loading";
  try {
    // @ts-ignore -- until the package ships annals/devtools (its types come with it)
    const { mountDevtools } = await import("annals/devtools");
    const panel = mountDevtools(store);
    mounted = { store, unmount: () => panel.unmount() };
    button.dataset.state = "open";
    button.setAttribute("aria-pressed", "true");
  } catch (err) {
    button.dataset.state = "failed";
    toast("error", "The devtools did not load", err instanceof Error ? err.message : String(err));
    console.error(err);
  } finally {
    loading = false;
  }
}
