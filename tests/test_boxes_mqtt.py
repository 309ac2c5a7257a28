"""The MQTT input of modern fire alarm boxes (firebox.boxes.mqtt): messages read, duplicates
of QoS 1 skipped, unknown and garbled boxes never dropped; and against the real Mosquitto on
127.0.0.1:1883 (a unique topic per test): a message published becomes a CAD incident at the
box's location, and after the connection is cut, the input reconnects and the alarm
published meanwhile (QoS 1, persistent session) still arrives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime

import aiomqtt

from firebox.boxes.mqtt import BoxMessage, MqttBoxInput, parse_box_message, sign_box_message
from firebox.boxes.receiver import BoxReceiver
from firebox.cad.data import AlarmBox
from firebox.cad.service import Cad
from firebox.cad.store import MemoryRepository
from firebox.location.shapes import Point

BROKER = ("127.0.0.1", 1883)
BOXES = {
    "1818": AlarmBox("1818", "HANOVER & SALEM STS", Point(lat=42.3635, lon=-71.0545), "3", assignment="A03"),
    "12-317": AlarmBox("12-317", "WARREN ST", Point(lat=42.33, lon=-71.08), "7"),
}
KEY = b"box-network-key"


def receiver() -> BoxReceiver:
    cad = Cad(MemoryRepository(), fqdn="cad.boston.example", boxes=BOXES)
    return BoxReceiver(cad, clock=lambda: datetime(2026, 6, 18, 14, 0, tzinfo=UTC))


def msg(**doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_parse_messages_and_topics():
    assert parse_box_message(msg(box=1818, time="t1", device="gw-1")) == BoxMessage("1818", "alarm", "t1", "gw-1")
    assert parse_box_message(msg(kind="Alarm"), "boxes/alarm/12-317") == BoxMessage("12-317", "alarm")
    m = parse_box_message(msg(box="999", lat=42.1, lon=-71.2))
    assert isinstance(m, BoxMessage) and m.point == Point(lat=42.1, lon=-71.2)
    assert parse_box_message(msg(box="999", lat=420, lon=-71.2)).point is None  # type: ignore[union-attr]
    assert "not JSON" in parse_box_message(b"\xff\x00garbage", "boxes/x")  # type: ignore[operator]
    assert "no box number" in parse_box_message(msg(box="main st"), "boxes")  # type: ignore[operator]


def test_alarms_duplicates_repeats_unknown_and_garbled():
    rx = receiver()
    box_input = MqttBoxInput(rx, hmac_key=KEY)
    sig = sign_box_message(KEY, "1818", "alarm", "t1", "gw-1")
    made = box_input.handle(msg(box="1818", time="t1", device="gw-1", signature=sig), "b/1818")
    assert made is not None and made.kind == "incident"
    incident = rx.cad.incident(made.incident_id)
    assert incident.location.point == BOXES["1818"].point and incident.source.box == "1818"
    assert [n.text for n in incident.narrative] == ["response assignment A03"]
    # The same message again (QoS 1 redelivery): skipped. A new pull of the same box: a repeat.
    assert box_input.handle(msg(box="1818", time="t1", device="gw-1", signature=sig)) is None and box_input.duplicates == 1
    again = box_input.handle(msg(box="1818", time="t2", device="gw-1", signature=sign_box_message(KEY, "1818", "alarm", "t2", "gw-1")))
    assert again.kind == "repeat" and again.incident_id == made.incident_id
    # A wrong signature still sends companies, marked.
    unsigned = box_input.handle(msg(box="12-317", time="t3", signature="00"))
    assert unsigned.kind == "incident"
    assert "UNVERIFIED: the message's signature is wrong" in [n.text for n in rx.cad.incident(unsigned.incident_id).narrative]
    # A box not in the registry: an incident at what it reported, not validated, and a flag.
    unknown = box_input.handle(msg(box="4444", time="t4", lat=42.35, lon=-71.06))
    inc = rx.cad.incident(unknown.incident_id)
    assert unknown.kind == "incident" and inc.location.point == Point(lat=42.35, lon=-71.06) and inc.location.validated is False
    assert any(o.kind == "flag" and "4444 is not in the box registry" in o.detail for o in rx.outcomes)
    # Garbled: a flag and a log entry; trouble: a flag; test: nothing.
    garbled = box_input.handle(b"{not json", "boxes/x")
    assert garbled.kind == "flag" and "unreadable box message" in garbled.detail
    trouble = box_input.handle(msg(box="1818", kind="trouble", time="t5"))
    assert trouble.kind == "flag" and "'trouble'" in trouble.detail
    assert box_input.handle(msg(box="1818", kind="test", time="t6")) is None
    assert len(rx.cad.incidents()) == 3


# --- against the real broker ------------------------------------------------------------------------


async def _publish(topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(*BROKER, identifier=f"firebox-test-pub-{uuid.uuid4().hex[:8]}") as pub:
        await pub.publish(topic, payload, qos=1)


async def _wait(predicate, what: str) -> None:
    for _ in range(500):  # bounded: 10 s
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _forget_session(client_id: str) -> None:
    """Drop the broker's persistent session of ``client_id`` (clean up after the test)."""
    with contextlib.suppress(aiomqtt.MqttError):
        async with aiomqtt.Client(*BROKER, identifier=client_id, clean_session=True):
            pass


async def test_a_message_on_the_broker_becomes_an_incident_at_the_box():
    topic = f"firebox-test/{uuid.uuid4().hex}/boxes"
    rx = receiver()
    box_input = MqttBoxInput(rx, url=f"mqtt://{BROKER[0]}:{BROKER[1]}", topic=topic + "/#")
    box_input.start()
    try:
        await asyncio.wait_for(box_input.connected.wait(), 10)
        await _publish(f"{topic}/1818", msg(kind="alarm", time="2026-06-18T14:00:00Z", device="gw-7"))
        await _wait(lambda: rx.cad.incidents(), "the incident")
        (incident,) = rx.cad.incidents()
        assert incident.location.point == BOXES["1818"].point and incident.source.box == "1818"
    finally:
        await box_input.aclose()
        await _forget_session(box_input.client_id)


class Relay:
    """A TCP relay to the broker that the test can cut (the broker "goes away") and restore."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*BROKER)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        await self.server.wait_closed()


async def test_the_input_reconnects_and_gets_what_was_published_meanwhile():
    topic = f"firebox-test/{uuid.uuid4().hex}/boxes"
    relay = Relay()
    await relay.start()
    rx = receiver()
    box_input = MqttBoxInput(rx, url=f"mqtt://127.0.0.1:{relay.port}", topic=topic + "/#", reconnect_s=(0.1, 0.2))
    box_input.start()
    try:
        await asyncio.wait_for(box_input.connected.wait(), 10)
        await relay.cut()
        await _wait(lambda: not box_input.connected.is_set(), "the input to see the broker gone")
        # Published while the input is away: the broker keeps it for the persistent session.
        await _publish(f"{topic}/12-317", msg(time="2026-06-18T14:05:00Z", device="gw-9"))
        await relay.start()
        await _wait(lambda: box_input.connections >= 2, "the reconnection")
        await _wait(lambda: rx.cad.incidents(), "the incident published while away")
        (incident,) = rx.cad.incidents()
        assert incident.source.box == "12-317" and incident.location.point == BOXES["12-317"].point
    finally:
        await box_input.aclose()
        await relay.cut()
        await _forget_session(box_input.client_id)
