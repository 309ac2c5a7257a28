"""SIP core micro-benchmark: CPU cost per NG911 INVITE of each sans-I/O step on the call path.

    .venv/bin/python bench/sip.py [--n N]

Measures, on one core, microseconds per INVITE (a carrier's 911 INVITE with a multipart
SDP + PIDF-LO body, as SIPp sends it):

- ``parse_message`` and ``serialize`` (the SIP message layer);
- ``Bcf.process`` (recognition, marking, rate tracking, rules);
- ``Router.route`` (PIDF-LO by value, LoST to the in-process ECRF on the generated demo
  state, policy routing) — the ESRP's work before forwarding;
- the baseline, measured in the same run: the standard library's ``email`` parser
  (``email.message_from_bytes`` with the compat32 policy) reading the same bytes, a generic
  RFC 5322 header parser doing less than a SIP parse.

Prints each figure and its ratio to the baseline. No network.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import time
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]


def invite(lat: float, lon: float, i: int) -> bytes:
    from firebox.location.pidf import PidfLocation, Presence, serialize_pidf
    from firebox.location.shapes import Circle, Point
    from firebox.sip import build_multipart, make_part

    sdp = (
        b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
        b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    pidf = serialize_pidf(
        Presence("tel:+16035550100", [PidfLocation(shapes=[Circle(Point(lat, lon), 25.0)], method="GPS")])
    )
    ctype, body = build_multipart(
        [make_part("application/sdp", sdp), make_part("application/pidf+xml", pidf, content_id="loc@carrier")]
    )
    head = (
        "INVITE sip:911@127.0.0.1:5060;user=phone SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{i}-1-0\r\n"
        "From: sipp <sip:+16035550100@127.0.0.1:5061>;tag=1SIPpTag00" + str(i) + "\r\n"
        "To: <sip:911@127.0.0.1:5060;user=phone>\r\n"
        f"Call-ID: {i}-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        "Contact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\n"
        "Geolocation: <cid:loc@carrier>\r\nGeolocation-Routing: yes\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def per_call_us(fn, items, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - t) / len(items))
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="INVITEs per measurement")
    args = ap.parse_args()

    from rich.console import Console

    from firebox.bcf import Bcf, RateLimit
    from firebox.deployment import load_deployment
    from firebox.esrp.policy import RuleSet, chains_from_deployment
    from firebox.esrp.router import InProcessLost, Router
    from firebox.esrp.states import StateTable
    from firebox.location.pidf import PidfLocation, Presence
    from firebox.location.shapes import Point
    from firebox.node import build_node, write_demo
    from firebox.sip import parse_message, serialize

    with TemporaryDirectory() as tmp:
        path, state = write_demo(Path(tmp), seed=911, n_towns=60, listen="127.0.0.1:7070", console=Console(quiet=True))
        node = build_node(load_deployment(path), console=Console(quiet=True))
    from firebox.demo.state import sample_callers

    callers = sample_callers(state, args.n, seed=3)
    raw = [invite(lat, lon, i) for i, (lon, lat, _) in enumerate(callers)]
    parsed = [parse_message(r) for r in raw]
    bcf = Bcf("bcf.demo.firebox.test", sources={"127.0.0.0/8": "sipp"}, rate=RateLimit(1e9, 1e9))
    marked = [bcf.process(p, "127.0.0.1", 0.0).request for p in parsed]
    router = Router(
        fqdn="esrp.demo.firebox.test",
        lost=InProcessLost(node.ecrf),
        chains=chains_from_deployment(node.deployment, "pstn-gw.demo.firebox.test"),
        rules=RuleSet(),
        states=StateTable(),
        default_location=Presence("sip:bcf", [PidfLocation(shapes=[Point(43.2, -71.6)])]),
    )
    now = datetime.now(UTC)

    async def route_all(items) -> None:
        for m in items:
            await router.route(m, now)

    def route_us() -> float:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            asyncio.run(route_all(marked))
            best = min(best, (time.perf_counter() - t) / len(marked))
        return best * 1e6

    baseline = per_call_us(email.message_from_bytes, raw)
    figures = {
        "parse_message": per_call_us(parse_message, raw),
        "serialize": per_call_us(serialize, parsed),
        "Bcf.process": per_call_us(lambda p: bcf.process(p, "127.0.0.1", 0.0), parsed),
        "Router.route (location + LoST in-process + policy)": route_us(),
    }
    size = sum(map(len, raw)) / len(raw)
    print(f"{args.n} NG911 INVITEs, {size:.0f} bytes each (multipart SDP + PIDF-LO)")
    print(f"{'step':<52} {'µs/INVITE':>10} {'x email parser':>15}")
    print(f"{'baseline: email.message_from_bytes':<52} {baseline:>10.1f} {1.0:>14.2f}x")
    for name, us in figures.items():
        print(f"{name:<52} {us:>10.1f} {us / baseline:>14.2f}x")
    total = sum(figures.values())
    print(f"{'sum (one core: about ' + format(1e6 / total, ',.0f') + ' calls/s before I/O)':<52} {total:>10.1f} {total / baseline:>14.2f}x")


if __name__ == "__main__":
    main()
