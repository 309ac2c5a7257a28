"""The fire alarm box receiver: telegraph circuits and modern boxes in, CAD incidents out.

It stands apart from the 911 call path on purpose: it needs the CAD and a clock, nothing of
SIP, the ESRP or the ECRF, so a box alarm becomes an incident while the SIP core is down
(the Massachusetts outage of 18 June 2024 sent people to the street boxes).

``BoxReceiver`` is synchronous and clock-free in its decoding (``pulse``/``tick`` take the
circuit's monotonic time, as ``TelegraphDecoder`` does); the CAD's timestamps come from the
``clock`` it is given. ``PulseListener`` is the asyncio adapter for a telegraph interface
that sends one UDP datagram per pulse (``"<circuit>"`` or ``"<circuit> <seconds>"``), and
``receiver_routes`` the HTTP input of modern (addressable) boxes.

What cannot be read is never dropped: an unknown box number, rounds that disagree, or a
single clean round become flags (``BoxOutcome`` with ``kind="flag"``) for a dispatcher, and,
when the number read is in the registry, an incident marked unconfirmed, so that a company
is sent to look.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from firebox.boxes.telegraph import (
    BoxAlarm,
    DecoderEvent,
    GarbledRound,
    MismatchedRounds,
    TelegraphDecoder,
    Timing,
    TransmissionEnded,
)
from firebox.cad.model import IncidentStatus
from firebox.cad.service import Cad
from firebox.location.shapes import Point

__all__ = ["BoxOutcome", "BoxReceiver", "PulseListener", "receiver_routes"]

log = logging.getLogger(__name__)

#: A box sounding again within this time adds to its open incident instead of a new one.
REPEAT_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class BoxOutcome:
    kind: str  # "incident" (new), "repeat" (added to an open one), "flag" (a person must look)
    number: str | None
    detail: str
    at: datetime
    circuit: str | None = None
    incident_id: str | None = None


class BoxReceiver:
    def __init__(
        self,
        cad: Cad,
        *,
        clock: Callable[[], datetime],
        timing: Timing | None = None,
        keep: int = 500,
    ):
        self.cad = cad
        self.clock = clock
        self.timing = timing or Timing()
        self._decoders: dict[str, TelegraphDecoder] = {}
        # Registry numbers by the digits a wheel sends ("12-317" is sent as 1-2-3-1-7).
        self._by_digits = {"".join(c for c in n if c.isdigit()): n for n in cad.boxes}
        self.outcomes: deque[BoxOutcome] = deque(maxlen=keep)

    # --- telegraph -----------------------------------------------------------------------

    def pulse(self, circuit: str, t: float) -> list[BoxOutcome]:
        decoder = self._decoders.setdefault(circuit, TelegraphDecoder(self.timing))
        return self._handle(circuit, decoder.pulse(t))

    def tick(self, now: float) -> list[BoxOutcome]:
        out: list[BoxOutcome] = []
        for circuit, decoder in self._decoders.items():
            out += self._handle(circuit, decoder.tick(now))
        return out

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (dec.next_deadline() for dec in self._decoders.values()) if d is not None]
        return min(deadlines, default=None)

    def _handle(self, circuit: str, events: list[DecoderEvent]) -> list[BoxOutcome]:
        out: list[BoxOutcome] = []
        for e in events:
            if isinstance(e, BoxAlarm):
                out.append(self._alarm(self._registry_number(e.number), e.number, circuit, f"{e.rounds} matching rounds"))
            elif isinstance(e, GarbledRound):
                out.append(self._flag(None, circuit, f"garbled round: {e.reason} (groups {list(e.groups)})"))
            elif isinstance(e, MismatchedRounds):
                what = f"rounds disagree: {', '.join(e.numbers)}"
                out.append(self._flag(e.alarm, circuit, what + (f" (box {e.alarm} called)" if e.alarm else "")))
            elif isinstance(e, TransmissionEnded) and e.number is None and e.rounds:
                out += self._unconfirmed(circuit, e)
        return out

    def _unconfirmed(self, circuit: str, e: TransmissionEnded) -> list[BoxOutcome]:
        """A transmission that ended without matching rounds: send a company to look at
        each box the clean rounds named (a person may have pulled it), and flag it."""
        out = [self._flag(None, circuit, f"no matching rounds: read {', '.join(e.rounds)} and {e.garbled} garbled")]
        for number in dict.fromkeys(e.rounds):
            registered = self._registry_number(number)
            if registered is not None:
                out.append(self._alarm(registered, number, circuit, "UNCONFIRMED: rounds did not match, verify"))
        return out

    def _registry_number(self, digits: str) -> str | None:
        return self._by_digits.get(digits)

    # --- incidents -----------------------------------------------------------------------

    def alarm(self, number: str, *, source: str = "box", point: Point | None = None, unknown_incident: bool = False,
              note: str | None = None) -> BoxOutcome:  # fmt: skip
        """A modern box (or a box office operator) reports box ``number`` directly.

        ``unknown_incident``: a box not in the registry is flagged *and* becomes an incident
        at the best location known (``point``, the box's own report, else none), marked not
        validated: a digitally addressed box that is missing from the table is a gap in the
        table, not a reason to send nobody. ``note`` goes into the incident's narrative."""
        registered = self.cad.boxes.get(number) and number or self._registry_number(
            "".join(c for c in number if c.isdigit())
        )
        how = f"reported by {source}" + (f"; {note}" if note else "")
        if registered is None and unknown_incident:
            flag = self._flag(number, None, f"box {number} is not in the box registry ({how}); incident made")
            now = self.clock()
            open_incident = self._open_incident_for(number, now)
            if open_incident is not None:
                self.cad.add_narrative(open_incident, f"box {number} sounded again ({how})", at=now, actor=source)
                outcome = BoxOutcome("repeat", number, how, now, None, open_incident)
            else:
                incident = self.cad.incident_from_box(number, at=now, actor=source, unknown_point=point, unknown_ok=True)
                if note:
                    self.cad.add_narrative(incident.id, note, at=now, actor=source)
                outcome = BoxOutcome("incident", number, f"{how}; box not in the registry", now, None, incident.id)
            log.warning("box %s (not in the registry): %s, incident %s", number, outcome.kind, outcome.incident_id or flag.detail)
            self.outcomes.append(outcome)
            return outcome
        outcome = self._alarm(registered, number, None, how)
        if note and outcome.kind == "incident" and outcome.incident_id:
            self.cad.add_narrative(outcome.incident_id, note, at=outcome.at, actor=source)
        return outcome

    def _alarm(self, number: str | None, read: str, circuit: str | None, how: str) -> BoxOutcome:
        now = self.clock()
        if number is None:
            return self._flag(read, circuit, f"box {read} is not in the box registry ({how})")
        open_incident = self._open_incident_for(number, now)
        if open_incident is not None:
            self.cad.add_narrative(open_incident, f"box {number} sounded again ({how})", at=now, actor="fire alarm telegraph")
            outcome = BoxOutcome("repeat", number, how, now, circuit, open_incident)
        else:
            incident = self.cad.incident_from_box(number, at=now)
            if "UNCONFIRMED" in how:
                self.cad.add_narrative(incident.id, how, at=now, actor="fire alarm telegraph")
            outcome = BoxOutcome("incident", number, how, now, circuit, incident.id)
        log.info("box %s: %s (%s)", number, outcome.kind, how)
        self.outcomes.append(outcome)
        return outcome

    def _open_incident_for(self, number: str, now: datetime) -> str | None:
        for inc in self.cad.incidents(open_only=True):
            src = inc.source
            if src.box == number and inc.status is not IncidentStatus.CLOSED and now - inc.created_at <= REPEAT_WINDOW:
                return inc.id
        return None

    def _flag(self, number: str | None, circuit: str | None, detail: str) -> BoxOutcome:
        outcome = BoxOutcome("flag", number, detail, self.clock(), circuit)
        log.warning("box circuit %s: %s", circuit or "-", detail)
        self.outcomes.append(outcome)
        return outcome


class PulseListener(asyncio.DatagramProtocol):
    """A telegraph interface on UDP: each datagram is one pulse, ``"<circuit>"`` (timed on
    arrival) or ``"<circuit> <seconds>"`` (timed by the interface, monotonic). A timer
    calls ``tick`` when the receiver has a round or transmission to close."""

    def __init__(self, receiver: BoxReceiver, *, now: Callable[[], float] = time.monotonic):
        self.receiver = receiver
        self.now = now
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.malformed = 0

    @classmethod
    async def listen(cls, receiver: BoxReceiver, host: str, port: int) -> PulseListener:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(lambda: cls(receiver), local_addr=(host, port))
        return protocol

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: Any) -> None:
        parts = data.decode("ascii", "replace").split()
        try:
            circuit = parts[0]
            t = float(parts[1]) if len(parts) > 1 else self.now()
        except (IndexError, ValueError):
            self.malformed += 1
            log.warning("box interface %s: unreadable pulse datagram %r", addr, data[:64])
            return
        try:
            self.receiver.pulse(circuit, t)
        except ValueError as exc:  # a pulse out of order: the interface's clock jumped
            self.malformed += 1
            log.warning("box circuit %s: %s", circuit, exc)
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.receiver.next_deadline()
        if deadline is not None:
            delay = max(0.0, deadline - self.now())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.receiver.tick(self.now())
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


def receiver_routes(receiver: BoxReceiver) -> list[Route]:
    """``POST /boxes/{number}/alarm`` for modern boxes; ``GET /boxes/alarms`` the recent
    outcomes (incidents, repeats, flags) for the dispatcher."""

    async def alarm(request: Request) -> JSONResponse:
        outcome = receiver.alarm(request.path_params["number"], source="addressable box")
        status = 201 if outcome.kind == "incident" else 200 if outcome.kind == "repeat" else 422
        return JSONResponse(_outcome_json(outcome), status_code=status)

    async def alarms(request: Request) -> JSONResponse:
        return JSONResponse([_outcome_json(o) for o in reversed(receiver.outcomes)])

    return [
        Route("/boxes/{number}/alarm", alarm, methods=["POST"]),
        Route("/boxes/alarms", alarms, methods=["GET"]),
    ]


def _outcome_json(o: BoxOutcome) -> dict[str, Any]:
    return {
        "kind": o.kind, "number": o.number, "detail": o.detail, "at": o.at.isoformat(),
        "circuit": o.circuit, "incident": o.incident_id,
    }  # fmt: skip
