"""The ESRP's routing step for one call (NENA-STA-010.3 section 4.2), as an async adapter
over the sans-I/O pieces: location (``esrp.location``), the ECRF over LoST, and the policy
routing function (``esrp.policy``). The SIP proxy then tries ``RouteResult.decision``'s
destinations in order.

1. Location: by value, or by reference through a HELD dereference (RFC 6753: a HELD
   ``locationRequest`` POSTed to the URI, bounded by ``held_timeout``). When none is usable, the
   ingress's default location is added top-most (``add_default``) and the reason logged.
2. LoST ``findService`` for the call's service URN (the ESRP's LoST client: remote over HTTP
   with its cache, or the ECRF in-process). An error, a timeout or an exception is logged and
   the policy routing function falls back to its default route.
3. ``decide``: the ordered failover list, never empty, ending in a business line (from
   ``last_resort`` when set: answered lines over working gateway routes first).

Nothing here raises for a bad call: each problem is a line in ``RouteResult.log``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from firebox.esrp.location import Located, NeedDereference, add_default, find_location, resolve_reference
from firebox.esrp.policy import CallContext, CallMedium, Chains, LastResortLines, PsapChain, RouteDecision, RuleSet, decide
from firebox.esrp.states import StateTable, uri_key
from firebox.held.client import dereference as held_dereference
from firebox.location.pidf import PidfLocation, Presence
from firebox.lost.messages import ErrorsResponse, FindServiceResponse
from firebox.sip import Request, caller_uri

HELD_TYPE = "application/held+xml"


class LostAsker(Protocol):
    """What the router needs of a LoST client (``AsyncLostClient`` fits)."""

    async def find_service(self, location: Any, service: str = ...) -> FindServiceResponse | ErrorsResponse: ...


class InProcessLost:
    """The ECRF called in-process, with the same shape as the HTTP client (for a node that
    runs both). Recursion to peers needs the HTTP path and is answered as an error here."""

    def __init__(self, ecrf: Any):
        self.ecrf = ecrf

    async def find_service(self, location: Any, service: str = "urn:service:sos") -> FindServiceResponse | ErrorsResponse:
        from firebox.ecrf.service import Forward
        from firebox.lost.client import LostClientCore
        from firebox.lost.messages import ErrorKind, LostError

        request = LostClientCore.find_service_request(location, service, boundary=None)
        out = self.ecrf.handle(request, datetime.now(UTC))
        if isinstance(out, Forward):
            return ErrorsResponse(self.ecrf.source, [LostError(ErrorKind.NOT_FOUND, "outside this ECRF's data")])
        return out


@dataclass(slots=True)
class RouteResult:
    request: Request  # the request to forward (with a default location added when needed)
    location: PidfLocation
    location_how: str  # value, reference or default
    ecrf_uri: str | None
    decision: RouteDecision
    log: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Router:
    fqdn: str
    lost: LostAsker
    chains: Chains
    rules: RuleSet
    states: StateTable
    default_location: Presence
    http: httpx.AsyncClient | None = None
    held_timeout: float = 0.5
    lost_timeout: float = 0.5
    #: The business lines of last resort, by PSAP and time (the business-line registry's
    #: ``RegistryLastResort``); ``None``: each PSAP's static line from the deployment.
    last_resort: LastResortLines | None = None
    _queues: dict[str, PsapChain] = field(default_factory=dict, init=False, repr=False)
    _queues_of: Chains | None = field(default=None, init=False, repr=False)

    def named_queue(self, uri: str) -> PsapChain | None:
        """The PSAP whose queue ``uri`` names (a transfer), if any; service URNs never do."""
        if uri[:4].lower() == "urn:":
            return None
        chains = self.chains
        if self._queues_of is not chains:
            self._queues = {uri_key(p.uri): p for p in chains.values()}
            self._queues_of = chains
        return self._queues.get(uri_key(uri))

    async def _dereference(self, uri: str) -> tuple[bytes | None, str | None]:
        """The PIDF-LO behind a location URI (HELD POST, RFC 6753), or why there is none."""
        return await held_dereference(self.http, uri, timeout=self.held_timeout)

    async def locate(self, request: Request) -> tuple[Request, PidfLocation, str, list[str]]:
        step = find_location(request)
        while isinstance(step, NeedDereference):
            pidf, failure = await self._dereference(step.uri)
            step = resolve_reference(request, step, pidf, failure)
        if isinstance(step, Located):
            return request, step.location, step.how, [f"location by {step.how} from {step.uri}"] + step.problems
        request, cid = add_default(request, self.default_location, self.fqdn)
        log = step.problems + [f"no usable location: default location added as {cid}"]
        return request, self.default_location.locations[0], "default", log

    async def route(self, request: Request, now: datetime | None = None, *, source: str | None = None) -> RouteResult:
        now = now or datetime.now(UTC)
        request, location, how, log = await self.locate(request)
        service = request.uri if request.uri.lower().startswith("urn:service:") else "urn:service:sos"
        ecrf_uri = None
        named = self.named_queue(request.uri)
        if named is not None:
            # A PSAP transferring a call sends it back through the ESRP with the target
            # queue as Request-URI (NENA-STA-010.3 section 4.2: the ESRP routes on the
            # Request-URI when it names a queue): policy, states and the target's alternates
            # still apply, but LoST on the caller's location would send it home again.
            ecrf_uri = named.uri
            log.append(f"Request-URI names the queue of {named.psap_id}: routed there without LoST")
        else:
            lost_location: Any = location.shapes[0] if location.shapes else location.civic
            try:
                async with asyncio.timeout(self.lost_timeout):
                    answer = await self.lost.find_service(lost_location, service)
            except Exception as exc:  # noqa: BLE001 -- a LoST failure must still route the call
                log.append(f"LoST failed ({type(exc).__name__}: {exc}); default route")
            else:
                if isinstance(answer, FindServiceResponse) and answer.mappings and answer.mappings[0].uris:
                    ecrf_uri = answer.mappings[0].uris[0]
                    log.append(f"LoST {service}: {ecrf_uri}")
                else:
                    log.append(f"LoST {service}: no mapping ({answer}); default route")
        call = CallContext(
            call_id=request.call_id,
            service_urn=service,
            medium=CallMedium.TEXT if request.method.upper() == "MESSAGE" else CallMedium.VOICE,
            source=source,
            callback=caller_uri(request),
        )
        # A staged rule change (firebox.change.apply.CanaryRouting) holds two rule sets and
        # picks one per call; a plain RuleSet has no ``for_call`` and is used as it is.
        pick = getattr(self.rules, "for_call", None)
        rules = pick(call, ecrf_uri, self.chains) if pick is not None else self.rules
        decision = decide(call, ecrf_uri, self.states, rules, self.chains, now, self.last_resort)
        log += decision.log
        return RouteResult(request, location, how, ecrf_uri, decision, log)

