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

Several nodes (issue 8, ``docs/cluster.md``): each node has its own session, so every node
receives every message, and the receiver's "open incident for this box?" check races across
nodes (three incidents for one alarm, or two "sounded again" entries for one message). Given
``claims`` (``firebox.cluster.once``, ``PgClaims`` on the cluster's PostgreSQL), a node first
claims ``box:<box>:<digest of box, kind, time, device>`` (the message's QoS 1 key); only the
winner makes the incident and marks the claim done, so one alarm is one incident dispatched
once. A node that loses looks at the holder: done, the alarm is handled elsewhere (counted in
``claimed_elsewhere``); not done (the winner is at work, or died and its lease will end), the
message is kept and claimed again later, so a winner that dies mid-work does not lose it.

A node that cannot reach the claims (PostgreSQL unreachable: cut off from the cluster's
database) cannot write the CAD either. It logs an error naming the box, flags it for the
dispatcher of this node, and keeps the message in a bounded retry list, tried again on the
next message and on a timer; when the node is back, the claim tells it whether the alarm was
handled meanwhile by a node that was not cut off (nothing more to do), or not (it handles it).
When every node is cut off, no node can write the CAD: every node holds the alarm, logs it as
an error and shows it as a flag (``GET /boxes/alarms``) so the box office can act on it by
hand; when the database returns, the nodes' retries race for the claim and exactly one makes
the incident. What is held lives in memory: a node restarted while cut off forgets it, the
other nodes still hold theirs (all nodes restarted while all are cut off: the alarm is only in
their logs). A winner whose ``done`` fails after the incident is written retries ``done``; if
its lease ends first, another node may take the claim, and then finds the box's open incident
(the receiver's repeat window): a "sounded again" entry, not a second incident.
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
from time import monotonic
from typing import Any
from urllib.parse import urlsplit

from firebox.boxes.receiver import BoxOutcome, BoxReceiver
from firebox.cluster.once import Claims, Grant
from firebox.location.shapes import Point, ShapeError

__all__ = ["BoxMessage", "HeldAlarm", "MqttBoxInput", "claim_key", "parse_box_message", "sign_box_message"]

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


def claim_key(msg: BoxMessage) -> str:
    """The cluster-wide claim of one message: ``box:<box>:<32 hex>``, the digest (SHA-256)
    of the QoS 1 key as JSON (stable across nodes and versions; ``None`` is not ``""``), so
    the key is short whatever the device and time strings are."""
    digest = hashlib.sha256(json.dumps(list(msg.key)).encode()).hexdigest()[:32]
    return f"box:{msg.box}:{digest}"


@dataclass(slots=True)
class HeldAlarm:
    """An alarm this node has not settled yet (claims unreachable, the CAD write failed, or
    another node holds the claim without having finished): kept for a retry."""

    msg: BoxMessage
    topic: str
    source: str
    note: str | None
    why: str = ""
    tries: int = 0


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
    session's identifier (one per node and topic). ``claims`` and ``owner`` (this node's id):
    claim each alarm before acting, so that one alarm seen by several nodes is one incident
    (module docstring); ``lease_s`` the claim's lease, ``retry_s`` how often held alarms are
    tried again, ``max_held`` how many are held. ``start()`` runs it as a task; ``aclose()``
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
        claims: Claims | None = None,
        owner: str | None = None,
        lease_s: float = 60.0,
        retry_s: float = 1.0,
        max_held: int = 1000,
    ):
        if claims is not None and not owner:
            raise ValueError("claims need an owner (this node's id)")
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
        self.claims = claims
        self.owner = owner or ""
        self.lease_s = lease_s
        self.retry_s = retry_s
        self.max_held = max_held
        self.claimed_here = 0  # alarms this node won and made into incidents (or repeats)
        self.claimed_elsewhere = 0  # alarms another node handled
        self.claim_errors = 0  # claims (or the CAD) unreachable: an alarm held
        self.held: list[HeldAlarm] = []
        self._unmarked: list[Grant] = []  # incidents made whose claim is not yet marked done
        self._next_retry = 0.0
        self._retry_task: asyncio.Task[None] | None = None

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
        if self.claims is None:
            return self.receiver.alarm(msg.box, source=source, point=msg.point, unknown_incident=True, note=note)
        if monotonic() >= self._next_retry:
            self.retry_held()  # older alarms first
        return self._settle(HeldAlarm(msg, topic, source, note))

    # --- once across nodes --------------------------------------------------------------------

    def _settle(self, held: HeldAlarm) -> BoxOutcome | None:
        """Claim the alarm; the winner makes the incident. Returns the outcome, a flag when the
        alarm is held after an error, or None (handled elsewhere, or held while another node
        holds the claim)."""
        assert self.claims is not None
        msg, key = held.msg, claim_key(held.msg)
        try:
            grant = self.claims.claim(key, self.owner, self.lease_s)
        except Exception as exc:  # noqa: BLE001 -- any failure of the claims: hold, never lose
            return self._hold(held, f"claims unreachable ({type(exc).__name__}: {exc})", error=True)
        if grant is None:
            try:
                holder = self.claims.holder(key)
            except Exception as exc:  # noqa: BLE001
                return self._hold(held, f"claims unreachable ({type(exc).__name__}: {exc})", error=True)
            if holder is not None and holder.done:
                self.claimed_elsewhere += 1
                log.info("box %s: alarm %s handled by node %s", msg.box, key, holder.owner)
                return None
            # The holder is at work, or died (its lease will end) or gave up: look again later.
            who = f"node {holder.owner}, not done yet" if holder is not None else "a claim just released"
            return self._hold(held, f"claimed by {who}", error=False)
        try:
            outcome = self.receiver.alarm(msg.box, source=held.source, point=msg.point, unknown_incident=True,
                                          note=held.note)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 -- the CAD unreachable: let this or another node retry
            with contextlib.suppress(Exception):
                self.claims.release(grant)  # if this fails too, the lease ends on its own
            return self._hold(held, f"CAD write failed ({type(exc).__name__}: {exc})", error=True)
        self.claimed_here += 1
        self._mark_done(grant, msg.box)
        return outcome

    def _mark_done(self, grant: Grant, box: str) -> None:
        assert self.claims is not None
        try:
            if not self.claims.done(grant):
                log.warning("box %s: claim %s outlived its lease before it was marked done", box, grant.key)
        except Exception as exc:  # noqa: BLE001 -- the incident is made; mark it later
            log.error("box %s: incident made, claim %s not marked done (%s); retrying", box, grant.key, exc)
            if len(self._unmarked) < self.max_held:
                self._unmarked.append(grant)

    def _hold(self, held: HeldAlarm, why: str, *, error: bool) -> BoxOutcome | None:
        held.why = why
        box = held.msg.box
        if error:
            self.claim_errors += 1
        if len(self.held) >= self.max_held:
            # Loud, never silent: the other nodes received the same message.
            log.error("box %s: ALARM NOT KEPT on this node (%s; %d alarms already held)", box, why, len(self.held))
            return self.receiver._flag(box, f"mqtt {held.topic}", f"box {box} alarm NOT kept for retry: {why}")
        self.held.append(held)
        if not error:
            (log.info if held.tries == 0 else log.debug)("box %s: alarm %s %s; looking again", box,
                                                         claim_key(held.msg), why)  # fmt: skip
            return None
        log.error("box %s: alarm held, not in the CAD yet: %s; retrying every %.1f s", box, why, self.retry_s)
        if held.tries == 0:  # one flag per alarm, not one per retry
            return self.receiver._flag(box, f"mqtt {held.topic}", f"box {box} alarm held, not in the CAD yet: {why}")
        return None

    def retry_held(self) -> list[BoxOutcome]:
        """Try every held alarm again (oldest first), and mark done the claims of incidents
        made. Returns the outcomes of alarms this node now handled."""
        self._next_retry = monotonic() + self.retry_s
        if self.claims is None:
            return []
        unmarked, self._unmarked = self._unmarked, []
        for grant in unmarked:
            self._mark_done(grant, grant.key.split(":")[1])
        held, self.held = self.held, []
        out: list[BoxOutcome] = []
        for h in held:
            h.tries += 1
            outcome = self._settle(h)
            if outcome is not None and outcome.kind != "flag":
                out.append(outcome)
        return out

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retry_s)
            if self.held or self._unmarked:
                try:
                    self.retry_held()
                except Exception:  # noqa: BLE001 -- the timer must survive
                    log.exception("MQTT box input: retry of held alarms failed")

    # --- the connection ---------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self.run(), name="mqtt-box-input")
        if self.claims is not None and (self._retry_task is None or self._retry_task.done()):
            self._retry_task = loop.create_task(self._retry_loop(), name="mqtt-box-retry")
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
        for task in (self._task, self._retry_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._retry_task = None
        if self.held:
            log.error("MQTT box input stopped with %d alarms held: %s", len(self.held),
                      ", ".join(f"box {h.msg.box} ({h.why})" for h in self.held))  # fmt: skip
        self.connected.clear()
