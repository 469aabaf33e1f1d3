#!/usr/bin/env bash
# pcsc-transfer-test.sh - value PSD -> purse -> merchant through the real PC/SC stack with
# two vpcd readers: a PSD (with a scheme) on "Virtual PCD 00 00" and a purse card on
# "Virtual PCD 00 01", each a `card-sim serve --vpcd --slot N` process. The PSD is funded
# through the back office (`openpsd refill`), then `openpsd transfer`, `openpsd pay` to a
# merchant terminal, `openpsd batch`, a replayed purchase refused, a wrong PIN counted;
# then interruptions — the host stopping right after the PSD's debit and right after the
# purse's credit, and kill -9 of the purse's card-sim in the middle of a stream of
# transfers — each followed by a restart and `openpsd transfer`/`resolve`, checking that
# value is conserved exactly: PSD DR + pending + purse balance + merchant batch = funded.
#
# Called by scripts/pcsc-test.sh; runs alone too. Installs what it needs (Debian
# packages); stops what it started (by recorded PID).
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

R0="pcsc:Virtual PCD 00 00"
R1="pcsc:Virtual PCD 00 01"
W="$PCSC_RUN/transfer"
rm -rf "$W"
mkdir -p "$W"
PIN=2468

# json FILE EXPR: evaluate a Python expression over the JSON in FILE (as `j`).
json() { /usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
# check FILE EXPR MESSAGE: fail unless the Python expression over `j` is true.
check() {
  /usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" ||
    { echo "FAILED: $3"; cat "$1"; exit 1; }
}

echo "== the back office (its KMS's public key goes into the PSD at personalization)"
setsid target/release/backoffice serve --role all --data "$W/backoffice" \
  --listen 127.0.0.1:18710 --kms-listen 127.0.0.1:18711 --recharge-listen 127.0.0.1:18712 \
  --post-listen 127.0.0.1:18713 \
  > "$PCSC_RUN/backoffice.out" 2> "$PCSC_RUN/backoffice.log" < /dev/null &
echo $! > "$PCSC_RUN/backoffice.pid"
pcsc_wait 30 grep -q "meter listening" "$PCSC_RUN/backoffice.out" || { cat "$PCSC_RUN/backoffice.log"; exit 1; }

echo "== a scheme, a PSD of the scheme (slot 0) and a purse of the scheme (slot 1)"
"$CARD_SIM" scheme create --out "$W/scheme.json" --id 4711
"$CARD_SIM" scheme public --scheme "$W/scheme.json" --out "$W/issuer.json"
"$CARD_SIM" personalize --state "$W/psd" --scheme "$W/scheme.json" --device-id 5053445452414E53 \
  --kms-public-key "$W/backoffice/kms/kms-public.key"
"$CARD_SIM" personalize --kind purse --state "$W/purse" --scheme "$W/scheme.json" \
  --card-id 5055525345303031 --pin "$PIN" --max-balance 500.00 --max-transfer 100.00
card_start psd "$W/psd" 0
card_start purse "$W/purse" 1

echo "== fund the PSD with 50.00 through the back office (refill over PC/SC)"
# Mutual TLS: the operator's calls present pki/operator.crt; the CLI logs in as the
# customer "transfer" (session in this run's config directory) and trusts pki/ca.crt.
PKI="$W/backoffice/pki"
export OPENPSD_CONFIG_DIR="$W/openpsd-config"
echo "transfer password 1234" | "$OPENPSD" signup --meter https://127.0.0.1:18710 \
  --ca "$PKI/ca.crt" --username transfer --password-stdin
"$OPENPSD" --json whoami > "$W/whoami.json"
/usr/bin/python3 - "$W/psd.secrets.json" "$PKI" "$W/whoami.json" <<'PY'
import json, ssl, sys, urllib.request
pki = sys.argv[2]
op = ssl.create_default_context(cafile=f"{pki}/ca.crt")
op.load_cert_chain(f"{pki}/operator.crt", f"{pki}/operator.key")
def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, context=op) as r:
        return json.load(r)
secrets = json.load(open(sys.argv[1]))
account = json.load(open(sys.argv[3]))["customer"]["account_id"]
post("https://127.0.0.1:18711/v1/devices", secrets)
# A fresh PSD: registered at the meter from zero, owned by the account that pays.
post("https://127.0.0.1:18710/v1/devices", {"device_id": secrets["device_id"], "account_id": account})
post(f"https://127.0.0.1:18712/v1/accounts/{account}/deposits", {"amount": 10000, "reference": "pcsc-transfer"})
PY
"$OPENPSD" --card "$R0" refill --amount 50.00 --txn pcsc-transfer-1
stop_pid backoffice "backoffice"
FUNDED=5000

echo "== openpsd transfer 10.00: PSD (Virtual PCD 00 00) -> purse (Virtual PCD 00 01)"
"$OPENPSD" transfer --amount 10.00 --psd "$R0" --card "$R1" --pin "$PIN"
"$OPENPSD" --json transfer --amount 5.00 --psd "$R0" --card "$R1" --pin "$PIN" > "$W/t2.json"
check "$W/t2.json" 'j["registers"]["dr"] == 3500 and j["registers"]["pending"] == 0 and j["registers"]["transferred"] == 1500' \
  "PSD DR 35.00 after 15.00 moved out"
check "$W/t2.json" 'j["purse"]["balance"] == 1500 and j["purse"]["transfers"] == 2 and j["purse"]["total_in"] == 1500' \
  "purse balance 15.00 after two transfers"
check "$W/t2.json" 'j["psd"]["transfers_completed"] == 2 and j["psd"]["total_out"] == 1500' "PSD personality"
echo "transfer through PC/SC: PSD DR 50.00 -> 35.00, purse 0.00 -> 15.00"

echo "== a wrong PIN is counted (63C2), the right one restores the tries"
if "$OPENPSD" transfer --amount 1.00 --psd "$R0" --card "$R1" --pin 0000 2> "$W/wrongpin.err"; then
  echo "a wrong PIN was accepted"; exit 1
fi
cat "$W/wrongpin.err"
grep -q "wrong PIN: 2 tries left" "$W/wrongpin.err" && grep -q "63C2" "$W/wrongpin.err"
"$OPENPSD" --json --card "$R1" purse > "$W/purse-wrongpin.json"
check "$W/purse-wrongpin.json" 'j["pin_tries_left"] == 2 and j["balance"] == 1500' "tries 2 left, nothing moved"

echo "== a merchant terminal: openpsd pay 2.50 from the purse through PC/SC"
"$OPENPSD" terminal init --terminal "$W/terminal.db" --id 5445524D494E4131 --issuer-key "$W/issuer.json"
"$OPENPSD" --json pay --amount 2.50 --card "$R1" --terminal "$W/terminal.db" --scheme "$W/scheme.json" --pin "$PIN" \
  > "$W/pay1.json"
cat "$W/pay1.json"
check "$W/pay1.json" 'j["amount"] == 250 and j["balance_after"] == 1250 and j["terminal_counter"] == 1 and j["card_number"] == 1' \
  "purchase 2.50, balance 12.50"
"$OPENPSD" pay --amount 1.25 --card "$R1" --terminal "$W/terminal.db" --pin "$PIN"
"$OPENPSD" batch --terminal "$W/terminal.db"
"$OPENPSD" --json batch --terminal "$W/terminal.db" > "$W/batch.json"
check "$W/batch.json" 'j["count"] == 2 and j["total"] == 375 and j["per_card"][0]["total"] == 375' "batch total 3.75"
"$OPENPSD" --json --card "$R1" purse > "$W/purse.json"
check "$W/purse.json" 'j["balance"] == 1500 - 375 and j["purchases"] == 2 and j["pin_tries_left"] == 3' \
  "purse balance = transferred - purchases"

echo "== a replayed purchase record is refused and not added"
if "$OPENPSD" batch import --terminal "$W/terminal.db" "$W/pay1.json" 2> "$W/replay.err"; then
  echo "a replayed purchase was accepted"; exit 1
fi
cat "$W/replay.err"
grep -q "replayed purchase refused" "$W/replay.err"
"$OPENPSD" --json batch --terminal "$W/terminal.db" > "$W/batch2.json"
check "$W/batch2.json" 'j["count"] == 2 and j["total"] == 375' "the replay changed nothing"

# conserved NAME: PSD DR + pending + purse balance + batch total = funded, nothing pending
# left after resolution, and the PSD's "transferred" equals what the purse received.
conserved() {
  "$OPENPSD" --json --card "$R0" status > "$W/psd-$1.json"
  "$OPENPSD" --json --card "$R1" purse > "$W/purse-$1.json"
  "$OPENPSD" --json batch --terminal "$W/terminal.db" > "$W/batch-$1.json"
  /usr/bin/python3 - "$W/psd-$1.json" "$W/purse-$1.json" "$W/batch-$1.json" "$FUNDED" "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["register_sets"][0]
p = json.load(open(sys.argv[2]))
b = json.load(open(sys.argv[3]))
funded, name = int(sys.argv[4]), sys.argv[5]
total = s["dr"] + s["pending"] + p["balance"] + b["total"]
print(f"{name}: PSD DR {s['dr']/100:.2f} pending {s['pending']/100:.2f} + purse {p['balance']/100:.2f}"
      f" + batch {b['total']/100:.2f} = {total/100:.2f} (funded {funded/100:.2f});"
      f" transferred {s['transferred']/100:.2f}, purse received {p['total_in']/100:.2f}")
assert total == funded, "value not conserved"
assert s["ar"] + s["dr"] + s["pending"] == s["control_sum"], "registers inconsistent"
assert s["transferred"] == p["total_in"], "PSD and purse disagree on what moved"
PY
}
conserved before-interruptions

echo "== the host stops right after the PSD's TRANSFER DEBIT; the purse's card-sim is killed -9 and restarted"
if OPENPSD_TEST_ABORT_AFTER=64 "$OPENPSD" transfer --amount 3.00 --psd "$R0" --card "$R1" --pin "$PIN"; then
  echo "the hook did not stop the host"; exit 1
fi
"$OPENPSD" --json --card "$R0" status > "$W/psd-pending.json"
check "$W/psd-pending.json" 'j["register_sets"][0]["pending"] == 300' "3.00 pending in the PSD"
stop_pid purse card-sim KILL
pcsc_wait 10 pcsc_card_absent 1
card_restart purse "$W/purse" 1
"$OPENPSD" --json transfer --amount 1.00 --psd "$R0" --card "$R1" --pin "$PIN" > "$W/after-debit.json"
check "$W/after-debit.json" 'j["resolved_first"] == {"outcome": "undone", "amount": 300}' "pending undone first"
check "$W/after-debit.json" 'j["registers"]["pending"] == 0' "nothing pending after"
echo "pending 3.00 undone at the next contact, then 1.00 transferred"
conserved after-debit

echo "== the host stops right after the purse's TRANSFER CREDIT; openpsd resolve completes it"
if OPENPSD_TEST_ABORT_AFTER=76 "$OPENPSD" transfer --amount 2.00 --psd "$R0" --card "$R1" --pin "$PIN"; then
  echo "the hook did not stop the host"; exit 1
fi
stop_pid purse card-sim KILL
pcsc_wait 10 pcsc_card_absent 1
card_restart purse "$W/purse" 1
"$OPENPSD" --json resolve --psd "$R0" --card "$R1" > "$W/after-credit.json"
check "$W/after-credit.json" 'j["resolved"] == {"outcome": "completed", "amount": 200} and j["registers"]["pending"] == 0' \
  "pending completed"
echo "pending 2.00 completed at the next contact"
conserved after-credit

echo "== kill -9 of the purse's card-sim in the middle of a stream of transfers"
for delay in 0.4 0.9; do
  "$OPENPSD" transfer --amount 0.01 --repeat 500 --psd "$R0" --card "$R1" --pin "$PIN" \
    > "$W/stream.out" 2> "$W/stream.err" &
  host=$!
  sleep "$delay"
  stop_pid purse card-sim KILL
  wait "$host" && { echo "the stream finished before the kill; raise --repeat"; exit 1; }
  tail -n 1 "$W/stream.err"
  pcsc_wait 10 pcsc_card_absent 1
  card_restart purse "$W/purse" 1
  "$OPENPSD" --json --card "$R0" status > "$W/psd-killed.json"
  echo "after the kill: PSD pending $(json "$W/psd-killed.json" 'j["register_sets"][0]["pending"]')"
  "$OPENPSD" --json transfer --amount 0.01 --psd "$R0" --card "$R1" --pin "$PIN" > "$W/after-kill.json"
  echo "resolved first: $(json "$W/after-kill.json" 'j["resolved_first"]')"
  conserved "after-kill-$delay"
done

card_stop purse
card_stop psd
echo "== PC/SC transfer tests passed"
