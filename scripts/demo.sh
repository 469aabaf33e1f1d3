#!/usr/bin/env bash
# demo.sh - the README's main job, in the order a new user can use it:
#   1. builds the back office, the card simulator and the `openpsd` CLI (release only; ~4 min
#      on a fresh 2-core machine, seconds when built) and starts the demo: the back office
#      (meter server, KMS, recharging center, post office), the card simulator's PSD
#      (refilled and franking through the meter server, then served over TCP for `openpsd`);
#      it prints the exact `target/release/openpsd ...` commands to try, usable from then on;
#   2. installs what the browser part needs (scripts/install-web-toolchain.sh; ~12 min on a
#      fresh machine, seconds when installed) and builds its wasm package (scripts/wasm-pkg.sh),
#      each step saying what it does and showing cargo's own progress;
#   3. prints the web demo's URL once it answers (until then the page says it is being built
#      and reloads itself).
#
#   bash scripts/demo.sh                  # Ctrl-C stops
#   bash scripts/demo.sh --refill 50.00   # further options go to `backoffice-demo`
#
# Environment: OPENPSD_DEMO_DATA (default target/demo-data: the back office's databases and
# the simulated card, kept between runs so a browser's PSD stays known to the back office),
# OPENPSD_WEB (default 127.0.0.1:8080), OPENPSD_SKIP_INSTALL=1 (skip the toolchain check),
# OPENPSD_NO_WEB=1 (steps 2 and 3 left out: the back office, card simulator and CLI only).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

data=${OPENPSD_DEMO_DATA:-target/demo-data}
web=${OPENPSD_WEB:-127.0.0.1:8080}
log=target/demo.log
t0=$(date +%s)
say() { printf '== [%s s] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

# ---------------------------------------------------------------- 1. back office, card, CLI
say "1/3 building the back office, card simulator and CLI: cargo build --release (~4 min on a fresh 2-core machine; cargo shows each crate)"
cargo build --release -p openpsd-demo -p openpsd-backoffice -p openpsd-card-sim -p openpsd-host --bins
bin=${CARGO_TARGET_DIR:-target}/release
say "built: $bin/backoffice-demo, $bin/openpsd, $bin/card-sim, $bin/backoffice"

mkdir -p "$(dirname "$log")"
demo_pid=
stop() {
  trap - INT TERM EXIT
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -INT "$demo_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$demo_pid" 2>/dev/null || true
  fi
}
trap 'stop; exit 130' INT TERM
trap stop EXIT

say "starting the demo: $bin/backoffice-demo --data $data --web $web (its output also in $log)"
# The web listener's own URL lines are left out of the terminal: the URL is printed once,
# below, when the page answers. Everything is in the log.
"$bin/backoffice-demo" --data "$data" --web "$web" --web-root web-demo \
  --wasm-pkg target/wasm-pkg/web "$@" \
  > >(tee "$log" | grep --line-buffered -vE 'web listening on http|^the web demo \(.*in a browser$') 2>&1 &
demo_pid=$!
# Ready when it prints its Ctrl-C line (after the refill and the indicia); exited otherwise.
for _ in $(seq 1200); do
  grep -q '^Ctrl-C stops the demo' "$log" 2>/dev/null && break
  if ! kill -0 "$demo_pid" 2>/dev/null; then
    set +e; wait "$demo_pid"; rc=$?; set -e
    demo_pid=
    [ "$rc" -eq 0 ] && { say "backoffice-demo exited (status 0: --exit or --help)"; exit 0; }
    say "the demo exited with status $rc (its output: $log)"
    exit "$rc"
  fi
  sleep 0.25
done
grep -q '^Ctrl-C stops the demo' "$log" || { say "the demo did not come up within 5 min (see $log)"; exit 1; }
sleep 0.2
say "the back office, card simulator and CLI are ready: the commands above work now (Ctrl-C stops all)"

if [ "${OPENPSD_NO_WEB:-0}" = 1 ]; then
  say "OPENPSD_NO_WEB=1: no browser part"
  wait "$demo_pid"
  exit
fi

# ---------------------------------------------------------------- 2. the browser part
web_ok=1
if [ "${OPENPSD_SKIP_INSTALL:-0}" != 1 ]; then
  say "2/3 web toolchain (scripts/install-web-toolchain.sh; ~12 min on a fresh machine, most of it building wasm-bindgen-cli; seconds when installed)"
  bash scripts/install-web-toolchain.sh || web_ok=0
fi
if [ "$web_ok" = 1 ]; then
  say "3/3 wasm package for the browser (scripts/wasm-pkg.sh -> target/wasm-pkg/web; ~4 min the first time)"
  OPENPSD_SKIP_WEB_INSTALL=1 bash scripts/wasm-pkg.sh || web_ok=0
fi
if [ "$web_ok" = 1 ] && [ -f target/wasm-pkg/web/openpsd.js ]; then
  # ---------------------------------------------------------------- 3. the URL, once it answers
  for _ in $(seq 240); do
    if curl -fsS -o /dev/null --max-time 2 "http://$web/"; then
      say "the web demo is ready: open http://$web/"
      break
    fi
    kill -0 "$demo_pid" 2>/dev/null || break
    sleep 0.5
  done
  curl -fsS -o /dev/null --max-time 2 "http://$web/" ||
    say "error: http://$web/ does not answer (see $log)"
else
  say "error: the browser part was not built (see above); the back office, card simulator and CLI keep running"
fi
set +e
wait "$demo_pid"
rc=$?
demo_pid=
exit "$rc"
