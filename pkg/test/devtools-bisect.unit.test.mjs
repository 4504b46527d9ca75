// The divergence search of annals/devtools as a pure function: two sides that answer
// fingerprints for a batch of positions per round; it finds the first position where they
// differ in few rounds, never asks more than a batch at once, and copes with sides that
// cannot answer some positions.
import assert from "node:assert/strict";
import { test } from "node:test";

import { findFirstDivergence, spread } from "../dist/devtools/bisect.js";

/** A side whose fingerprint at p is `fp(p)`, recording every batch it was asked. */
function side(fp) {
  const batches = [];
  const oracle = async (positions) => {
    batches.push([...positions]);
    return positions.map(fp);
  };
  return { oracle, batches };
}

const same = (p) => `f${p}`;
/** Agrees with `same` before `at`, differs from it from `at` on. */
const partsAt = (at) => (p) => (p < at ? `f${p}` : `x${p}`);

test("sides that agree everywhere: no divergence, in one round", async () => {
  const a = side(same);
  const b = side(same);
  const result = await findFirstDivergence(a.oracle, b.oracle, { to: 1_000_000 });
  assert.equal(result.position, null);
  assert.equal(result.fingerprints, null);
  assert.equal(result.rounds, 1);
  assert.equal(result.lastEqual, 1_000_000, "the head is among the compared positions");
});

test("finds the first differing position of a million in at most six rounds of 16", async () => {
  for (const at of [1, 2, 777, 500_000, 999_999, 1_000_000]) {
    const a = side(same);
    const b = side(partsAt(at));
    const result = await findFirstDivergence(a.oracle, b.oracle, { to: 1_000_000 });
    assert.equal(result.position, at, `diverging at ${at}`);
    assert.deepEqual(result.fingerprints, [`f${at}`, `x${at}`]);
    assert.equal(result.lastEqual, at - 1 >= 0 ? at - 1 : null);
    assert.ok(result.rounds <= 6, `${result.rounds} rounds for ${at}`);
    for (const batch of [...a.batches, ...b.batches]) assert.ok(batch.length <= 16, `a batch of ${batch.length}`);
    assert.deepEqual(a.batches, b.batches, "both sides are asked the same positions");
  }
});

test("initial states that differ are found at position 0", async () => {
  const result = await findFirstDivergence(side(same).oracle, side(partsAt(0)).oracle, { to: 50 });
  assert.equal(result.position, 0);
  assert.equal(result.lastEqual, null);
});

test("a narrower range and batch: only positions from..to are asked, `batch` at a time", async () => {
  const a = side(same);
  const result = await findFirstDivergence(a.oracle, side(partsAt(130)).oracle, { from: 100, to: 200, batch: 4 });
  assert.equal(result.position, 130);
  for (const batch of a.batches) {
    assert.ok(batch.length <= 4);
    for (const p of batch) assert.ok(p >= 100 && p <= 200, `asked ${p}`);
  }
});

test("positions a side cannot answer (null) are skipped, not taken for a difference", async () => {
  // The other side cannot tell odd positions; it differs from 41 on.
  const other = (p) => (p % 2 === 1 ? null : partsAt(41)(p));
  const result = await findFirstDivergence(side(same).oracle, side(other).oracle, { to: 100 });
  // 41 itself is unanswerable: the first position both can compare and that differs is 42.
  assert.equal(result.position, 42);
});

test("an aborted search rejects", async () => {
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(findFirstDivergence(side(same).oracle, side(same).oracle, { to: 10, signal: controller.signal }));
});

test("spread picks evenly spaced positions, all of them when few", () => {
  assert.deepEqual(spread(0, 5, 16, true), [1, 2, 3, 4, 5]);
  assert.deepEqual(spread(0, 5, 16, false), [1, 2, 3, 4]);
  assert.deepEqual(spread(0, 160, 16, true), [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160]);
  const inside = spread(0, 170, 16, false);
  assert.equal(inside.length, 16);
  assert.equal(inside[0], 10);
  assert.equal(inside[15], 160);
  assert.deepEqual(spread(7, 8, 16, false), []);
});
