#!/usr/bin/python3
"""bench_roundtrip.py - median APDU round trip through pcscd + vpcd, card-sim against vicc.

Opens one PC/SC connection per reader (kept open for the whole run), checks each card's
answer to its APDU, warms up, then times N round trips per card with SCardTransmit,
interleaving the two cards in rounds (and alternating which goes first) so that both see
the same machine noise. Prints median and p90 per card and the ratio card-sim / vicc.

The default APDUs:
  card-sim  00 A4 04 0C 07 F0 50 53 44 00 00 01   SELECT the PSD by AID, no FCI -> 9000
  vicc      00 A4 00 0C 02 3F 00                  SELECT MF (iso7816 card)      -> 9000

Usage: /usr/bin/python3 tests/pcsc/bench_roundtrip.py [--n 2000] [--warmup 200]
           [--card-sim-reader "Virtual PCD 00 00"] [--vicc-reader "Virtual PCD 00 01"]
           [--card-sim-apdu HEX] [--card-sim-sw 9000] [--vicc-apdu HEX] [--vicc-sw 9000]
           [--check]

With --check, exits 1 unless the target holds: card-sim median <= vicc median and
card-sim median < 0.3 ms (--target-ms).
"""

import argparse
import statistics
import sys
import time

from smartcard.scard import (
    SCARD_PROTOCOL_T0,
    SCARD_PROTOCOL_T1,
    SCARD_S_SUCCESS,
    SCARD_SCOPE_USER,
    SCARD_SHARE_SHARED,
    SCARD_UNPOWER_CARD,
    SCardConnect,
    SCardDisconnect,
    SCardEstablishContext,
    SCardGetErrorMessage,
    SCardListReaders,
    SCardReleaseContext,
    SCardTransmit,
)


class BenchError(Exception):
    pass


class Conn:
    def __init__(self, ctx, label, reader, apdu, sw):
        self.label, self.reader, self.apdu, self.sw = label, reader, list(apdu), sw
        rv, self.handle, self.protocol = SCardConnect(
            ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)
        if rv != SCARD_S_SUCCESS:
            raise BenchError(f"{label}: cannot connect to {reader!r}: {SCardGetErrorMessage(rv)}")
        self.times = []

    def once(self):
        t0 = time.perf_counter_ns()
        rv, resp = SCardTransmit(self.handle, self.protocol, self.apdu)
        t1 = time.perf_counter_ns()
        if rv != SCARD_S_SUCCESS:
            raise BenchError(f"{self.label}: SCardTransmit: {SCardGetErrorMessage(rv)}")
        if len(resp) < 2 or (resp[-2] << 8 | resp[-1]) != self.sw:
            raise BenchError(f"{self.label}: {bytes(self.apdu).hex().upper()} answered "
                             f"{bytes(resp).hex().upper()}, expected SW {self.sw:04X}")
        return t1 - t0

    def close(self):
        SCardDisconnect(self.handle, SCARD_UNPOWER_CARD)


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def summary(times_ns):
    s = sorted(times_ns)
    ms = lambda ns: ns / 1e6
    return {
        "median": ms(statistics.median(s)),
        "p90": ms(percentile(s, 90)),
        "min": ms(s[0]),
        "max": ms(s[-1]),
        "mean": ms(statistics.fmean(s)),
    }


def hex_arg(text):
    return bytes.fromhex(text.replace(" ", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="timed round trips per card")
    ap.add_argument("--warmup", type=int, default=200, help="untimed round trips per card first")
    ap.add_argument("--card-sim-reader", default="Virtual PCD 00 00")
    ap.add_argument("--vicc-reader", default="Virtual PCD 00 01")
    ap.add_argument("--card-sim-apdu", type=hex_arg, default=hex_arg("00A4040C07F0505344000001"))
    ap.add_argument("--card-sim-sw", type=lambda s: int(s, 16), default=0x9000)
    ap.add_argument("--vicc-apdu", type=hex_arg, default=hex_arg("00A4000C023F00"))
    ap.add_argument("--vicc-sw", type=lambda s: int(s, 16), default=0x9000)
    ap.add_argument("--target-ms", type=float, default=0.3)
    ap.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    ap.add_argument("--vicc-label", default="vicc", help="name of the second card in the output")
    args = ap.parse_args()

    rv, ctx = SCardEstablishContext(SCARD_SCOPE_USER)
    if rv != SCARD_S_SUCCESS:
        print(f"SCardEstablishContext: {SCardGetErrorMessage(rv)}", file=sys.stderr)
        return 2
    conns = []
    try:
        rv, names = SCardListReaders(ctx, [])
        for r in (args.card_sim_reader, args.vicc_reader):
            if r not in (names or []):
                raise BenchError(f"reader {r!r} not found (readers: {names})")
        conns = [
            Conn(ctx, "card-sim", args.card_sim_reader, args.card_sim_apdu, args.card_sim_sw),
            Conn(ctx, args.vicc_label, args.vicc_reader, args.vicc_apdu, args.vicc_sw),
        ]
        for c in conns:
            print(f"{c.label}: {c.reader!r}, protocol T={0 if c.protocol == SCARD_PROTOCOL_T0 else 1}, "
                  f"APDU {bytes(c.apdu).hex().upper()} -> SW {c.sw:04X}", flush=True)
        for i in range(args.warmup):
            for c in conns:
                c.once()
        for i in range(args.n):
            order = conns if i % 2 == 0 else conns[::-1]
            for c in order:
                c.times.append(c.once())
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        for c in conns:
            c.close()
        SCardReleaseContext(ctx)

    sim, vicc = summary(conns[0].times), summary(conns[1].times)
    for label, s in (("card-sim", sim), (args.vicc_label, vicc)):
        print(f"{label:8}  n={args.n}  median {s['median']:.3f} ms  p90 {s['p90']:.3f} ms  "
              f"min {s['min']:.3f}  mean {s['mean']:.3f}  max {s['max']:.3f} ms")
    ratio = sim["median"] / vicc["median"]
    met = sim["median"] <= vicc["median"] and sim["median"] < args.target_ms
    print(f"card-sim median {sim['median']:.3f} ms (p90 {sim['p90']:.3f}), "
          f"{args.vicc_label} median {vicc['median']:.3f} ms (p90 {vicc['p90']:.3f}), ratio {ratio:.3g} "
          f"(target: card-sim <= {args.vicc_label} and < {args.target_ms:g} ms: {'met' if met else 'NOT met'})")
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
