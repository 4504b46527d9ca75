// What changed between two JSON-like states, path by path: the time-travel panel shows it
// between two positions, and tests compare states with it. Values that are the same object
// are skipped whole, so the states of an immutable reducer (which share what they did not
// change) are compared in time proportional to what changed.

import type { DiffEntry, StateDiff } from "./types.js";

type Path = (string | number)[];

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The paths added, removed and changed from `a` to `b`. Objects and arrays are compared
 * member by member (an array by index); anything else, or a change of kind (an object
 * becoming an array, a number becoming a string), is one `changed` entry at that path.
 */
export function diff(a: unknown, b: unknown): StateDiff {
  const out: StateDiff = { added: [], removed: [], changed: [] };
  walk(a, b, [], out);
  return out;
}

function walk(a: unknown, b: unknown, path: Path, out: StateDiff): void {
  if (a === b) return;
  if (Array.isArray(a) && Array.isArray(b)) {
    const shared = Math.min(a.length, b.length);
    for (let i = 0; i < shared; i++) walk(a[i], b[i], [...path, i], out);
    for (let i = shared; i < b.length; i++) out.added.push(entry([...path, i], undefined, b[i], "added"));
    for (let i = shared; i < a.length; i++) out.removed.push(entry([...path, i], a[i], undefined, "removed"));
    return;
  }
  if (isRecord(a) && isRecord(b)) {
    for (const key of Object.keys(a)) {
      if (!Object.prototype.hasOwnProperty.call(b, key)) out.removed.push(entry([...path, key], a[key], undefined, "removed"));
      else walk(a[key], b[key], [...path, key], out);
    }
    for (const key of Object.keys(b)) {
      if (!Object.prototype.hasOwnProperty.call(a, key)) out.added.push(entry([...path, key], undefined, b[key], "added"));
    }
    return;
  }
  if (Number.isNaN(a) && Number.isNaN(b)) return;
  out.changed.push(entry(path, a, b, "changed"));
}

function entry(path: Path, before: unknown, after: unknown, kind: "added" | "removed" | "changed"): DiffEntry {
  if (kind === "added") return { path, after };
  if (kind === "removed") return { path, before };
  return { path, before, after };
}
