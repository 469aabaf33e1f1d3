#!/usr/bin/env bash
# web-test.sh - the browser journey (issue 6, part 4): starts `backoffice-demo --web` on free
# loopback ports with a fresh data directory, drives Debian's Chromium with playwright-core
# through the mailer's whole journey (tests/web/journey.mjs: create the PSD in the page,
# refusals, refill through the meter server, an indicium and its label, print CSS, history,
# the purse section, a license requested, exported to a file, imported once and refused the
# second time (9A33), reload, desktop and phone size with screenshots, an axe-core audit and
# no console error, tampered sealed record; issue 19 part 2: addresses on the label, the label
# formats' print preview, PDFs checked with poppler-utils and libdmtx, the rates picker, the
# history's search and CSV, a safe start over), then decodes the label's screenshot with
# libdmtx's `dmtxread` and verifies the decoded bytes independently as an indicium of that
# device (tests/web/verify-indicium.mjs: WebCrypto ECDSA over the docs/apdu.md layout).
# Then the online meter tab (tests/web/online.mjs, issue 16 item 6: a virtual meter's label,
# decoded by dmtxread and verified by verify-indicium.mjs too), and the Certificates tab
# (tests/web/certificates.mjs, issue 15 item 9): the second wasm
# module, the rate tables, a postmark key certified by the demo's CA, a file postmarked in
# the page and its .tst checked with stock `openssl ts -verify`, verification in the page,
# revocation; a postmark whose output is lost after the charge, finished after a reload with
# the same transaction ID (same bytes, charged once); a certificate revoked by the CA's
# operator, whose order the page applies before the next refill.
# Last, scripts/npm-test.sh (issue 19, part 4): the packed npm package's file list, a Vite
# app that imports it (tests/npm-app, type-checked by tsc --strict) issuing an indicium in
# Chromium (tests/web/npm-app.mjs).
#
#   bash scripts/web-test.sh     # output in target/web-test/ (label.png, print.png, ...)
#
# Needs scripts/install-web-toolchain.sh (run here; quick once installed) and builds the wasm
# package (scripts/wasm-pkg.sh) and the back office (debug, shared with `cargo test`).
# WEB_TEST_SKIP_BUILD=1 uses what is built already. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=$REPO/target/web-test
say() { printf '== web-test: %s\n' "$*"; }
die() { printf '== web-test: FAILED: %s\n' "$*" >&2; exit 1; }
t0=$(date +%s)

if [ "${WEB_TEST_SKIP_BUILD:-0}" != 1 ]; then
  bash scripts/install-web-toolchain.sh
  OPENPSD_SKIP_WEB_INSTALL=1 bash scripts/wasm-pkg.sh
  cargo build -q -p openpsd-demo
fi
# shellcheck source=scripts/web-env.sh
source scripts/web-env.sh
# poppler-utils (pdfinfo, pdftotext, pdftoppm) checks the label PDFs the page downloads.
if ! command -v pdftoppm >/dev/null; then
  say "apt: installing poppler-utils (the label PDFs' checks)"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends poppler-utils >/dev/null \
    || { $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq &&
         $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends poppler-utils >/dev/null; }
fi
for tool in /usr/bin/chromium dmtxread node pdfinfo pdftotext pdftoppm; do
  command -v "$tool" >/dev/null || die "$tool missing: run bash scripts/install-web-toolchain.sh"
done
[ -f target/wasm-pkg/web/openpsd.js ] || die "no target/wasm-pkg/web/openpsd.js: run bash scripts/wasm-pkg.sh"
BACKOFFICE=${CARGO_TARGET_DIR:-$REPO/target}/debug/backoffice-demo
[ -x "$BACKOFFICE" ] || die "no $BACKOFFICE: cargo build -p openpsd-demo"

rm -rf "$OUT"
mkdir -p "$OUT"
DATA=$(mktemp -d "${TMPDIR:-/tmp}/openpsd-web-test.XXXXXX")
bo_pid=
journey_pid=
cleanup() {
  local rc=$?
  [ -n "$journey_pid" ] && kill "$journey_pid" 2>/dev/null || true
  if [ -n "$bo_pid" ] && kill -0 "$bo_pid" 2>/dev/null; then
    kill -INT "$bo_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$bo_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$bo_pid" 2>/dev/null || true
  fi
  rm -rf "$DATA"
  if [ $rc -ne 0 ]; then
    echo "== web-test: back office log (last 40 lines of $OUT/backoffice.log):" >&2
    tail -n 40 "$OUT/backoffice.log" >&2 2>/dev/null || true
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every service on a free port (127.0.0.1:0): nothing collides with a demo running on the
# defaults. The web listener's URL comes from the log.
say "starting the back office demo with the web demo (data $DATA)"
"$BACKOFFICE" --data "$DATA" --meter-listen 127.0.0.1:0 --kms-listen 127.0.0.1:0 \
  --recharge-listen 127.0.0.1:0 --post-listen 127.0.0.1:0 --card-listen 127.0.0.1:0 --web 127.0.0.1:0 \
  --web-root "$REPO/web-demo" --wasm-pkg "$REPO/target/wasm-pkg/web" \
  >"$OUT/backoffice.log" 2>"$OUT/backoffice.stderr.log" &
bo_pid=$!
url=
for _ in $(seq 600); do
  kill -0 "$bo_pid" 2>/dev/null || die "the back office exited: $(tail -n 5 "$OUT/backoffice.stderr.log")"
  if grep -q '^Ctrl-C stops the demo' "$OUT/backoffice.log"; then
    url=$(sed -n 's/^web listening on \(http:[^ ]*\)$/\1/p' "$OUT/backoffice.log" | head -n1)
    break
  fi
  sleep 0.2
done
[ -n "$url" ] || die "no 'web listening on' line from the back office within 120 s"
say "web demo at $url/"

say "the mailer's journey in Chromium (tests/web/journey.mjs)"
node tests/web/journey.mjs --url "$url/" --out "$OUT" &
journey_pid=$!
wait "$journey_pid" || die "the browser journey failed"
journey_pid=

say "the Certificates tab in Chromium (tests/web/certificates.mjs: postmark, openssl ts -verify, revoke, lost output, forced revocation)"
command -v openssl >/dev/null || die "openssl missing"
[ -f target/wasm-pkg/web/cert/openpsd.js ] || die "no target/wasm-pkg/web/cert/openpsd.js: run bash scripts/wasm-pkg.sh"
# The CA's operator (the demo's PKI, mutual TLS) revokes a certificate in the journey.
ca_url=$(sed -n 's/^certificate authority \(https:[^ ]*\) .*$/\1/p' "$OUT/backoffice.log" | head -n1)
[ -n "$ca_url" ] || die "no 'certificate authority' line from the back office"
# The vendor's operator publishes a dearer rate table, which the page loads before a refill.
vendor_url=$(sed -n 's/^vendor \(https:[^ ]*\) .*$/\1/p' "$OUT/backoffice.log" | head -n1)
[ -n "$vendor_url" ] || die "no 'vendor' line from the back office"
node tests/web/certificates.mjs --url "$url/" --out "$OUT" --ca "$ca_url" --vendor "$vendor_url" --pki "$DATA/pki" &
journey_pid=$!
wait "$journey_pid" || die "the Certificates journey failed"
journey_pid=

say "the online meter tab in Chromium (tests/web/online.mjs: sign up, deposit, funds, print, batch, lost answers, post office, log out)"
node tests/web/online.mjs --url "$url/" --out "$OUT" &
journey_pid=$!
wait "$journey_pid" || die "the online meter journey failed"
journey_pid=
dmtxread -N1 -m 60000 "$OUT/online/label.png" >"$OUT/online/decoded.bin" || die "dmtxread found no Data Matrix in the online meter's label"
node tests/web/verify-indicium.mjs "$OUT/online/decoded.bin" "$OUT/online/online.json" || die "the online meter's decoded label is not a valid indicium of its meter"

say "decoding target/web-test/label.png with libdmtx (dmtxread $(dpkg-query -W -f='${Version}' dmtx-utils 2>/dev/null || echo '?'))"
dmtxread -N1 -m 60000 "$OUT/label.png" >"$OUT/decoded.bin" || die "dmtxread found no Data Matrix in the label"
[ -s "$OUT/decoded.bin" ] || die "dmtxread decoded nothing"
say "dmtxread decoded $(stat -c %s "$OUT/decoded.bin") bytes: $(od -An -tx1 -v "$OUT/decoded.bin" | tr -d ' \n' | cut -c1-48)…"

say "independent verification (tests/web/verify-indicium.mjs: WebCrypto, docs/apdu.md layout)"
node tests/web/verify-indicium.mjs "$OUT/decoded.bin" "$OUT/journey.json" || die "the decoded label is not a valid indicium of the page's device"
for fmt in thermal a4 letter env10; do
  say "the $fmt PDF's Data Matrix (pdftoppm → dmtxread, target/web-test/pdf/$fmt.bin)"
  node tests/web/verify-indicium.mjs "$OUT/pdf/$fmt.bin" "$OUT/journey.json" >/dev/null || die "the $fmt PDF's Data Matrix is not a valid indicium of the page's device"
done

say "the npm package as JS developers use it (scripts/npm-test.sh: npm pack, tsc --strict, vite build, the app in Chromium)"
t_npm=$(date +%s)
bash scripts/npm-test.sh || die "the npm package test failed"
say "npm package test took $(( $(date +%s) - t_npm )) s"

say "passed in $(( $(date +%s) - t0 )) s (artifacts in target/web-test/, target/npm-test/)"
