"""HELD XML codec (RFC 5985) with the device identity extension (RFC 6155).

Messages (namespace ``urn:ietf:params:xml:ns:geopriv:held``, media type
``application/held+xml``, registered by RFC 5985):

* ``<locationRequest>`` (section 5.1) with ``responseTime`` (section 6.1: milliseconds, or
  ``emergencyRouting`` / ``emergencyDispatch``), ``<locationType exact=...>`` (section 6.2:
  ``any``, ``civic``, ``geodetic``, ``locationURI``; absent means ``any``) and, per RFC 6155,
  a ``<device>`` element in ``urn:ietf:params:xml:ns:geopriv:held:id`` naming the
  Device by ``<uri>``, ``<ip v=...>`` or another identifier. The same message, without a
  device, is the HELD dereference request POSTed to a location URI (RFC 6753).
* ``<locationResponse>`` (section 5.2): a ``<locationUriSet expires=...>`` of
  ``<locationURI>`` (section 6.5) and/or a PIDF-LO ``<presence>`` (section 6.6).
* ``<error code=...>`` (section 5.3) with the codes of section 6.3 and a ``<message>``
  (section 6.4).

``parse`` raises ``HeldParseError`` (and nothing else) whose ``code`` is the error a LIS
answers with: ``xmlError`` for a body that is not well-formed XML or not a HELD document,
``requestError`` for a HELD message whose content is wrong (naming the element or value),
``unsupportedMessage`` for a HELD element that is not a message this codec knows.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from lxml import etree

from firebox.location.pidf import (
    NS_PIDF,
    PidfError,
    Presence,
    format_time,
    parse_pidf,
    parse_time,
    presence_element,
)
from firebox.xmlsafe import XmlError, local_name, namespace, parse_xml, text, to_bytes

NS_HELD = "urn:ietf:params:xml:ns:geopriv:held"
NS_HELD_ID = "urn:ietf:params:xml:ns:geopriv:held:id"
NS_XML = "http://www.w3.org/XML/1998/namespace"
#: Media type of HELD messages (RFC 5985).
MEDIA_TYPE = "application/held+xml"

#: Values of ``locationType`` (RFC 5985 section 6.2).
LOCATION_TYPES: tuple[str, ...] = ("any", "civic", "geodetic", "locationURI")
#: Identifiers of the ``<device>`` element (RFC 6155).
DEVICE_IDENTIFIERS: tuple[str, ...] = (
    "ip", "mac", "udpport", "tcpport", "sctpport", "nai", "uri", "fqdn", "duid",
    "msisdn", "imsi", "imei", "min", "mdn",
)  # fmt: skip


class HeldErrorCode(StrEnum):
    """Error codes of RFC 5985 section 6.3."""

    REQUEST_ERROR = "requestError"
    XML_ERROR = "xmlError"
    GENERAL_LIS_ERROR = "generalLisError"
    LOCATION_UNKNOWN = "locationUnknown"
    UNSUPPORTED_MESSAGE = "unsupportedMessage"
    TIMEOUT = "timeout"
    CANNOT_PROVIDE_LI_TYPE = "cannotProvideLiType"
    NOT_LOCATABLE = "notLocatable"


class ResponseTime(StrEnum):
    """The symbolic ``responseTime`` values (RFC 5985 section 6.1)."""

    EMERGENCY_ROUTING = "emergencyRouting"
    EMERGENCY_DISPATCH = "emergencyDispatch"


@dataclass(slots=True)
class LocationRequest:
    """``<locationRequest>`` (RFC 5985 section 5.1, RFC 6155).

    ``response_time`` is milliseconds (section 6.1), a ``ResponseTime`` (or its string), or
    None. ``device_uri`` and ``device_ip`` are the RFC 6155 ``<uri>`` and ``<ip>``
    identifiers; ``device_ids`` holds any other identifier as ``(element name, value)``.
    A request without any device identifier is also the dereference request of RFC 6753.
    """

    location_types: list[str] = field(default_factory=lambda: ["any"])
    exact: bool = False
    response_time: float | str | None = None
    device_uri: str | None = None
    device_ip: str | None = None
    device_ids: list[tuple[str, str]] = field(default_factory=list)

    @property
    def has_device(self) -> bool:
        """Whether the request names a Device (RFC 6155) rather than using the source address."""
        return bool(self.device_uri or self.device_ip or self.device_ids)


@dataclass(slots=True)
class LocationResponse:
    """``<locationResponse>`` (RFC 5985 section 5.2): a PIDF-LO (by value, section 6.6)
    and/or location URIs (by reference, section 6.5) valid until ``expires``."""

    presence: Presence | None = None
    location_uris: list[str] = field(default_factory=list)
    expires: datetime | None = None


@dataclass(slots=True)
class HeldError:
    """``<error>`` (RFC 5985 section 5.3)."""

    code: HeldErrorCode
    message: str = ""


HeldMessage = LocationRequest | LocationResponse | HeldError


class HeldParseError(ValueError):
    """A body that is not a readable HELD message; ``code`` is the section 6.3 error to
    answer with (``xmlError``, ``requestError`` or ``unsupportedMessage``)."""

    def __init__(self, code: HeldErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_error(self) -> HeldError:
        return HeldError(self.code, self.message)


def dereference_request(location_types: list[str] | None = None, *, exact: bool = False) -> LocationRequest:
    """The body POSTed to a location URI to dereference it (RFC 6753): a
    ``locationRequest`` naming no device."""
    return LocationRequest(location_types=list(location_types or ["any"]), exact=exact)


def _request_error(message: str) -> HeldParseError:
    return HeldParseError(HeldErrorCode.REQUEST_ERROR, message)


# --- reading -----------------------------------------------------------------------------

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_MS = re.compile(r"^\d{1,12}$")
_RESPONSE_TIMES = {r.value: r for r in ResponseTime}
_CODES = {c.value: c for c in HeldErrorCode}


def _held_children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str) and c.tag == f"{{{NS_HELD}}}{name}"]


def _response_time(raw: str) -> float | ResponseTime:
    value = raw.strip()
    if value in _RESPONSE_TIMES:
        return _RESPONSE_TIMES[value]
    if _MS.match(value):
        return float(int(value))
    raise _request_error(
        f"responseTime '{value[:40]}' is not a number of milliseconds, emergencyRouting "
        "or emergencyDispatch (RFC 5985 section 6.1)"
    )


def _location_type(el: etree._Element) -> tuple[list[str], bool]:
    raw = el.get("exact")
    exact = False
    if raw is not None:
        if raw.strip() in _TRUE:
            exact = True
        elif raw.strip() not in _FALSE:
            raise _request_error(f"locationType exact='{raw[:40]}' is not a boolean (true/false)")
    types: list[str] = []
    for token in (el.text or "").split():
        if token not in LOCATION_TYPES:
            raise _request_error(
                f"locationType '{token[:40]}' is not one of {', '.join(LOCATION_TYPES)} "
                "(RFC 5985 section 6.2)"
            )
        if token not in types:
            types.append(token)
    return types or ["any"], exact


def _device(el: etree._Element, req: LocationRequest) -> None:
    """``<device>`` of RFC 6155."""
    found = False
    for c in el:
        if not isinstance(c.tag, str) or namespace(c) != NS_HELD_ID:
            continue
        name, value = local_name(c), text(c)
        if not value:
            raise _request_error(f"device identifier <{name}> is empty (RFC 6155)")
        found = True
        if name == "ip":
            try:
                addr = ipaddress.ip_address(value)
            except ValueError:
                raise _request_error(f"device <ip> '{value[:60]}' is not an IP address") from None
            v = (c.get("v") or "").strip()
            if v and v != str(addr.version):
                raise _request_error(f"device <ip v='{v[:8]}'> holds an IPv{addr.version} address")
            if req.device_ip is None:
                req.device_ip = str(addr)
                continue
        elif name == "uri" and req.device_uri is None:
            req.device_uri = value
            continue
        req.device_ids.append((name, value))
    if not found:
        raise _request_error("<device> names no identifier (RFC 6155)")


def _location_request(root: etree._Element) -> LocationRequest:
    req = LocationRequest()
    raw_rt = root.get("responseTime")
    if raw_rt is not None:
        req.response_time = _response_time(raw_rt)
    types = _held_children(root, "locationType")
    if len(types) > 1:
        raise _request_error("locationRequest has more than one <locationType>")
    if types:
        req.location_types, req.exact = _location_type(types[0])
    devices = [
        c for c in root
        if isinstance(c.tag, str) and local_name(c) == "device" and namespace(c) == NS_HELD_ID
    ]  # fmt: skip
    if len(devices) > 1:
        raise _request_error("locationRequest has more than one <device> (RFC 6155)")
    if devices:
        _device(devices[0], req)
    return req


def _location_response(root: etree._Element) -> LocationResponse:
    resp = LocationResponse()
    sets = _held_children(root, "locationUriSet")
    if len(sets) > 1:
        raise _request_error("locationResponse has more than one <locationUriSet>")
    if sets:
        uri_set = sets[0]
        expires = uri_set.get("expires")
        if expires is None or not expires.strip():
            raise _request_error("<locationUriSet> is missing its 'expires' attribute (RFC 5985 section 6.5)")
        try:
            resp.expires = parse_time(expires, "locationUriSet expires")
        except PidfError as exc:
            raise _request_error(str(exc)) from None
        resp.location_uris = [u for u in (text(x) for x in _held_children(uri_set, "locationURI")) if u]
        if not resp.location_uris:
            raise _request_error("<locationUriSet> holds no <locationURI> (RFC 5985 section 6.5)")
    presences = [
        c for c in root if isinstance(c.tag, str) and c.tag == f"{{{NS_PIDF}}}presence"
    ]
    if len(presences) > 1:
        raise _request_error("locationResponse has more than one <presence>")
    if presences:
        try:
            resp.presence = parse_pidf(presences[0])
        except PidfError as exc:
            raise _request_error(f"presence: {exc}") from None
    if resp.presence is None and not resp.location_uris:
        raise _request_error(
            "locationResponse holds neither a <locationUriSet> nor a <presence> (RFC 5985 section 5.2)"
        )
    return resp


def _error(root: etree._Element) -> HeldError:
    raw = (root.get("code") or "").strip()
    if not raw:
        raise _request_error("<error> is missing its 'code' attribute (RFC 5985 section 6.3)")
    messages = [text(m) for m in _held_children(root, "message")]
    message = next((m for m in messages if m), "")
    code = _CODES.get(raw)
    if code is None:  # a code from a later extension: still an error, kept in the message
        code, message = HeldErrorCode.GENERAL_LIS_ERROR, f"{raw}: {message}".rstrip(": ")
    return HeldError(code, message)


def parse(data: bytes | str) -> HeldMessage:
    """Read one HELD message; raise ``HeldParseError`` naming what is wrong."""
    try:
        root = parse_xml(data)
    except XmlError as exc:
        raise HeldParseError(HeldErrorCode.XML_ERROR, str(exc)) from None
    name, ns = local_name(root), namespace(root)
    if ns != NS_HELD:
        raise HeldParseError(
            HeldErrorCode.XML_ERROR,
            f"root element <{name}> is not in the HELD namespace {NS_HELD}"
            + (f" (it is in {ns})" if ns else " (it has no namespace)"),
        )
    try:
        if name == "locationRequest":
            return _location_request(root)
        if name == "locationResponse":
            return _location_response(root)
        if name == "error":
            return _error(root)
    except HeldParseError:
        raise
    except ValueError as exc:  # defensive: nothing but HeldParseError leaves this function
        raise _request_error(f"<{name}>: {exc}") from None
    raise HeldParseError(
        HeldErrorCode.UNSUPPORTED_MESSAGE, f"<{name}> is not a HELD message this LIS supports"
    )


# --- writing -----------------------------------------------------------------------------

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(message: str) -> str:
    """``message`` with the characters XML 1.0 cannot carry replaced by spaces (error
    messages quote what a client sent)."""
    return _NOT_XML.sub(" ", message)


def _held(name: str) -> etree._Element:
    return etree.Element(f"{{{NS_HELD}}}{name}", nsmap={None: NS_HELD})  # type: ignore[dict-item]


def _format_response_time(value: float | str) -> str:
    if isinstance(value, str):
        if value not in _RESPONSE_TIMES:
            raise ValueError(f"responseTime {value!r} is not emergencyRouting or emergencyDispatch")
        return value
    if isinstance(value, bool) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"responseTime must be a non-negative number of milliseconds, not {value!r}")
    return str(round(value))


def _request_xml(msg: LocationRequest) -> etree._Element:
    root = _held("locationRequest")
    if msg.response_time is not None:
        root.set("responseTime", _format_response_time(msg.response_time))
    types = list(dict.fromkeys(msg.location_types))
    for t in types:
        if t not in LOCATION_TYPES:
            raise ValueError(f"locationType {t!r} is not one of {LOCATION_TYPES}")
    lt = etree.SubElement(root, f"{{{NS_HELD}}}locationType")
    lt.text = " ".join(types or ["any"])
    if msg.exact:
        lt.set("exact", "true")
    if msg.has_device:
        dev = etree.SubElement(root, f"{{{NS_HELD_ID}}}device", nsmap={None: NS_HELD_ID})  # type: ignore[dict-item]
        if msg.device_ip is not None:
            addr = ipaddress.ip_address(msg.device_ip)
            etree.SubElement(dev, f"{{{NS_HELD_ID}}}ip", v=str(addr.version)).text = str(addr)
        if msg.device_uri is not None:
            etree.SubElement(dev, f"{{{NS_HELD_ID}}}uri").text = msg.device_uri
        for name, value in msg.device_ids:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9._-]*", name):
                raise ValueError(f"device identifier name {name!r} is not an XML name")
            etree.SubElement(dev, f"{{{NS_HELD_ID}}}{name}").text = value
    return root


def _response_xml(msg: LocationResponse) -> etree._Element:
    if msg.presence is None and not msg.location_uris:
        raise ValueError("a locationResponse needs a presence or location URIs (RFC 5985 section 5.2)")
    root = _held("locationResponse")
    if msg.location_uris:
        if msg.expires is None:
            raise ValueError("location URIs need an expiry time (RFC 5985 section 6.5)")
        uri_set = etree.SubElement(root, f"{{{NS_HELD}}}locationUriSet", expires=format_time(msg.expires))
        for uri in msg.location_uris:
            etree.SubElement(uri_set, f"{{{NS_HELD}}}locationURI").text = uri
    if msg.presence is not None:
        root.append(presence_element(msg.presence))
    return root


def _error_xml(msg: HeldError) -> etree._Element:
    root = _held("error")
    root.set("code", HeldErrorCode(msg.code).value)
    if msg.message:
        m = etree.SubElement(root, f"{{{NS_HELD}}}message")
        m.set(f"{{{NS_XML}}}lang", "en")
        m.text = xml_safe(msg.message)
    return root


def message_element(msg: HeldMessage) -> etree._Element:
    """The XML element of a HELD message."""
    if isinstance(msg, LocationRequest):
        return _request_xml(msg)
    if isinstance(msg, LocationResponse):
        return _response_xml(msg)
    if isinstance(msg, HeldError):
        return _error_xml(msg)
    raise TypeError(f"not a HELD message: {type(msg).__name__}")


def serialize(msg: HeldMessage) -> bytes:
    """The XML of ``msg`` (UTF-8, with a declaration). Raises ``ValueError`` for a message
    RFC 5985 cannot express (an unknown location type, URIs without expiry...)."""
    return to_bytes(message_element(msg))
