"""Sans-I/O Location Information Server (NENA i3 LIS; HELD, RFC 5985; dereference, RFC 6753).

The LIS holds the location of each Device it knows, keyed by an identity: a URI such as
``tel:+16175551212`` (RFC 6155 ``<uri>``) or an IP address (RFC 6155 ``<ip>``, or the source
address of the request when the request names no Device, as RFC 5985 does by default). It answers a
``LocationRequest``:

* by value (RFC 5985 section 6.6): a PIDF-LO (RFC 4119, RFC 5491) holding the geodetic
  and/or civic location asked for by ``locationType`` (section 6.2). ``any`` gives every
  form held. When a form asked for is not held, ``exact`` decides: an error
  ``cannotProvideLiType`` when true, the forms that are held when false;
* by reference (section 6.5), when ``locationURI`` is asked for: a ``locationUriSet`` with
  one URI ``{base_url}/held/loc/{token}``, the token unguessable (possession model of
  RFC 5808 and RFC 6753), valid for ``uri_lifetime`` (NENA i3: 30 minutes to 24 hours);
* ``dereference`` of such a URI (RFC 6753) gives the Device's *current* location by value;
  an unknown or expired URI is ``locationUnknown`` saying which.

Nothing here reads a clock or opens a socket: every operation takes ``now``. Tokens come
from ``secrets`` unless a ``token_factory`` is given. Memory is bounded: URIs are pruned once
expired for one more lifetime (kept that long only so that a late dereference can be told
"expired" rather than "unknown"), and at most ``max_uris`` live at once (the one closest to
expiry is dropped first).
"""

from __future__ import annotations

import heapq
import ipaddress
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from firebox.held.codec import (
    LOCATION_TYPES,
    HeldError,
    HeldErrorCode,
    LocationRequest,
    LocationResponse,
    xml_safe,
)
from firebox.location.civic import CivicAddress
from firebox.location.pidf import ElementKind, PidfLocation, Presence
from firebox.location.shapes import ArcBand, Circle, Ellipse, Point, Polygon, Shape

#: NENA i3 bounds on the lifetime of a location URI.
MIN_URI_LIFETIME = timedelta(minutes=30)
MAX_URI_LIFETIME = timedelta(hours=24)
#: Path of location URIs under the base URL.
LOCATION_PATH = "/held/loc/"

_SHAPE_TYPES = (Point, Circle, Ellipse, ArcBand, Polygon)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.DOTALL)
_TEL_SEPARATORS = re.compile(r"[-.() ]")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def normalize_identity(identity: str) -> str:
    """The key a Device is stored under: an IP address in canonical form (an IPv4-mapped
    IPv6 address as IPv4), a ``tel:`` URI without visual separators (RFC 3966),
    any other URI with a lower-case scheme. Raises ``ValueError`` for an empty identity."""
    value = identity.strip()
    if not value:
        raise ValueError("a device identity must not be empty")
    try:
        addr = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        pass
    else:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return str(addr)
    m = _SCHEME.match(value)
    if m is None:
        return value
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme == "tel":
        number, sep, params = rest.partition(";")
        rest = _TEL_SEPARATORS.sub("", number) + sep + params
    return f"{scheme}:{rest}"


def _entity(identity: str) -> str:
    """The presentity of a Device's PIDF-LO (RFC 3863 section 4.1): its URI, or a
    ``pres:`` URI naming its address."""
    try:
        ipaddress.ip_address(identity)
    except ValueError:
        return identity if _SCHEME.match(identity) else f"pres:{identity}"
    return f"pres:device@[{identity}]" if ":" in identity else f"pres:device@{identity}"


@dataclass(slots=True)
class DeviceLocation:
    """What the LIS knows of one Device."""

    identity: str
    shape: Shape | None = None
    civic: CivicAddress | None = None
    method: str = "GPS"
    updated: datetime | None = None


@dataclass(slots=True)
class _Reference:
    identity: str
    expires: datetime


def _aware(now: datetime, what: str) -> None:
    if now.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware")


class Lis:
    """The LIS core. ``base_url`` is where its HTTP adapter is reachable (location URIs are
    built from it); ``uri_lifetime`` must lie in NENA's 30 min..24 h (``ValueError``
    otherwise); ``retention`` sets the PIDF-LO ``retention-expiry`` (RFC 4119 section 2.2.2).
    """

    def __init__(
        self,
        base_url: str,
        uri_lifetime: timedelta = MIN_URI_LIFETIME,
        *,
        retention: timedelta = timedelta(hours=24),
        max_uris: int = 100_000,
        token_factory: Callable[[], str] | None = None,
    ):
        if not base_url.strip():
            raise ValueError("base_url must not be empty")
        if not MIN_URI_LIFETIME <= uri_lifetime <= MAX_URI_LIFETIME:
            raise ValueError(
                f"uri_lifetime {uri_lifetime} is outside the NENA i3 range "
                f"{MIN_URI_LIFETIME}..{MAX_URI_LIFETIME}"
            )
        if max_uris < 1:
            raise ValueError("max_uris must be at least 1")
        self.base_url = base_url.strip().rstrip("/")
        self.uri_lifetime = uri_lifetime
        self.retention = retention
        self.max_uris = max_uris
        self._token = token_factory or (lambda: secrets.token_urlsafe(24))
        self._devices: dict[str, DeviceLocation] = {}
        self._refs: dict[str, _Reference] = {}
        self._expiry_heap: list[tuple[datetime, str]] = []

    # --- the location store ---------------------------------------------------------------

    def set_location(
        self,
        identity: str,
        location: Shape | CivicAddress | tuple[Shape, CivicAddress],
        method: str = "GPS",
        now: datetime | None = None,
        *,
        replace: bool = False,
    ) -> DeviceLocation:
        """Record where ``identity`` is. ``location`` is a shape, a civic address, or both as
        ``(shape, civic)``; a form not given keeps its previous value unless ``replace``.
        ``now`` is when the location was determined (the PIDF-LO timestamp); when None the
        time of each answer is used."""
        if now is not None:
            _aware(now, "now")
        if not method or not method.strip():
            raise ValueError("method must name how the location was determined (RFC 4119 section 2.2.3)")
        shape: Shape | None = None
        civic: CivicAddress | None = None
        items = location if isinstance(location, tuple) else (location,)
        for item in items:
            if isinstance(item, _SHAPE_TYPES):
                shape = item
            elif isinstance(item, CivicAddress):
                if not item.present():
                    raise ValueError("the civic address is empty")
                civic = item
            else:
                raise TypeError(f"not a shape or civic address: {type(item).__name__}")
        if shape is None and civic is None:
            raise ValueError("no location given")
        key = normalize_identity(identity)
        record = self._devices.get(key)
        if record is None or replace:
            record = DeviceLocation(identity=key)
            self._devices[key] = record
        if shape is not None:
            record.shape = shape
        if civic is not None:
            record.civic = civic
        record.method = method.strip()
        record.updated = now
        return record

    def forget(self, identity: str) -> bool:
        """Drop a Device; its URIs then dereference to ``locationUnknown``."""
        return self._devices.pop(normalize_identity(identity), None) is not None

    def location_of(self, identity: str) -> DeviceLocation | None:
        return self._devices.get(normalize_identity(identity))

    @property
    def uri_count(self) -> int:
        """Location URIs held (live, or expired less than a lifetime ago)."""
        return len(self._refs)

    # --- HELD -------------------------------------------------------------------------------

    def handle(
        self, request: LocationRequest, now: datetime, source_ip: str | None = None
    ) -> LocationResponse | HeldError:
        """Answer a HELD ``locationRequest`` (RFC 5985 section 5.1). The Device is the one
        the request names (RFC 6155: ``uri``, then ``ip``), else ``source_ip``."""
        _aware(now, "now")
        self._prune(now)
        types = self._types(request)
        if isinstance(types, HeldError):
            return types
        candidates = [c for c in (request.device_uri, request.device_ip) if c]
        candidates += [v for name, v in request.device_ids if name in ("uri", "ip") and v]
        if not candidates and request.has_device:
            # RFC 6155 identifiers this LIS does not key on (mac, nai, imsi...):
            # answering with the requester's own location would be wrong.
            kinds = ", ".join(sorted({name for name, _ in request.device_ids}))
            return HeldError(
                HeldErrorCode.LOCATION_UNKNOWN,
                xml_safe(f"this LIS locates devices by uri or ip, not by {kinds[:80]}"),
            )
        if not candidates:
            if not source_ip:
                return HeldError(
                    HeldErrorCode.LOCATION_UNKNOWN,
                    "the request names no device and its source address is unknown",
                )
            candidates = [source_ip]
        record = None
        for candidate in candidates:
            try:
                record = self._devices.get(normalize_identity(candidate))
            except ValueError:
                record = None
            if record is not None:
                break
        if record is None:
            named = " or ".join(f"'{c[:80]}'" for c in candidates)
            return HeldError(
                HeldErrorCode.LOCATION_UNKNOWN, xml_safe(f"no location is known for device {named}")
            )
        want_uri = "locationURI" in types
        value_types = [t for t in types if t != "locationURI"]
        presence = None
        if value_types or not want_uri:
            presence = self._presence(record, value_types or ["any"], request.exact, now)
            if isinstance(presence, HeldError):
                return presence
        if not want_uri:
            return LocationResponse(presence=presence)
        token = self._mint(record.identity, now)
        return LocationResponse(
            presence=presence, location_uris=[self.uri_for(token)], expires=now + self.uri_lifetime
        )

    def dereference(
        self, token_or_uri: str, now: datetime, request: LocationRequest | None = None
    ) -> LocationResponse | HeldError:
        """Dereference a location URI (RFC 6753): the current location of its Device by
        value. ``request`` is the HELD request POSTed to the URI, if any (its location types
        apply; ``locationURI`` and device identifiers in it are ignored)."""
        _aware(now, "now")
        token = self.token_of(token_or_uri)
        ref = self._refs.get(token) if token is not None else None
        if ref is None:
            self._prune(now)
            return HeldError(
                HeldErrorCode.LOCATION_UNKNOWN, "unknown location URI: it was never issued by this LIS"
            )
        if now >= ref.expires:
            self._prune(now)
            return HeldError(
                HeldErrorCode.LOCATION_UNKNOWN,
                f"location URI expired at {ref.expires.isoformat()}; request a new one",
            )
        self._prune(now)
        record = self._devices.get(ref.identity)
        if record is None:
            return HeldError(
                HeldErrorCode.LOCATION_UNKNOWN, "no location is currently known for the device of this URI"
            )
        req = request or LocationRequest()
        types = self._types(req)
        if isinstance(types, HeldError):
            return types
        value_types = [t for t in types if t != "locationURI"] or ["any"]
        presence = self._presence(record, value_types, req.exact, now)
        if isinstance(presence, HeldError):
            return presence
        return LocationResponse(presence=presence)

    def uri_for(self, token: str) -> str:
        return f"{self.base_url}{LOCATION_PATH}{token}"

    @staticmethod
    def token_of(token_or_uri: str) -> str | None:
        """The token of a location URI (or a bare token); None when it cannot be one."""
        value = token_or_uri.strip()
        if LOCATION_PATH in value:
            value = value.rsplit(LOCATION_PATH, 1)[1]
        value = value.split("?", 1)[0].split("#", 1)[0].rstrip("/")
        return value if _TOKEN.match(value) else None

    # --- internals -------------------------------------------------------------------------

    @staticmethod
    def _types(request: LocationRequest) -> list[str] | HeldError:
        types = list(dict.fromkeys(request.location_types)) or ["any"]
        bad = [t for t in types if t not in LOCATION_TYPES]
        if bad:
            return HeldError(
                HeldErrorCode.REQUEST_ERROR,
                xml_safe(f"unknown locationType '{bad[0][:40]}' (RFC 5985 section 6.2)"),
            )
        return types

    def _presence(
        self, record: DeviceLocation, types: list[str], exact: bool, now: datetime
    ) -> Presence | HeldError:
        """The PIDF-LO of ``record`` with the forms in ``types`` (RFC 5985 section 6.2)."""
        held = {"geodetic": record.shape is not None, "civic": record.civic is not None}
        if "any" in types:
            give = {k for k, v in held.items() if v}
        else:
            asked = set(types)
            missing = sorted(t for t in asked if not held[t])
            if missing and exact:
                have = ", ".join(k for k, v in held.items() if v) or "nothing"
                return HeldError(
                    HeldErrorCode.CANNOT_PROVIDE_LI_TYPE,
                    f"{' and '.join(missing)} location requested exactly, but the LIS holds "
                    f"only {have} for this device",
                )
            give = {t for t in asked if held[t]} or {k for k, v in held.items() if v}
        stamp = record.updated or now
        # One form per tuple (RFC 5491 section 3.4): a geodetic and a civic location of the
        # same Device go in separate tuples, so that each geopriv holds one location.
        forms: list[tuple[str, list[Shape], CivicAddress | None]] = []
        if "geodetic" in give and record.shape is not None:
            forms.append(("lis-geo", [record.shape], None))
        if "civic" in give and record.civic is not None:
            forms.append(("lis-civic", [], record.civic))
        locations = [
            PidfLocation(
                shapes=shapes,
                civic=civic,
                method=record.method,
                timestamp=stamp,
                element_id=element_id,
                element=ElementKind.TUPLE,
                retransmission_allowed=False,
                retention_expiry=now + self.retention,
            )
            for element_id, shapes, civic in forms
        ]
        return Presence(entity=_entity(record.identity), locations=locations)

    def _mint(self, identity: str, now: datetime) -> str:
        while len(self._refs) >= self.max_uris and self._expiry_heap:
            _, old = heapq.heappop(self._expiry_heap)
            self._refs.pop(old, None)
        token = self._token()
        if not _TOKEN.match(token) or token in self._refs:
            raise RuntimeError("token factory gave an unusable or repeated token")
        expires = now + self.uri_lifetime
        self._refs[token] = _Reference(identity, expires)
        heapq.heappush(self._expiry_heap, (expires, token))
        return token

    def _prune(self, now: datetime) -> None:
        """Forget URIs expired for more than one lifetime."""
        horizon = now - self.uri_lifetime
        heap = self._expiry_heap
        while heap and heap[0][0] <= horizon:
            _, token = heapq.heappop(heap)
            self._refs.pop(token, None)
