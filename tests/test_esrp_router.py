"""The ESRP's routing step on the generated demo state: location (by value, by reference
through a real LIS over HELD, defaults), LoST to the in-process ECRF, then policy routing."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import pytest
import shapely
import uvicorn
from rich.console import Console

from firebox.deployment import load_deployment
from firebox.esrp.policy import DestinationKind, RuleSet, chains_from_deployment
from firebox.esrp.router import InProcessLost, Router
from firebox.esrp.states import StateTable
from firebox.held.codec import LocationRequest, LocationResponse
from firebox.lis.app import create_lis_app
from firebox.lis.service import Lis
from firebox.location.pidf import PidfLocation, Presence, serialize_pidf
from firebox.location.shapes import Point
from firebox.node import build_node, write_demo
from firebox.sip import build_multipart, make_part, parse_message

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
SDP = b"v=0\r\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    target = tmp_path_factory.mktemp("esrp-demo")
    path, state = write_demo(target, seed=911, n_towns=60, listen="127.0.0.1:7070", console=Console(quiet=True))
    node = build_node(load_deployment(path), console=Console(quiet=True))
    return state, node


def _router(node, lost=None, default: Point | None = None) -> Router:
    chains = chains_from_deployment(node.deployment, "pstn-gw.demo.firebox.test")
    default = default or Point(43.2, -71.6)
    return Router(
        fqdn="esrp.demo.firebox.test",
        lost=lost or InProcessLost(node.ecrf),
        chains=chains,
        rules=RuleSet(),
        states=StateTable(),
        default_location=Presence("sip:ingress@bcf.demo.firebox.test", [PidfLocation(shapes=[default], method="Manual")]),
        held_timeout=1.0,
    )


def _invite(geolocation: str | None, pidf: bytes | None = None):
    parts = [make_part("application/sdp", SDP)]
    if pidf is not None:
        parts.append(make_part("application/pidf+xml", pidf, content_id="loc@carrier"))
    ctype, body = build_multipart(parts)
    head = (
        "INVITE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-r\r\n"
        "From: <sip:+16035550100@carrier.example>;tag=1\r\nTo: <urn:service:sos>\r\n"
        "Call-ID: router@carrier\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        + (f"Geolocation: <{geolocation}>\r\n" if geolocation else "")
        + f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return parse_message(head.encode() + body)


def _town_point(state, i: int) -> tuple[Point, str]:
    town = state.towns[i]
    p = town.geometry.point_on_surface()  # town geometries are lon/lat
    return Point(p.y, p.x), state.psap(town.psap_id).uri


def _presence(point: Point) -> bytes:
    return serialize_pidf(Presence("tel:+16035550100", [PidfLocation(shapes=[point], method="GPS")]))


async def test_by_value_reaches_the_towns_psap_then_its_alternates_then_a_business_line(demo):
    state, node = demo
    router = _router(node)
    for i in (0, 17, 42):
        point, psap_uri = _town_point(state, i)
        result = await router.route(_invite("cid:loc@carrier", _presence(point)), NOW)
        assert result.location_how == "value" and result.ecrf_uri == psap_uri
        dests = result.decision.destinations
        assert dests[0].uri == psap_uri and dests[0].kind is DestinationKind.PSAP
        assert dests[-1].kind is DestinationKind.BUSINESS_LINE and dests[-1].uri.endswith("@pstn-gw.demo.firebox.test;user=phone")
        assert result.request.headers.get("Geolocation") == "<cid:loc@carrier>"  # nothing added


async def test_garbled_or_missing_location_routes_on_the_default_and_says_so(demo):
    state, node = demo
    default, default_psap = _town_point(state, 5)
    router = _router(node, default=default)
    for req in (_invite("cid:loc@carrier", b"<presence><broken"), _invite(None)):
        result = await router.route(req, NOW)
        assert result.location_how == "default" and result.ecrf_uri == default_psap
        assert result.decision.destinations[0].uri == default_psap
        geos = result.request.headers.get_lines("Geolocation")
        assert geos[0].startswith("<cid:default-")
        assert any("default location added" in line for line in result.log)


async def test_by_reference_through_a_real_lis_and_an_unfetchable_reference(demo):
    state, node = demo
    point, psap_uri = _town_point(state, 30)
    default, default_psap = _town_point(state, 2)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    lis = Lis(base_url=base, uri_lifetime=timedelta(minutes=30))
    lis.set_location("tel:+16035550100", point)
    minted = lis.handle(LocationRequest(["locationURI"], device_uri="tel:+16035550100"), datetime.now(UTC))
    assert isinstance(minted, LocationResponse)
    (uri,) = minted.location_uris
    server = uvicorn.Server(uvicorn.Config(create_lis_app(lis, base), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        router = _router(node, default=default)
        by_reference = await router.route(_invite(uri), NOW)
    finally:
        server.should_exit = True
        await task
        sock.close()
    assert by_reference.location_how == "reference" and by_reference.ecrf_uri == psap_uri
    # The LIS is gone now: the same reference cannot be fetched, and the call still routes.
    unfetchable = await _router(node, default=default).route(_invite(uri), NOW)
    assert unfetchable.location_how == "default" and unfetchable.ecrf_uri == default_psap
    assert any("dereference failed" in line for line in unfetchable.log)


class _BrokenLost:
    async def find_service(self, location, service="urn:service:sos"):
        raise ConnectionError("ECRF unreachable")


class _SlowLost:
    async def find_service(self, location, service="urn:service:sos"):
        await asyncio.sleep(5)


@pytest.mark.parametrize("lost", [_BrokenLost(), _SlowLost()])
async def test_an_ecrf_failure_still_routes_to_a_person(demo, lost):
    state, node = demo
    point, _ = _town_point(state, 9)
    result = await _router(node, lost=lost).route(_invite("cid:loc@carrier", _presence(point)), NOW)
    assert result.ecrf_uri is None
    dests = result.decision.destinations
    assert dests and dests[-1].kind is DestinationKind.BUSINESS_LINE
    assert any("default route" in line for line in result.log)


def test_demo_points_are_inside_their_towns(demo):
    state, _ = demo
    for i in (0, 17, 42):
        point, _ = _town_point(state, i)
        assert state.towns[i].geometry.contains(shapely.Point(point.lon, point.lat))
