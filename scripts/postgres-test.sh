#!/usr/bin/env bash
# postgres-test.sh - the post office's registry on a real PostgreSQL server (issue 13
# item 5): installs PostgreSQL from Debian if missing, starts a private cluster of its own
# (a temporary directory, a Unix socket only, no TCP port, stopped and removed on exit),
# then runs the same post office and data center suites as `cargo test --workspace` runs
# on SQLite — the registry's own tests and the services' end-to-end tests
# (backoffice/tests/post.rs, post_browser.rs, datacenter.rs), and datacenter_servers.rs
# (several data centers on one database, PostgreSQL only) — with OPENPSD_TEST_POSTGRES
# pointing at it; starts a second cluster, a primary with a synchronous standby, for the
# data center's failover test (tests/datacenter_failover.rs: the primary killed mid-load,
# the standby promoted); and measures registry inserts/s at N stored pieces on both stores.
#
#   bash scripts/postgres-test.sh [--stored N] [--measure M] [--keep]
#
# --stored N (default 1000000) pieces are stored before --measure M (default 20000) more
# are timed, in batches of 1,000 (examples/registry_bench.rs). --keep leaves the cluster
# running and prints its connection string (for `backoffice serve --role post
# --database-url …`). As root the cluster runs as the `postgres` user Debian's package
# creates (PostgreSQL refuses to run as root); otherwise as the caller.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/opt-build.sh
. scripts/opt-build.sh

STORED=1000000
MEASURE=20000
KEEP=0
DC_PIECES=${DC_PIECES:-128}
while [ $# -gt 0 ]; do
  case "$1" in
    --stored) STORED="$2"; shift 2 ;;
    --measure) MEASURE="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--stored N] [--measure M] [--keep]" >&2; exit 2 ;;
  esac
done
say() { printf '== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/postgres" ]; then
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  say "apt: installing postgresql (the server)"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  # policy-rc.d keeps the package from starting Debian's own cluster: this script runs
  # its own, and a machine without an init system would only print errors.
  # Removed on any exit: left behind, it would stop every service start on the machine.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    trap_policy=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -qq --no-install-recommends postgresql >/dev/null
  if [ "${trap_policy:-0}" = 1 ]; then
    $SUDO rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  [ -x "$(pg_bin)/postgres" ] || die "no PostgreSQL server after installing postgresql"
fi
BIN=$(pg_bin)
say "$("$BIN/postgres" --version)"

# The cluster: a fresh directory, trust authentication on a Unix socket in it (nothing
# listens on TCP), so no password exists to leak and no other user of the machine can
# reach it but root.
DIR=$(mktemp -d /tmp/openpsd-pg.XXXXXX)
AS=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root, but there is no postgres user to run the server as"
  chown postgres: "$DIR"
  AS=(runuser -u postgres --)
fi
stop() {
  "${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
[ "$KEEP" = 1 ] || trap stop EXIT INT TERM
"${AS[@]}" "$BIN/initdb" -D "$DIR/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
"${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
  -o "-k $DIR -c listen_addresses='' -c fsync=on -c shared_buffers=256MB" start >/dev/null ||
  { cat "$DIR/server.log" >&2; die "the PostgreSQL server did not start"; }
CONN="host=$DIR user=postgres"
export OPENPSD_TEST_POSTGRES="$CONN"
say "PostgreSQL cluster at $DIR (Unix socket only): OPENPSD_TEST_POSTGRES='$CONN'"

# The suites by target name in the workspace's test build (opt-build.sh: `cargo test -p`
# would resolve features anew and rebuild half the workspace).
say "the post office suite on PostgreSQL"
ws_lib_test openpsd-post
cargo test --workspace --test registry --test label --test label_limits --test verify
cargo test --workspace --test post --test post_browser
say "the data center suite on PostgreSQL"
ws_lib_test openpsd-datacenter
cargo test --workspace --test datacenter
# The service as a process killed -9 between its two commits, its CLI (register-box, audit)
# on the same database.
cargo test --workspace --test kill9_datacenter
# Three data centers on one database and one box (card-sim serve --clients), one killed
# mid-load: the card-sim binary comes from `cargo test --workspace` (the README's command).
say "several data centers on one PostgreSQL database and one box"
cargo test --workspace --test datacenter_servers -- --nocapture

# The data center's failover: a second cluster, a primary with a synchronous standby
# (streaming replication over Unix sockets: every commit waits until the standby has
# flushed it), the test kills the primary (`-m immediate`: no shutdown checkpoint, like a
# power cut of the server) mid-load and promotes the standby.
FO="$DIR/failover"
mkdir -p "$FO/p" "$FO/s"
[ "$(id -u)" -ne 0 ] || chown -R postgres: "$FO"
stop_failover() {
  "${AS[@]}" "$BIN/pg_ctl" -D "$FO/standby" -m immediate stop >/dev/null 2>&1 || true
  "${AS[@]}" "$BIN/pg_ctl" -D "$FO/primary" -m immediate stop >/dev/null 2>&1 || true
}
[ "$KEEP" = 1 ] || trap 'stop_failover; stop' EXIT INT TERM
say "failover pair: primary and synchronous standby at $FO"
"${AS[@]}" "$BIN/initdb" -D "$FO/primary" -A trust -U postgres --no-sync -E UTF8 >/dev/null
"${AS[@]}" "$BIN/pg_ctl" -D "$FO/primary" -l "$FO/primary.log" -w -o "-k $FO/p \
  -c listen_addresses='' -c wal_level=replica -c max_wal_senders=4 \
  -c synchronous_standby_names=standby1 -c synchronous_commit=on" start >/dev/null ||
  { cat "$FO/primary.log" >&2; die "the failover primary did not start"; }
"${AS[@]}" "$BIN/pg_basebackup" -h "$FO/p" -U postgres -D "$FO/standby" -X stream -R \
  -d "host=$FO/p user=postgres application_name=standby1" >/dev/null ||
  die "pg_basebackup of the failover primary failed"
"${AS[@]}" "$BIN/pg_ctl" -D "$FO/standby" -l "$FO/standby.log" -w -o "-k $FO/s \
  -c listen_addresses=''" start >/dev/null ||
  { cat "$FO/standby.log" >&2; die "the failover standby did not start"; }
for _ in $(seq 50); do
  state=$("${AS[@]}" "$BIN/psql" -h "$FO/p" -U postgres -Atc \
    "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'" 2>/dev/null || true)
  [ "$state" = sync ] && break
  sleep 0.2
done
[ "$state" = sync ] || die "the standby is not a synchronous standby (state: '$state')"
say "standby streaming, synchronous; the data center follows the primary with target_session_attrs=read-write"
export OPENPSD_TEST_PG_FAILOVER_URL="host=$FO/p,$FO/s user=postgres target_session_attrs=read-write"
export OPENPSD_TEST_PG_FAILOVER_PRIMARY="host=$FO/p user=postgres"
export OPENPSD_TEST_PG_KILL_PRIMARY="${AS[*]} $BIN/pg_ctl -D $FO/primary -m immediate stop"
export OPENPSD_TEST_PG_PROMOTE="${AS[*]} $BIN/pg_ctl -D $FO/standby -w promote"
cargo test --workspace --test datacenter_failover -- --nocapture
stop_failover

say "the data center's bench on PostgreSQL (release build; DC_PIECES=$DC_PIECES per level)"
opt_bench datacenter -- --pieces "$DC_PIECES" --users 1,64 --postgres "$CONN"

say "registry inserts with the duplicate check at $STORED stored pieces (release build)"
opt_build -q
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BENCH="$TARGET/release/examples/registry_bench"
"$BENCH" --stored "$STORED" --measure "$MEASURE" 2>&1 | tee "$TARGET/registry-sqlite.txt"
"$BENCH" --stored "$STORED" --measure "$MEASURE" --postgres "$CONN" 2>&1 | tee "$TARGET/registry-postgres.txt"
sq=$(sed -n 's/.*: \([0-9]*\) inserts\/s$/\1/p' "$TARGET/registry-sqlite.txt")
pq=$(sed -n 's/.*: \([0-9]*\) inserts\/s$/\1/p' "$TARGET/registry-postgres.txt")
[ -n "$sq" ] && [ -n "$pq" ] || die "a benchmark printed no rate"
say "registry at $STORED stored pieces: SQLite $sq inserts/s, PostgreSQL $pq inserts/s"
"${AS[@]}" "$BIN/psql" -h "$DIR" -U postgres -d openpsd_registry_bench -Atc \
  "SELECT 'pieces by device: ' || count(DISTINCT tableoid) || ' partitions, ' || count(*) || ' pieces' FROM pieces" -c \
  "SELECT 'scan log ' || tableoid::regclass || ': ' || count(*) || ' scans' FROM scans GROUP BY tableoid ORDER BY 1"
if [ "$KEEP" = 1 ]; then
  say "left running; stop with: ${AS[*]} $BIN/pg_ctl -D $DIR/data stop"
fi
