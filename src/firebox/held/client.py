"""Dereferencing a location URI over HELD (RFC 6753 section 3.3, RFC 5985 HTTP binding):
the asyncio adapter shared by the ESRP (a location by reference in an INVITE) and the PSAP
(the same reference, fetched again for the call-taker).

``dereference(http, uri, timeout=...)`` POSTs a ``locationRequest`` naming no device to the
URI and answers ``(pidf, None)`` with the PIDF-LO of the ``locationResponse`` (serialized),
or ``(None, why)`` when there is none: no answer in time, a transport error, a body that is
not HELD, a HELD ``<error>``, a response by reference only. It never raises: a caller's
location that cannot be fetched is a logged fact, not a failure of the call.
"""

from __future__ import annotations

import asyncio

import httpx

from firebox.held.codec import MEDIA_TYPE, LocationResponse, dereference_request, parse, serialize
from firebox.location.pidf import serialize_pidf

__all__ = ["dereference"]


async def dereference(
    http: httpx.AsyncClient | None, uri: str, *, timeout: float = 0.5
) -> tuple[bytes | None, str | None]:
    """The PIDF-LO behind location URI ``uri`` (HELD POST, RFC 6753), or why there is none.
    ``http`` None: a client is made for this one request."""
    client = http or httpx.AsyncClient()
    try:
        async with asyncio.timeout(timeout):
            answer = await client.post(
                uri,
                content=serialize(dereference_request()),
                headers={"Content-Type": MEDIA_TYPE, "Accept": MEDIA_TYPE},
            )
    except (TimeoutError, httpx.TimeoutException):
        return None, f"no answer within {timeout:g} s"
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        if http is None:
            await client.aclose()
    try:
        message = parse(answer.content)
    except ValueError as exc:
        return None, f"HTTP {answer.status_code}, not a HELD answer: {exc}"
    if isinstance(message, LocationResponse) and message.presence is not None:
        return serialize_pidf(message.presence), None
    return None, f"HELD {type(message).__name__}: {getattr(message, 'message', '')}".strip()
