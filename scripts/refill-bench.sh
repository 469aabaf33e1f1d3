#!/usr/bin/env bash
# The refill benchmark with mutual TLS, customers and access lists on, against the last
# commit before them (plain HTTP, no authentication) built and run in the same run: the
# cost of being safe, as a ratio per level (issue 11: aim >= 0.8).
#
#   bash scripts/refill-bench.sh [--refills N] [--no-base]
#       --refills N   per level: default 128 (CI); 512 for a real run
#       --no-base     this tree only (CI): building the base is a second full release build
#                     of the workspace from another source tree (~6 min on 2 cores), which
#                     shares nothing with this tree's build; the ratio is then not measured
#
# The base is built from git history into target/refill-base (its own target directory, so
# it never overwrites this tree's binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
REFILLS=128
NO_BASE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --refills) REFILLS="$2"; shift 2 ;;
    --no-base) NO_BASE=1; shift ;;
    *) echo "usage: $0 [--refills N] [--no-base]" >&2; exit 2 ;;
  esac
done
# 59fc6ca: the back office as it was before issue 11's identities (plain HTTP on loopback).
BASE="${REFILL_BENCH_BASE:-59fc6ca}"
# shellcheck source=scripts/opt-build.sh
. scripts/opt-build.sh
if [ "$NO_BASE" = 1 ]; then
  echo "== --no-base: this tree only, no same-run ratio (bash scripts/refill-bench.sh measures it)"
  opt_bench refill -- --refills "$REFILLS"
  exit 0
fi
if ! git cat-file -e "$BASE^{commit}" 2>/dev/null; then
  echo "== $BASE is not in this clone's history (shallow?): the same-run comparison is skipped"
  opt_bench refill -- --refills "$REFILLS"
  exit 0
fi
SRC=target/refill-base/src
OUT=target/refill-base/out
mkdir -p "$OUT"
if [ ! -d "$SRC/.git" ] && [ ! -f "$SRC/.git" ]; then
  echo "== checking out $BASE (plain-HTTP back office) into $SRC"
  rm -rf "$SRC"
  git worktree prune
  git worktree add --detach "$SRC" "$BASE" >/dev/null
fi
echo "== building the base benchmark ($BASE; first time: several minutes, progress below)"
CARGO_TARGET_DIR=target/refill-base/target cargo bench --manifest-path "$SRC/Cargo.toml" \
  -p openpsd-backoffice --bench refill --no-run
echo "== building this tree's benchmark"
opt_bench refill --no-run

run() { # $1 label, $2.. command
  local label="$1"; shift
  "$@" -- --refills "$REFILLS" | tee "$OUT/$label.txt"
}
# Alternate base and now twice, so a slow moment of the machine hits both.
for round in 1 2; do
  echo "== round $round: base (plain HTTP)"
  CARGO_TARGET_DIR=target/refill-base/target run "base$round" \
    cargo bench -q --manifest-path "$SRC/Cargo.toml" -p openpsd-backoffice --bench refill
  echo "== round $round: now (mutual TLS, customers, access lists)"
  run "now$round" opt_bench refill -q
done
python3 - "$OUT" <<'PY'
import sys, re, pathlib
out = pathlib.Path(sys.argv[1])
def rates(name):
    r = {}
    for line in (out / f"{name}.txt").read_text().splitlines():
        m = re.match(r"\s*(\d+)\s+(\d+)\s+([\d.]+)\s", line)
        if m:
            r[int(m.group(1))] = float(m.group(3))
    return r
base = [rates("base1"), rates("base2")]
now = [rates("now1"), rates("now2")]
print("devices   base refills/s   now refills/s   ratio (best of 2 each)")
worst = None
for d in sorted(base[0]):
    b = max(x[d] for x in base)
    n = max(x[d] for x in now)
    ratio = n / b
    worst = ratio if worst is None else min(worst, ratio)
    print(f"{d:>7} {b:>16.1f} {n:>15.1f} {ratio:>8.2f}")
print(f"lowest ratio {worst:.2f} (aim: >= 0.80)")
PY
