"""The deployment file: one YAML document describing a 911 authority.

It names the authority, its GIS layers (one per service URN), its street centerlines for the
LVF, its PSAPs (SIP URIs, 10-digit business lines, alternates) and its elements with their
listen addresses: ECRF, LIS and page over HTTP; the BCF + ESRP over SIP (``elements.bcf``
names the SIP listen address and transports, ``elements.esrp`` the routing; each needs the
other); the PSAP user agents (``elements.psap_agents``) answering for every PSAP marked
``simulated: true``, with ``busy``/``silent`` faults for failover demos. Later parts of firebox add sections; unknown keys are errors so that a typo
never silently disables something.

Validation errors name the key path *and* the line of the file, e.g.::

    deployment.yaml line 14: psaps[2].business_line: '555-0101' is not a 10-digit NANP number

Relative paths are resolved against the directory of the file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from firebox.cluster.config import ClusterConfig

SERVICE_URN = re.compile(r"^urn:service:[a-z0-9][a-z0-9.\-]*$")
SIP_URI = re.compile(r"^sips?:[^\s@]+@[^\s@]+$|^sips?:[^\s@]+$")
_DIGITS = re.compile(r"\D")


class DeploymentError(ValueError):
    """The deployment file is unreadable or invalid; ``problems`` lists every one found."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(problems))


def _ten_digit(value: str) -> str:
    digits = _DIGITS.sub("", value)
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10 or digits[0] in "01" or digits[3] in "01":
        raise ValueError(f"'{value}' is not a 10-digit NANP number")
    return digits


def _listen(value: object) -> str:
    value = str(value)
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"'{value}' is not HOST:PORT")
    return value


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"'{value}' is not an http:// or https:// URL")
    return value


BusinessLine = Annotated[str, BeforeValidator(str), AfterValidator(_ten_digit)]
Listen = Annotated[str, BeforeValidator(_listen)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Authority(_Model):
    """The 911 authority (a state 911 office): its name, its domain (element ids and
    ``source`` values are built under it), and the state it serves."""

    name: str
    domain: str = Field(pattern=r"^[A-Za-z0-9.\-]+$")
    state: str = Field(min_length=2, max_length=2)


class LayerConfig(_Model):
    """One boundary layer (GeoJSON, GeoPackage or Shapefile) for one service URN."""

    service: str
    path: Path
    layer: str | None = None
    id_attribute: str = "id"
    name_attribute: str = "name"
    uri_attribute: str | None = "uri"
    uri_template: str | None = None

    @field_validator("service")
    @classmethod
    def _urn(cls, v: str) -> str:
        if not SERVICE_URN.match(v):
            raise ValueError(f"'{v}' is not a service URN like urn:service:sos.police")
        return v


class StreetsConfig(_Model):
    """Road centerlines with address ranges (Cambridge's schema), for the LVF."""

    path: Path
    municipality: str | None = None
    state: str | None = None
    town_attribute: str | None = "Town"


class AddressPointsConfig(_Model):
    """Address points (GeoJSON Points with a full address such as "491 Broadway"): where
    one exists it is authoritative for the LVF's validation and geocode."""

    path: Path
    address_attribute: str = "ADDRESS"
    municipality: str | None = None


class GisConfig(_Model):
    layers: list[LayerConfig] = Field(min_length=1)
    streets: list[StreetsConfig] = []
    address_points: list[AddressPointsConfig] = []
    aliases: dict[str, str] = {}
    outline: Path | None = None


class PsapConfig(_Model):
    """A PSAP: where its calls go, its 10-digit business line, and who takes over when it
    cannot (``alternates``, in order; NENA i3 section 4.2 policy routing)."""

    id: str = Field(pattern=r"^[A-Za-z0-9._\-]+$")
    name: str
    uri: str
    business_line: BusinessLine
    alternates: list[str] = []
    towns: list[str] = []
    #: Answered by firebox's own PSAP user agent (``elements.psap_agents``): demos, tests.
    simulated: bool = False

    @field_validator("uri")
    @classmethod
    def _sip(cls, v: str) -> str:
        if not SIP_URI.match(v):
            raise ValueError(f"'{v}' is not a sip: or sips: URI")
        return v


class PeerConfig(_Model):
    """Another LoST server, asked for locations outside this ECRF's own data."""

    uri: HttpUrl
    covers: Path | None = None


class EcrfConfig(_Model):
    listen: Listen = "127.0.0.1:7070"
    ttl_seconds: int = Field(default=3600, ge=0, le=7 * 86400)
    peers: list[PeerConfig] = []


class LisConfig(_Model):
    listen: Listen = "127.0.0.1:7070"
    #: Location URI lifetime; RFC 5985 / NENA i3 bound it to 30 minutes .. 24 hours.
    uri_lifetime_seconds: int = Field(default=1800, ge=1800, le=86400)


class WebConfig(_Model):
    listen: Listen = "127.0.0.1:7070"


SipTransport = Literal["udp", "tcp"]
AgentMode = Literal["answer", "busy", "silent"]


class BcfConfig(_Model):
    """The BCF: the SIP ingress carriers send 911 calls to (NENA-STA-010.3 section 4.1).
    It and the ESRP run as one SIP element (``firebox.esrp.element``), listening here."""

    listen: Listen = "127.0.0.1:5070"
    transports: list[SipTransport] = Field(default=["udp", "tcp"], min_length=1)
    #: Where its HTTP interfaces are served (``POST /BadActors``, NENA-STA-010.3 4.1).
    http_listen: Listen = "127.0.0.1:7070"
    #: Its rules from the Policy Store (else the built-in defaults).
    policy: PolicyRefConfig | None = None
    #: Host put in Via and Record-Route when ``listen`` is a wildcard address.
    advertised_host: str | None = None
    #: Which carrier each source network is (CIDR: name); calls from elsewhere are "unknown".
    sources: dict[str, str] = {"127.0.0.0/8": "local"}
    rate_per_second: float = Field(default=50.0, gt=0)
    burst: float = Field(default=100.0, ge=1)

    @field_validator("sources")
    @classmethod
    def _cidrs(cls, v: dict[str, str]) -> dict[str, str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"'{cidr}' is not a network like 192.0.2.0/24") from None
        return v


class OverloadConfig(_Model):
    """The ESRP's places (``firebox.sip.overload.OverloadGuard``): calls routed at once,
    calls that may wait, extra waiting places for emergency calls; beyond, 503 with
    Retry-After and a callback record."""

    capacity: int = Field(default=500, ge=1)
    queue_limit: int = Field(default=1000, ge=0)
    emergency_reserve: int | None = Field(default=None, ge=0)
    retry_after_seconds: int = Field(default=5, ge=0, le=3600)


class PolicyStoreConfig(_Model):
    """A Policy Store this node runs (NENA-STA-010.3 section 4.9), at ``path`` under
    ``listen`` (its base URL is ``http://LISTEN/PATH``): ``store`` is a SQLite file
    (relative to this file) or a ``sqlite:///``/``postgresql://`` URL; ``trust``: CA
    certificates (PEM) signers' x5c chains must lead to (none: the signature is checked with
    the leaf's key); ``allow_unsigned`` accepts ``alg: none`` policies (demos only)."""

    listen: Listen = "127.0.0.1:7070"
    path: str = Field(default="/policy", pattern=r"^/[A-Za-z0-9._\-/]*[A-Za-z0-9._\-]$")
    store: str = "var/policies.db"
    trust: list[Path] = []
    allow_unsigned: bool = False


class PolicyRefConfig(_Model):
    """An element's rules from a Policy Store: the policy ``policy_id`` at the store's base
    ``url``, polled every ``interval_seconds``; each new version checked (signature, owner,
    rules) before it replaces the rules in use, and the last good rules kept otherwise."""

    url: HttpUrl
    policy_id: str = Field(pattern=r"^[A-Za-z0-9._\-:]+$")
    owner: str | None = None
    interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    trust: list[Path] = []
    allow_unsigned: bool = False


class LoggingServiceConfig(_Model):
    """A Logging Service this node runs (NENA-STA-010.3 section 4.12): ``store`` is a
    SQLite file (relative to this file) or a ``sqlite:///``/``postgresql://`` URL; served at
    ``path`` under ``listen`` (its base URL is ``http://LISTEN`` + ``path``). ``elements.logging``
    is one such service or a list of them (elements then log to every one)."""

    listen: Listen = "127.0.0.1:7070"
    path: str = Field(default="/", pattern=r"^/([A-Za-z0-9._\-/]*[A-Za-z0-9._\-])?$")
    store: str = "var/logging.db"
    allow_unsigned: bool = True

    @property
    def url(self) -> str:
        """The service's base URL (events go to ``url + "/LogEvents"``)."""
        return f"http://{self.listen}{self.path.rstrip('/')}"


# One service or a list: judged as what it is, so errors name only that form's problems.
LoggingServices = Annotated[
    Annotated[LoggingServiceConfig, Tag("LoggingServiceConfig")]
    | Annotated[list[LoggingServiceConfig], Tag("list[LoggingServiceConfig]")],
    Discriminator(lambda v: "list[LoggingServiceConfig]" if isinstance(v, list) else "LoggingServiceConfig"),
]


class LogEventsConfig(_Model):
    """Where this node's elements send their i3 log events: each Logging Service in
    ``services`` (none: this node's own ``elements.logging``), through the durable local
    ``spool`` while none answers. ``signing_key``: a PEM Ed25519/Ed448 private key (with
    ``certificate`` for the x5c chain); none: unsigned (``alg: none``)."""

    services: list[HttpUrl] = []
    spool: Path = Path("var/log-spool")
    signing_key: Path | None = None
    certificate: Path | None = None
    #: Log every SIP message of a call (CallSignalingMessageLogEvent), not only its story.
    signaling: bool = True


class EsrpConfig(_Model):
    """The ESRP behind the BCF (NENA-STA-010.3 section 4.2): LoST to the ECRF (this node's,
    in-process, unless ``lost`` names a LoST server), HELD dereference of location URIs,
    policy routing along each PSAP's alternates, then its business line through the PSTN
    gateway."""

    pstn_gateway: str = Field(default="pstn-gw.invalid", pattern=r"^[A-Za-z0-9.\-]+(:\d{1,5})?$")
    default_psap: str | None = None
    lost: HttpUrl | None = None
    held_timeout_seconds: float = Field(default=1.0, gt=0, le=10)
    lost_timeout_seconds: float = Field(default=1.0, gt=0, le=10)
    #: A destination that sends no provisional answer within this time is failed over
    #: (the issue's 500 ms: well under Timer B's 32 s, above a PSAP's usual 100 Trying).
    provisional_timeout_seconds: float = Field(default=0.5, gt=0, le=32)
    #: Admission control (RFC 7339); none: no limit.
    overload: OverloadConfig | None = None
    #: Where calls the BCF diverts go first (an announcement and callback service).
    divert_to: str | None = None
    #: Follow each PSAP queue's emergency-QueueState (RFC 6665 SUBSCRIBE).
    subscribe_queue_state: bool = True
    #: Its policy routing rules from the Policy Store (else none: ECRF answer and chains).
    policy: PolicyRefConfig | None = None
    state_expires_seconds: int = Field(default=600, ge=60, le=86400)

    @field_validator("divert_to")
    @classmethod
    def _divert_sip(cls, v: str | None) -> str | None:
        if v is not None and not SIP_URI.match(v):
            raise ValueError(f"'{v}' is not a sip: or sips: URI")
        return v


class PsapAgentsConfig(_Model):
    """firebox's own SIP user agent answering for every PSAP marked ``simulated`` (and for
    their business lines, as the PSTN gateway): ``firebox.psap.ua``."""

    listen: Listen = "127.0.0.1:0"
    ring_seconds: float = Field(default=0.2, ge=0, le=60)
    #: The PSAP hangs up (BYE) this long after answering; none: the caller hangs up.
    hold_seconds: float | None = Field(default=None, gt=0)
    #: Fault demos: a PSAP id -> ``busy`` (503) or ``silent`` (never answers).
    faults: dict[str, AgentMode] = {}
    #: The agents run elsewhere (one process answering for several nodes of a cluster, or a
    #: PSAP test bed): this node sends the simulated PSAPs' calls there and runs none itself.
    remote: Listen | None = None


class PositionConfig(_Model):
    """A call-taker position. With ``auto_answer_seconds`` it is a simulated call-taker:
    signed in at start, it answers what is offered to it after that delay and releases
    after ``talk_seconds`` (demo load); without, it waits for a person at the console."""

    id: str = Field(pattern=r"^[A-Za-z0-9._\-]+$")
    auto_answer_seconds: float | None = Field(default=None, ge=0, le=600)
    talk_seconds: float = Field(default=30.0, gt=0, le=86400)


class CallHandlingPsapConfig(_Model):
    """One PSAP answered by the call handling element (``firebox.psap.callhandling``): its
    positions, how a waiting call is offered, and its own overflow rule (a call beyond
    ``max_queue`` waiting, or still ringing after ``overflow_after_seconds``, is answered
    486/503 so that the ESRP fails over to the alternate)."""

    positions: list[PositionConfig] = Field(min_length=1)
    strategy: Literal["ring-all", "longest-idle", "round-robin"] = "longest-idle"
    max_queue: int = Field(default=20, ge=1, le=10000)
    overflow_after_seconds: float | None = Field(default=None, gt=0, le=600)
    ring_no_answer_seconds: float = Field(default=20.0, gt=0, le=600)


class CallHandlingConfig(_Model):
    """The PSAP call handling element (ACD, positions, text, transfer): it answers every PSAP
    named in ``psaps`` (PSAP id: its call handling), on the SIP address ``listen``; each
    answered call's RTP goes to an ``echo`` or is recorded (``record`` into ``record_dir``)."""

    listen: Listen = "127.0.0.1:0"
    media: Literal["echo", "record"] = "echo"
    record_dir: Path | None = None
    psaps: dict[str, CallHandlingPsapConfig] = Field(min_length=1)


class BoxFieldsConfig(_Model):
    """The box registry's attribute names (Boston's by default)."""

    number: str = "BOX"
    location: str = "LOCATION"
    district: str | None = "DISTRICT"
    assignment: str | None = "RESPONDARE"


class BoxMqttConfig(_Model):
    """Modern fire alarm boxes over MQTT (``firebox.boxes.mqtt``): the broker, the topic
    filter the boxes publish under, and an optional HMAC key file their messages are signed
    with (an unsigned or badly signed alarm still dispatches, marked unverified)."""

    url: str = Field(default="mqtt://127.0.0.1:1883", pattern=r"^mqtt://")
    topic: str = Field(default="firebox/boxes/#", min_length=1)
    client_id: str | None = None
    hmac_key_file: Path | None = None


class CadConfig(_Model):
    """The CAD (``firebox.cad``): incidents from calls, fire alarm boxes and walk-ins; units
    and dispatch. ``store`` a SQLite file (relative to this file); ``boxes`` the box
    registry (GeoJSON Points); ``stations`` fire and police stations (GeoJSON Points with
    ``id``, ``kind`` fire/police, ``name``) where the fleet is placed on first start. Its
    JSON API (``/cad/...``) and the modern boxes' input (``/boxes/...``) are served on
    ``listen``; ``box_pulses_listen`` is the telegraph interface (UDP, one datagram per
    pulse: ``firebox.boxes.receiver``), working while the SIP core is down."""

    listen: Listen = "127.0.0.1:7070"
    fqdn: str | None = None  # default cad.<authority domain>
    store: str = "var/cad.db"
    boxes: Path | None = None
    box_fields: BoxFieldsConfig = BoxFieldsConfig()
    stations: Path | None = None
    box_pulses_listen: Listen | None = None
    box_period_seconds: float = Field(default=0.3, gt=0, le=5)
    box_mqtt: BoxMqttConfig | None = None


class ConsoleUserConfig(_Model):
    """One person who may sign in to the console (``firebox console hash-password`` makes
    the ``password_hash``)."""

    name: str = Field(min_length=1)
    role: Literal["call-taker", "dispatcher", "supervisor", "administrator"]
    psap: str
    password_hash: str = Field(pattern=r"^scrypt\$")
    position: str | None = None
    display_name: str | None = None


class ConsoleConfig(_Model):
    """The call-takers' and dispatchers' console (``firebox.console``), at ``path`` under
    ``listen``; ``audit`` its durable audit trail (SQLite, relative to this file);
    ``session_secret_file`` the key signing session cookies (none: a random key per start,
    so a restart signs everyone out). Needs ``elements.cad``."""

    listen: Listen = "127.0.0.1:7070"
    path: str = Field(default="/console", pattern=r"^/[A-Za-z0-9._\-/]*[A-Za-z0-9._\-]$")
    users: list[ConsoleUserConfig] = Field(min_length=1)
    audit: str = "var/console-audit.db"
    session_secret_file: Path | None = None
    cad_poll_seconds: float = Field(default=2.0, gt=0, le=60)


class MonitorConfig(_Model):
    """The monitor (``firebox.monitor``): it watches every call's i3 log events, places
    test calls (``urn:service:test.sos``) through the BCF to every PSAP every
    ``probe_period_seconds`` (0: none), turns both into outage states, and tells
    ``webhooks`` and ``emails`` (through the SMTP relay ``smtp``) at once. Its views
    (``/monitor/outages``, ``/monitor/figures``, ``/metrics``) are served on ``listen``;
    ``regions``: PSAP id -> region, for regional outages."""

    listen: Listen = "127.0.0.1:7070"
    probe_period_seconds: float = Field(default=30.0, ge=0, le=3600)
    webhooks: list[HttpUrl] = []
    emails: list[str] = []
    smtp: Listen = "127.0.0.1:25"
    regions: dict[str, str] = {}


class ChangesConfig(_Model):
    """Safe rule changes (``firebox.change``): every BCF rule set and routing policy change
    submitted, checked against the 911 invariant, staged (shadow, canary, full) and rolled
    back automatically when probes fail or answers drop; served at ``/changes`` on
    ``listen`` (``firebox change ...`` talks to it), kept in ``store``."""

    listen: Listen = "127.0.0.1:7070"
    store: str = "changes.db"
    guard_period_seconds: float = Field(default=5.0, gt=0, le=600)


class StatusPageConfig(_Model):
    """The public 911 status page (``/status/`` on ``listen``): each town's 911 status from
    the monitor's outages, and what to do instead. ``business_lines``: a YAML file of extra
    agency lines (each PSAP's own line is always there); every line's PSTN gateway route is
    checked with SIP OPTIONS every ``check_period_seconds`` (0: not checked)."""

    listen: Listen = "127.0.0.1:7070"
    title: str | None = None
    business_lines: Path | None = None
    check_period_seconds: float = Field(default=60.0, ge=0, le=3600)


class AlertingConfig(_Model):
    """Public alerting (``firebox.alerting``, OASIS CAP 1.2 with the IPAWS profile): an
    outage that affects the public is drafted as a CAP alert in English and Spanish within
    the detector's step; ``auto_send_statewide`` sends a statewide one (and its Updates and
    Cancel) at once, others wait for approval (``two_person``: by two people). Sent
    messages go to ``webhooks``, to the IPAWS-OPEN gateway's spool directory
    ``ipaws_spool`` and to the Atom feed ``/alerts/feed`` on ``listen``; signed (XML-DSig)
    with ``signing_key`` / ``certificate`` (PEM) when given; every one is logged."""

    listen: Listen = "127.0.0.1:7070"
    sender: str | None = None  # default alerts@<authority domain>
    auto_send_statewide: bool = True
    two_person: bool = False
    webhooks: list[HttpUrl] = []
    ipaws_spool: Path | None = None
    signing_key: Path | None = None
    certificate: Path | None = None
    state_same: str | None = Field(default=None, pattern=r"^\d{6}$")


class Elements(_Model):
    ecrf: EcrfConfig | None = EcrfConfig()
    lis: LisConfig | None = LisConfig()
    web: WebConfig | None = WebConfig()
    bcf: BcfConfig | None = None
    esrp: EsrpConfig | None = None
    psap_agents: PsapAgentsConfig | None = None
    call_handling: CallHandlingConfig | None = None
    logging: LoggingServices | None = None
    log_events: LogEventsConfig | None = None
    policy_store: PolicyStoreConfig | None = None
    cad: CadConfig | None = None
    console: ConsoleConfig | None = None
    monitor: MonitorConfig | None = None
    changes: ChangesConfig | None = None
    status_page: StatusPageConfig | None = None
    alerting: AlertingConfig | None = None

    def logging_services(self) -> list[LoggingServiceConfig]:
        """The Logging Services this node runs (``logging``: one, a list, or none)."""
        if self.logging is None:
            return []
        return [self.logging] if isinstance(self.logging, LoggingServiceConfig) else list(self.logging)


class Deployment(_Model):
    authority: Authority
    gis: GisConfig
    psaps: list[PsapConfig] = []
    elements: Elements = Elements()
    #: Several nodes serving this deployment (issue 8): shared PostgreSQL and NATS, the
    #: cluster's SIP name; absent: one node, embedded stores.
    cluster: ClusterConfig | None = None
    #: Where the file was read from (set by ``load_deployment``); not a YAML key.
    source: Path | None = Field(default=None, exclude=True)

    def cross_check(self) -> list[tuple[tuple[Any, ...], str]]:
        """Problems that span keys (duplicate ids, dangling references), each with the key
        path it belongs to."""
        problems: list[tuple[tuple[Any, ...], str]] = []
        services: set[str] = set()
        for n, layer in enumerate(self.gis.layers):
            if layer.service in services:
                problems.append((("gis", "layers", n, "service"), f"a second layer for {layer.service}"))
            services.add(layer.service)
        known: set[str] = set()
        for n, psap in enumerate(self.psaps):
            if psap.id in known:
                problems.append((("psaps", n, "id"), f"duplicate PSAP id '{psap.id}'"))
            known.add(psap.id)
        for n, psap in enumerate(self.psaps):
            for k, alt in enumerate(psap.alternates):
                if alt == psap.id:
                    problems.append((("psaps", n, "alternates", k), "a PSAP cannot be its own alternate"))
                elif alt not in known:
                    problems.append((("psaps", n, "alternates", k), f"unknown PSAP id '{alt}'"))
        problems += self._check_sip(known)
        problems += self._check_console(known)
        if self.elements.monitor is not None:
            if self.elements.bcf is None:
                problems.append((("elements", "monitor"), "the monitor watches calls through the BCF: add elements.bcf"))
            for psap_id in self.elements.monitor.regions:
                if psap_id not in known:
                    problems.append((("elements", "monitor", "regions", psap_id), f"unknown PSAP id '{psap_id}'"))
        if self.elements.changes is not None and self.elements.bcf is None:
            problems.append((("elements", "changes"), "rule changes are installed into the BCF and ESRP: add elements.bcf"))
        if self.elements.alerting is not None and self.elements.monitor is None:
            problems.append((("elements", "alerting"), "alerts are drafted from the monitor's outages: add elements.monitor"))
        if self.elements.alerting is not None and (self.elements.alerting.signing_key is None) != (self.elements.alerting.certificate is None):
            problems.append((("elements", "alerting"), "signing needs both signing_key and certificate"))
        if self.elements.status_page is not None and self.elements.monitor is None:
            problems.append((("elements", "status_page"), "the status page shows the monitor's outages: add elements.monitor"))
        return problems

    def _check_console(self, known: set[str]) -> list[tuple[tuple[Any, ...], str]]:
        cfg = self.elements.console
        problems: list[tuple[tuple[Any, ...], str]] = []
        if cfg is None:
            return problems
        where = ("elements", "console")
        if self.elements.cad is None:
            problems.append((where, "the console needs elements.cad (incidents and units)"))
        positions = {
            p.id for ch in ([self.elements.call_handling] if self.elements.call_handling else [])
            for psap in ch.psaps.values() for p in psap.positions
        }  # fmt: skip
        names: set[str] = set()
        for n, user in enumerate(cfg.users):
            if user.name in names:
                problems.append(((*where, "users", n, "name"), f"duplicate user '{user.name}'"))
            names.add(user.name)
            if user.psap not in known:
                problems.append(((*where, "users", n, "psap"), f"unknown PSAP id '{user.psap}'"))
            if user.position is not None and user.position not in positions:
                problems.append(((*where, "users", n, "position"),
                                 f"unknown position '{user.position}' (not in elements.call_handling)"))  # fmt: skip
        return problems

    def _check_sip(self, known: set[str]) -> list[tuple[tuple[Any, ...], str]]:
        els = self.elements
        problems: list[tuple[tuple[Any, ...], str]] = []
        if els.esrp is not None and els.bcf is None:
            problems.append((("elements", "esrp"), "the ESRP needs elements.bcf, its SIP ingress"))
        if els.bcf is not None and els.esrp is None:
            problems.append((("elements", "bcf"), "the BCF hands calls to an ESRP: add elements.esrp"))
        if els.esrp is not None:
            if els.esrp.lost is None and els.ecrf is None:
                problems.append((("elements", "esrp"), "no ECRF to ask: add elements.ecrf or elements.esrp.lost"))
            if els.esrp.default_psap is not None and els.esrp.default_psap not in known:
                problems.append((("elements", "esrp", "default_psap"), f"unknown PSAP id '{els.esrp.default_psap}'"))
            if not self.psaps:
                problems.append((("elements", "esrp"), "no PSAPs to route calls to"))
        logging_at = {"store": set(), "url": set()}
        for n, svc in enumerate(els.logging_services()):
            where = ("elements", "logging", n) if isinstance(els.logging, list) else ("elements", "logging")
            for key, value in (("url", svc.url), ("store", svc.store)):
                if value in logging_at[key]:
                    what = f"at {value}" if key == "url" else f"with store {value}"
                    problems.append(((*where, "path" if key == "url" else key), f"a second Logging Service {what}"))
                logging_at[key].add(value)
        if els.log_events is not None and not els.log_events.services and not els.logging_services():
            problems.append((("elements", "log_events", "services"),
                             "no Logging Service to send to: list services or add elements.logging"))  # fmt: skip
        if els.log_events is not None and els.log_events.certificate is not None and els.log_events.signing_key is None:
            problems.append((("elements", "log_events", "certificate"), "a certificate needs its signing_key"))
        simulated = {p.id for p in self.psaps if p.simulated}
        if els.psap_agents is None:
            for n, psap in enumerate(self.psaps):
                if psap.simulated:
                    problems.append((("psaps", n, "simulated"), "a simulated PSAP needs elements.psap_agents"))
        else:
            if not simulated and els.call_handling is None:
                # (With call handling, the agents still answer the PSAPs' business lines.)
                problems.append((("elements", "psap_agents"), "no PSAP is marked simulated: true"))
            for psap_id in els.psap_agents.faults:
                if psap_id not in simulated:
                    what = "not a simulated PSAP" if psap_id in known else "unknown PSAP id"
                    problems.append((("elements", "psap_agents", "faults", psap_id), f"{what} '{psap_id}'"))
        problems += self._check_call_handling(known, simulated)
        return problems

    def _check_call_handling(self, known: set[str], simulated: set[str]) -> list[tuple[tuple[Any, ...], str]]:
        cfg = self.elements.call_handling
        problems: list[tuple[tuple[Any, ...], str]] = []
        if cfg is None:
            return problems
        where = ("elements", "call_handling")
        if cfg.media == "record" and cfg.record_dir is None:
            problems.append(((*where, "record_dir"), "media: record needs a record_dir"))
        positions: set[str] = set()
        for psap_id, psap in cfg.psaps.items():
            if psap_id not in known:
                problems.append(((*where, "psaps", psap_id), f"unknown PSAP id '{psap_id}'"))
            elif psap_id in simulated:
                problems.append(((*where, "psaps", psap_id),
                                 f"PSAP '{psap_id}' is also simulated: true (answered by the PSAP agents)"))  # fmt: skip
            for n, position in enumerate(psap.positions):
                if position.id in positions:
                    problems.append(((*where, "psaps", psap_id, "positions", n, "id"), f"duplicate position id '{position.id}'"))
                positions.add(position.id)
        return problems

    def psap(self, psap_id: str) -> PsapConfig | None:
        return next((p for p in self.psaps if p.id == psap_id), None)

    def resolve(self, path: Path) -> Path:
        """``path`` relative to the deployment file's directory."""
        if path.is_absolute() or self.source is None:
            return path
        return (self.source.parent / path).resolve()


# --- line numbers ---------------------------------------------------------------------


def _line_map(node: yaml.Node, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], int]]:
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value
            yield path + (k,), key.start_mark.line + 1
            for sub, line in _line_map(value, path + (k,)):
                if sub != path + (k,):
                    yield sub, line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _line_map(item, path + (i,))


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_for(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    # The deepest key present in the file (a missing key points at its parent).
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def parse_deployment(text: str, source: str = "deployment.yaml", base: Path | None = None) -> Deployment:
    """Validate YAML text; raise ``DeploymentError`` listing every problem with its line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DeploymentError(source, [f"{source}{where}: not valid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise DeploymentError(source, [f"{source}: expected a mapping at the top level"])
    lines = dict(_line_map(node)) if node is not None else {}
    try:
        dep = Deployment.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            # Union members (``elements.logging``: one or a list) add their type to the path.
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (
                p.startswith(("function-", "list[")) or p.endswith("Config"))))  # fmt: skip
            line = _line_for(lines, loc)
            where = f" line {line}" if line else ""
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{source}{where}: {_format_loc(loc)}: {msg}")
        raise DeploymentError(source, problems) from None
    cross = dep.cross_check()
    if cross:
        raise DeploymentError(
            source,
            [f"{source} line {_line_for(lines, loc) or 1}: {_format_loc(loc)}: {msg}" for loc, msg in cross],
        )
    if base is not None:
        dep = dep.model_copy(update={"source": base})
    return dep


def load_deployment(path: str | Path) -> Deployment:
    """Read and validate a deployment file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeploymentError(str(p), [f"{p}: cannot read: {exc.strerror}"]) from None
    return parse_deployment(text, source=str(p), base=p.resolve())


def dump_deployment(dep: Deployment) -> str:
    """YAML text for ``dep`` (paths as written, defaults included)."""
    data = dep.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
