#!/usr/bin/env bash
# pcsc-test.sh - the APDU scripts through the real PC/SC stack: pcscd + vpcd + card-sim,
# driven by scriptor (pcsc-tools) and compared with the scripts' expectations; then
# pcsc_scan, opensc-tool with its probing, and a pyscard client doing an indicium and a
# refill; the license flow with the CLI (request, export, import, retire for a refund); then
# scripts/pcsc-transfer-test.sh (PSD and purse in two readers, transfer, pay,
# interruptions). Installs what it needs (Debian packages); stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pcsc-lib.sh
. scripts/pcsc-lib.sh
trap pcsc_stop_all EXIT

pcsc_install
pcsc_build
CARD_SIM=$(pwd)/target/release/card-sim
OPENPSD=$(pwd)/target/release/openpsd
export CARD_SIM
pcsc_start

echo "== the scripts in-process (card-sim run)"
"$CARD_SIM" run --clock none tests/scripts/*.apdu

echo "== the same scripts through pcscd + vpcd with scriptor"
for script in tests/scripts/*.apdu; do
  name=$(basename "$script" .apdu)
  state="$PCSC_RUN/cards/$name"
  rm -rf "$state" "$state.storage-key"
  "$CARD_SIM" create --state "$state" >/dev/null
  card_start card "$state" 0 --clock none
  timeout 60 scriptor -r "Virtual PCD 00 00" "$script" > "$PCSC_RUN/$name.scriptor" 2>&1
  "$CARD_SIM" check-scriptor --script "$script" --output "$PCSC_RUN/$name.scriptor"
  card_stop card
  pcsc_wait 10 pcsc_card_absent 0
done

echo "== pcsc_scan sees the card and its ATR"
state="$PCSC_RUN/cards/probe"
rm -rf "$state" "$state.secrets.json" "$state.storage-key"
# The back office first: the PSD is personalized with its KMS's public key.
rm -rf "$PCSC_RUN/backoffice"
setsid target/release/backoffice serve --role all --data "$PCSC_RUN/backoffice" \
  --listen 127.0.0.1:18700 --kms-listen 127.0.0.1:18701 --recharge-listen 127.0.0.1:18702 \
  --post-listen 127.0.0.1:18703 \
  > "$PCSC_RUN/backoffice.out" 2> "$PCSC_RUN/backoffice.log" < /dev/null &
echo $! > "$PCSC_RUN/backoffice.pid"
pcsc_wait 30 grep -q "meter listening" "$PCSC_RUN/backoffice.out" || { cat "$PCSC_RUN/backoffice.log"; exit 1; }
KMS_DIR="$PCSC_RUN/backoffice/kms"
# With the vendor's real key and the postal authority's, so the PSD can take licenses.
"$CARD_SIM" personalize --state "$state" --kms-public-key "$KMS_DIR/kms-public.key" \
  --vendor-key "$(cat "$PCSC_RUN/backoffice/vendor/vendor-public.key")" \
  --postal-authority "$PCSC_RUN/backoffice/pa" >/dev/null
card_start card "$state" 0
atr=$(timeout 5 pcsc_scan 2>/dev/null | grep -m1 "ATR: " || true)
echo "$atr"
echo "$atr" | grep -q "3B 88 80 01 6F 70 65 6E 70 73 64 31 4B" || { echo "pcsc_scan did not show card-sim's ATR" >&2; exit 1; }

echo "== opensc-tool (with its probing) gets clean status words"
before=$(grep -c '"exchange"\|exchange' "$PCSC_RUN/card.log" || true)
timeout 60 opensc-tool -r 0 -n > "$PCSC_RUN/opensc-name.out" 2>&1 || true
timeout 60 opensc-tool -r 0 -s 00A4040007F0505344000001 -s 80CA000100 > "$PCSC_RUN/opensc-apdu.out" 2>&1
grep -q "Received (SW1=0x90, SW2=0x00)" "$PCSC_RUN/opensc-apdu.out" || { cat "$PCSC_RUN/opensc-apdu.out"; exit 1; }
# Every response the card gave during opensc's probing ends in a status word of our table.
/usr/bin/python3 scripts/check-card-log.py "$PCSC_RUN/card.log"
pcsc_alive_as "$(cat "$PCSC_RUN/card.pid")" card-sim || { echo "card-sim died during opensc probing" >&2; exit 1; }
echo "opensc-tool: $(grep -c exchange "$PCSC_RUN/card.log") exchanges (was $before), all with known status words"

# pyscard plays the issuer's prepaid funding: a refill it signs itself with the KMS's key
# file (a test reading the KMS's secret; no device holds anything that could do this).
echo "== pyscard: an indicium and a refill through PC/SC"
/usr/bin/python3 tests/pcsc/pyscard_flow.py --reader "Virtual PCD 00 00" --secrets "$state.secrets.json" \
  --kms-signing-key "$KMS_DIR/kms-signing.key"

echo "== openpsd (the Rust host, pcsc crate) through the same reader"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" status
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" indicium --postage 0.85 --to 20095 --txn 00000000000000B1 > "$PCSC_RUN/openpsd-1.out"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" indicium --postage 0.85 --to 20095 --txn 00000000000000B1 > "$PCSC_RUN/openpsd-2.out"
cat "$PCSC_RUN/openpsd-1.out"
cmp -s "$PCSC_RUN/openpsd-1.out" "$PCSC_RUN/openpsd-2.out" || { echo "a retried transaction gave another indicium" >&2; exit 1; }

echo "== a refill through the meter server, the card in a PC/SC reader"
# The back office speaks mutual TLS: the operator's calls below present pki/operator.crt,
# the CLI trusts pki/ca.crt and logs in as the customer pcsc (its session kept in a config
# directory of this run's).
PKI="$PCSC_RUN/backoffice/pki"
export OPENPSD_CONFIG_DIR="$PCSC_RUN/openpsd-config"
echo "pcsc password 1234" | "$OPENPSD" signup --meter https://127.0.0.1:18700 --ca "$PKI/ca.crt" \
  --username pcsc --password-stdin
"$OPENPSD" --json whoami | tee "$PCSC_RUN/whoami.json"
# The vendor registers the device with the KMS; the operator registers it at the meter,
# owned by the customer's account, with the pyscard flow's offline 25.00 (one refill signed
# with the KMS's key, the issuer's prepaid value) as set 0's baseline: value the back office did not issue
# must be in the baseline, or the first audit raises an alarm. The payments desk books
# 100.00. Without the operator's certificate the KMS does not even answer.
/usr/bin/python3 - "$state.secrets.json" "$PKI" "$PCSC_RUN/whoami.json" <<'PY'
import json, ssl, sys, urllib.request
pki = sys.argv[2]
op = ssl.create_default_context(cafile=f"{pki}/ca.crt")
op.load_cert_chain(f"{pki}/operator.crt", f"{pki}/operator.key")
def post(url, body, ctx=op):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, context=ctx) as r:
        return json.load(r)
secrets = json.load(open(sys.argv[1]))
account = json.load(open(sys.argv[3]))["customer"]["account_id"]
try:
    post("https://127.0.0.1:18701/v1/devices", secrets, ssl.create_default_context(cafile=f"{pki}/ca.crt"))
    raise SystemExit("the KMS answered a caller without a certificate")
except (ssl.SSLError, urllib.error.URLError, ConnectionResetError) as e:
    print("KMS without a client certificate: refused,", type(e).__name__)
post("https://127.0.0.1:18701/v1/devices", secrets)
baselines = [{"control_sum": 2500, "refills": 1}] + \
    [{"control_sum": 0, "refills": 0}] * (len(secrets["licenses"]) - 1)
print("meter:", post("https://127.0.0.1:18700/v1/devices",
                     {"device_id": secrets["device_id"], "account_id": account, "baselines": baselines}))
print("deposit:", post(f"https://127.0.0.1:18702/v1/accounts/{account}/deposits", {"amount": 10000, "reference": "pcsc-test"}))
PY
# The manufacturer's desk publishes the certificate meter's rate table and vouches for the
# back office's CA (seed 004); the meter hands both to the PSD's host at its next contact,
# this refill.
VENDOR_URL=$(grep -o 'vendor listening on [^ ]*' "$PCSC_RUN/backoffice.out" | cut -d' ' -f4)
target/release/backoffice vendor --vendor "$VENDOR_URL" --pki "$PKI" rates publish \
  --version 1 --effective 2000-01-01 --fee postmark=0.10 --fee certificate=5.00 \
  --fee signature=0.07 --fee validation=0.04
target/release/backoffice vendor --vendor "$VENDOR_URL" --pki "$PKI" trust --kind ca \
  --cert "$PCSC_RUN/backoffice/ca/ca.pem"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" refill --amount 25.00 --txn pcsc-refill-1 \
  | tee "$PCSC_RUN/refill-1.out"
grep -q "loaded 1 rate table(s) and 1 trust anchor(s)" "$PCSC_RUN/refill-1.out"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" --json refill --amount 25.00 --txn pcsc-refill-1 \
  | tee "$PCSC_RUN/refill-again.json"
grep -q '"state":"completed"' "$PCSC_RUN/refill-again.json"
# The card was credited once (the pyscard flow put 25.00 on it before: 50.00 in all), the
# account debited once, and the meter raised no alarm (the funding was in the baseline).
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" --json status | tee "$PCSC_RUN/status.json"
"$OPENPSD" --json whoami > "$PCSC_RUN/whoami-after.json"
/usr/bin/python3 - "$PCSC_RUN/status.json" "$PKI" "$PCSC_RUN/whoami-after.json" <<'PY'
import json, ssl, sys, urllib.request
pki = sys.argv[2]
op = ssl.create_default_context(cafile=f"{pki}/ca.crt")
op.load_cert_chain(f"{pki}/operator.crt", f"{pki}/operator.key")
s = json.load(open(sys.argv[1]))["register_sets"][0]
acct = json.load(open(sys.argv[3]))["account"]
assert s["control_sum"] == 5000 and s["refills"] == 2, s
assert acct["debited"] == 2500 and acct["held"] == 0 and acct["available"] == 7500, acct
alarms = json.load(urllib.request.urlopen("https://127.0.0.1:18700/v1/alarms", context=op))
assert alarms["raised"] == 0, alarms
print("refill through PC/SC: card control sum 50.00 (2 refills), account debited 25.00 once")
PY

echo "== licenses through PC/SC (seed 003): request, grant, install; export to a file and import once"
LIC_DIR="$PCSC_RUN/licenses"
rm -rf "$LIC_DIR"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" license request --origin 53113 --txn pcsc-lic-1 \
  --cert-dir "$LIC_DIR"
# The same order again: the meter answers the stored grant, the PSD says it is installed.
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" --json license request --origin 53113 \
  --txn pcsc-lic-1 | tee "$PCSC_RUN/license.json"
LICENSE=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["license"])' "$PCSC_RUN/license.json")
# The postal authority's certificate, read by stock OpenSSL against the PA's CA.
openssl verify -CAfile "$PCSC_RUN/backoffice/pa/pa-ca.pem" "$LIC_DIR"/license-"$LICENSE"-*.pem
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" license export --license "$LICENSE" --to "$LIC_DIR"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" license list --dir "$LIC_DIR"
FILE=$(ls "$LIC_DIR"/*.psdset)
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" license import "$FILE"
if "$OPENPSD" --card "pcsc:Virtual PCD 00 00" license import "$FILE" 2> "$PCSC_RUN/import-again.err"; then
  echo "a second import of the same file succeeded" >&2; exit 1
fi
grep -q "older or duplicate copy: it can never be used" "$PCSC_RUN/import-again.err"
echo "licenses through PC/SC: license $LICENSE granted, installed, exported and imported once"

echo "== license retire through PC/SC: the licensed set withdrawn, its DR refunded, its grant revoked"
# The imported set gets 5.00 through the meter, then is given up: exported to the file
# kept as the evidence, RETIRE SET, the receipt booked at the meter (5.00 back to the
# deposit, the PA's grant revoked), the entry forgotten.
SLOT=$("$OPENPSD" --card "pcsc:Virtual PCD 00 00" --json license list | /usr/bin/python3 -c \
  'import json,sys; l=int(sys.argv[1]); print(next(s["slot"] for s in json.load(sys.stdin)["sets"] if s["license"]==l))' "$LICENSE")
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" refill --amount 5.00 --set "$SLOT" --txn pcsc-refill-lic
"$OPENPSD" --json whoami > "$PCSC_RUN/whoami-before-retire.json"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" license retire --license "$LICENSE" --dir "$LIC_DIR" \
  2>&1 | tee "$PCSC_RUN/retire.out"
grep -q "license $LICENSE retired: 5.00 refunded to account" "$PCSC_RUN/retire.out"
grep -q "grant .* revoked" "$PCSC_RUN/retire.out"
"$OPENPSD" --json whoami > "$PCSC_RUN/whoami-after-retire.json"
/usr/bin/python3 - "$PCSC_RUN/whoami-before-retire.json" "$PCSC_RUN/whoami-after-retire.json" <<'PY'
import json, sys
before, after = (json.load(open(f))["account"] for f in sys.argv[1:3])
assert after["available"] - before["available"] == 500, (before, after)
print("deposit: available", before["available"], "->", after["available"], "(the retired set's DR)")
PY
# Done: nothing of the license is left on the card, and its file can never come back.
if "$OPENPSD" --card "pcsc:Virtual PCD 00 00" license retire --license "$LICENSE" --dir "$LIC_DIR" 2> "$PCSC_RUN/retire-again.err"; then
  echo "a second retirement of the same license succeeded" >&2; exit 1
fi
grep -q "neither resident nor exported" "$PCSC_RUN/retire-again.err"
RETIRED=$(grep -o '[^ ]*\.psdset stays as the evidence' "$PCSC_RUN/retire.out" | cut -d' ' -f1)
if "$OPENPSD" --card "pcsc:Virtual PCD 00 00" license import "$RETIRED" 2> "$PCSC_RUN/import-retired.err"; then
  echo "a retired set was imported" >&2; exit 1
fi
grep -q "it can never be used" "$PCSC_RUN/import-retired.err"
echo "license retire through PC/SC: license $LICENSE retired, 5.00 refunded once, its file dead"

echo "== certificate meter through PC/SC (seed 004): rates and the CA from the vendor, a certificate, a postmark openssl verifies"
# The rate table and the CA's anchor came with the first refill; the PSD's postmark key is
# certified by the CA for the customer's account; the postmark's token is checked by stock
# OpenSSL.
CM_DIR="$PCSC_RUN/certmeter"
rm -rf "$CM_DIR"; mkdir -p "$CM_DIR"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" rates | tee "$PCSC_RUN/rates.out"
grep -q "rate table version 1 (effective 2000-01-01, in effect)" "$PCSC_RUN/rates.out"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" cert request --purpose postmark --out-dir "$CM_DIR" \
  | tee "$PCSC_RUN/cert.out"
grep -q "fee 5.00" "$PCSC_RUN/cert.out"
openssl verify -purpose timestampsign -CAfile "$CM_DIR/ca.pem" "$CM_DIR"/*-postmark.pem
echo "a document for the PSD's postmark" > "$CM_DIR/doc.txt"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" postmark "$CM_DIR/doc.txt" --ca "$CM_DIR/ca.pem" \
  --txn 00000000000000C1 | tee "$PCSC_RUN/postmark.out"
grep -q "fee 0.10" "$PCSC_RUN/postmark.out"
cp "$CM_DIR/doc.txt.tst" "$CM_DIR/first.tst"
# The same transaction again: the same token, not charged twice.
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" postmark "$CM_DIR/doc.txt" --ca "$CM_DIR/ca.pem" \
  --txn 00000000000000C1 > /dev/null
cmp "$CM_DIR/first.tst" "$CM_DIR/doc.txt.tst"
openssl ts -verify -data "$CM_DIR/doc.txt" -in "$CM_DIR/doc.txt.tst" -token_in \
  -CAfile "$CM_DIR/ca.pem" -untrusted "$CM_DIR/doc.txt.postmark.pem" | tee "$PCSC_RUN/ts-verify.out"
grep -q "Verification: OK" "$PCSC_RUN/ts-verify.out"
"$OPENPSD" postmark verify "$CM_DIR/doc.txt" "$CM_DIR/doc.txt.tst" --ca "$CM_DIR/ca.pem"
echo "certificate meter through PC/SC: certificate 5.00 and postmark 0.10 paid once, token verified by openssl"

echo "== SIGN and VALIDATE POSTMARK through PC/SC (seed 004, Fig. 4): a CMS signature openssl verifies, a receipt the device signed"
# A sign key certified for the account (smimesign), a document signed once (the retry is the
# same bytes), the detached .p7s checked by stock OpenSSL; then the PSD validates the
# postmark above for the validation fee and its receipt opens under the device key.
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" cert request --purpose sign --out-dir "$CM_DIR" \
  | tee "$PCSC_RUN/cert-sign.out"
grep -q "fee 5.00" "$PCSC_RUN/cert-sign.out"
openssl verify -purpose smimesign -CAfile "$CM_DIR/ca.pem" "$CM_DIR"/*-sign.pem
echo "a contract the PSD signs" > "$CM_DIR/contract.txt"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" sign "$CM_DIR/contract.txt" --ca "$CM_DIR/ca.pem" \
  --txn 00000000000000C2 | tee "$PCSC_RUN/sign.out"
grep -q "fee 0.07;" "$PCSC_RUN/sign.out"
cp "$CM_DIR/contract.txt.p7s" "$CM_DIR/first.p7s"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" sign "$CM_DIR/contract.txt" --ca "$CM_DIR/ca.pem" \
  --txn 00000000000000C2 | tee "$PCSC_RUN/sign-again.out"
grep -q "fee 0.00 (already paid)" "$PCSC_RUN/sign-again.out"
cmp "$CM_DIR/first.p7s" "$CM_DIR/contract.txt.p7s"
openssl cms -verify -binary -inform DER -in "$CM_DIR/contract.txt.p7s" \
  -content "$CM_DIR/contract.txt" -CAfile "$CM_DIR/ca.pem" -out /dev/null
"$OPENPSD" sign verify "$CM_DIR/contract.txt" "$CM_DIR/contract.txt.p7s" --ca "$CM_DIR/ca.pem"
"$OPENPSD" --card "pcsc:Virtual PCD 00 00" --json postmark validate "$CM_DIR/doc.txt" \
  "$CM_DIR/doc.txt.tst" --txn 00000000000000C3 | tee "$PCSC_RUN/validate.json"
/usr/bin/python3 - "$PCSC_RUN/validate.json" <<'PY'
import json, sys
v = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert v["valid"] is True and v["fee"] == 4, v
open(sys.argv[1] + ".key", "w").write(v["device_key"])
print("validation through PC/SC: valid, fee 0.04")
PY
"$OPENPSD" postmark verify-receipt "$CM_DIR/doc.txt.tst.receipt" \
  --device-key "$(cat "$PCSC_RUN/validate.json.key")" | tee "$PCSC_RUN/receipt.out"
grep -q "^authentic receipt of device .* VALID$" "$PCSC_RUN/receipt.out"
echo "SIGN and VALIDATE POSTMARK through PC/SC: signature 0.07 paid once and verified by openssl, receipt authentic"
stop_pid backoffice "backoffice"
card_stop card
pcsc_wait 10 pcsc_card_absent 0

echo "== value transfer PSD -> purse -> merchant through two readers (scripts/pcsc-transfer-test.sh)"
bash scripts/pcsc-transfer-test.sh
echo "== PC/SC tests passed"
