#!/usr/bin/python3
"""pyscard_flow.py - an independent host for a personalized openpsd PSD, through PC/SC.

Talks to the card with pyscard (pcscd) and checks every answer against docs/apdu.md with
its own code only (pycryptodome for ECDSA, nothing from the Rust crates):

  SELECT, GET DATA (device ID, key ID and public key against the secrets file),
  READ REGISTERS, AUDIT (ECDSA signature by the device key, every field), REFILL 25.00
  built and signed here with the KMS's signing key, the same REFILL again (9A12), ISSUE
  INDICIUM 0.85 (ECDSA P-256 signature, every field), READ REGISTERS again.

Usage: /usr/bin/python3 tests/pcsc/pyscard_flow.py --reader "Virtual PCD 00 00" \
           --secrets STATE.secrets.json --kms-signing-key DIR/kms-signing.key

Exits 0 when every check passed, 1 with a message on the first mismatch, 2 when the card
or reader cannot be reached.
"""

import argparse
import datetime
import hashlib
import json
import os
import struct
import sys

from Cryptodome.Hash import SHA256
from Cryptodome.PublicKey import ECC
from Cryptodome.Signature import DSS
from smartcard.System import readers
from smartcard.Exceptions import CardConnectionException, NoCardException

AID = bytes.fromhex("F0505344000001")
CLA_PSD = 0x80
INS_READ_REGISTERS = 0x32
INS_ISSUE_INDICIUM = 0x40
INS_AUDIT = 0x50
INS_REFILL = 0x52
INS_GET_DATA = 0xCA

SW_OK = 0x9000
SW_REFILL_REPLAYED = 0x9A12


class Mismatch(Exception):
    """A check against the contract failed."""


def check(cond, message):
    if not cond:
        raise Mismatch(message)


def expect_eq(what, got, want):
    if got != want:
        show = lambda v: v.hex().upper() if isinstance(v, (bytes, bytearray)) else repr(v)
        raise Mismatch(f"{what}: card says {show(got)}, expected {show(want)}")


def step(message):
    print(f"  ok  {message}", flush=True)


# ---------------------------------------------------------------- field decoding


class Reader:
    """Reads the big-endian fields of docs/apdu.md 1.2 from a byte string, in order."""

    def __init__(self, data, what):
        self.data, self.pos, self.what = bytes(data), 0, what

    def take(self, n):
        check(self.pos + n <= len(self.data),
              f"{self.what}: ends at byte {len(self.data)}, wanted {n} more at offset {self.pos}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def amount(self):
        return struct.unpack(">Q", self.take(8))[0]

    def date(self):
        y, m, d = struct.unpack(">HBB", self.take(4))
        try:
            return datetime.date(y, m, d)
        except ValueError:
            raise Mismatch(f"{self.what}: {y:04}-{m:02}-{d:02} is not a date")

    def postal_code(self):
        n = self.u8()
        check(1 <= n <= 10, f"{self.what}: postal code length {n} not in 1..10")
        code = self.take(n)
        allowed = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -"
        check(all(c in allowed for c in code), f"{self.what}: postal code {code!r} has bad characters")
        return code.decode("ascii")

    def end(self):
        check(self.pos == len(self.data),
              f"{self.what}: {len(self.data) - self.pos} bytes left over after offset {self.pos}")


def enc_date(d):
    return struct.pack(">HBB", d.year, d.month, d.day)


def enc_postal(code):
    b = code.encode("ascii")
    return bytes([len(b)]) + b


def ecc_public(sec1):
    """A P-256 public key from its SEC1 uncompressed bytes."""
    check(len(sec1) == 65 and sec1[0] == 0x04, "not an uncompressed SEC1 P-256 point")
    return ECC.construct(curve="P-256", point_x=int.from_bytes(sec1[1:33], "big"),
                         point_y=int.from_bytes(sec1[33:], "big"))


def verify(public, message, signature, what):
    """ECDSA P-256 / SHA-256, signature r || s (64 bytes)."""
    try:
        DSS.new(public, "fips-186-3").verify(SHA256.new(message), signature)
    except ValueError:
        raise Mismatch(f"{what}: ECDSA P-256/SHA-256 signature does not verify")


def sign(private, message):
    """ECDSA P-256 / SHA-256 as r || s (64 bytes)."""
    return DSS.new(private, "fips-186-3").sign(SHA256.new(message))


def cents(v):
    return f"{v // 100}.{v % 100:02}"


def decode_registers(data, what="registers"):
    """READ REGISTERS / REFILL response, docs/apdu.md 4.3 (53 + origin length bytes)."""
    r = Reader(data, what)
    regs = {
        "license": r.u32(),
        "origin": r.postal_code(),
        "ar": r.amount(),
        "dr": r.amount(),
        "control_sum": r.amount(),
        "pieces": r.u32(),
        "refills": r.u32(),
        "transferred": r.amount(),
        "pending": r.amount(),
    }
    r.end()
    check(regs["ar"] + regs["dr"] + regs["pending"] == regs["control_sum"],
          f"{what}: AR {regs['ar']} + DR {regs['dr']} + pending {regs['pending']} "
          f"!= control sum {regs['control_sum']}")
    check(regs["transferred"] <= regs["ar"],
          f"{what}: transferred {regs['transferred']} > AR {regs['ar']}")
    return regs


def show_registers(regs):
    return (f"license {regs['license']} origin {regs['origin']} AR {cents(regs['ar'])} "
            f"DR {cents(regs['dr'])} control sum {cents(regs['control_sum'])} "
            f"pieces {regs['pieces']} refills {regs['refills']} "
            f"transferred {cents(regs['transferred'])} pending {cents(regs['pending'])}")


# ---------------------------------------------------------------- transport


class Card:
    def __init__(self, reader_name):
        names = [str(r) for r in readers()]
        match = [r for r in readers() if str(r) == reader_name]
        if not match:
            print(f"reader {reader_name!r} not found (readers: {names})", file=sys.stderr)
            sys.exit(2)
        self.conn = match[0].createConnection()
        try:
            self.conn.connect()
        except (NoCardException, CardConnectionException) as e:
            print(f"cannot connect to the card in {reader_name!r}: {e}", file=sys.stderr)
            sys.exit(2)
        self.atr = bytes(self.conn.getATR())

    def transmit(self, apdu):
        """Sends one command APDU; fetches the rest of a 61xx response with GET RESPONSE."""
        data, sw1, sw2 = self.conn.transmit(list(apdu))
        out = bytes(data)
        rounds = 0
        while sw1 == 0x61:
            rounds += 1
            check(rounds <= 64, "GET RESPONSE: more than 64 rounds of 61xx")
            data, sw1, sw2 = self.conn.transmit([0x00, 0xC0, 0x00, 0x00, sw2])
            out += bytes(data)
        return out, (sw1 << 8) | sw2

    def command(self, cla, ins, p1, p2, data=b"", le=True):
        apdu = bytes([cla, ins, p1, p2])
        if data:
            check(len(data) <= 255, "this host sends short APDUs only")
            apdu += bytes([len(data)]) + bytes(data)
        if le:
            apdu += b"\x00"
        return self.transmit(apdu)

    def ok(self, what, cla, ins, p1, p2, data=b""):
        resp, sw = self.command(cla, ins, p1, p2, data)
        if sw != SW_OK:
            raise Mismatch(f"{what}: status word {sw:04X}, expected 9000")
        return resp


# ---------------------------------------------------------------- the flow


def run(card, secrets, kms):
    device_id = bytes.fromhex(secrets["device_id"])
    public_key = bytes.fromhex(secrets["public_key"])
    key_id = bytes.fromhex(secrets["key_id"])
    license_id, origin = secrets["licenses"][0]
    check(len(device_id) == 8 and len(public_key) == 65 and len(key_id) == 4,
          "secrets file: field lengths are not 8 / 65 / 4 bytes")
    check("k1" not in secrets, "secrets file: holds a K1 (personalized for the retired suite)")
    expect_eq("secrets file: key ID vs SHA-256(public key)[:4]",
              key_id, hashlib.sha256(public_key).digest()[:4])
    print(f"card ATR {card.atr.hex().upper()}; device {device_id.hex().upper()}, "
          f"license {license_id} ({origin})", flush=True)

    # SELECT by AID: FCI 6F 09 84 07 <AID>.
    fci = card.ok("SELECT", 0x00, 0xA4, 0x04, 0x00, AID)
    expect_eq("SELECT FCI", fci, bytes([0x6F, 0x09, 0x84, 0x07]) + AID)
    step("SELECT: FCI names the PSD's AID")

    # GET DATA 00 01: device info (171 bytes).
    info = card.ok("GET DATA", CLA_PSD, INS_GET_DATA, 0x00, 0x01)
    r = Reader(info, "GET DATA")
    expect_eq("GET DATA life-cycle state", r.u8(), 0x01)
    expect_eq("GET DATA format version", r.u8(), 0x01)
    expect_eq("GET DATA device ID", r.take(8), device_id)
    card_key_id = r.take(4)
    card_public_key = r.take(65)
    expect_eq("GET DATA public key", card_public_key, public_key)
    expect_eq("GET DATA key ID vs SHA-256(public key)[:4]",
              card_key_id, hashlib.sha256(card_public_key).digest()[:4])
    expect_eq("GET DATA key ID vs secrets", card_key_id, key_id)
    vendor_key = r.take(65)
    check(vendor_key[0] == 0x04, "GET DATA: vendor key is not an uncompressed SEC1 point")
    max_postage, max_dr, sets = r.amount(), r.amount(), r.u8()
    last_date = r.take(4)
    inspection_days = r.u16()
    last_inspection = r.take(4)
    r.end()
    check(1 <= sets <= 4, f"GET DATA: {sets} register sets")
    expect_eq("GET DATA number of register sets vs secrets", sets, len(secrets["licenses"]))
    step(f"GET DATA: device {device_id.hex().upper()}, key ID {card_key_id.hex().upper()}, "
         f"public key matches; max postage {cents(max_postage)}, max DR {cents(max_dr)}, "
         f"{sets} set(s), last date {last_date.hex().upper()}, inspection every "
         f"{inspection_days} days (last {last_inspection.hex().upper()})")

    # READ REGISTERS set 0.
    regs0 = decode_registers(card.ok("READ REGISTERS", CLA_PSD, INS_READ_REGISTERS, 0x00, 0x00))
    expect_eq("READ REGISTERS license", regs0["license"], license_id)
    expect_eq("READ REGISTERS origin", regs0["origin"], origin)
    step(f"READ REGISTERS set 0: {show_registers(regs0)}")

    # AUDIT with a random nonce.
    nonce = os.urandom(16)
    # The audit message, docs/apdu.md: body version 03 (87 bytes) || ECDSA signature (64)
    # by the device key over "openpsd audit v3" || body.
    audit = card.ok("AUDIT", CLA_PSD, INS_AUDIT, 0x00, 0x00, nonce)
    expect_eq("AUDIT length", len(audit), 151)
    verify(ecc_public(public_key), b"openpsd audit v3" + audit[:87], audit[87:],
           "AUDIT (device key over the label and bytes 0-86)")
    r = Reader(audit, "AUDIT")
    expect_eq("AUDIT tag", r.u8(), 0xA1)
    expect_eq("AUDIT version", r.u8(), 0x03)
    expect_eq("AUDIT device ID", r.take(8), device_id)
    expect_eq("AUDIT license ID", r.u32(), license_id)
    expect_eq("AUDIT register set index", r.u8(), 0)
    a_ar, a_dr, a_cs = r.amount(), r.amount(), r.amount()
    a_pieces, a_refills = r.u32(), r.u32()
    a_transferred, a_pending = r.amount(), r.amount()
    r.take(8)  # the last refill combination applied (zeros before the first)
    expect_eq("AUDIT nonce echoed", r.take(16), nonce)
    r.take(64)
    r.end()
    check(a_ar + a_dr + a_pending == a_cs,
          f"AUDIT: AR {a_ar} + DR {a_dr} + pending {a_pending} != control sum {a_cs}")
    expect_eq("AUDIT registers vs READ REGISTERS",
              (a_ar, a_dr, a_cs, a_pieces, a_refills, a_transferred, a_pending),
              (regs0["ar"], regs0["dr"], regs0["control_sum"], regs0["pieces"], regs0["refills"],
               regs0["transferred"], regs0["pending"]))
    step(f"AUDIT: signature verifies under the device key, nonce echoed, AR {cents(a_ar)} + DR {cents(a_dr)} "
         f"+ pending {cents(a_pending)} = control sum {cents(a_cs)}, {a_pieces} pieces, "
         f"{a_refills} refills, {cents(a_transferred)} transferred")

    # REFILL 25.00 bound to the audited control sum and refill count.
    amount = 2500
    combination = os.urandom(8)
    body = (bytes([0xB1, 0x02]) + device_id + struct.pack(">I", license_id)
            + struct.pack(">Q", amount) + struct.pack(">Q", a_cs) + struct.pack(">I", a_refills)
            + combination)
    expect_eq("refill message body length", len(body), 42)
    message = body + sign(kms, b"openpsd refill v2" + body)
    expect_eq("refill message length", len(message), 106)
    after = decode_registers(card.ok("REFILL", CLA_PSD, INS_REFILL, 0x00, 0x00, message),
                             "REFILL response")
    expect_eq("REFILL license", after["license"], license_id)
    expect_eq("REFILL origin", after["origin"], origin)
    expect_eq("REFILL AR", after["ar"], a_ar)
    expect_eq("REFILL DR", after["dr"], a_dr + amount)
    expect_eq("REFILL control sum", after["control_sum"], a_cs + amount)
    expect_eq("REFILL piece count", after["pieces"], a_pieces)
    expect_eq("REFILL refill count", after["refills"], a_refills + 1)
    expect_eq("REFILL transferred", after["transferred"], a_transferred)
    expect_eq("REFILL pending", after["pending"], a_pending)
    step(f"REFILL {cents(amount)}: {show_registers(after)}")

    # The same message again: already applied.
    resp, sw = card.command(CLA_PSD, INS_REFILL, 0x00, 0x00, message)
    expect_eq("REFILL replayed: status word", f"{sw:04X}", f"{SW_REFILL_REPLAYED:04X}")
    expect_eq("REFILL replayed: response data", resp, b"")
    step("REFILL replayed: 9A12, not credited twice")

    # ISSUE INDICIUM 0.85, today (UTC), origin -> 20095, rate 1.
    postage, rate, destination = 85, 1, "20095"
    today = datetime.datetime.now(datetime.timezone.utc).date()
    txid = os.urandom(8)
    request = (txid + struct.pack(">Q", postage) + enc_date(today) + struct.pack(">H", rate)
               + enc_postal(origin) + enc_postal(destination))
    indicium = card.ok("ISSUE INDICIUM", CLA_PSD, INS_ISSUE_INDICIUM, 0x00, 0x00, request)
    expect_eq("indicium length", len(indicium), 118 + len(origin) + len(destination))
    signed, signature = indicium[:-64], indicium[-64:]
    verify(ecc_public(public_key), signed, signature, "indicium (device key)")
    r = Reader(signed, "indicium")
    expect_eq("indicium version", r.u8(), 0x01)
    expect_eq("indicium algorithm", r.u8(), 0x01)
    expect_eq("indicium key ID", r.take(4), key_id)
    expect_eq("indicium device ID", r.take(8), device_id)
    expect_eq("indicium license ID", r.u32(), license_id)
    expect_eq("indicium AR", r.amount(), after["ar"] + postage)
    expect_eq("indicium DR", r.amount(), after["dr"] - postage)
    expect_eq("indicium piece count", r.u32(), after["pieces"] + 1)
    expect_eq("indicium postage", r.amount(), postage)
    expect_eq("indicium date", r.date(), today)
    expect_eq("indicium rate category", r.u16(), rate)
    expect_eq("indicium origin", r.postal_code(), origin)
    expect_eq("indicium destination", r.postal_code(), destination)
    r.end()
    step(f"ISSUE INDICIUM {cents(postage)} on {today} {origin} -> {destination}: signature "
         f"verifies, AR {cents(after['ar'] + postage)} DR {cents(after['dr'] - postage)} "
         f"piece {after['pieces'] + 1}")

    # READ REGISTERS again.
    final = decode_registers(card.ok("READ REGISTERS", CLA_PSD, INS_READ_REGISTERS, 0x00, 0x00))
    expect_eq("final AR", final["ar"], after["ar"] + postage)
    expect_eq("final DR", final["dr"], after["dr"] - postage)
    expect_eq("final control sum", final["control_sum"], after["control_sum"])
    expect_eq("final piece count", final["pieces"], after["pieces"] + 1)
    expect_eq("final refill count", final["refills"], after["refills"])
    expect_eq("final transferred", final["transferred"], after["transferred"])
    expect_eq("final pending", final["pending"], after["pending"])
    step(f"READ REGISTERS set 0: {show_registers(final)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reader", required=True, help='PC/SC reader name, e.g. "Virtual PCD 00 00"')
    ap.add_argument("--secrets", required=True, help="the card's secrets file (card-sim personalize)")
    ap.add_argument("--kms-signing-key", required=True,
                    help="the KMS's signing key the card was personalized for (card-sim bench-kms)")
    args = ap.parse_args()
    with open(args.secrets) as f:
        secrets = json.load(f)
    with open(args.kms_signing_key) as f:
        kms = ECC.construct(curve="P-256", d=int(f.read().strip(), 16))
    card = Card(args.reader)
    try:
        run(card, secrets, kms)
    except Mismatch as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except CardConnectionException as e:
        print(f"FAIL: PC/SC error: {e}", file=sys.stderr)
        return 1
    finally:
        try:
            card.conn.disconnect()
        except Exception:
            pass
    print("pyscard flow passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
