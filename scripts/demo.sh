#!/usr/bin/env bash
# demo.sh - the README's main job: install what the web demo needs, build the wasm package,
# and start the demo: the back office (meter server, KMS, recharging center), the card
# simulator's PSD (refilled and franking through the meter server, then served over TCP for
# `openpsd`) and the web demo (a PSD in the browser) on http://127.0.0.1:8080/.
#
#   bash scripts/demo.sh                  # then open the URL it prints; Ctrl-C stops
#   bash scripts/demo.sh --refill 50.00   # further options go to `backoffice-demo`
#
# Environment: OPENPSD_DEMO_DATA (default target/demo-data: the back office's databases and
# the simulated card, kept between runs so a browser's PSD stays known to the back office),
# OPENPSD_WEB (default 127.0.0.1:8080), OPENPSD_SKIP_INSTALL=1 (skip the toolchain check).
set -euo pipefail
cd "$(dirname "$0")/.."

data=${OPENPSD_DEMO_DATA:-target/demo-data}
web=${OPENPSD_WEB:-127.0.0.1:8080}
say() { printf '== %s\n' "$*"; }

if [ "${OPENPSD_SKIP_INSTALL:-0}" != 1 ]; then
  say "web toolchain (scripts/install-web-toolchain.sh; quick once installed)"
  bash scripts/install-web-toolchain.sh
fi
say "wasm package for the browser (scripts/wasm-pkg.sh -> target/wasm-pkg/web)"
OPENPSD_SKIP_WEB_INSTALL=1 bash scripts/wasm-pkg.sh
[ -f target/wasm-pkg/web/openpsd.js ] || { echo "error: target/wasm-pkg/web/openpsd.js was not built" >&2; exit 1; }

say "back office + card simulator + web demo (data in $data)"
echo "   when it is up, open:  http://$web/"
exec cargo run --release -p openpsd-demo --bin backoffice-demo -- --data "$data" --web "$web" \
  --web-root web-demo --wasm-pkg target/wasm-pkg/web "$@"
