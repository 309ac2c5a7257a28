"""MQTT input of modern (addressable) fire alarm boxes: messages from a broker become the
same alarms as ``POST /boxes/{number}/alarm`` (``firebox.boxes.receiver``).

A box, or the gateway of a box network, publishes one JSON object per event (MQTT 3.1.1,
QoS 1: at least once)::

    {"box": "1818", "kind": "alarm", "time": "2026-06-18T14:00:00Z",
     "device": "gw-3/box-1818", "signature": "<hex HMAC-SHA256>", "lat": 42.36, "lon": -71.05}

Only ``box`` matters for an alarm; it may also be the last level of the topic
(``boxes/alarm/1818``). ``kind`` is ``alarm`` (the default), ``test`` (logged, no incident),
or anything else (``trouble``, ``tamper``: flagged for a dispatcher). ``lat``/``lon`` place a
box that is not in the registry. With a configured key, ``signature`` is the HMAC-SHA256 of
``box|kind|time|device`` (RFC 2104); a missing or wrong one never drops an alarm, it marks
it UNVERIFIED in the incident's narrative.

Nothing is dropped silently: a message that cannot be read is a flag in the receiver's
outcomes and a log entry; a box not in the registry is still an incident, at the location
the box reported, marked not validated. QoS 1 may deliver a message twice: a repeat of one
already handled (same box, kind, time and device) is skipped; a box that sounds again is a
narrative entry on its open incident (the receiver's de-duplication).

``MqttBoxInput`` keeps a persistent session (``clean_session=False``, a stable client id), so
the broker holds QoS 1 messages published while the input was away, and reconnects with
backoff whenever the connection is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from firebox.boxes.receiver import BoxOutcome, BoxReceiver
from firebox.location.shapes import Point, ShapeError

__all__ = ["BoxMessage", "MqttBoxInput", "parse_box_message", "sign_box_message"]

log = logging.getLogger(__name__)

_BOX = re.compile(r"^[0-9][0-9-]{0,15}$")
_SEEN = 4096  # messages remembered for QoS 1 duplicates


@dataclass(frozen=True, slots=True)
class BoxMessage:
    box: str
    kind: str = "alarm"
    time: str | None = None
    device: str | None = None
    signature: str | None = None
    point: Point | None = None

    @property
    def key(self) -> tuple[str, str, str | None, str | None]:
        return (self.box, self.kind, self.time, self.device)


def _signed_text(box: str, kind: str, time: str | None, device: str | None) -> bytes:
    return "|".join((box, kind, time or "", device or "")).encode()


def sign_box_message(key: bytes, box: str, kind: str = "alarm", time: str | None = None, device: str | None = None) -> str:
    """The ``signature`` member: hex HMAC-SHA256 (RFC 2104) of ``box|kind|time|device``."""
    return hmac.new(key, _signed_text(box, kind, time, device), hashlib.sha256).hexdigest()


def parse_box_message(payload: bytes, topic: str = "") -> BoxMessage | str:
    """A message, or why it cannot be read (a string). The box number comes from ``box``,
    else from the topic's last level when that is a box number."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        doc, why = None, f"not JSON ({exc})"
    else:
        why = "" if isinstance(doc, dict) else f"not a JSON object ({type(doc).__name__})"
    doc = doc if isinstance(doc, dict) else {}
    raw_box = doc.get("box", doc.get("number"))
    box = str(raw_box).strip() if isinstance(raw_box, (str, int)) and not isinstance(raw_box, bool) else ""
    last = topic.rsplit("/", 1)[-1]
    if not _BOX.match(box) and _BOX.match(last):
        box = last
    if not _BOX.match(box):
        return why or f"no box number (box={raw_box!r}, topic {topic!r})"
    point = None
    if "lat" in doc and "lon" in doc:
        try:
            point = Point(lat=float(doc["lat"]), lon=float(doc["lon"]))
        except (TypeError, ValueError, ShapeError):
            point = None  # a bad position: the box's registry location, or none, stands
    text = {k: str(doc[k]) if doc.get(k) is not None else None for k in ("kind", "time", "device", "signature")}
    return BoxMessage(box, (text["kind"] or "alarm").strip().lower(), text["time"], text["device"], text["signature"], point)


class MqttBoxInput:
    """Subscribe to ``topic`` on the broker at ``url`` (``mqtt://host:port``) and hand each
    message to ``receiver``. ``hmac_key``: check signatures. ``client_id``: the persistent
    session's identifier (one per node and topic). ``start()`` runs it as a task; ``aclose()``
    stops it."""

    def __init__(
        self,
        receiver: BoxReceiver,
        *,
        url: str = "mqtt://127.0.0.1:1883",
        topic: str = "firebox/boxes/#",
        client_id: str | None = None,
        hmac_key: bytes | None = None,
        username: str | None = None,
        password: str | None = None,
        reconnect_s: tuple[float, float] = (0.5, 15.0),
        keepalive: int = 15,
    ):
        parts = urlsplit(url if "//" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"MQTT url {url!r}: only mqtt:// (tcp) is supported")
        self.receiver = receiver
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.topic = topic
        self.client_id = client_id or f"firebox-boxes-{uuid.uuid4().hex[:12]}"
        self.hmac_key = hmac_key
        self.username, self.password = username or parts.username, password or parts.password
        self.reconnect_s = reconnect_s
        self.keepalive = keepalive
        self.connected = asyncio.Event()
        self.connections = 0
        self.received = 0
        self.duplicates = 0
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    # --- one message (no I/O) -----------------------------------------------------------

    def handle(self, payload: bytes, topic: str = "") -> BoxOutcome | None:
        """One message: an alarm, a flag, or None for a QoS 1 duplicate or a test."""
        self.received += 1
        msg = parse_box_message(payload, topic)
        if isinstance(msg, str):
            return self.receiver._flag(None, f"mqtt {topic}", f"unreadable box message: {msg}: {payload[:120]!r}")
        if msg.key in self._seen:
            self.duplicates += 1
            log.info("box %s: duplicate MQTT delivery skipped (%s)", msg.box, msg.key)
            return None
        self._seen[msg.key] = None
        while len(self._seen) > _SEEN:
            self._seen.popitem(last=False)
        source = f"MQTT box {msg.device or msg.box}"
        if msg.kind == "test":
            log.info("box %s: test message from %s", msg.box, source)
            return None
        if msg.kind not in ("alarm", "fire"):
            return self.receiver._flag(msg.box, f"mqtt {topic}", f"box {msg.box} reports {msg.kind!r} ({source})")
        note = None
        if self.hmac_key is not None:
            good = msg.signature is not None and hmac.compare_digest(
                msg.signature.lower(), sign_box_message(self.hmac_key, msg.box, msg.kind, msg.time, msg.device)
            )
            if not good:
                note = "UNVERIFIED: the message's signature is " + ("missing" if msg.signature is None else "wrong")
                log.warning("box %s: %s (%s)", msg.box, note, source)
        return self.receiver.alarm(msg.box, source=source, point=msg.point, unknown_incident=True, note=note)

    # --- the connection ---------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="mqtt-box-input")
        return self._task

    async def run(self) -> None:
        """Connect, subscribe (QoS 1), handle messages; on any connection loss wait and
        connect again (backoff doubling up to its maximum). Runs until cancelled."""
        import aiomqtt

        delay = self.reconnect_s[0]
        while True:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=self.client_id, clean_session=False,
                    username=self.username, password=self.password, keepalive=self.keepalive, timeout=10,
                ) as client:  # fmt: skip
                    await client.subscribe(self.topic, qos=1)
                    self.connections += 1
                    self.connected.set()
                    delay = self.reconnect_s[0]
                    log.info("MQTT box input: subscribed to %s on %s:%s", self.topic, self.host, self.port)
                    async for message in client.messages:
                        try:
                            self.handle(bytes(message.payload or b""), str(message.topic))  # type: ignore[arg-type]
                        except Exception:  # noqa: BLE001 -- one bad message must not stop the input
                            log.exception("MQTT box input: message on %s not handled", message.topic)
            except aiomqtt.MqttError as exc:
                log.warning("MQTT box input: %s:%s lost (%s); again in %.1f s", self.host, self.port, exc, delay)
            self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_s[1])

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.connected.clear()
