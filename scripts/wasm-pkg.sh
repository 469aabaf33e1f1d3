#!/usr/bin/env bash
# wasm-pkg.sh - builds the npm package "openpsd" (wasm/) for browsers and for Node:
#   target/wasm-pkg/web     ES module (wasm-pack --target web) + storage.js / storage.d.ts
#   target/wasm-pkg/nodejs  CommonJS (wasm-pack --target nodejs)
# with `wasm-pack build --mode no-install` (never downloads: wasm-bindgen and wasm-opt come
# from scripts/install-web-toolchain.sh) and the [profile.wasm-release] of Cargo.toml.
# `wasm-pkg.sh demo` builds the same with openpsd-wasm's `demo` feature (buildPersonalization,
# demoKmsRefill, demoKmsReceipt: for the tests, the benchmark and the Node example) into
# target/wasm-pkg/demo/{web,nodejs}; the shipped packages and the measured size are without.
set -euo pipefail
source "$(dirname "$0")/wasm-common.sh"

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
echo "== packages in ${dest#"$REPO"/}/{web,nodejs} ($(( $(date +%s) - t0 )) s)"
