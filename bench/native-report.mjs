// Summarises the native criterion benchmarks (benches/native.rs) from target/criterion into
// target/bench/native.md and native.json, with the goals of the performance issue, and
// prints the table. Run by `make bench` after `cargo bench --profile perf --bench native`.

import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./harness.mjs";

const CRITERION = join(process.env.CARGO_TARGET_DIR ?? join(ROOT, "target"), "criterion");
const OUT = join(ROOT, "target", "bench");

/** Goals by benchmark id: a minimum throughput (bytes/s or elements/s) and how it reads. */
const GOALS = {
  "segment codec/decode 100k events": { min: 500e6, text: "≥ 500 MB/s" },
  "rust projection/fold 100k events": { min: 5e6, text: "≥ 5 M events/s" },
};

function* benchmarks(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const path = join(dir, entry.name);
    const meta = join(path, "new", "benchmark.json");
    if (existsSync(meta)) yield path;
    else yield* benchmarks(path);
  }
}

const rate = (perSecond, unit) =>
  unit === "Bytes"
    ? perSecond >= 2 ** 30
      ? `${(perSecond / 2 ** 30).toFixed(2)} GiB/s`
      : `${(perSecond / 1e6).toFixed(0)} MB/s`
    : `${(perSecond / 1e6).toFixed(2)} M events/s`;

if (!existsSync(CRITERION)) {
  console.error(`bench: ${CRITERION} is missing: run \`cargo bench --profile perf --bench native\` first`);
  process.exit(1);
}
const rows = [];
for (const path of benchmarks(CRITERION)) {
  const meta = JSON.parse(readFileSync(join(path, "new", "benchmark.json"), "utf8"));
  const estimates = JSON.parse(readFileSync(join(path, "new", "estimates.json"), "utf8"));
  const [unit, amount] = Object.entries(meta.throughput ?? {})[0] ?? [];
  if (!unit) continue;
  const seconds = estimates.median.point_estimate / 1e9;
  const perSecond = amount / seconds;
  const goal = GOALS[meta.full_id];
  rows.push({
    id: meta.full_id,
    medianMs: seconds * 1e3,
    unit,
    perSecond,
    goal: goal?.text,
    met: goal ? perSecond >= goal.min : undefined,
  });
}
rows.sort((a, b) => a.id.localeCompare(b.id));
const table = [
  "| native benchmark (criterion, median) | time | throughput | goal |",
  "|---|---:|---:|---|",
  ...rows.map(
    (r) =>
      `| ${r.id} | ${r.medianMs.toFixed(2)} ms | ${rate(r.perSecond, r.unit)} | ${r.goal ? `${r.goal} ${r.met ? "✓" : "✗"}` : ""} |`,
  ),
].join("\n");
mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, "native.md"), `${table}\n`);
writeFileSync(join(OUT, "native.json"), JSON.stringify(rows, null, 2));
console.log(table);
