"""HELD: HTTP-Enabled Location Delivery (RFC 5985) with device identity (RFC 6155) and
location URI dereference (RFC 6753). ``firebox.held.codec`` is the sans-I/O codec."""

from firebox.held.codec import (
    MEDIA_TYPE,
    HeldError,
    HeldErrorCode,
    HeldParseError,
    LocationRequest,
    LocationResponse,
    ResponseTime,
    dereference_request,
    parse,
    serialize,
)

__all__ = [
    "MEDIA_TYPE",
    "HeldError",
    "HeldErrorCode",
    "HeldParseError",
    "LocationRequest",
    "LocationResponse",
    "ResponseTime",
    "dereference_request",
    "parse",
    "serialize",
]
