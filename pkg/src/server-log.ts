// Reads a sync server's confirmed log page by page, with the store's own credentials: what
// the divergence search folds into a fresh replica to compare with this one. A one-off
// read for debugging, so it goes over `fetch` here rather than through the sync client.

import { AnnalsError } from "./errors.js";
import { checkSyncHeaders, checkSyncToken } from "./options.js";
import type { AnnalsEvent, SyncOptions } from "./types.js";

/** Events per page asked of the server. */
const PAGE = 5_000;

interface PullPage {
  events: AnnalsEvent[];
  head: number;
  more: boolean;
}

async function credentials(sync: SyncOptions): Promise<Record<string, string>> {
  const request = { reason: "start" as const };
  const token = checkSyncToken(typeof sync.token === "function" ? await sync.token(request) : sync.token);
  const extra = sync.headers === undefined ? {} : typeof sync.headers === "function" ? await sync.headers(request) : sync.headers;
  return { ...checkSyncHeaders(extra), authorization: `Bearer ${token}` };
}

/** How many times a busy server (429, 503) is asked again before the read fails. */
const BUSY_RETRIES = 5;

/**
 * Calls `onPage` with each page of the server's confirmed log, in order, until its head (or,
 * with `range`, the pages holding positions `range.after + 1 ..= range.to`, the last one cut there).
 */
export async function pullServerLog(
  sync: SyncOptions,
  onPage: (events: AnnalsEvent[]) => Promise<void>,
  range?: { after: number; to: number },
): Promise<number> {
  const headers = await credentials(sync);
  const base = `${sync.url.replace(/\/+$/, "")}/v1/stores/${encodeURIComponent(sync.store)}/pull`;
  let after = range?.after ?? 0;
  const to = range?.to ?? Infinity;
  let busy = 0;
  for (;;) {
    if (after >= to) return after;
    let response: Response;
    try {
      response = await fetch(`${base}?after=${after}&limit=${Math.min(PAGE, to - after)}&wait=0`, { headers });
    } catch (error) {
      throw new AnnalsError("OFFLINE", `the sync server at ${sync.url} did not answer: ${String(error)}`, { cause: error });
    }
    // Busy (its rate limit, or overloaded): ask again when it says, a few times.
    if ((response.status === 429 || response.status === 503) && busy < BUSY_RETRIES) {
      busy += 1;
      const seconds = Number(response.headers.get("retry-after"));
      await new Promise((resolve) => setTimeout(resolve, Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 5) * 1000 : 1000));
      continue;
    }
    if (response.status === 401 || response.status === 403) {
      throw new AnnalsError(response.status === 401 ? "UNAUTHORIZED" : "FORBIDDEN", `the sync server refused to read store "${sync.store}"`);
    }
    if (!response.ok) throw new AnnalsError("SERVER", `the sync server answered ${response.status} to a pull`);
    const page = (await response.json()) as PullPage;
    if (!Array.isArray(page.events)) throw new AnnalsError("SERVER", "the sync server's pull answer has no events");
    if (page.events.length > 0) {
      const last = page.events[page.events.length - 1]!.position;
      await onPage(last > to ? page.events.filter((e) => e.position <= to) : page.events);
      after = last;
    }
    if (!page.more || page.events.length === 0) return after;
  }
}
