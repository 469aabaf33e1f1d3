#!/usr/bin/env bash
# pcsc-bench.sh - median APDU round trip through pcscd + vpcd: card-sim (a blank PSD on
# "Virtual PCD 00 00") against Debian's vicc (`vicc -t iso7816` on "Virtual PCD 00 01"),
# both readers of the same pcscd, timed in the same run by tests/pcsc/bench_roundtrip.py.
#
#   scripts/pcsc-bench.sh [--transfers N] [--transfers-only] [--licenses N] [--licenses-only]
#                         [--n N] [--warmup N] [--check] [other bench_roundtrip.py options]
#
# Then the median and p90 time of a whole value transfer PSD -> purse through pcscd + vpcd
# (`openpsd transfer --repeat N`: a PSD on "Virtual PCD 00 00", a purse on "... 00 01",
# 15 APDUs and 9 commits per transfer); --transfers N (default 200; 0 skips it),
# --transfers-only skips the round-trip comparison.
#
# Then the license commands through pcscd + vpcd (issue 14): LICENSE REQUEST, LICENSE
# INSTALL, EXPORT SET, IMPORT SET and RETIRE SET timed one by one on a blank card-sim PSD on
# "Virtual PCD 00 00" that the bench personalizes itself, against the same commands in
# process in the same run (host/examples/license_pcsc_bench.rs); --licenses N iterations
# (default 50; 0 skips it), --licenses-only skips everything else.
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
# With QUICKACK=1 a sitecustomize module sets TCP_QUICKACK before each of vicc's socket
# reads, as card-sim does: that removes the ~40 ms delayed-ACK stall of Debian 12's vpcd, so
# the comparison is between the two cards, not between one card and a TCP timer.
vicc_start() {
  local slot=$1 shim="$PCSC_RUN/pyshim"
  mkdir -p "$shim" "$PCSC_RUN/pyshim-quickack"
  ln -sfn /usr/lib/python3/dist-packages/Cryptodome "$shim/Crypto"
  cat > "$PCSC_RUN/pyshim-quickack/sitecustomize.py" <<'PY'
import socket

class _QuickAckSocket(socket.socket):
    def recv(self, *args, **kwargs):
        try:
            self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass
        return super().recv(*args, **kwargs)

socket.socket = _QuickAckSocket
PY
  [ "${QUICKACK:-0}" = 1 ] && shim="$shim:$PCSC_RUN/pyshim-quickack"
  PYTHONPATH="/usr/lib/python3/site-packages/virtualsmartcard:$shim" \
    setsid /usr/bin/python3 /usr/bin/vicc -t iso7816 --hostname 127.0.0.1 --port $((35963 + slot)) \
    > "$PCSC_RUN/vicc.log" 2>&1 < /dev/null &
  echo $! > "$PCSC_RUN/vicc.pid"
  pcsc_wait 10 pcsc_card_present "$slot" || { pcsc_log "vicc did not appear"; cat "$PCSC_RUN/vicc.log"; return 1; }
}

TRANSFERS=200
TRANSFERS_ONLY=0
LICENSES=50
LICENSES_ONLY=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --transfers) TRANSFERS=$2; shift 2 ;;
    --transfers-only) TRANSFERS_ONLY=1; shift ;;
    --licenses) LICENSES=$2; shift 2 ;;
    --licenses-only) LICENSES_ONLY=1; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"

# transfer_bench N: N transfers of 0.01 PSD -> purse through two vpcd readers, timed by
# `openpsd transfer --repeat` (one PC/SC connection per card for the whole run; the first
# 10 transfers are a warm-up, not counted).
transfer_bench() {
  local n=$1 w="$PCSC_RUN/transfer-bench"
  rm -rf "$w"
  mkdir -p "$w"
  "$CARD_SIM" scheme create --out "$w/scheme.json" > /dev/null
  "$CARD_SIM" bench-kms --dir "$w/kms" > /dev/null
  "$CARD_SIM" personalize --state "$w/psd" --scheme "$w/scheme.json" \
    --kms-public-key "$w/kms/kms-public.key" > /dev/null
  "$CARD_SIM" refill --state "$w/psd" --kms-signing-key "$w/kms/kms-signing.key" \
    --amount "$(( (n + 10) / 100 + 1 )).00" > /dev/null
  "$CARD_SIM" personalize --kind purse --state "$w/purse" --scheme "$w/scheme.json" --pin 1234 \
    --max-balance 10000.00 > /dev/null
  CARD_LOG=card_sim=info card_start bench-psd "$w/psd" 0
  CARD_LOG=card_sim=info card_start bench-purse "$w/purse" 1
  echo "== value transfer PSD -> purse through pcscd + vpcd (two card-sim readers), n = $n"
  "$OPENPSD" transfer --amount 0.01 --repeat 10 --psd "pcsc:Virtual PCD 00 00" \
    --card "pcsc:Virtual PCD 00 01" --pin 1234 > /dev/null
  "$OPENPSD" transfer --amount 0.01 --repeat "$n" --psd "pcsc:Virtual PCD 00 00" \
    --card "pcsc:Virtual PCD 00 01" --pin 1234
  card_stop bench-psd
  card_stop bench-purse
}

# license_bench N: N iterations of request, grant, install, export, import, export, retire
# on a blank PSD on "Virtual PCD 00 00" (personalized by the bench), timed per command
# against the same commands in process (core's in-memory store, card-sim's file store).
license_bench() {
  local n=$1 state="$PCSC_RUN/cards/license-bench" start=$SECONDS
  rm -rf "$state" "$state.storage-key"
  "$CARD_SIM" create --state "$state" > /dev/null
  CARD_LOG=card_sim=info card_start license-psd "$state" 0
  echo "== license commands through pcscd + vpcd (card-sim, slot 0) vs in process, n = $n"
  "$LICENSE_BENCH" --n "$n" --warmup 10 --reader "Virtual PCD 00 00"
  card_stop license-psd
  pcsc_wait 10 pcsc_card_absent 0
  echo "(license bench: $((SECONDS - start)) s)"
}

if [ "$TRANSFERS_ONLY" = 1 ]; then LICENSES=0; fi
if [ "$LICENSES_ONLY" = 1 ]; then TRANSFERS=0; fi

pcsc_install
start=$SECONDS
pcsc_build
echo "(build: $((SECONDS - start)) s)"
CARD_SIM=$(pwd)/target/release/card-sim
export CARD_SIM
OPENPSD=$(pwd)/target/release/openpsd
LICENSE_BENCH=$(pwd)/target/release/examples/license_pcsc_bench
pcsc_start

if [ "$LICENSES_ONLY" = 1 ]; then
  license_bench "$LICENSES"
  exit 0
fi

if [ "$TRANSFERS_ONLY" = 1 ]; then
  transfer_bench "$TRANSFERS"
  exit 0
fi

state="$PCSC_RUN/cards/bench"
rm -rf "$state" "$state.storage-key"
"$CARD_SIM" create --state "$state" >/dev/null
# info, not debug: no log line per exchange while timing.
CARD_LOG=card_sim=info card_start bench-card "$state" 0
vicc_start 1

echo "== APDU round trip through pcscd + vpcd: card-sim (slot 0) vs vicc (slot 1)"
/usr/bin/python3 tests/pcsc/bench_roundtrip.py "$@"
stop_pid vicc vicc
pcsc_wait 10 pcsc_card_absent 1

echo "== the same against vicc with TCP_QUICKACK (vpcd's delayed-ACK stall removed for both)"
QUICKACK=1 vicc_start 1
/usr/bin/python3 tests/pcsc/bench_roundtrip.py --vicc-label vicc+qa "$@"

card_stop bench-card
stop_pid vicc vicc
pcsc_wait 10 pcsc_card_absent 0
pcsc_wait 10 pcsc_card_absent 1
[ "$LICENSES" -gt 0 ] && license_bench "$LICENSES"
[ "$TRANSFERS" -gt 0 ] && transfer_bench "$TRANSFERS"
exit 0
