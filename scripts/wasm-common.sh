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
      CARGO_ENCODED_RUSTFLAGS
export PATH="$WEB_TOOLS/bin:$WEB_TOOLS/js/node_modules/.bin:/usr/bin:/bin:/usr/sbin:/sbin"
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_DIR=$REPO/target/wasm32
export CARGO_TERM_COLOR=never
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
