#!/usr/bin/env bash
# wasm-pkg.sh - builds the npm package "openpsd" (wasm/) for browsers and for Node:
#   target/wasm-pkg/web     ES module (wasm-pack --target web) + storage.js / storage.d.ts
#   target/wasm-pkg/nodejs  CommonJS (wasm-pack --target nodejs)
# with `wasm-pack build --mode no-install` (never downloads: wasm-bindgen and wasm-opt come
# from scripts/install-web-toolchain.sh) and the [profile.wasm-release] of Cargo.toml.
# `wasm-pkg.sh demo` builds the same with openpsd-wasm's `demo` feature (buildPersonalization,
# demoKmsRefill, demoKmsReceipt: for the tests, the benchmark and the Node example) into
# target/wasm-pkg/demo/{web,nodejs}; the shipped packages and the measured size are without.
# The web package also gets the certificate meter's module (feature `certmeter`: core's
# seed 004 commands and openpsd-pki's RFC 3161 expansion) in web/cert/, which the web demo's
# Certificates tab imports lazily (/pkg/cert/openpsd.js); the main module never loads it.
# Each module has its own gzip -9 budget, checked here (exit 1 when over):
#   web/openpsd_bg.wasm        MAIN_BUDGET (153,600 B = 150 KB)
#   web/cert/openpsd_bg.wasm   CERT_BUDGET (337,920 B = 330 KB; wasm/API.md § Certificate meter)
set -euo pipefail
source "$(dirname "$0")/wasm-common.sh"

MAIN_BUDGET=${MAIN_BUDGET:-153600}
CERT_BUDGET=${CERT_BUDGET:-337920}
dest=$PKG_DIR
cargo_args=()
case "${1:-}" in
  '') ;;
  demo) dest=$PKG_DIR/demo; cargo_args=(-- --features demo) ;;
  *) echo "usage: $0 [demo]" >&2; exit 2 ;;
esac

t0=$(date +%s)
for target in web nodejs; do
  out=$dest/$target
  rm -rf "$out"
  echo "== wasm-pack build --target $target -> ${out#"$REPO"/}"
  wasm-pack --quiet build --mode no-install --profile wasm-release --target "$target" \
    --out-dir "$out" --out-name openpsd --no-gitignore wasm "${cargo_args[@]}" 2>&1 |
    grep -vE 'failed to get wasm-pack version|^\s*$' || true
  [ -f "$out/openpsd_bg.wasm" ] || { echo "error: wasm-pack produced no module" >&2; exit 1; }
  extra=()
  if [ "$target" = web ]; then
    cp wasm/js/storage.js wasm/js/storage.d.ts "$out/"
    extra=(storage.js storage.d.ts)
  fi
  # The npm name is "openpsd" (the crate is openpsd-wasm); list the extra files.
  node -e '
    const fs = require("fs"), [file, ...extra] = process.argv.slice(1);
    const p = JSON.parse(fs.readFileSync(file, "utf8"));
    p.name = "openpsd";
    p.description = "openpsd postal security device (PSD) in WebAssembly: indicia, audits, refills, DataMatrix";
    p.files = [...new Set([...(p.files || []), ...extra])];
    fs.writeFileSync(file, JSON.stringify(p, null, 2) + "\n");
  ' "$out/package.json" "${extra[@]}"
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
if [ -z "${1:-}" ]; then
  cert=$dest/web/cert
  rm -rf "$cert"
  echo "== wasm-pack build --target web --features certmeter -> ${cert#"$REPO"/}"
  wasm-pack --quiet build --mode no-install --profile wasm-release --target web \
    --out-dir "$cert" --out-name openpsd --no-gitignore wasm -- --features certmeter 2>&1 |
    grep -vE 'failed to get wasm-pack version|^\s*$' || true
  [ -f "$cert/openpsd_bg.wasm" ] || { echo "error: wasm-pack produced no certificate meter module" >&2; exit 1; }
  rm -f "$cert/package.json" "$cert/README.md" "$cert/.gitignore"
  node -e '
    const fs = require("fs"), file = process.argv[1];
    const p = JSON.parse(fs.readFileSync(file, "utf8"));
    p.files = [...new Set([...(p.files || []), "cert/"])];
    fs.writeFileSync(file, JSON.stringify(p, null, 2) + "\n");
  ' "$dest/web/package.json"
  wasm_size "$cert/openpsd_bg.wasm"
  budget "$dest/web/openpsd_bg.wasm" "$MAIN_BUDGET"
  budget "$cert/openpsd_bg.wasm" "$CERT_BUDGET"
fi
echo "== packages in ${dest#"$REPO"/}/{web,nodejs} ($(( $(date +%s) - t0 )) s)"
