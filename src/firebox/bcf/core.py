"""The BCF element's core (NENA-STA-010.3 section 4.1), sans-I/O: one parsed request and
where it came from in, one ``Outcome`` out. The SIP adapter forwards ``Outcome.request`` to
the ESRP (or to the announcement-and-callback path when diverted) or answers
``Outcome.response``.

Any request it can parse is accepted. Emergency and test calls are marked (``marking``) and
never rejected; the worst they get is DIVERT, which still ends in a person: a callback record
for a call-taker. Non-emergency traffic may get 503 with Retry-After.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from firebox.bcf.conditions import BcfCondition, IdHealth, TdosConfig, TdosGuard
from firebox.bcf.marking import CallKind, Marked, mark, recognize
from firebox.bcf.protection import Action, BadActors, BcfRules, RateLimit, RateTracker, Verdict, decide
from firebox.logging.events import new_call_id, new_incident_id
from firebox.sip import Request, Response, caller_uri, make_response

#: The esnet priority a deprioritized emergency call keeps (RFC 7135: lowest).
DEPRIORITIZED = "esnet.0"
#: New calls (what the aggregate TDoS view counts).
NEW_CALL_METHODS = frozenset({"INVITE", "MESSAGE"})
#: The verification status an upstream STIR/SHAKEN verifier writes in the caller's
#: identity (3GPP TS 24.229 7.2A.20, ``verstat``) when the number's attestation verified.
VERSTAT_PASSED = "verstat=tn-validation-passed"


def attested(request: Request) -> bool:
    """Whether an upstream verifier says the caller's number passed STIR/SHAKEN
    verification (``verstat=TN-Validation-Passed`` in P-Asserted-Identity or From)."""
    for name in ("P-Asserted-Identity", "From"):
        if any(VERSTAT_PASSED in value.lower().replace(" ", "") for value in request.headers.get_all(name)):
            return True
    return False


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    """A caller a call-taker must call back: the call was diverted, not connected."""

    call_id: str
    incident_id: str
    callback: str | None  # the caller's number or URI, from P-Asserted-Identity or From
    source_id: str
    reason: str
    at: float


@dataclass(slots=True)
class Outcome:
    action: Action
    kind: CallKind
    source_id: str
    request: Request | None  # what to forward (None when answered with ``response``)
    response: Response | None = None
    marked: Marked | None = None
    callback: CallbackRecord | None = None
    verdict: Verdict | None = None
    log: list[str] = field(default_factory=list)
    #: Treated as suspect by the TDoS guard (unvetted source during an attack).
    suspect: bool = False


class Bcf:
    """``sources`` names the networks of known originating networks (a carrier's source id
    per CIDR); other addresses get the id ``ip-<address>``. ``rate`` limits each source."""

    def __init__(
        self,
        fqdn: str,
        *,
        sources: Mapping[str, str] | None = None,
        rules: BcfRules | None = None,
        rate: RateLimit = RateLimit(per_second=50.0, burst=100.0),
        max_sources: int = 100_000,
        bad_actor_hold: float = 3600.0,
        retry_after: int = 30,
        call_id_factory: Callable[[str], str] = new_call_id,
        incident_id_factory: Callable[[str], str] = new_incident_id,
        tdos: TdosConfig | None = None,
    ):
        self.fqdn = fqdn
        self._networks = [
            (ipaddress.ip_network(cidr, strict=False), source) for cidr, source in (sources or {}).items()
        ]
        self._networks.sort(key=lambda item: item[0].prefixlen, reverse=True)  # most specific first
        self.rules = rules or BcfRules()
        self.rates = RateTracker(rate, max_sources=max_sources)
        self.bad_actors = BadActors(self.known_sources(), hold=bad_actor_hold)
        self.retry_after = retry_after
        self._call_id = call_id_factory
        self._incident_id = incident_id_factory
        #: The aggregate view for TDoS (``conditions.TdosGuard``) and the identifier
        #: allocator's health (``conditions.IdHealth``): the element conditions it raises.
        self.tdos = TdosGuard(fqdn, tdos)
        self.ids = IdHealth(fqdn)

    def on_condition(self, listener: Callable[[BcfCondition], None]) -> None:
        """Call ``listener`` with every element condition change (TDoS, identifiers), in
        the step that decided it (``Monitor.condition`` is one)."""
        self.tdos.listeners.append(listener)
        self.ids.listeners.append(listener)

    def conditions(self) -> list[BcfCondition]:
        """The conditions active now."""
        return [c for c in (self.tdos.active, self.ids.active) if c is not None]

    def tick(self, now: float) -> None:
        """Judge the conditions without a new call (an attack ends in silence). ``now`` on
        the clock ``process`` is given."""
        self.tdos.tick(now)

    def vetted(self, source_id: str, request: Request) -> bool:
        """A call from a known carrier, or whose number passed attestation upstream."""
        return source_id in self.bad_actors.known or attested(request)

    def known_sources(self) -> Iterable[str]:
        return {source for _, source in self._networks}

    def source_of(self, ip: str | None) -> str:
        try:
            addr = ipaddress.ip_address(ip or "")
        except ValueError:
            return "unknown"
        for net, source in self._networks:
            if addr in net:
                return source
        return f"ip-{addr}"

    def set_rules(self, rules: BcfRules) -> BcfRules:
        """Install a new rule set (as a whole); returns the previous one, for rollback."""
        old, self.rules = self.rules, rules
        return old

    def process(self, request: Request, source_ip: str | None, now: float) -> Outcome:
        source_id = self.source_of(source_ip)
        recognized = recognize(request)
        kind = recognized.kind if recognized else CallKind.OTHER
        suspect = False
        if request.method.upper() in NEW_CALL_METHODS:
            vetted = self.vetted(source_id, request)
            self.tdos.observe(source_id, source_ip, vetted, now)
            suspect = self.tdos.suspect(vetted)
            if suspect:
                self.tdos.totals["suspect"] += 1
        verdict = decide(
            kind, request.method, source_id, source_ip,
            within_rate=self.rates.hit(source_id, now),
            bad_actor=self.bad_actors.is_bad(source_id, now),
            rules=self.rules, suspect=suspect,
        )  # fmt: skip
        log = [f"{request.method} from {source_id} ({source_ip}): {kind.value}, {verdict.action.value} ({verdict.reason})"]
        log += verdict.notes
        if recognized is None:
            if verdict.action is Action.REJECT:
                response = make_response(request, 503, headers=[("Retry-After", str(self.retry_after))])
                return Outcome(verdict.action, kind, source_id, None, response, verdict=verdict, log=log,
                               suspect=suspect)  # fmt: skip
            return Outcome(verdict.action, kind, source_id, request, verdict=verdict, log=log, suspect=suspect)

        try:
            marked = mark(
                request, recognized, fqdn=self.fqdn, source_id=source_id,
                call_id_factory=self._call_id, incident_id_factory=self._incident_id,
            )  # fmt: skip
            self.ids.ok(now)
        except Exception as exc:  # noqa: BLE001 -- an allocator failure must not cost the call its mark
            # The 2014 outage: the counter hit its ceiling and calls failed for hours before
            # anyone knew. Raise it as a condition at once and mark with the fallback ids.
            self.ids.failed("emergency identifier", exc, now)
            log.append(f"identifier allocation failed ({type(exc).__name__}: {exc}); fallback identifiers used")
            marked = mark(request, recognized, fqdn=self.fqdn, source_id=source_id)
        log += marked.changes
        out = marked.request
        callback = None
        if verdict.action is Action.DEPRIORITIZE or suspect:
            # A TDoS suspect is marked with the lowest priority too (RFC 7135), whatever else.
            out.headers.set("Resource-Priority", DEPRIORITIZED)
            log.append(f"Resource-Priority set to {DEPRIORITIZED} (deprioritized)")
        if verdict.action is Action.DIVERT:
            callback = CallbackRecord(
                marked.call_id, marked.incident_id, caller_uri(request), source_id, verdict.reason, now
            )
            log.append(f"diverted to announcement + callback; callback record for {callback.callback}")
        return Outcome(verdict.action, kind, source_id, out, None, marked, callback, verdict, log, suspect)
