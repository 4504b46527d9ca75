// How the panel writes values: times, counts, short previews of JSON.

/** `13:04:05.120` in local time: events of one debugging session are minutes apart, not days. */
export function formatTime(ms: number): string {
  if (!Number.isFinite(ms)) return "";
  const d = new Date(ms);
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** The full date and time, for a tooltip. */
export function formatDateTime(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : "";
}

/** `1,234,567`. */
export function formatCount(n: number): string {
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** `1.4 MB`, `820 KB`, `312 B`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** One line of JSON, cut at `max` characters (row previews, diff values). */
export function preview(value: unknown, max = 80): string {
  let text: string;
  if (value === undefined) text = "undefined";
  else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A JSON path for people: `cards.c1.title`, `items[3]`. */
export function formatPath(path: readonly (string | number)[]): string {
  if (path.length === 0) return "(root)";
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(key)) out += out ? `.${key}` : key;
    else out += `[${JSON.stringify(key)}]`;
  }
  return out;
}

/** Ids and origins are UUIDs: the last 8 characters tell them apart on screen. */
export function shortId(id: string | undefined): string {
  if (!id) return "";
  return id.length > 12 ? `…${id.slice(-8)}` : id;
}
