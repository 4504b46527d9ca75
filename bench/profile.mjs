// Profiles benchmark scenarios with the Chrome DevTools protocol (CDP `Profiler`): prints
// self time by function (JS and wasm) and writes target/bench/<fn>.cpuprofile, which
// Chrome DevTools opens. Arguments are pairs: a scenario of bench/page/bench.js, prefixed
// with `@` to profile it, and its options as JSON. For example:
//
//   node bench/profile.mjs append '{"contender":"annals","name":"p","n":100000,"batch":1000}' \
//                          @replay '{"contender":"annals","name":"p","n":100000,"version":7}'

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, launch, log, selfTimes } from "./harness.mjs";

const args = process.argv.slice(2);
if (args.length === 0 || args.length % 2) {
  console.error("usage: node bench/profile.mjs [@]scenario options-json ...");
  process.exit(2);
}
const browser = await launch();
try {
  for (let i = 0; i < args.length; i += 2) {
    const profile = args[i].startsWith("@");
    const fn = args[i].replace(/^@/, "");
    const options = JSON.parse(args[i + 1]);
    const out = await browser.inPage(fn, options, { profile, samplingUs: Number(process.env.SAMPLING_US ?? 100) });
    if (!profile) {
      log(fn, JSON.stringify(out));
      continue;
    }
    log(fn, JSON.stringify(out.value));
    const dir = join(ROOT, "target", "bench");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${fn}.cpuprofile`), JSON.stringify(out.cpuProfile));
    for (const row of selfTimes(out.cpuProfile, Number(process.env.TOP ?? 30))) {
      console.log(`${(row.share * 100).toFixed(1).padStart(5)}%  ${row.ms.toFixed(1).padStart(8)} ms  ${row.name}  ${row.where}`);
    }
  }
} finally {
  await browser.close();
}
