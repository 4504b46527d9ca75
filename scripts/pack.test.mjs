// The npm package as it would be published: what `make pack` wrote to
// target/pkg/annals-<version>.tgz (npm pack of pkg/), and `npm publish --dry-run`.
// Run by `make test-pack` (after `make pack`): node --test scripts/pack.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const pkgDir = join(root, "pkg");
const manifest = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
const tarball = join(
  process.env.CARGO_TARGET_DIR ?? join(root, "target"),
  "pkg",
  `${manifest.name}-${manifest.version}.tgz`,
);

/** The tarball's files, without npm's leading `package/`. */
function files() {
  return execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" })
    .split("\n")
    .filter((line) => line && !line.endsWith("/"))
    .map((line) => line.replace(/^package\//, ""))
    .sort();
}

/** One file of the tarball, as text. */
function fileText(path) {
  return execFileSync("tar", ["-xzOf", tarball, `package/${path}`], { encoding: "utf8" });
}

test("the tarball holds the licenses, the compiled modules with their types, and the wasm", () => {
  const list = files();
  for (const required of [
    "package.json",
    "README.md",
    "LICENSE-MIT",
    "LICENSE-APACHE",
    "dist/index.js",
    "dist/index.d.ts",
    "dist/browser.js",
    "dist/node.js",
    "dist/react.js",
    "dist/react.d.ts",
    "dist/devtools.js",
    "dist/devtools.d.ts",
    "dist/devtools/panel.js",
    "dist/devtools/panel.d.ts",
    "wasm/annals.js",
    "wasm/annals.d.ts",
    "wasm/annals_bg.wasm",
  ]) {
    assert.ok(list.includes(required), `${required} is missing from ${list.join(", ")}`);
  }
  for (const js of list.filter((f) => /^dist\/.*\.js$/.test(f))) {
    const types = js.replace(/\.js$/, ".d.ts");
    assert.ok(list.includes(types), `${js} has no ${types}`);
  }
});

test("the licenses are the repository's, with its copyright line", () => {
  for (const name of ["LICENSE-MIT", "LICENSE-APACHE"]) {
    const packed = fileText(name);
    assert.equal(packed, readFileSync(join(root, name), "utf8"), `${name} differs from the root's`);
    assert.match(packed, /Copyright \(c\) 2026 the annals developers/);
  }
  assert.match(fileText("LICENSE-APACHE"), /Apache License\s+Version 2\.0, January 2004/);
  assert.match(fileText("LICENSE-MIT"), /^MIT License/);
});

test("no development files: tests, sources, source maps, build stamps, tsbuildinfo", () => {
  const allowed = /^(package\.json|README\.md|LICENSE-MIT|LICENSE-APACHE|dist\/((generated|devtools)\/)?[^/]+\.(js|d\.ts)|wasm\/annals(_bg)?\.(js|d\.ts|wasm|wasm\.d\.ts))$/;
  const unexpected = files().filter((f) => !allowed.test(f));
  assert.deepEqual(unexpected, [], `unexpected files in the tarball: ${unexpected.join(", ")}`);
  const dev = files().filter((f) =>
    /(^|\/)test\/|\.test\.|\.map$|tsbuildinfo|\.stamp$|(^|\/)src\//.test(f),
  );
  assert.deepEqual(dev, []);
});

test("every export resolves to a file in the tarball, with types first", () => {
  const packed = JSON.parse(fileText("package.json"));
  const list = files();
  assert.ok(packed.exports["."], "no . export");
  assert.ok(packed.exports["./react"], "no ./react export");
  for (const [subpath, target] of Object.entries(packed.exports)) {
    if (typeof target === "string") {
      assert.ok(list.includes(target.replace(/^\.\//, "")), `${subpath} -> ${target}: not packed`);
      continue;
    }
    // TypeScript takes the first condition that matches: `types` must come first.
    assert.equal(Object.keys(target)[0], "types", `${subpath}: "types" is not the first condition`);
    for (const [condition, file] of Object.entries(target)) {
      assert.ok(
        list.includes(file.replace(/^\.\//, "")),
        `${subpath} (${condition}) -> ${file}: not in the tarball`,
      );
    }
  }
  assert.ok(list.includes(packed.types.replace(/^\.\//, "")), "types: not packed");
  // Importing a module of the package has no effect of its own, so bundlers may drop the
  // unused ones.
  assert.equal(packed.sideEffects, false);
  assert.equal(packed.license, "MIT OR Apache-2.0");
});

test("installed from the tarball into a fresh app, it runs from Node", { timeout: 120_000 }, () => {
  const app = mkdtempSync(join(tmpdir(), "annals-pack-"));
  try {
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    // The package has no dependencies: nothing is fetched.
    execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", tarball], {
      cwd: app,
      stdio: "pipe",
    });
    writeFileSync(
      join(app, "main.mjs"),
      `import { openStore } from "annals";
       const store = await openStore({ name: "t", storage: "memory",
         projections: { n: { initial: 0, apply: (s) => s + 1 } } });
       await store.append({ stream: "s", type: "Happened", data: {} });
       console.log(JSON.stringify({ head: store.head, n: store.get("n") }));
       await store.close();`,
    );
    const out = execFileSync("node", ["main.mjs"], { cwd: app, encoding: "utf8" });
    assert.deepEqual(JSON.parse(out), { head: 1, n: 1 });
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
});

test("npm publish --dry-run succeeds without warnings", { timeout: 120_000 }, () => {
  const result = spawnSync("npm", ["publish", "--dry-run"], {
    cwd: pkgDir,
    encoding: "utf8",
    // Twice told: a dry run, never a publish.
    env: { ...process.env, npm_config_dry_run: "true" },
  });
  assert.equal(result.status, 0, `npm publish --dry-run failed:\n${result.stderr}`);
  // Being logged in is the publisher's business, not the package's: that warning alone is
  // expected. Any other (a field npm would correct, a missing file) is the package's fault.
  const warnings = result.stderr
    .split("\n")
    .filter((line) => /npm warn/i.test(line))
    .filter((line) => !/requires you to be logged in/.test(line));
  assert.deepEqual(warnings, [], result.stderr);
  assert.match(result.stderr, /\(dry-run\)/);
});
