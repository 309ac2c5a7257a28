"""Location Information Server (NENA i3 LIS): a sans-I/O core (``firebox.lis.service``)
answering HELD (RFC 5985, RFC 6155) and dereferencing location URIs (RFC 6753), and its
Starlette adapter (``firebox.lis.app``)."""

from firebox.lis.service import (
    MAX_URI_LIFETIME,
    MIN_URI_LIFETIME,
    DeviceLocation,
    Lis,
    normalize_identity,
)

__all__ = ["MAX_URI_LIFETIME", "MIN_URI_LIFETIME", "DeviceLocation", "Lis", "normalize_identity"]
