#!/usr/bin/env bash
# wasm-build-core.sh - prove openpsd-core (no_std + alloc) builds for wasm32-unknown-unknown,
# early in CI and without the web toolchain: the wasm module of the npm package
# (openpsd-wasm's lib, profile wasm-release), which links core and everything it needs.
#
# Uses Debian's Rust (see install-wasm-toolchain.sh) because rustup here cannot add the
# wasm32 target. It builds exactly what scripts/wasm-pkg.sh builds first, with the same
# target directory and flags (scripts/wasm-common.sh), so that build later finds it done
# instead of building core for wasm32 a second time.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-wasm-toolchain.sh
# wasm-common.sh without installing the rest of the web toolchain (Chromium, wasm-bindgen-cli):
# only its compiler, target directory and flags are wanted here.
OPENPSD_SKIP_WEB_INSTALL=1 source scripts/wasm-common.sh

echo "== cargo build --lib --target $WASM_TARGET --profile wasm-release -p openpsd-wasm ($(rustc -V))"
t0=$(date +%s)
cargo build --lib --target "$WASM_TARGET" --profile wasm-release -p openpsd-wasm

rlib=$CARGO_TARGET_DIR/$WASM_TARGET/wasm-release/deps
module=$CARGO_TARGET_DIR/$WASM_TARGET/wasm-release/openpsd_wasm.wasm
ls "$rlib"/libopenpsd_core-*.rlib >/dev/null 2>&1 || { echo "error: no libopenpsd_core rlib in $rlib" >&2; exit 1; }
[ -f "$module" ] || { echo "error: $module was not produced" >&2; exit 1; }
echo "== built openpsd-core for $WASM_TARGET and the module ${module#"$PWD"/}: $(stat -c %s "$module") bytes in $(( $(date +%s) - t0 )) s"
