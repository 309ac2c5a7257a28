"""Synthetic test calls (NENA-STA-010.3 i3 test call, ``urn:service:test.sos``; RFC 6881
section 15): from every ingress (a BCF address) to every PSAP, on a period, each INVITE
carrying a PIDF-LO (RFC 4119, RFC 5491 point) inside the PSAP's service area, so that the
ESRP routes it (LoST for the test service, mapped like ``urn:service:sos``) to that PSAP.

The sans-I/O part plans and judges: ``ProbePlanner.due(now)`` says which probes to place
(each ingress x PSAP pair once per ``period``, the pairs spread evenly over the period, never
two at once for one pair), and ``judge`` turns what the call got (``ProbeAnswer``: final
status, reason, the 2xx's Contact) into a ``ProbeResult``: answered by the right PSAP,
answered by another one (the 200's Contact names the queue that answered: the PSAP agents
put the queue URI's user part there), rejected (a final error, with its status), no answer,
or not sent.

``ProbeRunner`` is the asyncio adapter: one ``firebox.sim.carrier.Carrier`` per ingress
places the calls (the same UAC as the carrier simulator: Timer A, ACK, BYE, CANCEL on no
answer), hangs up after ``hold`` seconds and hands every result to ``on_result``. Every
wait is bounded by the carrier's ``answer_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from firebox.sip.address import SipUri, parse_name_addr, parse_uri
from firebox.sip.errors import SipParseError

__all__ = [
    "TEST_SERVICE",
    "Ingress",
    "Probe",
    "ProbeAnswer",
    "ProbeOutcome",
    "ProbePlanner",
    "ProbeResult",
    "ProbeRunner",
    "ProbeTarget",
    "judge",
    "targets_from_deployment",
]

log = logging.getLogger(__name__)

TEST_SERVICE = "urn:service:test.sos"
#: The caller number of probes (a 555 number: never a real subscriber).
PROBE_IDENTITY = "tel:+16175550199"


@dataclass(frozen=True, slots=True)
class Ingress:
    """Where carriers hand calls to the ESInet: a BCF's SIP address."""

    name: str
    host: str
    port: int
    transport: str = "udp"


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """A PSAP to reach: its queue URI and a point (lon, lat) inside its service area."""

    psap_id: str
    queue_uri: str
    lon: float
    lat: float
    region: str | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    id: int
    ingress: Ingress
    target: ProbeTarget
    at: float  # when it was placed


class ProbeOutcome(StrEnum):
    ANSWERED = "answered"  # by the PSAP meant (or by one the probe could not identify)
    WRONG_PSAP = "wrong psap"  # answered, by another PSAP
    REJECTED = "rejected"  # a final error answer
    NO_ANSWER = "no answer"  # no final answer in time
    ERROR = "error"  # not sent (no socket, no route)


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """What the call got, as the runner saw it."""

    status: int | None
    reason: str | None = None
    contact: str | None = None
    setup_ms: float | None = None
    error: str | None = None
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class ProbeResult:
    probe: Probe
    outcome: ProbeOutcome
    at: float  # when the result was known
    status: int | None = None
    reason: str | None = None
    answered_by: str | None = None  # PSAP id, when identified
    setup_ms: float | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is ProbeOutcome.ANSWERED

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.probe.id, "ingress": self.probe.ingress.name, "psap": self.probe.target.psap_id,
            "placed": self.probe.at, "at": self.at, "outcome": self.outcome.value, "status": self.status,
            "reason": self.reason, "answered_by": self.answered_by, "setup_ms": self.setup_ms, "detail": self.detail,
        }  # fmt: skip


def _user(uri: str) -> str | None:
    try:
        parsed = parse_name_addr(uri).uri if "<" in uri else parse_uri(uri)
    except SipParseError:
        return None
    if not isinstance(parsed, SipUri) or not parsed.user:
        return None
    return parsed.user.lower()


class ProbePlanner:
    """Which probes are due. ``period`` seconds between two probes of one ingress x PSAP
    pair; the pairs' first probes are spread over the first period from ``start``."""

    def __init__(self, ingresses: Iterable[Ingress], targets: Iterable[ProbeTarget], *, period: float = 10.0,
                 start: float = 0.0) -> None:  # fmt: skip
        if period <= 0:
            raise ValueError("period: must be positive seconds")
        self.ingresses = list(ingresses)
        self.targets = list(targets)
        if not self.ingresses or not self.targets:
            raise ValueError("probes need at least one ingress and one PSAP target")
        self.period = period
        pairs = [(i, t) for i in self.ingresses for t in self.targets]
        self._next = {(i.name, t.psap_id): start + period * n / len(pairs) for n, (i, t) in enumerate(pairs)}
        self._pairs = {(i.name, t.psap_id): (i, t) for i, t in pairs}
        self._busy: set[tuple[str, str]] = set()
        self._ids = itertools.count(1)
        #: The queue URI's user part -> PSAP id: who answered, from a 200's Contact.
        self.by_user = {u: t.psap_id for t in self.targets if (u := _user(t.queue_uri))}

    def due(self, now: float) -> list[Probe]:
        out = []
        for key, at in self._next.items():
            if at <= now and key not in self._busy:
                ingress, target = self._pairs[key]
                out.append(Probe(next(self._ids), ingress, target, now))
                self._busy.add(key)
                # The next one a period after this one was due (no drift), never in the past.
                self._next[key] = max(at + self.period, now)
        return out

    def next_due(self) -> float:
        free = [at for key, at in self._next.items() if key not in self._busy]
        return min(free) if free else float("inf")

    def finished(self, probe: Probe) -> None:
        self._busy.discard((probe.ingress.name, probe.target.psap_id))

    def judge(self, probe: Probe, answer: ProbeAnswer, now: float) -> ProbeResult:
        return judge(probe, answer, now, self.by_user)


def judge(probe: Probe, answer: ProbeAnswer, now: float, by_user: dict[str, str]) -> ProbeResult:
    """A probe's result. The answering PSAP is the 200's Contact user part matched to a
    queue URI's; an answer that names no known queue is taken as answered (the probe cannot
    tell otherwise, and must not invent an outage), with a note."""
    want = probe.target.psap_id
    common = {"status": answer.status, "reason": answer.reason, "setup_ms": answer.setup_ms}
    if answer.error is not None:
        return ProbeResult(probe, ProbeOutcome.ERROR, now, detail=f"not sent: {answer.error}", **common)
    if answer.status is None:
        return ProbeResult(probe, ProbeOutcome.NO_ANSWER, now, detail="no final answer in time", **common)
    if answer.status >= 300:
        return ProbeResult(probe, ProbeOutcome.REJECTED, now,
                           detail=f"SIP {answer.status} {answer.reason or ''}".strip(), **common)  # fmt: skip
    user = _user(answer.contact) if answer.contact else None
    got = by_user.get(user) if user else None
    if got is None:
        return ProbeResult(probe, ProbeOutcome.ANSWERED, now, detail="answered; the answering PSAP is not identified "
                           f"(Contact {answer.contact!r})", **common)  # fmt: skip
    if got != want:
        return ProbeResult(probe, ProbeOutcome.WRONG_PSAP, now, answered_by=got,
                           detail=f"answered by {got}, not {want}", **common)  # fmt: skip
    return ProbeResult(probe, ProbeOutcome.ANSWERED, now, answered_by=got, detail="answered", **common)


def targets_from_deployment(dep: Any, index: Any, regions: dict[str, str] | None = None) -> list[ProbeTarget]:
    """A probe target per PSAP of a deployment: a point on the surface of the
    ``urn:service:sos`` boundary whose URI is the PSAP's (``index`` a ``ServiceIndex``).
    PSAPs without a boundary are left out, logged."""
    layer = index.layer("urn:service:sos")
    out = []
    for p in dep.psaps:
        boundary = next((b for b in layer.boundaries if b.uri == p.uri), None) if layer is not None else None
        if boundary is None:
            log.warning("monitor: PSAP %s has no urn:service:sos boundary; no probe target", p.id)
            continue
        point = boundary.geometry.point_on_surface()
        out.append(ProbeTarget(p.id, p.uri, point.x, point.y, (regions or {}).get(p.id)))
    return out


class ProbeRunner:
    """Places the planner's probes, one carrier (UAC) per ingress, and hands each result to
    ``on_result``. ``clock`` gives the time the planner and results use (UNIX seconds)."""

    def __init__(
        self,
        planner: ProbePlanner,
        on_result: Callable[[ProbeResult], None],
        *,
        host: str = "127.0.0.1",
        answer_timeout: float = 4.0,
        hold: float = 0.2,
        clock: Callable[[], float] = time.time,
        resolver: Any = None,
    ) -> None:
        self.planner = planner
        self.resolver = resolver
        self.on_result = on_result
        self.host = host
        self.answer_timeout = answer_timeout
        self.hold = hold
        self.clock = clock
        self.carriers: dict[str, Any] = {}
        self.results: list[ProbeResult] = []  # the latest ones (bounded)
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()

    async def start(self) -> None:
        from firebox.sim.carrier import Carrier

        for ingress in self.planner.ingresses:
            carrier = Carrier((ingress.host, ingress.port, ingress.transport), host=self.host,
                              domain="probe.firebox.invalid", answer_timeout=self.answer_timeout,
                              resolver=self.resolver)  # fmt: skip
            await carrier.start()
            self.carriers[ingress.name] = carrier
        self._task = asyncio.create_task(self._loop(), name="monitor-probes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for carrier in self.carriers.values():
            carrier.hang_up_all()
        if self._running:
            await asyncio.wait(set(self._running), timeout=self.answer_timeout + 2)
        for task in list(self._running):
            task.cancel()
        for carrier in self.carriers.values():
            await carrier.close()
        self.carriers.clear()

    async def _loop(self) -> None:
        while True:
            for probe in self.planner.due(self.clock()):
                task = asyncio.create_task(self._one(probe))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            wait = min(max(self.planner.next_due() - self.clock(), 0.01), 1.0)
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when
            # the event is set in the same step as stop()'s cancel, swallowing the cancel,
            # and this loop (and stop(), awaiting it) never ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def run(self, probe: Probe) -> ProbeResult:
        """Place one probe now and judge it."""
        from firebox.sim.carrier import CallPlan, LocationMode, Outcome

        carrier = self.carriers[probe.ingress.name]
        target = probe.target
        plan = CallPlan(PROBE_IDENTITY, target.lon, target.lat, LocationMode.VALUE, self.hold,
                        request_uri=TEST_SERVICE)  # fmt: skip
        try:
            got = await carrier.call(plan)
        except Exception as exc:  # noqa: BLE001 -- a probe's own failure is a result, never a crash
            log.exception("monitor: probe %d failed to run", probe.id)
            answer = ProbeAnswer(None, error=f"{type(exc).__name__}: {exc}")
        else:
            if got.outcome is Outcome.ERROR:
                answer = ProbeAnswer(None, error="the carrier could not send the INVITE")
            elif got.outcome is Outcome.NO_ANSWER:
                answer = ProbeAnswer(None, timed_out=True)
            else:
                answer = ProbeAnswer(got.status, got.reason, got.contact, got.setup_ms)
        return self.planner.judge(probe, answer, self.clock())

    async def _one(self, probe: Probe) -> None:
        try:
            result = await self.run(probe)
        finally:
            self.planner.finished(probe)
            self._wake.set()
        self.results.append(result)
        del self.results[:-1000]
        try:
            self.on_result(result)
        except Exception:  # noqa: BLE001
            log.exception("monitor: probe result handler failed")
