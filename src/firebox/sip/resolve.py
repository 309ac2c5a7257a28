"""Locating SIP servers (RFC 3263), sans-I/O: a SIP URI and DNS records in, the ordered
list of ``(transport, host, port)`` targets out.

Records are plain data (``NaptrRecord``, ``SrvRecord`` and addresses for A/AAAA) from a
``RecordSource``: ``StaticRecords`` (a table; ``StaticRecords.for_cluster`` builds one from a
cluster's ``nodes``, so that the cluster name resolves to every node the way DNS SRV would
without a DNS server) or ``DnsRecords`` (live DNS through dnspython, when installed).

``locate(uri, source, choose=...)`` follows RFC 3263 section 4:

* 4.1 transport: the URI's ``transport`` parameter; else UDP (``sips``: TLS) for a numeric
  host or an explicit port; else the NAPTR records (``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T``;
  ``sips`` only the last) in order/preference order; else the SRV names that exist
  (``_sip._udp``, ``_sip._tcp``, ``_sips._tcp``); else UDP (``sips``: TLS).
* 4.2 host and port: a numeric host (or ``maddr``) is used as it is with the URI's port or
  5060/5061; an explicit port skips SRV (A/AAAA of the host with that port); otherwise
  the SRV records in RFC 2782 order (lower priority first, and within a priority a
  weighted random choice: ``choose(total)`` gives a number in ``[0, total]``, an argument
  so that tests are deterministic), each target's addresses in order; with no SRV record
  the host's addresses with the default port.

``SipResolver`` puts it together for the user agents and the ESRP element: ``targets(uri,
now)`` is the list, with targets that failed within ``down_seconds`` (``mark_failed``)
moved last (never removed: a 911 call's request must still go somewhere);
``resolver(uri)`` is the first target as the element's ``Resolver`` callable wants it.

``RequestFailover`` is the RFC 3263 section 4.3 rule for one request a client sends: on a
transport error, a transaction timeout or a 503, a *new* request identical to the last but
for a fresh Via branch (a new transaction) goes to the next target. The PSAP agents, the
call handling element and the simulator's carrier share it.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from firebox.sip.address import SipUri, parse_name_addr, parse_uri
from firebox.sip.errors import SipParseError
from firebox.sip.message import Request
from firebox.sip.transaction import MAGIC_COOKIE

__all__ = [
    "DnsRecords",
    "RequestFailover",
    "NaptrRecord",
    "RecordSource",
    "SipResolver",
    "SipTarget",
    "SrvRecord",
    "StaticRecords",
    "fails_over",
    "first_hop",
    "locate",
    "order_srv",
]

log = logging.getLogger(__name__)

#: ``(host, port, transport)``: the shape the transports and the elements use.
Address = tuple[str, int, str]
#: A weighted choice (RFC 2782): a number in ``[0, total]``, inclusive.
Choose = Callable[[int], int]

#: NAPTR services (RFC 3263 section 4.1) and the transport each names.
_NAPTR_SERVICES = {"sip+d2u": "udp", "sip+d2t": "tcp", "sips+d2t": "tls"}
#: SRV prefixes per transport (RFC 3263 section 4.1).
_SRV_PREFIX = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}


def _default_choose(total: int) -> int:
    return random.randint(0, total)  # noqa: S311 -- load sharing, not security


@dataclass(frozen=True, slots=True)
class NaptrRecord:
    """A NAPTR record (RFC 3403) as RFC 3263 uses it: ``flags`` ``s``, ``service``
    ``SIP+D2U``..., ``replacement`` the SRV name."""

    order: int
    preference: int
    service: str
    replacement: str
    flags: str = "s"


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """An SRV record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class SipTarget:
    """One place to send a request: transport (``udp``, ``tcp``, ``tls``), IP and port."""

    transport: str
    host: str
    port: int

    @property
    def address(self) -> Address:
        return (self.host, self.port, self.transport)


class RecordSource(Protocol):
    """Where DNS records come from. Names are compared without case or a trailing dot."""

    def naptr(self, name: str) -> Sequence[NaptrRecord]: ...

    def srv(self, name: str) -> Sequence[SrvRecord]: ...

    def addresses(self, name: str) -> Sequence[str]:
        """The A and AAAA records of ``name`` (IPs as text), A first."""
        ...


def _key(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# -- sources ------------------------------------------------------------------------------


@dataclass(slots=True)
class StaticRecords:
    """A fixed table of records (a cluster's nodes, a test, a site without DNS)."""

    naptr_records: dict[str, list[NaptrRecord]] = field(default_factory=dict)
    srv_records: dict[str, list[SrvRecord]] = field(default_factory=dict)
    address_records: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.naptr_records = {_key(k): list(v) for k, v in self.naptr_records.items()}
        self.srv_records = {_key(k): list(v) for k, v in self.srv_records.items()}
        self.address_records = {_key(k): list(v) for k, v in self.address_records.items()}

    def naptr(self, name: str) -> Sequence[NaptrRecord]:
        return self.naptr_records.get(_key(name), [])

    def srv(self, name: str) -> Sequence[SrvRecord]:
        return self.srv_records.get(_key(name), [])

    def addresses(self, name: str) -> Sequence[str]:
        return self.address_records.get(_key(name), [])

    def add_srv(self, name: str, record: SrvRecord) -> None:
        self.srv_records.setdefault(_key(name), []).append(record)

    def add_address(self, name: str, ip: str) -> None:
        found = self.address_records.setdefault(_key(name), [])
        if ip not in found:
            found.append(ip)

    @classmethod
    def for_cluster(
        cls,
        name: str,
        nodes: Iterable[Any],
        *,
        transports: Iterable[str] = ("udp", "tcp"),
    ) -> StaticRecords:
        """The records DNS would hold for a cluster (issue 8 ``cluster:``): for each node
        (``id``, ``sip`` ``host:port``, ``priority``, ``weight``; a mapping or an object
        such as ``ClusterNodeConfig``) an SRV record under ``_sip._udp.<name>`` (and the
        other ``transports``) pointing at ``<id>.<name>``, whose A/AAAA record is the
        node's SIP host. No NAPTR: RFC 3263 4.1 then queries the SRV names directly."""
        table = cls()
        wanted = [t.lower() for t in transports]
        for node in nodes:
            get = node.get if isinstance(node, Mapping) else lambda k, d=None, n=node: getattr(n, k, d)
            node_id = str(get("id"))
            host, _, port = str(get("sip")).rpartition(":")
            host = host.strip("[]")
            target = f"{node_id}.{_key(name)}"
            for transport in wanted:
                record = SrvRecord(int(get("priority", 10)), int(get("weight", 50)), int(port), target)
                table.add_srv(f"{_SRV_PREFIX[transport]}.{name}", record)
            table.add_address(target, host)
        return table


class DnsRecords:
    """Live DNS through dnspython (``pip install dnspython``), with answers cached for their
    TTL (at least ``min_ttl``). A lookup blocks for at most ``lifetime`` seconds on a cache
    miss; warm the cache at start with ``prefetch`` when that matters. A failed lookup is
    an empty answer (and logged): resolution then falls through RFC 3263's steps."""

    def __init__(self, *, lifetime: float = 1.0, min_ttl: float = 5.0, clock: Callable[[], float] = time.monotonic):
        try:
            import dns.resolver  # type: ignore[import-not-found]
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise RuntimeError("live DNS needs dnspython (pip install dnspython)") from exc
        self._resolver = dns.resolver.Resolver()
        self._resolver.lifetime = lifetime
        self.min_ttl = min_ttl
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, list[Any]]] = {}

    def _query(self, name: str, rdtype: str) -> list[Any]:  # pragma: no cover - needs DNS
        key = (_key(name), rdtype)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        import dns.exception  # type: ignore[import-not-found]

        try:
            answer = self._resolver.resolve(key[0], rdtype, raise_on_no_answer=False)
            items = list(answer) if answer.rrset is not None else []
            ttl = answer.rrset.ttl if answer.rrset is not None else self.min_ttl
        except dns.exception.DNSException as exc:
            log.info("DNS %s %s: %s", rdtype, key[0], exc)
            items, ttl = [], self.min_ttl
        self._cache[key] = (now + max(float(ttl), self.min_ttl), items)
        return items

    def naptr(self, name: str) -> Sequence[NaptrRecord]:  # pragma: no cover - needs DNS
        return [
            NaptrRecord(r.order, r.preference, r.service.decode(), str(r.replacement), r.flags.decode())
            for r in self._query(name, "NAPTR")
        ]

    def srv(self, name: str) -> Sequence[SrvRecord]:  # pragma: no cover - needs DNS
        return [SrvRecord(r.priority, r.weight, r.port, str(r.target)) for r in self._query(name, "SRV")]

    def addresses(self, name: str) -> Sequence[str]:  # pragma: no cover - needs DNS
        return [r.address for r in self._query(name, "A")] + [r.address for r in self._query(name, "AAAA")]

    def prefetch(self, names: Iterable[str]) -> None:  # pragma: no cover - needs DNS
        """Look up the SRV names of ``names`` (each transport) and their targets now."""
        for name in names:
            self.naptr(name)
            for prefix in _SRV_PREFIX.values():
                for record in self.srv(f"{prefix}.{name}"):
                    self.addresses(record.target)
            self.addresses(name)


# -- RFC 2782 / RFC 3263 ------------------------------------------------------------------


def order_srv(records: Sequence[SrvRecord], choose: Choose = _default_choose) -> list[SrvRecord]:
    """``records`` in the order to try them (RFC 2782, "Usage rules"): by priority, lower
    first; within one priority, zero-weight records placed first, then repeatedly: the
    running sum of the weights of those left, ``choose(total)`` a number in ``[0, total]``,
    the first record whose running sum is at least that number goes next. A target of
    ``.`` (service decidedly not available) is left out."""
    usable = [r for r in records if _key(r.target) != ""]
    out: list[SrvRecord] = []
    for priority in sorted({r.priority for r in usable}):
        group = [r for r in usable if r.priority == priority]
        group = [r for r in group if r.weight == 0] + [r for r in group if r.weight != 0]
        while group:
            total = sum(r.weight for r in group)
            pick = min(max(choose(total), 0), total)
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    out.append(group.pop(index))
                    break
    return out


def _transport_order(secure: bool, transports: Sequence[str]) -> list[str]:
    if secure:
        return ["tls"] if "tls" in transports else []
    return list(transports)


def locate(
    uri: str | SipUri,
    source: RecordSource,
    *,
    choose: Choose = _default_choose,
    transports: Sequence[str] = ("udp", "tcp", "tls"),
) -> list[SipTarget]:
    """The targets for ``uri`` in the order to try them (RFC 3263 section 4; see the module
    documentation). ``transports``: those the client supports, in its preference order (used
    when NAPTR records do not decide). Empty when nothing resolves; raises ``ValueError``
    for a URI that is not ``sip:``/``sips:``."""
    parsed = uri if isinstance(uri, SipUri) else _parse(uri)
    secure = parsed.scheme == "sips"
    supported = [t.lower() for t in transports]
    host = (parsed.params.get("maddr") or parsed.host).strip("[]")
    numeric = _numeric(host)
    default_port = 5061 if secure else 5060
    explicit = parsed.transport
    if explicit is not None:
        chosen: list[tuple[str, str | None]] = [(explicit if not (secure and explicit == "tcp") else "tls", None)]
    elif numeric or parsed.port is not None:
        chosen = [("tls" if secure else "udp", None)]
    else:
        chosen = _by_naptr(host, secure, supported, source)
        if not chosen:
            chosen = [
                (t, f"{_SRV_PREFIX[t]}.{host}")
                for t in _transport_order(secure, supported)
                if source.srv(f"{_SRV_PREFIX[t]}.{host}")
            ]
        if not chosen:
            chosen = [("tls" if secure else "udp", None)]
    out: list[SipTarget] = []
    for transport, srv_name in chosen:
        port_default = 5061 if transport == "tls" else default_port
        if numeric:
            out.append(SipTarget(transport, host, parsed.port or port_default))
            continue
        if parsed.port is not None:
            out += [SipTarget(transport, ip, parsed.port) for ip in source.addresses(host)]
            continue
        name = srv_name or f"{_SRV_PREFIX.get(transport, '_sip._udp')}.{host}"
        records = order_srv(source.srv(name), choose)
        if records:
            for record in records:
                out += [SipTarget(transport, ip, record.port) for ip in _ips(record.target, source)]
        else:
            out += [SipTarget(transport, ip, port_default) for ip in source.addresses(host)]
    return list(dict.fromkeys(out))


def _ips(name: str, source: RecordSource) -> list[str]:
    name = name.rstrip(".")
    return [name.strip("[]")] if _numeric(name) else list(source.addresses(name))


def _by_naptr(host: str, secure: bool, supported: Sequence[str], source: RecordSource) -> list[tuple[str, str | None]]:
    """RFC 3263 4.1: the NAPTR records of ``host`` for SIP over transports we support,
    by order then preference (``sips``: ``SIPS+D2T`` only)."""
    out: list[tuple[str, str | None]] = []
    for record in sorted(source.naptr(host), key=lambda r: (r.order, r.preference)):
        transport = _NAPTR_SERVICES.get(record.service.lower())
        if transport is None or record.flags.lower() != "s" or transport not in supported:
            continue
        if secure and transport != "tls":
            continue
        out.append((transport, record.replacement.rstrip(".")))
    return out


def _parse(uri: str) -> SipUri:
    text = uri.strip()
    try:
        parsed = parse_name_addr(text).uri if "<" in text else parse_uri(text)
    except SipParseError as exc:
        raise ValueError(f"not a SIP URI: {uri!r} ({exc})") from exc
    if not isinstance(parsed, SipUri):
        raise ValueError(f"not a SIP URI: {uri!r}")
    return parsed


# -- the resolver the elements use ------------------------------------------------------------


class SipResolver:
    """RFC 3263 over ``source`` with failure memory: ``targets(uri, now)`` orders targets
    that failed within ``down_seconds`` (``mark_failed``) after the others, so that once a
    node is found dead the next requests go straight to a live one. ``transports``: those
    this client can send on, in preference order. Calling the resolver gives the first
    target's ``(host, port, transport)`` (or ``None``), the ``Resolver`` shape of
    ``firebox.esrp.element``."""

    def __init__(
        self,
        source: RecordSource,
        *,
        transports: Sequence[str] = ("udp", "tcp", "tls"),
        choose: Choose = _default_choose,
        down_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.transports = tuple(t.lower() for t in transports)
        self.choose = choose
        self.down_seconds = down_seconds
        self.clock = clock
        self._failed: dict[SipTarget, float] = {}

    def targets(self, uri: str | SipUri, now: float | None = None) -> list[SipTarget]:
        """The targets of ``uri``, live ones first; empty for a URI that does not resolve
        (or is not a SIP URI)."""
        try:
            found = locate(uri, self.source, choose=self.choose, transports=self.transports)
        except ValueError:
            return []
        now = self.clock() if now is None else now
        fresh = [t for t in found if not self.is_down(t, now)]
        return fresh + [t for t in found if t not in fresh]

    def is_down(self, target: SipTarget, now: float) -> bool:
        since = self._failed.get(target)
        if since is None:
            return False
        if now - since >= self.down_seconds:
            del self._failed[target]
            return False
        return True

    def mark_failed(self, target: SipTarget | Address, now: float | None = None) -> None:
        """``target`` did not answer (RFC 3263 4.3): try it last for ``down_seconds``."""
        self._failed[_as_target(target)] = self.clock() if now is None else now

    def mark_ok(self, target: SipTarget | Address) -> None:
        self._failed.pop(_as_target(target), None)

    def __call__(self, uri: str) -> Address | None:
        found = self.targets(uri)
        return found[0].address if found else None


def _as_target(target: SipTarget | Address) -> SipTarget:
    if isinstance(target, SipTarget):
        return target
    host, port, transport = target
    return SipTarget(transport.lower(), host, int(port))


# -- RFC 3263 4.3: one request over several targets -----------------------------------------


def first_hop(request: Request) -> str:
    """The URI a request goes to first (RFC 3261 8.1.2): its top ``Route``, else its
    Request-URI."""
    routes = request.headers.get_all("Route")
    if not routes:
        return request.uri
    top = routes[0].split(",")[0].strip()
    try:
        return str(parse_name_addr(top).uri) if "<" in top else top
    except SipParseError:
        return top


def fails_over(status: int | None) -> bool:
    """Whether an outcome sends the request to the next target (RFC 3263 4.3): ``None`` for
    a transport error or a transaction timeout, or a 503 Service Unavailable."""
    return status is None or status == 503


def _new_branch() -> str:
    return f"{MAGIC_COOKIE}-fo-{secrets.token_hex(8)}"


def _rebranch(request: Request, transport: str, branch: str) -> Request:
    """A copy of ``request`` whose top Via has ``branch`` and names ``transport``."""
    headers = request.headers.copy()
    top = headers.pop_first("Via") or ""
    proto, _, rest = top.partition(" ")
    sent_by, *params = rest.split(";")
    kept = [p for p in params if p.split("=", 1)[0].strip().lower() != "branch"]
    proto = f"SIP/2.0/{transport.upper()}" if proto.upper().startswith("SIP/2.0/") else proto
    value = ";".join([f"{proto} {sent_by.strip()}", f"branch={branch}", *kept])
    headers.insert_first("Via", value)
    return Request(request.method, request.uri, headers, request.body, request.version)


@dataclass(slots=True)
class RequestFailover:
    """One request a client sends, over the targets of its first hop (RFC 3263 4.3).
    ``request``/``destination`` are what to send now; ``advance(now)`` marks the current
    target failed in the resolver and moves to the next one with a copy of the request
    that has a fresh Via branch (a new transaction, the same CSeq); ``False`` when no
    target is left (the caller then ends as it would have without failover).

    ``for_request`` falls back to the plain next hop (``fallback``) when there is no
    resolver or nothing resolves, so that behaviour without a resolver is unchanged."""

    request: Request
    targets: list[SipTarget]
    resolver: SipResolver | None = None
    index: int = 0
    branch_factory: Callable[[], str] = _new_branch

    @classmethod
    def for_request(
        cls,
        request: Request,
        resolver: SipResolver | None,
        fallback: Address,
        now: float | None = None,
        *,
        hop: str | None = None,
        branch_factory: Callable[[], str] = _new_branch,
    ) -> RequestFailover:
        """``hop``: the URI to resolve when it is not the request's own first hop (an
        outbound proxy, such as a carrier's ingress)."""
        targets = resolver.targets(hop or first_hop(request), now) if resolver is not None else []
        if not targets:
            return cls(request, [_as_target(fallback)], resolver, branch_factory=branch_factory)
        first = targets[0]
        if first.address != fallback:
            request = _rebranch(request, first.transport, request.branch or branch_factory())
        return cls(request, targets, resolver, branch_factory=branch_factory)

    @property
    def target(self) -> SipTarget:
        return self.targets[self.index]

    @property
    def destination(self) -> Address:
        return self.target.address

    @property
    def has_next(self) -> bool:
        return self.index + 1 < len(self.targets)

    def advance(self, now: float | None = None) -> bool:
        if self.resolver is not None:
            self.resolver.mark_failed(self.target, now)
        if not self.has_next:
            return False
        self.index += 1
        self.request = _rebranch(self.request, self.target.transport, self.branch_factory())
        return True

    def succeeded(self) -> None:
        """The current target answered: it is live again for the resolver."""
        if self.resolver is not None:
            self.resolver.mark_ok(self.target)
