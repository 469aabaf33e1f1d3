#!/usr/bin/env bash
# Postmarks per second (issue 15, "Measure"): ISSUE POSTMARK through the in-process card's
# full APDU path against raw P-256 signing of the same bytes (aim >= 0.9), and token
# verification, from the criterion bench tests/benches/postmark.rs; then, in the same run
# on the same machine, the OpenSSL anchors: a throwaway TSA made with openssl answering
# `openssl ts -query | openssl ts -reply` N times, and N `openssl ts -verify` runs.
#
#   bash scripts/postmark-bench.sh [--tokens N]     (N default 50; ~30 s after the build)
#
# The OpenSSL figures are whole invocations, process start and config parsing included:
# that is what a host that shells out to `openssl ts` pays per token, not the cost of
# OpenSSL's ECDSA (`openssl speed ecdsap256` gives that; scripts/post-bench.sh uses it).
# Ours are in-process. The ratios say how the card-plus-host path compares with the
# usual way of running a TSA or checking a token with stock tools, on this machine now.
# Exits non-zero only when something fails to run; a missed aim is printed, not failed.
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=50
while [ $# -gt 0 ]; do
  case "$1" in
    --tokens) TOKENS="$2"; shift 2 ;;
    *) echo "usage: $0 [--tokens N]" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null || { echo "error: openssl not found (Debian: apt-get install openssl)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 not found" >&2; exit 1; }
OUT=${CARGO_TARGET_DIR:-target}/postmark-bench
rm -rf "$OUT"
mkdir -p "$OUT/tsa"

echo "== building the benchmark"
# shellcheck source=scripts/opt-build.sh
. scripts/opt-build.sh
opt_bench postmark -q --no-run
echo "== $(openssl version); load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
echo "== cargo bench -p openpsd-tests --bench postmark (short)"
# 1000 bootstrap resamples instead of 100000: criterion's analysis, not the measurement,
# took half of the 40 s this step used to need; the ratios come from the raw totals anyway.
opt_bench postmark -q -- \
  --warm-up-time 1 --measurement-time 2 --noplot --nresamples 1000 | tee "$OUT/rust.txt" | grep -E '^postmark/|time:|^ratio|^store'

# A throwaway TSA: P-256 CA and a TSA certificate with the critical timeStamping EKU
# OpenSSL demands of a signer, the same key type and signature as the card's postmark key.
echo "== throwaway OpenSSL TSA in $OUT/tsa"
T=$OUT/tsa
cat >"$T/tsa.cnf" <<EOF
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = openpsd bench TSA
[ ca_ext ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ tsa_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = $T
serial = \$dir/serial
signer_cert = \$dir/tsa.pem
signer_key = \$dir/tsa.key
signer_digest = sha256
certs = \$dir/tsa.pem
default_policy = 1.3.6.1.4.1.32473.1.1
digests = sha256
ess_cert_id_alg = sha256
ess_cert_id_chain = no
accuracy = secs:1
ordering = no
tsa_name = no
EOF
echo 01 >"$T/serial"
(
  cd "$T"
  openssl ecparam -genkey -name prime256v1 -noout -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=openpsd bench CA" \
    -config tsa.cnf -extensions ca_ext -out ca.pem
  openssl ecparam -genkey -name prime256v1 -noout -out tsa.key
  openssl req -new -key tsa.key -config tsa.cnf -out tsa.csr
  openssl x509 -req -in tsa.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 -sha256 \
    -extfile tsa.cnf -extensions tsa_ext -out tsa.pem 2>/dev/null
  echo "openpsd postmark benchmark document" >doc
) >/dev/null

now_ns() { date +%s%N; }
# N query | reply pipelines, each a fresh query (openssl adds a random nonce) and reply.
t0=$(now_ns)
for i in $(seq 1 "$TOKENS"); do
  openssl ts -query -data "$T/doc" -sha256 -cert 2>/dev/null |
    openssl ts -reply -config "$T/tsa.cnf" -queryfile /dev/stdin -out "$T/r$i.tsr" 2>/dev/null
done
t1=$(now_ns)
# N verifications, each of its own response (the last line of each must say OK).
for i in $(seq 1 "$TOKENS"); do
  openssl ts -verify -data "$T/doc" -in "$T/r$i.tsr" -CAfile "$T/ca.pem" \
    -untrusted "$T/tsa.pem" >"$T/v$i.txt" 2>&1
done
t2=$(now_ns)
grep -q '^Verification: OK' "$T/v$TOKENS.txt" ||
  { echo "error: openssl ts -verify did not accept its own TSA's response:" >&2; cat "$T/v$TOKENS.txt" >&2; exit 1; }
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

python3 - "$OUT/rust.txt" "$TOKENS" "$t0" "$t1" "$t2" <<'PY'
import re, sys
path, n, t0, t1, t2 = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
rates = {}
for line in open(path):
    m = re.match(r"rate (\S+) (\d+)$", line)
    if m:
        rates[m.group(1)] = float(m.group(2))
need = ["apdu_path", "raw_sign", "expand_verify", "verify", "raw_verify"]
if not all(k in rates for k in need):
    sys.exit("error: could not read the benchmark's rate lines (its output changed?)")
reply = n / ((t1 - t0) / 1e9)
ts_verify = n / ((t2 - t1) / 1e9)
r = rates
print()
print(f"postmark via APDU path (in process):   {r['apdu_path']:>9.0f} /s")
print(f"raw p256 signing, same bytes and key:  {r['raw_sign']:>9.0f} /s")
print(f"openssl ts -query | ts -reply ({n}):    {reply:>9.1f} /s")
print(f"expand + verify (3 ECDSA verifies):    {r['expand_verify']:>9.0f} /s")
print(f"verify a token (2 ECDSA verifies):     {r['verify']:>9.0f} /s")
print(f"raw p256 verify, same bytes:           {r['raw_verify']:>9.0f} /s")
print(f"openssl ts -verify ({n}):               {ts_verify:>9.1f} /s")
ratio = r["apdu_path"] / r["raw_sign"]
print(f"APDU path / raw signing: {ratio:.3f}, aim >= 0.9 {'met' if ratio >= 0.9 else 'MISSED'}")
print(f"APDU path / openssl ts -reply: {r['apdu_path'] / reply:.0f}x")
print(f"verify / openssl ts -verify: {r['verify'] / ts_verify:.0f}x; "
      f"expand + verify / openssl ts -verify: {r['expand_verify'] / ts_verify:.0f}x")
print(f"verify / raw verify: {r['verify'] / r['raw_verify']:.3f} (2 verifies: bound 0.5); "
      f"expand + verify / raw verify: {r['expand_verify'] / r['raw_verify']:.3f} (bound 0.33)")
PY
