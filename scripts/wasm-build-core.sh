#!/usr/bin/env bash
# wasm-build-core.sh - prove openpsd-core (no_std + alloc) builds for wasm32-unknown-unknown.
#
# Uses Debian's Rust (see install-wasm-toolchain.sh) because rustup here cannot add the
# wasm32 target. Builds into its own target dir: the Debian rustc (1.96) and rustup's
# (1.95) would otherwise keep invalidating each other's artifacts in ./target.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=wasm32-unknown-unknown
TARGET_DIR=target/wasm32

bash scripts/install-wasm-toolchain.sh

# rustup's proxies in ~/.cargo/bin shadow /usr/bin/{cargo,rustc} and would route through
# rustup's 1.95 (no wasm32 std); make sure nothing points cargo back at them.
unset RUSTUP_TOOLCHAIN RUSTC RUSTDOC RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO \
      CARGO_BUILD_RUSTC CARGO_BUILD_TARGET CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR RUSTC_BOOTSTRAP
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc

echo "== cargo build -p openpsd-core -p openpsd-wasm --release --target $TARGET ($(rustc -V))"
t0=$(date +%s)
/usr/bin/cargo build -p openpsd-core -p openpsd-wasm --release --target "$TARGET" --target-dir "$TARGET_DIR"

rlib=$TARGET_DIR/$TARGET/release/libopenpsd_core.rlib
[ -f "$rlib" ] || { echo "error: $rlib was not produced" >&2; exit 1; }
echo "== built $rlib: $(stat -c %s "$rlib") bytes ($(du -h "$rlib" | cut -f1)) in $(( $(date +%s) - t0 )) s"
