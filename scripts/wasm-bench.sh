#!/usr/bin/env bash
# wasm-bench.sh - the wasm module's benchmarks, all in one run:
#   * module size after wasm-opt (what the npm package ships), raw and gzip -9; target <= 150 KB gzip
#   * indicium issuance per second natively (wasm/examples/bench_native.rs: the same
#     PsdDevice code, Debian's rustc, [profile.release]), in Node and in headless Chromium
#     (wasm/bench/bench.mjs on the npm packages), as ratios wasm / native; target >= 0.4;
#     and the wide-arithmetic module (web/wide/, wasm/js/wide.js) in Chromium started with
#     --js-flags=--wasm-wide-arithmetic (Chromium 156 keeps the instructions behind it;
#     Node 20 has none); target >= 0.45
# Two loops each: "typed" = issueIndicium() (APDU, ECDSA signature, decode, READ REGISTERS,
# JS object), "raw" = the ISSUE INDICIUM APDU through transmit(). The machine may be shared,
# so the four are measured in ROUNDS interleaved rounds of SECONDS per loop and the best
# round of each counts.
set -euo pipefail
source "$(dirname "$0")/wasm-common.sh"
ROUNDS=${ROUNDS:-3}
SECONDS_PER_LOOP=${SECONDS_PER_LOOP:-2}

bash scripts/wasm-pkg.sh >/dev/null
# The loops personalize and refill with the demo functions (`wasm-pkg.sh demo`); the signing
# code is the same as the shipped module's, whose size is measured.
bash scripts/wasm-pkg.sh demo >/dev/null
wasm=$PKG_DIR/web/openpsd_bg.wasm
raw=$(stat -c %s "$wasm")
gz=$(gzip -9c "$wasm" | wc -c)

echo "== building the native benchmark (cargo build --release --example bench_native)"
cargo build -q --release -p openpsd-wasm --example bench_native
native_bin=$CARGO_TARGET_DIR/release/examples/bench_native

www=$REPO/target/wasm-www/bench
rm -rf "$www" && mkdir -p "$www"
cp wasm/bench/index.html wasm/bench/bench.mjs "$www/"
cp -r "$PKG_DIR/demo/web" "$www/pkg"

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  n=$("$native_bin" "$SECONDS_PER_LOOP")
  o=$(node wasm/bench/node-bench.mjs "$PKG_DIR/demo/nodejs" "$SECONDS_PER_LOOP")
  c=$(node wasm/tests/js/chromium.mjs "$www" "/index.html?seconds=$SECONDS_PER_LOOP" 120)
  # The wide-arithmetic module, in Chromium with V8's flag for the instructions (wide.js
  # picks it; the page says whether it ran).
  w=$(CHROMIUM_JS_FLAGS=--wasm-wide-arithmetic node wasm/tests/js/chromium.mjs "$www" \
    "/index.html?seconds=$SECONDS_PER_LOOP&wide=1" 120)
  case $w in *'"wide":true'*) ;; *) echo "error: the wide-arithmetic module did not run: $w" >&2; exit 1 ;; esac
  printf 'round %d  native %s  node %s  chromium %s  chromium-wide %s\n' "$r" "$n" "$o" "$c" "$w"
  printf 'native %s\nnode %s\nchromium %s\nwide %s\n' "$n" "$o" "$c" "$w" >>"$results"
done

node - "$results" "$raw" "$gz" "$("$CHROMIUM" --version 2>/dev/null | awk '{print $2}')" <<'JS'
const fs = require('fs');
const [file, raw, gz, chromiumVersion] = process.argv.slice(2);
const best = {};
for (const line of fs.readFileSync(file, 'utf8').trim().split('\n')) {
  const [env, json] = [line.slice(0, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)];
  const v = JSON.parse(json);
  best[env] = best[env] || { typed: 0, raw: 0 };
  for (const k of ['typed', 'raw']) best[env][k] = Math.max(best[env][k], v[k]);
}
const kb = (n) => (n / 1024).toFixed(1) + ' KB';
console.log('\n== module size (wasm-pack --profile wasm-release, after wasm-opt)');
console.log(`openpsd_bg.wasm  raw ${raw} B (${kb(raw)})  gzip -9 ${gz} B (${kb(gz)})  ` +
  `target <= 150 KB gzip: ${gz <= 150 * 1024 ? 'met' : 'NOT MET'} (scripts/wasm-pkg.sh fails the build when over)`);
console.log(`\n== indicia per second (best of each; node ${process.version}, chromium ${chromiumVersion})`);
console.log('loop    native     node  chromium  chr-wide   node/native  chromium/native  chr-wide/native');
for (const k of ['typed', 'raw']) {
  const n = best.native[k], o = best.node[k], c = best.chromium[k], w = best.wide[k];
  const mark = (x, target) => `${x.toFixed(2)}${x >= target ? '' : ` (<${target})`}`;
  console.log(`${k.padEnd(6)} ${n.toFixed(0).padStart(7)} ${o.toFixed(0).padStart(8)} ` +
    `${c.toFixed(0).padStart(9)} ${w.toFixed(0).padStart(9)}   ${mark(o / n, 0.4).padEnd(12)} ` +
    `${mark(c / n, 0.4).padEnd(16)} ${mark(w / n, 0.45)}`);
}
console.log('(chr-wide: the wide-arithmetic module, Chromium with --js-flags=--wasm-wide-arithmetic; ' +
  'target 0.45)');
JS
