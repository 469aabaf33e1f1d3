#!/usr/bin/env bash
# wasm-pkg.sh - builds the npm package "openpsd" (wasm/) for browsers and for Node:
#   target/wasm-pkg/web     ES module (wasm-bindgen --target web) + storage.js / storage.d.ts,
#                           and wide/openpsd_bg.wasm + wide.js / wide.d.ts (the same module with
#                           wasm's wide-arithmetic instructions, picked where the engine has them)
#   target/wasm-pkg/nodejs  CommonJS (wasm-bindgen --target nodejs)
# in the three steps wasm-pack used to run for us (it is no longer installed: one CLI fewer to
# build, ~8.5 min of a fresh machine's set-up, issue 19), each printing what it does:
#   1. cargo build --lib --target wasm32-unknown-unknown --profile wasm-release -p openpsd-wasm
#      ([profile.wasm-release] of Cargo.toml; cargo's own "Compiling …" lines show progress),
#   2. wasm-bindgen --target web|nodejs --typescript --out-name openpsd (the CLI of
#      scripts/install-web-toolchain.sh, at the version of the crate in Cargo.lock),
#   3. wasm-opt with the flags of wasm/Cargo.toml's [package.metadata.openpsd] wasm-opt,
# then writes package.json (name "openpsd", the files it ships), and at the end packs both
# targets into the npm package target/wasm-pkg/openpsd-<version>.tgz (scripts/npm-pkg.sh).
# `wasm-pkg.sh demo` builds the same with openpsd-wasm's `demo` feature (buildPersonalization,
# demoKmsRefill, demoKmsReceipt: for the tests, the benchmark and the Node example) into
# target/wasm-pkg/demo/{web,nodejs}; the shipped packages and the measured size are without.
# The web package also gets the certificate meter's module (feature `certmeter`: core's
# seed 004 commands and openpsd-pki's RFC 3161 expansion) in web/cert/, which the web demo's
# Certificates tab imports lazily (/pkg/cert/openpsd.js); the main module never loads it.
# And the outside signer's module (feature `webcrypto`: the indicium key a non-extractable
# WebCrypto CryptoKey, issue 17 §5) in web/webcrypto/ with its driver signer.js
# (wasm/js/webcrypto.js) and index.js, which re-exports both (npm "openpsd/webcrypto").
# `demo` builds it too, with the demo functions, for the tests: demo/{web,nodejs}/webcrypto.
# Each module has its own gzip -9 budget, checked here (exit 1 when over):
#   web/openpsd_bg.wasm            MAIN_BUDGET (153,600 B = 150 KB)
#   web/cert/openpsd_bg.wasm       CERT_BUDGET (337,920 B = 330 KB; wasm/API.md § Certificate meter)
#   web/webcrypto/openpsd_bg.wasm  WEBCRYPTO_BUDGET (158,720 B = 155 KB: 157,833 B measured + ~0.9 KB when set; 157,240 B on 2026-12-02; wasm/API.md § WebCrypto signer)
#   web/wide/openpsd_bg.wasm       WIDE_BUDGET (153,600 B = 150 KB, as the main module; wasm/API.md § Wide arithmetic)
set -euo pipefail
source "$(dirname "$0")/wasm-common.sh"

MAIN_BUDGET=${MAIN_BUDGET:-153600}
CERT_BUDGET=${CERT_BUDGET:-337920}
WEBCRYPTO_BUDGET=${WEBCRYPTO_BUDGET:-158720}
WIDE_BUDGET=${WIDE_BUDGET:-153600}
dest=$PKG_DIR
features=
case "${1:-}" in
  '') ;;
  demo) dest=$PKG_DIR/demo; features=demo ;;
  *) echo "usage: $0 [demo]" >&2; exit 2 ;;
esac

# wasm-opt's flags, one TOML line in wasm/Cargo.toml: wasm-opt = ["-Os", "--converge", ...]
read -r -a WASM_OPT_ARGS <<<"$(sed -n 's/^wasm-opt = \[\(.*\)\]$/\1/p' wasm/Cargo.toml | tr -d '",')"
[ ${#WASM_OPT_ARGS[@]} -gt 0 ] || { echo "error: no wasm-opt = [...] line in wasm/Cargo.toml" >&2; exit 1; }
module=$CARGO_TARGET_DIR/$WASM_TARGET/wasm-release/openpsd_wasm.wasm

# Step 1: the module with the given features (empty: none).
build() {
  local t
  t=$(date +%s)
  echo "== cargo build --profile wasm-release -p openpsd-wasm${1:+ --features $1} (wasm32; first build takes minutes)"
  with_progress "building the wasm module${1:+ ($1)}" \
    cargo build --lib --target "$WASM_TARGET" --profile wasm-release -p openpsd-wasm ${1:+--features "$1"}
  [ -f "$module" ] || { echo "error: cargo produced no $module" >&2; exit 1; }
  echo "== built in $(( $(date +%s) - t )) s"
}
# Step 3 on one file, in place (extra wasm-opt flags after the file). wasm-opt is deterministic, and wasm-bindgen's module is the
# same for the web and the nodejs target: its output is kept under the hash of its input,
# flags and version (target/wasm32/wasm-opt-cache, the newest 20), so the second target and
# a rerun on an unchanged module (wasm-test.sh and wasm-bench.sh each run this script) take
# no time. The -Os --converge pass takes ~30-90 s per module with binaryen's npm build.
OPT_CACHE=$CARGO_TARGET_DIR/wasm-opt-cache
optimize() {
  local f=$1 key
  local args=("${WASM_OPT_ARGS[@]}" "${@:2}")
  key=$({ sha256sum <"$f"; printf '%s\n' "${args[@]}"; wasm-opt --version; } | sha256sum | cut -c1-32)
  if [ -f "$OPT_CACHE/$key.wasm" ]; then
    cp "$OPT_CACHE/$key.wasm" "$f"
    return
  fi
  with_progress "optimizing ${f#"$REPO"/} (wasm-opt)" wasm-opt "$f" -o "$f.tmp" "${args[@]}"
  mkdir -p "$OPT_CACHE"
  cp "$f.tmp" "$OPT_CACHE/$key.wasm.tmp" && mv "$OPT_CACHE/$key.wasm.tmp" "$OPT_CACHE/$key.wasm"
  mv "$f.tmp" "$f"
  # shellcheck disable=SC2012 # names are hex
  ls -t "$OPT_CACHE"/*.wasm | tail -n +21 | xargs -r rm -f
}
# Steps 2 and 3: bindings for a JS target into a fresh directory, then wasm-opt.
bind() {
  local target=$1 out=$2 t f
  t=$(date +%s)
  rm -rf "$out"
  echo "== wasm-bindgen --target $target -> ${out#"$REPO"/}; wasm-opt ${WASM_OPT_ARGS[*]}"
  wasm-bindgen "$module" --out-dir "$out" --typescript --target "$target" --out-name openpsd
  for f in "$out"/*.wasm; do
    optimize "$f"
  done
  [ -f "$out/openpsd_bg.wasm" ] || { echo "error: wasm-bindgen produced no module" >&2; exit 1; }
  echo "== bound and optimized in $(( $(date +%s) - t )) s"
}
# package.json as wasm-pack wrote it, under the npm name "openpsd" (the crate is openpsd-wasm),
# listing the extra files given.
package_json() {
  local target=$1 out=$2
  shift 2
  node -e '
    const fs = require("fs"), [target, out, version, license, ...extra] = process.argv.slice(1);
    const p = { name: "openpsd" };
    if (target === "web") p.type = "module";
    p.description = "openpsd postal security device (PSD) in WebAssembly: indicia, audits, refills, DataMatrix";
    p.version = version;
    p.license = license;
    p.files = ["openpsd_bg.wasm", "openpsd.js", "openpsd.d.ts"];
    if (fs.existsSync(out + "/snippets")) p.files.push("snippets/");
    p.files = [...new Set([...p.files, ...extra])];
    p.main = "openpsd.js";
    p.types = "openpsd.d.ts";
    if (target === "web") p.sideEffects = ["./snippets/*"];
    fs.writeFileSync(out + "/package.json", JSON.stringify(p, null, 2) + "\n");
  ' "$target" "$out" "$VERSION" "$LICENSE" "$@"
}
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
LICENSE=$(sed -n '/^\[workspace.package\]/,/^\[/s/^license = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$VERSION" ] && [ -n "$LICENSE" ] || { echo "error: no version/license in Cargo.toml's [workspace.package]" >&2; exit 1; }

t0=$(date +%s)
build "$features"
for target in web nodejs; do
  out=$dest/$target
  bind "$target" "$out"
  extra=()
  if [ "$target" = web ]; then
    cp wasm/js/storage.js wasm/js/storage.d.ts "$out/"
    extra=(storage.js storage.d.ts wide.js wide.d.ts wide/)
  fi
  if [ -z "$features" ] && [ "$target" = web ]; then extra+=(cert/ webcrypto/); fi
  package_json "$target" "$out" "${extra[@]}"
  wasm_size "$out/openpsd_bg.wasm"
done

# Each module against its budget (gzip -9 bytes).
budget() {
  local gz
  gz=$(gzip -9c "$1" | wc -c)
  if [ "$gz" -gt "$2" ]; then
    echo "error: ${1#"$REPO"/} is $gz B gzip, over its budget of $2 B (wasm/API.md § Building)" >&2
    exit 1
  fi
  echo "== ${1#"$REPO"/}: $gz B gzip, within its budget of $2 B ($(( $2 - gz )) B left)"
}
if [ -z "$features" ]; then
  cert=$dest/web/cert
  build certmeter
  bind web "$cert"
  rm -f "$cert/package.json" "$cert/README.md" "$cert/.gitignore"
  wasm_size "$cert/openpsd_bg.wasm"
  budget "$dest/web/openpsd_bg.wasm" "$MAIN_BUDGET"
  budget "$cert/openpsd_bg.wasm" "$CERT_BUDGET"
fi
# The outside signer's module for `target` into `out`, with signer.js and index.js.
webcrypto_module() {
  local target=$1 out=$2
  bind "$target" "$out"
  rm -f "$out/package.json" "$out/README.md" "$out/.gitignore"
  if [ "$target" = nodejs ]; then
    # The CommonJS build beside an ES module driver: .mjs, so Node reads it as one.
    cp wasm/js/webcrypto.js "$out/signer.mjs"
  else
    cp wasm/js/webcrypto.js "$out/signer.js"
    cp wasm/js/webcrypto.d.ts "$out/signer.d.ts"
    printf "export * from './openpsd.js';\nexport { default } from './openpsd.js';\nexport * from './signer.js';\n" >"$out/index.js"
    printf "export * from './openpsd.js';\nexport { default } from './openpsd.js';\nexport * from './signer.js';\n" >"$out/index.d.ts"
  fi
  wasm_size "$out/openpsd_bg.wasm"
}
if [ -z "$features" ]; then
  build webcrypto
  webcrypto_module web "$dest/web/webcrypto"
  budget "$dest/web/openpsd_bg.wasm" "$MAIN_BUDGET"
  budget "$dest/web/webcrypto/openpsd_bg.wasm" "$WEBCRYPTO_BUDGET"
else
  build "$features,webcrypto"
  webcrypto_module web "$dest/web/webcrypto"
  webcrypto_module nodejs "$dest/nodejs/webcrypto"
fi
# The same module again with wasm's wide-arithmetic instructions (`-C
# target-feature=+wide-arithmetic`: i64.mul_wide_u instead of a __multi3 call per 64x64->128
# product), for engines that have them (wasm/js/wide.js picks it by validating a probe;
# wasm/API.md § Wide arithmetic). In its own target directory: other rustflags would make
# cargo rebuild every crate of the plain build each time the two alternate. Its glue must be
# the plain module's byte for byte, so only the .wasm is shipped, in web/wide/, with
# wide.js beside openpsd.js. Engines without the instructions (Node 20, Chromium 156 unless
# started with --js-flags=--wasm-wide-arithmetic) never load it.
wide_module() {
  local out=$1 plain_js=$2 t wide_module_file tmp n
  t=$(date +%s)
  echo "== cargo build --profile wasm-release -p openpsd-wasm${features:+ --features $features} with +wide-arithmetic"
  CARGO_TARGET_DIR=$CARGO_TARGET_DIR-wide \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS -C target-feature=+wide-arithmetic" \
    with_progress "building the wide-arithmetic module" \
    cargo build --lib --target "$WASM_TARGET" --profile wasm-release -p openpsd-wasm ${features:+--features "$features"}
  wide_module_file=$CARGO_TARGET_DIR-wide/$WASM_TARGET/wasm-release/openpsd_wasm.wasm
  [ -f "$wide_module_file" ] || { echo "error: cargo produced no $wide_module_file" >&2; exit 1; }
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # the directory is known now
  trap "rm -rf '$tmp'" EXIT
  wasm-bindgen "$wide_module_file" --out-dir "$tmp" --target web --out-name openpsd
  if ! cmp -s "$tmp/openpsd.js" "$plain_js"; then
    echo "error: the wide-arithmetic module's glue differs from the plain module's ($plain_js)" >&2
    exit 1
  fi
  optimize "$tmp/openpsd_bg.wasm" --enable-wide-arithmetic
  rm -rf "$out" && mkdir -p "$out"
  mv "$tmp/openpsd_bg.wasm" "$out/openpsd_bg.wasm"
  rm -rf "$tmp"
  trap - EXIT
  n=$(wasm-dis --enable-wide-arithmetic "$out/openpsd_bg.wasm" | grep -c 'i64.mul_wide' || true)
  [ "$n" -gt 0 ] || { echo "error: the wide-arithmetic module has no i64.mul_wide instruction" >&2; exit 1; }
  echo "== ${out#"$REPO"/}/openpsd_bg.wasm: $n i64.mul_wide instructions"
  wasm_size "$out/openpsd_bg.wasm"
  echo "== wide-arithmetic module in $(( $(date +%s) - t )) s"
}
wide_module "$dest/web/wide" "$dest/web/openpsd.js"
cp wasm/js/wide.js wasm/js/wide.d.ts "$dest/web/"
if [ -z "$features" ]; then
  budget "$dest/web/wide/openpsd_bg.wasm" "$WIDE_BUDGET"
fi

if [ -z "$features" ]; then
  # Both targets in the one npm package a JS developer installs (target/wasm-pkg/openpsd-*.tgz).
  bash scripts/npm-pkg.sh | sed -n 1p
fi
echo "== packages in ${dest#"$REPO"/}/{web,nodejs} ($(( $(date +%s) - t0 )) s)"
