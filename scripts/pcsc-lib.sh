# shellcheck shell=bash
# pcsc-lib.sh - sourced by the PC/SC scripts: install the PC/SC stack, start pcscd with its
# vpcd readers without systemd, start/stop card-sim cards, stop everything by recorded PID.
#
# Every process started here is recorded in $PCSC_RUN/*.pid and stopped only by that PID
# (after checking its command line), never by name: the machine may run other things.

PCSC_RUN=${PCSC_RUN:-$(pwd)/target/pcsc-run}
PCSC_PKGS="pcscd pcsc-tools vsmartcard-vpcd vsmartcard-vpicc python3-pyscard opensc python3-pycryptodome libpcsclite-dev pkg-config"
mkdir -p "$PCSC_RUN"

pcsc_log() { echo "[pcsc] $*"; }

# shellcheck source=scripts/opt-build.sh
. scripts/opt-build.sh
# The optimized binaries the PC/SC scripts run (card-sim, the openpsd host with PC/SC, the back
# office, the license bench example), built in opt-build.sh's one shape: after the first
# script, the others find them built. Needs pcsc_install first (libpcsclite-dev).
pcsc_build() {
  opt_need_feature openpsd-host/pcsc
  opt_build
}

pcsc_install() {
  local missing="" p
  for p in $PCSC_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    pcsc_log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing >/dev/null
  fi
}

# Alive and running what we think (a recycled PID is left alone).
pcsc_alive_as() { [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -q -- "$2"; }

# LISTEN on a port, read from /proc: connecting to vpcd's port would count as a card.
pcsc_port_listening() {
  local hex; hex=$(printf '%04X' "$1")
  awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" {f=1} END {exit !f}' /proc/net/tcp
}

pcsc_wait() { # seconds, command...
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.05
  done
}

pcsc_start() {
  if [ -f "$PCSC_RUN/pcscd.pid" ] && pcsc_alive_as "$(cat "$PCSC_RUN/pcscd.pid")" pcscd; then
    pcsc_log "pcscd already running (pid $(cat "$PCSC_RUN/pcscd.pid"))"
  elif [ -f /run/pcscd/pcscd.pid ] && pcsc_alive_as "$(cat /run/pcscd/pcscd.pid)" pcscd; then
    pcsc_log "reusing the machine's pcscd (pid $(cat /run/pcscd/pcscd.pid)); not ours to stop"
  else
    # Own session, so a process-group kill of the caller does not take it down.
    setsid /usr/sbin/pcscd --foreground > "$PCSC_RUN/pcscd.log" 2>&1 < /dev/null &
    echo $! > "$PCSC_RUN/pcscd.pid"
    pcsc_log "started pcscd (pid $!)"
  fi
  pcsc_wait 10 test -S /run/pcscd/pcscd.comm || { pcsc_log "pcscd socket did not appear"; return 1; }
  pcsc_wait 10 pcsc_port_listening 35963 || { pcsc_log "vpcd not listening on 35963"; return 1; }
}

# Is a card present in reader slot $1 (0 or 1)?
pcsc_card_present() {
  /usr/bin/python3 - "$1" <<'PY' 2>/dev/null
import sys
from smartcard.scard import *
rv, hc = SCardEstablishContext(SCARD_SCOPE_USER)
reader = "Virtual PCD 00 0%s" % sys.argv[1]
rv, st = SCardGetStatusChange(hc, 0, [(reader, SCARD_STATE_UNAWARE)])
sys.exit(0 if rv == 0 and st[0][1] & SCARD_STATE_PRESENT else 1)
PY
}

pcsc_card_absent() { ! pcsc_card_present "$1"; }

# card_start NAME STATE_DIR SLOT [extra serve args...]: serve a card-sim card to vpcd.
card_start() {
  local name=$1 state=$2 slot=$3; shift 3
  RUST_LOG=${CARD_LOG:-card_sim=debug} setsid "$CARD_SIM" serve --state "$state" --vpcd --slot "$slot" "$@" \
    > "$PCSC_RUN/$name.log" 2>&1 < /dev/null &
  echo $! > "$PCSC_RUN/$name.pid"
  pcsc_wait 10 pcsc_card_present "$slot" || { pcsc_log "card $name did not appear"; cat "$PCSC_RUN/$name.log"; return 1; }
}

# card_restart NAME STATE_DIR SLOT [extra serve args...]: serve a card again after its
# process died (kill -9). Debian 12's vpcd, when the card vanished in the middle of an APDU,
# sometimes takes the next connection, powers it off and never polls it again (the reader
# stays empty); the connection after that is seen. So: up to three tries.
card_restart() {
  local try
  for try in 1 2 3; do
    if card_start "$@" > /dev/null; then
      [ "$try" = 1 ] || pcsc_log "card $1 appeared on try $try"
      return 0
    fi
    card_stop "$1"
    pcsc_wait 10 pcsc_card_absent "$3" || true
  done
  pcsc_log "card $1 did not come back"
  return 1
}

# stop_pid NAME PATTERN [SIGNAL]: stop the process recorded in NAME.pid if it runs PATTERN.
stop_pid() {
  local f="$PCSC_RUN/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if pcsc_alive_as "$pid" "$2"; then
    kill "-${3:-TERM}" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
}

card_stop() { stop_pid "$1" "card-sim"; }

pcsc_stop_all() {
  local f
  for f in "$PCSC_RUN"/*.pid; do
    [ -e "$f" ] || continue
    case "$(basename "$f" .pid)" in
      pcscd) ;;
      vicc) stop_pid vicc "vicc" ;;
      backoffice) stop_pid backoffice "backoffice" ;;
      *) card_stop "$(basename "$f" .pid)" ;;
    esac
  done
  # pcscd last, and only ours (it needs ~1 s to remove its socket).
  stop_pid pcscd "pcscd"
}
