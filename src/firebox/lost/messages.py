"""LoST messages (RFC 5222) as plain dataclasses: what the codec parses to and serializes
from, what the ECRF server and the LoST client exchange. No XML in here.

Section numbers refer to RFC 5222. ``path`` is the ordered list of ``via`` sources
(section 9): on a request, the servers it has already passed through (loop detection);
on a response, the servers that answered it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from firebox.location.civic import CivicAddress
from firebox.location.shapes import Shape

NS_LOST = "urn:ietf:params:xml:ns:lost1"


class Profile(StrEnum):
    """Location profiles (section 12): the two every LoST server must support."""

    GEODETIC_2D = "geodetic-2d"
    CIVIC = "civic"


class ErrorKind(StrEnum):
    """Error elements inside ``<errors>`` (section 13.1)."""

    BAD_REQUEST = "badRequest"
    FORBIDDEN = "forbidden"
    INTERNAL_ERROR = "internalError"
    LOCATION_PROFILE_UNRECOGNIZED = "locationProfileUnrecognized"
    LOCATION_INVALID = "locationInvalid"
    SRS_INVALID = "SRSInvalid"
    LOOP = "loop"
    NOT_FOUND = "notFound"
    SERVER_ERROR = "serverError"
    SERVER_TIMEOUT = "serverTimeout"
    SERVICE_NOT_IMPLEMENTED = "serviceNotImplemented"


class WarningKind(StrEnum):
    """Warning elements inside ``<warnings>`` (section 13.2)."""

    LOCATION_VALIDATION_UNAVAILABLE = "locationValidationUnavailable"
    SERVICE_SUBSTITUTION = "serviceSubstitution"
    DEFAULT_MAPPING_RETURNED = "defaultMappingReturned"


#: ``expires`` values that are not timestamps (section 8.3.5 / 8.6).
NO_CACHE = "NO-CACHE"
NO_EXPIRATION = "NO-EXPIRATION"
Expiry = datetime | str  # a timezone-aware datetime, NO_CACHE or NO_EXPIRATION


@dataclass(slots=True)
class Location:
    """A ``<location>`` (section 10.2) or a ``<serviceBoundary>``'s content.

    Exactly one of ``shape`` / ``civic`` is set for a recognized profile. A location whose
    profile the parser did not recognize keeps ``profile`` and neither content, so that the
    server can answer ``locationProfileUnrecognized`` naming it.
    """

    id: str
    profile: str
    shape: Shape | None = None
    civic: CivicAddress | None = None


@dataclass(slots=True)
class ServiceBoundaryReference:
    """``<serviceBoundaryReference source= key=>`` (section 8.3.3)."""

    source: str
    key: str


@dataclass(slots=True)
class Mapping:
    """``<mapping>`` (section 8.3): one service's answer for a location."""

    service: str
    source: str
    source_id: str
    last_updated: datetime
    expires: Expiry
    display_names: list[tuple[str, str]] = field(default_factory=list)  # (text, xml:lang)
    uris: list[str] = field(default_factory=list)
    service_number: str | None = None
    boundaries: list[Location] = field(default_factory=list)
    boundary_ref: ServiceBoundaryReference | None = None


@dataclass(slots=True)
class LocationValidation:
    """``<locationValidation>`` (section 8.4.2): civic element names by outcome."""

    valid: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LostWarning:
    kind: WarningKind
    message: str = ""


@dataclass(slots=True)
class LostError:
    kind: ErrorKind
    message: str = ""


# --- requests -------------------------------------------------------------------------


@dataclass(slots=True)
class FindService:
    """``<findService>`` (section 8)."""

    locations: list[Location]
    service: str | None = None
    recursive: bool = False
    service_boundary: str | None = None  # "value" | "reference" | None (server's choice)
    validate_location: bool = False
    path: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ListServices:
    """``<listServices>`` (section 10)."""

    service: str | None = None
    path: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ListServicesByLocation:
    """``<listServicesByLocation>`` (section 11)."""

    locations: list[Location]
    service: str | None = None
    recursive: bool = False
    path: list[str] = field(default_factory=list)


@dataclass(slots=True)
class GetServiceBoundary:
    """``<getServiceBoundary key=>`` (section 9)."""

    key: str
    path: list[str] = field(default_factory=list)


Request = FindService | ListServices | ListServicesByLocation | GetServiceBoundary


# --- responses ------------------------------------------------------------------------


@dataclass(slots=True)
class FindServiceResponse:
    mappings: list[Mapping]
    path: list[str] = field(default_factory=list)
    location_used: str | None = None
    validation: LocationValidation | None = None
    warnings: list[LostWarning] = field(default_factory=list)
    warnings_source: str | None = None


@dataclass(slots=True)
class ListServicesResponse:
    services: list[str]
    path: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ListServicesByLocationResponse:
    services: list[str]
    path: list[str] = field(default_factory=list)
    location_used: str | None = None


@dataclass(slots=True)
class GetServiceBoundaryResponse:
    boundaries: list[Location]
    path: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ErrorsResponse:
    """``<errors source=>`` (section 13.1)."""

    source: str
    errors: list[LostError]


@dataclass(slots=True)
class Redirect:
    """``<redirect target= source= message=>`` (section 13.3): ask ``target`` instead."""

    target: str
    source: str
    message: str = ""


Response = (
    FindServiceResponse
    | ListServicesResponse
    | ListServicesByLocationResponse
    | GetServiceBoundaryResponse
    | ErrorsResponse
    | Redirect
)
Message = Request | Response
