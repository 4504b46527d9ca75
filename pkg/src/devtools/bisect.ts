// Finding where two replicas' states part: the first position at which their fingerprints
// differ, asking each side for a batch of positions per round (one round trip to another
// tab or one pass over a replica), so a million-event log takes about five rounds of 16.

/** One side's fingerprints at the given positions, in order; null where it cannot tell. */
export type FingerprintOracle = (positions: readonly number[]) => Promise<(string | null)[]>;

export interface BisectOptions {
  /** The first position to compare (0: the initial state). Default 0. */
  from?: number;
  /** The last position to compare (both sides must have it). */
  to: number;
  /** Positions asked per round. Default 16. */
  batch?: number;
  signal?: AbortSignal;
}

export interface BisectResult {
  /** The first position whose fingerprints differ, or null when every compared position agreed. */
  position: number | null;
  /** The last position known to agree before it (`position - 1` once narrowed down). */
  lastEqual: number | null;
  /** Both sides' fingerprints at `position` (`[local, other]`). */
  fingerprints: [string, string] | null;
  rounds: number;
  /** Positions asked of each side, all rounds together. */
  asked: number;
}

/**
 * Compares `local` and `other` at up to `batch` positions spread over `from..=to`; once a
 * sample differs, narrows the gap between the last agreeing and the first differing sample
 * with `batch` more positions per round until they are neighbours. Assumes, as a bisect
 * must, that states that parted stay apart at the sampled positions; what it returns is
 * always a position that differs right after one that agrees (or `from` itself).
 */
export async function findFirstDivergence(
  local: FingerprintOracle,
  other: FingerprintOracle,
  options: BisectOptions,
): Promise<BisectResult> {
  const from = Math.max(0, Math.floor(options.from ?? 0));
  const to = Math.floor(options.to);
  const batch = Math.max(2, Math.floor(options.batch ?? 16));
  let rounds = 0;
  let asked = 0;

  const compare = async (positions: number[]) => {
    options.signal?.throwIfAborted();
    rounds += 1;
    asked += positions.length;
    const [mine, theirs] = await Promise.all([local(positions), other(positions)]);
    options.signal?.throwIfAborted();
    // Ascending, so that the first difference found is the earliest one.
    let lastEqual: number | null = null;
    for (let i = 0; i < positions.length; i++) {
      const a = mine[i] ?? null;
      const b = theirs[i] ?? null;
      if (a === null || b === null) continue;
      if (a !== b) return { differs: { position: positions[i]!, fingerprints: [a, b] as [string, string] }, lastEqual };
      lastEqual = positions[i]!;
    }
    return { differs: null, lastEqual };
  };

  if (to < from) return { position: null, lastEqual: null, fingerprints: null, rounds, asked };

  const first = await compare(spread(from - 1, to, batch, true));
  if (!first.differs) {
    return { position: null, lastEqual: first.lastEqual, fingerprints: null, rounds, asked };
  }
  let lo = first.lastEqual ?? from - 1;
  let hi = first.differs.position;
  let fingerprints = first.differs.fingerprints;

  while (hi - lo > 1) {
    const round = await compare(spread(lo, hi, batch, false));
    if (round.differs) {
      hi = round.differs.position;
      fingerprints = round.differs.fingerprints;
      lo = round.lastEqual ?? lo;
    } else if (round.lastEqual !== null) {
      lo = round.lastEqual;
    } else {
      // Neither side could answer between lo and hi: the gap cannot narrow further.
      break;
    }
  }
  return { position: hi, lastEqual: lo >= from ? lo : null, fingerprints, rounds, asked };
}

/**
 * Up to `count` ascending positions in `(lo, hi]` (`withHi`) or `(lo, hi)`, evenly spread,
 * every one of them when they are few.
 */
export function spread(lo: number, hi: number, count: number, withHi: boolean): number[] {
  const last = withHi ? hi : hi - 1;
  const available = last - lo;
  if (available <= 0) return [];
  if (available <= count) return Array.from({ length: available }, (_, i) => lo + 1 + i);
  const positions: number[] = [];
  // With hi: count points ending at hi; without: count points strictly inside.
  const steps = withHi ? count : count + 1;
  for (let k = 1; k <= count; k++) {
    const p = lo + Math.round(((hi - lo) * k) / steps);
    if (p > lo && p <= last && p !== positions[positions.length - 1]) positions.push(p);
  }
  return positions;
}
