"""The box receiver: telegraph pulses (over real UDP) and modern boxes (HTTP) become CAD
incidents at the box's location with its response assignment; what cannot be read is
flagged and, where the number is known, still sends someone to look. No SIP anywhere."""

from __future__ import annotations

import asyncio
import random
import socket
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from starlette.applications import Starlette

from firebox.boxes.receiver import BoxReceiver, PulseListener, receiver_routes
from firebox.boxes.telegraph import Timing, pulse_train
from firebox.cad.data import AlarmBox, load_boxes_geojson
from firebox.cad.model import IncidentSubtype, IncidentType
from firebox.cad.service import Cad
from firebox.cad.store import MemoryRepository
from firebox.location.shapes import Point


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 18, 14, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


BOXES = {
    "1818": AlarmBox("1818", "HANOVER & SALEM STS", Point(lat=42.3635, lon=-71.0545), "3", assignment="A03"),
    "12-317": AlarmBox("12-317", "WARREN ST", Point(lat=42.33, lon=-71.08), "7"),
}
T = Timing()


def receiver(clock: Clock | None = None) -> BoxReceiver:
    cad = Cad(MemoryRepository(), fqdn="cad.boston.example", boxes=BOXES)
    return BoxReceiver(cad, clock=clock or Clock())


def feed(rx: BoxReceiver, circuit: str, times: list[float]) -> list:
    out = []
    for t in times:
        while (d := rx.next_deadline()) is not None and d <= t:
            out += rx.tick(d)
        out += rx.pulse(circuit, t)
    while (d := rx.next_deadline()) is not None:
        out += rx.tick(d)
    return out


def test_a_pulled_box_becomes_one_incident_at_its_location_with_its_assignment():
    rx = receiver()
    outcomes = feed(rx, "circuit-3", pulse_train("1818", rounds=4, jitter=0.2, rng=random.Random(1)))
    (made,) = [o for o in outcomes if o.kind == "incident"]
    assert not [o for o in outcomes if o.kind == "flag"]
    inc = rx.cad.incident(made.incident_id)
    assert (inc.type, inc.subtype, inc.source.box) == (IncidentType.FIRE, IncidentSubtype.ALARM_BOX, "1818")
    assert inc.location.point == BOXES["1818"].point
    assert inc.location.description == "box 1818: HANOVER & SALEM STS"
    assert any("response assignment A03" in n.text for n in inc.narrative)
    assert made.circuit == "circuit-3"


def test_the_same_box_again_within_the_window_adds_to_its_open_incident():
    clock = Clock()
    rx = receiver(clock)
    first = feed(rx, "c", pulse_train("1818", rounds=2))
    clock.now += timedelta(minutes=3)
    again = feed(rx, "c", pulse_train("1818", rounds=2, start=1000.0))
    assert [o.kind for o in first] == ["incident"] and [o.kind for o in again] == ["repeat"]
    assert again[0].incident_id == first[0].incident_id
    assert len(rx.cad.incidents()) == 1
    assert any("sounded again" in n.text for n in rx.cad.incident(first[0].incident_id).narrative)


def test_a_number_sent_without_its_separator_finds_the_registry_entry():
    rx = receiver()
    (made,) = feed(rx, "c", pulse_train("12-317", rounds=2))
    assert made.kind == "incident" and made.number == "12-317"


def test_an_unknown_box_is_flagged_not_dropped():
    rx = receiver()
    outcomes = feed(rx, "c", pulse_train("4444", rounds=2))
    assert [o.kind for o in outcomes] == ["flag"]
    assert "4444 is not in the box registry" in outcomes[0].detail
    assert rx.cad.incidents() == []
    assert list(rx.outcomes) == outcomes


def test_rounds_that_never_match_still_send_a_company_to_look():
    rx = receiver()
    a = pulse_train("1818", rounds=1)
    b = pulse_train("1816", rounds=1, start=a[-1] + T.round_gap * T.period)
    outcomes = feed(rx, "c", a + b)
    kinds = [o.kind for o in outcomes]
    assert kinds.count("flag") == 2  # the disagreement, then the transmission's summary
    (made,) = [o for o in outcomes if o.kind == "incident"]
    assert made.number == "1818" and "UNCONFIRMED" in made.detail
    assert any("UNCONFIRMED" in n.text for n in rx.cad.incident(made.incident_id).narrative)


async def test_pulses_over_udp_become_an_incident_and_http_boxes_too():
    # A fast circuit (10 ms period) keeps the test short; the decoding is the same.
    fast = Timing(period=0.01)
    rx = BoxReceiver(Cad(MemoryRepository(), fqdn="cad.example", boxes=BOXES), clock=Clock(), timing=fast)
    listener = await PulseListener.listen(rx, "127.0.0.1", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for t in pulse_train("1818", rounds=2, timing=fast):
            sock.sendto(f"circuit-9 {t:.6f}".encode(), ("127.0.0.1", listener.port))
        sock.sendto(b"", ("127.0.0.1", listener.port))  # unreadable: counted, not fatal
        for _ in range(200):  # bounded: the receiver's timer closes the round
            if any(o.kind == "incident" for o in rx.outcomes):
                break
            await asyncio.sleep(0.02)
        assert [o.kind for o in rx.outcomes] == ["incident"]
        assert listener.malformed == 1
    finally:
        sock.close()
        listener.close()

    app = Starlette(routes=receiver_routes(rx))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://boxes") as http:
        made = await http.post("/boxes/12-317/alarm")
        assert made.status_code == 201 and made.json()["number"] == "12-317"
        unknown = await http.post("/boxes/999/alarm")
        assert unknown.status_code == 422 and unknown.json()["kind"] == "flag"
        recent = (await http.get("/boxes/alarms")).json()
        assert [o["kind"] for o in recent] == ["flag", "incident", "incident"]


@pytest.mark.realdata
def test_every_boston_box_pulled_makes_an_incident_at_its_point(shared_data):
    boxes = load_boxes_geojson(shared_data / "boston" / "fire_alarm_boxes.geojson", town="Boston")
    assert len(boxes) == 1850
    rx = BoxReceiver(Cad(MemoryRepository(), fqdn="cad.boston.example", boxes=boxes), clock=Clock())
    rng = random.Random(7)
    t = 0.0
    for number in list(boxes)[::37]:  # a sample of 50 boxes across the registry
        train = pulse_train(number, rounds=3, jitter=0.25, rng=rng, start=t)
        (made,) = feed(rx, "boston", train)
        assert made.kind == "incident" and made.number == number
        inc = rx.cad.incident(made.incident_id)
        assert inc.location.point == boxes[number].point
        t = train[-1] + 100.0
    assert len(rx.cad.incidents()) == 50
