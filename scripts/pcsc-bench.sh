#!/usr/bin/env bash
# pcsc-bench.sh - median APDU round trip through pcscd + vpcd: card-sim (a blank PSD on
# "Virtual PCD 00 00") against Debian's vicc (`vicc -t iso7816` on "Virtual PCD 00 01"),
# both readers of the same pcscd, timed in the same run by tests/pcsc/bench_roundtrip.py.
#
#   scripts/pcsc-bench.sh [--n N] [--warmup N] [--check] [other bench_roundtrip.py options]
#
# Installs what it needs (Debian packages); stops what it started (by recorded PID).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pcsc-lib.sh
. scripts/pcsc-lib.sh
trap pcsc_stop_all EXIT

# vicc_start SLOT: Debian 12's vicc (python3-virtualsmartcard) on vpcd port 35963 + SLOT.
# Its modules live outside Debian's sys.path, and it imports `Crypto` (PyCrypto), which
# bookworm ships as pycryptodome's `Cryptodome`: PYTHONPATH and a Crypto -> Cryptodome shim.
vicc_start() {
  local slot=$1
  mkdir -p "$PCSC_RUN/pyshim"
  ln -sfn /usr/lib/python3/dist-packages/Cryptodome "$PCSC_RUN/pyshim/Crypto"
  PYTHONPATH="/usr/lib/python3/site-packages/virtualsmartcard:$PCSC_RUN/pyshim" \
    setsid /usr/bin/python3 /usr/bin/vicc -t iso7816 --hostname 127.0.0.1 --port $((35963 + slot)) \
    > "$PCSC_RUN/vicc.log" 2>&1 < /dev/null &
  echo $! > "$PCSC_RUN/vicc.pid"
  pcsc_wait 10 pcsc_card_present "$slot" || { pcsc_log "vicc did not appear"; cat "$PCSC_RUN/vicc.log"; return 1; }
}

pcsc_install
cargo build --release -q -p openpsd-card-sim
CARD_SIM=$(pwd)/target/release/card-sim
export CARD_SIM
pcsc_start

state="$PCSC_RUN/cards/bench"
rm -rf "$state"
"$CARD_SIM" create --state "$state" >/dev/null
# info, not debug: no log line per exchange while timing.
CARD_LOG=card_sim=info card_start bench-card "$state" 0
vicc_start 1

echo "== APDU round trip through pcscd + vpcd: card-sim (slot 0) vs vicc (slot 1)"
/usr/bin/python3 tests/pcsc/bench_roundtrip.py "$@"

card_stop bench-card
stop_pid vicc vicc
