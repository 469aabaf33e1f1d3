#!/usr/bin/env python3
"""check-card-log.py - check the status words in a card-sim log.

Reads a log of `card-sim serve` run with RUST_LOG=card_sim=debug, where the transport logs
one debug line per exchange:

  2026-11-21T03:36:41.225430Z DEBUG card_sim::transport: exchange apdu=00A4...01 response=6F09...9000

(ANSI colour codes, which card-sim writes only when stderr is a terminal, are stripped;
`card-sim run`'s spaced hex `apdu=00 A4 ... response=90 00` is read too.)

Every response must be at least 2 bytes and end in a status word the card may send: 9000,
61xx, or a word of the status table of docs/apdu.md 6 (which tests/tests/apdu_doc.rs keeps
equal to the card's own table, openpsd_core::status::Status::ALL). A refusal (neither 9000 nor 61xx) must carry no
response data (docs/apdu.md 7, "refused means unchanged").

Prints a histogram of the status words. Exits 0 if all is well, 1 if a response breaks a
rule, if a line mentions apdu= but cannot be read, or if the log holds no exchange; 2 if
the log cannot be read.

Usage: check-card-log.py CARD.log
"""

import collections
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
EXCHANGE = re.compile(
    r"\bapdu=(?P<apdu>[0-9A-Fa-f]+(?: [0-9A-Fa-f]{2})*)? response=(?P<resp>[0-9A-Fa-f]+(?: [0-9A-Fa-f]{2})*)?\s*$"
)


def hex_bytes(text):
    text = (text or "").replace(" ", "")
    if len(text) % 2:
        raise ValueError("odd number of hex digits")
    return bytes.fromhex(text)


def documented_status_words():
    """The status words of docs/apdu.md's table: rows like | `6A82` | `NotFound` | ..."""
    import os
    doc = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "apdu.md")
    with open(doc, encoding="utf-8") as f:
        rows = re.findall(r"^\| `([0-9A-F]{3}[0-9A-Fx])` \| `[A-Za-z0-9]+` \|", f.read(), re.M)
    words = set()
    for r in rows:
        # `63Cx`: the whole family (x = tries left).
        if r.endswith("x"):
            words.update(int(r[:3] + d, 16) for d in "0123456789ABCDEF")
        else:
            words.add(int(r, 16))
    return words


KNOWN = documented_status_words()


def classify(sw1, sw2):
    """Returns None if (sw1, sw2) is an acceptable status word, else why not."""
    if (sw1, sw2) == (0x90, 0x00) or sw1 == 0x61:
        return None
    if (sw1 << 8 | sw2) in KNOWN:
        return None
    return "not 9000, 61xx or a status word of docs/apdu.md's table"


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    path = argv[1]
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 2

    if len(KNOWN) < 20:
        print(f"docs/apdu.md's status table has only {len(KNOWN)} words: cannot check", file=sys.stderr)
        return 2
    histogram = collections.Counter()
    problems = []
    exchanges = 0
    for n, raw in enumerate(lines, 1):
        line = ANSI.sub("", raw).rstrip("\n")
        if "apdu=" not in line:
            continue
        m = EXCHANGE.search(line)
        if not m:
            problems.append(f"line {n}: cannot read the exchange: {line.strip()}")
            continue
        try:
            apdu, resp = hex_bytes(m.group("apdu")), hex_bytes(m.group("resp"))
        except ValueError as e:
            problems.append(f"line {n}: {e}: {line.strip()}")
            continue
        exchanges += 1
        if len(resp) < 2:
            histogram["(short)"] += 1
            problems.append(f"line {n}: response {resp.hex().upper() or '(empty)'} to "
                            f"{apdu.hex().upper()} is shorter than a status word")
            continue
        sw1, sw2 = resp[-2], resp[-1]
        sw = f"{sw1:02X}{sw2:02X}"
        key = "61xx" if sw1 == 0x61 else sw
        histogram[key] += 1
        why = classify(sw1, sw2)
        if why:
            problems.append(f"line {n}: status word {sw} to {apdu.hex().upper()}: {why}")
        elif sw != "9000" and sw1 != 0x61 and len(resp) > 2:
            problems.append(f"line {n}: refusal {sw} to {apdu.hex().upper()} carries "
                            f"{len(resp) - 2} bytes of data")

    print(f"{path}: {exchanges} exchanges")
    for sw, count in sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {sw}  {count}")
    if exchanges == 0:
        print(f"{path}: no exchanges found (was the card run with RUST_LOG=card_sim=debug?)",
              file=sys.stderr)
        return 1
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{path}: {len(problems)} bad exchange(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
