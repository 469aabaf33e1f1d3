#!/usr/bin/env bash
# CRL build at N revoked entries (issue 15, "Measure": 10^5 against `openssl ca -gencrl`):
# the certificate authority's CRL (backoffice/benches/ca_crl.rs: openpsd_ca::x509::crl,
# x509-cert's CrlBuilder, DER, ECDSA P-256) against `openssl ca -gencrl` on a throwaway
# OpenSSL CA holding the same number of revoked certificates, in the same run on the same
# machine. Ratio: ours / openssl, lower is better; target <= 1.0.
#
#   bash scripts/crl-bench.sh [--entries N] [--runs R]   (N default 100000, R default 3)
#
# The OpenSSL CA: a P-256 key and self-signed certificate, an index.txt of N `R` lines
# (unique random 16-octet serials like the CA's, unique subjects, revocation times one
# second apart), a crlnumber file and a minimal openssl.cnf whose CRL carries the same
# extensions as ours (CRL number, authority key identifier). `openssl ca -gencrl` is timed
# whole, R times, the best kept: process start, reading the config and index.txt (its
# database), building, sorting, signing and writing PEM. The Rust side prints two figures:
# `build`, the CA's CRL function on the entries in memory (best of R), and `served`, the
# first `GET /v1/ca/crl.der` from a running CA whose SQLite store holds the N revoked rows
# (the handler's SELECT, the build, the CRL stored, loopback HTTP; once). `served` is the
# closer match to `openssl ca -gencrl`, which also reads its database.
# Exits non-zero only when something fails to run; a missed target is printed, not failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=100000
RUNS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --entries) ENTRIES="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    *) echo "usage: $0 [--entries N] [--runs R]" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null || { echo "error: openssl not found (Debian: apt-get install openssl)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 not found" >&2; exit 1; }
OUT=${CARGO_TARGET_DIR:-target}/crl-bench
rm -rf "$OUT"
mkdir -p "$OUT/ca"
T=$(cd "$OUT/ca" && pwd)

echo "== building the benchmark"
# shellcheck source=scripts/opt-build.sh
. scripts/opt-build.sh
opt_bench ca_crl -q --no-run
echo "== $(openssl version); load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

echo "== throwaway OpenSSL CA in $T with $ENTRIES revoked certificates"
cat >"$T/openssl.cnf" <<EOF
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
C = DE
O = openpsd
CN = openpsd bench CA
[ ca_ext ]
basicConstraints = critical,CA:TRUE,pathlen:1
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ ca ]
default_ca = bench_ca
[ bench_ca ]
dir = $T
database = \$dir/index.txt
crlnumber = \$dir/crlnumber
certificate = \$dir/ca.pem
private_key = \$dir/ca.key
default_md = sha256
default_crl_days = 1
unique_subject = no
crl_extensions = crl_ext
[ crl_ext ]
authorityKeyIdentifier = keyid:always
EOF
(
  cd "$T"
  openssl ecparam -genkey -name prime256v1 -noout -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 2 -config openssl.cnf -extensions ca_ext -out ca.pem
  echo "unique_subject = no" >index.txt.attr
) >/dev/null
python3 - "$T/index.txt" "$ENTRIES" <<'PY'
import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
now = int(time.time())
fmt = lambda t: time.strftime("%y%m%d%H%M%SZ", time.gmtime(t))
expiry = fmt(now + 365 * 86400)
seen = set()
with open(path, "w") as f:
    while len(seen) < n:
        b = bytearray(os.urandom(16))
        b[0] = b[0] % 0x7F + 1
        s = b.hex().upper()
        if s in seen:
            continue
        seen.add(s)
        i = len(seen)
        # status, expiry, revocation[,reason], serial, file, subject
        f.write(f"R\t{expiry}\t{fmt(now - n + i)}\t{s}\tunknown\t/C=DE/O=openpsd customer {i}/CN=bench{i}\n")
PY

now_ns() { date +%s%N; }
best_ossl=""
for run in $(seq 1 "$RUNS"); do
  echo 01 >"$T/crlnumber"
  t0=$(now_ns)
  openssl ca -gencrl -config "$T/openssl.cnf" -out "$T/crl.pem" 2>"$T/gencrl.err" ||
    { echo "error: openssl ca -gencrl failed:" >&2; cat "$T/gencrl.err" >&2; exit 1; }
  t1=$(now_ns)
  m=$(( (t1 - t0) / 1000000 ))
  echo "openssl ca -gencrl run $run: $m ms"
  if [ -z "$best_ossl" ] || [ "$m" -lt "$best_ossl" ]; then best_ossl=$m; fi
done
openssl crl -in "$T/crl.pem" -outform DER -out "$T/crl.der"
got=$(openssl crl -in "$T/crl.pem" -noout -text | grep -c 'Serial Number:' || true)
[ "$got" = "$ENTRIES" ] ||
  { echo "error: openssl's CRL lists $got entries, not $ENTRIES" >&2; exit 1; }
ossl_bytes=$(stat -c %s "$T/crl.der")

echo "== cargo bench -p openpsd-backoffice --bench ca_crl -- --entries $ENTRIES --runs $RUNS"
opt_bench ca_crl -q -- --entries "$ENTRIES" --runs "$RUNS" | tee "$OUT/rust.txt"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

python3 - "$OUT/rust.txt" "$ENTRIES" "$best_ossl" "$ossl_bytes" <<'PY'
import re, sys
path, n, ossl_ms, ossl_bytes = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
fig = {}
for line in open(path):
    m = re.match(r"(build|served) entries (\d+) bytes (\d+) ms ([\d.]+)$", line.strip())
    if m:
        fig[m.group(1)] = (int(m.group(2)), int(m.group(3)), float(m.group(4)))
if "build" not in fig:
    sys.exit("error: could not read the benchmark's figures (its output changed?)")
print()
print(f"CRL of {n} revoked entries          ms        bytes (DER)   ours / openssl")
print(f"openssl ca -gencrl (best of runs)   {ossl_ms:>9.1f}  {ossl_bytes:>11}")
for k, label in (("build", "ours, build in memory (best)"), ("served", "ours, GET /v1/ca/crl.der (store)")):
    if k in fig:
        e, b, ms = fig[k]
        r = ms / ossl_ms if ossl_ms > 0 else float("inf")
        print(f"{label:<35} {ms:>9.1f}  {b:>11}   {r:.2f}")
e, b, ms = fig["served"] if "served" in fig else fig["build"]
r = ms / ossl_ms if ossl_ms > 0 else float("inf")
print(f"ratio ours / openssl ca -gencrl: {r:.2f}, target <= 1.0 {'met' if r <= 1.0 else 'MISSED'}")
PY
