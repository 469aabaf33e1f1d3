#!/usr/bin/env bash
# wasm-test.sh - the wasm module's tests in wasm:
#   1. wasm/tests/web.rs with wasm-bindgen-test under Node,
#   2. the same under headless Chromium (WASM_BINDGEN_USE_BROWSER=1, Debian's chromedriver),
#   3. the npm packages (scripts/wasm-pkg.sh, and `demo` with the demo functions the tests
#      personalize and refill with): the Node example (issue + verify, also with Node's
#      WebCrypto), the outside signer's module in Node (wasm/tests/js/webcrypto-node.mjs)
#      and in Chromium with IndexedDB (tests/web/webcrypto.mjs),
#      and storage.js + the web package in Chromium (playwright-core),
#   4. the wide-arithmetic module (wasm/js/wide.js) in Chromium with and without V8's flag.
# The native tests of the same crate run in `cargo test --workspace`.
set -euo pipefail
source "$(dirname "$0")/wasm-common.sh"

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-300}
t0=$(date +%s)
step() { printf '\n== %s\n' "$*"; }

step "wasm-bindgen-test under Node (cargo test --target $WASM_TARGET -p openpsd-wasm --features demo --test web)"
cargo test --target "$WASM_TARGET" -p openpsd-wasm --features demo --test web

step "the same tests in headless Chromium ($("$CHROMIUM" --version 2>/dev/null | head -1))"
WASM_BINDGEN_USE_BROWSER=1 cargo test --target "$WASM_TARGET" -p openpsd-wasm --features demo --test web

step "npm packages"
bash scripts/wasm-pkg.sh
bash scripts/wasm-pkg.sh demo

step "Node example: wasm/examples/node-indicium.mjs"
node wasm/examples/node-indicium.mjs "$PKG_DIR/demo/nodejs"

step "the outside signer's module in Node: wasm/tests/js/webcrypto-node.mjs"
node wasm/tests/js/webcrypto-node.mjs "$PKG_DIR/demo/nodejs/webcrypto"
step "the outside signer in Chromium with IndexedDB: tests/web/webcrypto.mjs (key kept across a reload)"
node tests/web/webcrypto.mjs --pkg "$PKG_DIR/demo/web"
step "web package + storage.js in Chromium (wasm/tests/js/browser.html)"
www=$REPO/target/wasm-www/test
rm -rf "$www" && mkdir -p "$www"
cp wasm/tests/js/browser.html "$www/index.html"
cp -r "$PKG_DIR/demo/web" "$www/pkg"
node wasm/tests/js/chromium.mjs "$www" /index.html 120 2> >(grep -v 'favicon\|status of 404' >&2)

step "the wide-arithmetic module in Chromium (wasm/tests/js/wide.html): picked only where V8 has the instructions, the same labels"
www=$REPO/target/wasm-www/wide
rm -rf "$www" && mkdir -p "$www"
cp wasm/tests/js/wide.html "$www/index.html"
cp wasm/bench/bench.mjs "$www/"
cp -r "$PKG_DIR/demo/web" "$www/pkg"
# Both ways explicitly, so the test holds whatever Chromium's default becomes.
plain=$(CHROMIUM_JS_FLAGS=--no-wasm-wide-arithmetic node wasm/tests/js/chromium.mjs "$www" '/index.html?expect=0' 120)
wide=$(CHROMIUM_JS_FLAGS=--wasm-wide-arithmetic node wasm/tests/js/chromium.mjs "$www" '/index.html?expect=1' 120)
printf 'plain: %s\nwide:  %s\n' "$plain" "$wide"
digest() { node -e 'console.log(JSON.parse(process.argv[1]).digest)' "$1"; }
[ "$(digest "$plain")" = "$(digest "$wide")" ] ||
  { echo "error: the wide-arithmetic module issued other labels than the plain one" >&2; exit 1; }

printf '\n== wasm tests passed (%d s)\n' "$(( $(date +%s) - t0 ))"
