// The package as published: its size budget (≤ 12 KiB of minified ESM,
// gzipped, and the README saying the measured size), the files `npm pack`
// puts in it (the built files, README and LICENSE, no sources nor tests), no
// runtime dependency, and the README's API table naming exactly what the
// package exports.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import test from "node:test";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const read = (path) => readFileSync(join(root, path), "utf8");
const BUDGET = 12 * 1024;

test("size: dist/index.min.js is at most 12 KiB gzipped, and the README states its size", () => {
  const gz = gzipSync(readFileSync(join(root, "dist/index.min.js")), { level: 9 }).length;
  assert.ok(gz <= BUDGET, `${gz} bytes gzipped, over the ${BUDGET}-byte budget`);
  const stated = /<!-- size -->([0-9.]+) KiB<!-- \/size -->/.exec(read("README.md"));
  assert.ok(stated, "the README states the size between <!-- size --> markers");
  const kib = gz / 1024;
  assert.ok(Math.abs(Number(stated[1]) - kib) <= 0.3, `the README says ${stated[1]} KiB, measured ${kib.toFixed(1)} KiB`);
});

test("pack: npm pack holds the built files, their types, README and LICENSE, and nothing else", () => {
  const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: root, encoding: "utf8" });
  const files = JSON.parse(out)[0].files.map((f) => f.path).sort();
  const declarations = ["backoff", "binary", "client", "codec", "errors", "http", "index", "subscriptions"].map((m) => `dist/${m}.d.ts`);
  assert.deepEqual(files, ["LICENSE", "README.md", ...declarations, "dist/index.js", "dist/index.min.js", "package.json"].sort());
});

test("pack: no runtime dependency, an ESM entry with its types", () => {
  const pkg = JSON.parse(read("package.json"));
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.type, "module");
  assert.deepEqual(pkg.exports["."], { types: "./dist/index.d.ts", import: "./dist/index.js" });
});

test("docs: the README's API table names exactly what the package exports", () => {
  const exported = new Set();
  for (const [, list] of read("dist/index.d.ts").matchAll(/export \{([^}]*)\}/g)) {
    for (const item of list.split(",")) {
      const name = item.replace(/^\s*type\s+/, "").trim();
      if (name) exported.add(name);
    }
  }
  const table = /<!-- api -->([\s\S]*?)<!-- \/api -->/.exec(read("README.md"));
  assert.ok(table, "the README has an API table between <!-- api --> markers");
  const documented = new Set([...table[1].matchAll(/^\| `([A-Za-z]+)`/gm)].map((m) => m[1]));
  assert.deepEqual([...documented].sort(), [...exported].sort());
});
