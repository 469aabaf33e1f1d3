# wasm-common.sh - sourced by the scripts/wasm-*.sh scripts: makes sure the web toolchain
# is installed (scripts/install-web-toolchain.sh; seconds when it is) and sets up a shell
# that builds for wasm32 with Debian's Rust into target/wasm32, with wasm-bindgen,
# wasm-opt and playwright-core at hand.
#
# Debian's cargo/rustc (1.96, which has the wasm32 std) come first on PATH, ahead of
# rustup's proxies (1.95, no wasm32 target); the separate target dir keeps the two
# compilers from invalidating each other's artifacts in ./target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

if [ "${OPENPSD_SKIP_WEB_INSTALL:-0}" != 1 ]; then
  bash scripts/install-web-toolchain.sh | grep -vE '^  ' | sed 's/^/[toolchain] /'
fi
# shellcheck source=web-env.sh
source scripts/web-env.sh

unset RUSTUP_TOOLCHAIN RUSTC RUSTDOC RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO \
      CARGO_BUILD_RUSTC CARGO_BUILD_TARGET CARGO_BUILD_TARGET_DIR RUSTC_BOOTSTRAP RUSTFLAGS \
      CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS
export PATH="$WEB_TOOLS/bin:$WEB_TOOLS/js/node_modules/.bin:/usr/bin:/bin:/usr/sbin:/sbin"
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_DIR=$REPO/target/wasm32
export CARGO_TERM_COLOR=never
# rustc flags for the wasm32 target only (cargo's CARGO_TARGET_<triple>_RUSTFLAGS: not for
# build scripts, nor for the native benchmark wasm-bench.sh builds in the same target dir;
# RUSTFLAGS and CARGO_ENCODED_RUSTFLAGS, which would override it, are unset above). Both are
# for the main module's size budget (wasm-pkg.sh; wasm/API.md § Building):
# * --remap-path-prefix: panic locations (file:line of every bounds check, unwrap, overflow
#   check) are strings in the module. Unmapped they carry this machine's absolute paths,
#   /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/primefield-0.14.0/src/monty.rs
#   (~50 of them); mapped they read primefield-0.14.0/src/monty.rs and core/src/wire.rs, the
#   same on every machine, so the measured size is too (-2.9 KB raw, -0.14 KB gzip). std's
#   paths (/usr/lib/rustlib/src/rust/…) come from the prebuilt std and stay.
# * sha2_backend_soft="compact": sha2's documented switch to its rolled SHA-256 round loop
#   instead of the 64 unrolled rounds (compress256: 8,183 → 1,082 B of code, -1.6 KB gzip).
#   An indicium hashes a few blocks (message, RFC 6979's HMAC); its cost is the curve
#   arithmetic, which keeps opt-level 3 (wasm-bench.sh measures signing speed).
# (Space-separated, as cargo splits this variable: neither path may contain a space.)
flags=(--cfg 'sha2_backend_soft="compact"')
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ "${CARGO_HOME:-$HOME/.cargo}"/git/checkouts/; do
  if [ -d "$d" ]; then flags+=("--remap-path-prefix=${d%/}="); fi
done
flags+=("--remap-path-prefix=$REPO=")
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${flags[*]}"
unset flags d
WASM_TARGET=wasm32-unknown-unknown
PKG_DIR=$REPO/target/wasm-pkg
# wasm-bindgen-test-runner drives Debian's chromium through chromedriver for browser tests.
export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

# Size of a file, raw and gzip -9.
wasm_size() {
  printf '%s raw=%d B gzip=%d B (%.1f KB)\n' "$1" "$(stat -c %s "$1")" \
    "$(gzip -9c "$1" | wc -c)" "$(echo "$(gzip -9c "$1" | wc -c) / 1024" | bc -l)"
}

# shellcheck source=with-progress.sh
source "$REPO/scripts/with-progress.sh"
