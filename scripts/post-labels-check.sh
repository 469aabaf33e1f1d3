#!/usr/bin/env bash
# post-labels-check.sh - cross-checks the post office's label decoder
# (openpsd_post::label, rxing + datamatrix) against libdmtx, the independent Data Matrix
# decoder the project already trusts (`dmtxread`, Debian's dmtx-utils; scripts/web-test.sh
# uses it on the browser's labels). Two decoders written apart must read the same bytes
# from the same scans, or one of them is wrong.
#
#   bash scripts/post-labels-check.sh
#
# The ignored test `write_label_files` (backoffice/post/tests/label.rs) writes label scans
# of real signed indicia (PNG: 2, 4 and 8 px/module, rotated 90°, tilted 5°, noisy,
# blurred, and other indicia) and, for each, the indicium in hex; it asserts that our
# decoder reads each scan to exactly those bytes. This script then has dmtxread decode
# every scan and compares its bytes with the same hex. dmtx-utils is installed from
# Debian if missing (as root, or with sudo). Environment: OPENPSD_LABELS_DIR (default
# target/post-labels: where the scans go, emptied first).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${OPENPSD_LABELS_DIR:-target/post-labels}
say() { printf '== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

if ! command -v dmtxread >/dev/null; then
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  say "apt: installing dmtx-utils (dmtxread)"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -qq --no-install-recommends dmtx-utils >/dev/null
  command -v dmtxread >/dev/null || die "dmtxread still missing after installing dmtx-utils"
fi

rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
say "label scans and expected bytes -> $out (our decoder must read each)"
OPENPSD_LABELS_DIR="$out" cargo test --workspace --test label -- --ignored --exact write_label_files

say "decoding with libdmtx (dmtxread $(dpkg-query -W -f='${Version}' dmtx-utils 2>/dev/null || echo '?'))"
n=0
for png in "$out"/*.png; do
  name=$(basename "$png" .png)
  [ -f "$out/$name.hex" ] || die "$name.hex missing"
  # -N1: one symbol per scan; -m: a time bound, so a scan libdmtx cannot read fails the
  # check instead of hanging it.
  dmtxread -N1 -m 60000 "$png" >"$out/$name.dmtx.bin" || die "dmtxread found no Data Matrix in $name.png"
  got=$(od -An -tx1 -v "$out/$name.dmtx.bin" | tr -d ' \n')
  want=$(tr -d ' \n' <"$out/$name.hex")
  [ -n "$want" ] || die "$name.hex is empty"
  [ "$got" = "$want" ] ||
    die "$name.png: dmtxread read ${got:0:32}… ($(( ${#got} / 2 )) bytes), our decoder ${want:0:32}… ($(( ${#want} / 2 )) bytes)"
  printf '   %-12s %d bytes, same as our decoder\n' "$name" "$(( ${#got} / 2 ))"
  n=$((n + 1))
done
[ "$n" -ge 10 ] || die "only $n label scans were written"
say "dmtxread and openpsd_post::label read the same bytes from all $n label scans"
