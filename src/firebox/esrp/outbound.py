"""Requests the element originates itself (NOTIFY, SUBSCRIBE, MESSAGE), each in an RFC 3261
non-INVITE client transaction (section 17.1.2): the asyncio side of
``firebox.sip.transaction.ClientNonInviteTransaction``, with its timers on ``loop.call_later``.

``Outbound.request`` finds the next hop (the top ``Route``, else the Request-URI, through
``resolve`` and then the URI's own host, port and transport, RFC 3263 without DNS), starts
the transaction and later calls ``on_response`` with the final response or ``on_failure``
after a timeout (Timer F), a transport error or when there is no address. The element hands
every response in to ``on_response``, which says whether it was one of ours (by branch).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firebox.sip.address import SipUri, parse_name_addr, parse_uri
from firebox.sip.errors import SipParseError
from firebox.sip.message import Message, Request, Response
from firebox.sip.transaction import (
    CancelTimer,
    ClientNonInviteTransaction,
    Deliver,
    Send,
    StartTimer,
    Terminated,
    Timeout,
    TransportError,
    is_reliable,
)

__all__ = ["Address", "Outbound", "uri_address"]

log = logging.getLogger(__name__)

#: ``(host, port, transport)`` of a next hop.
Address = tuple[str, int, str]


def uri_address(uri_text: str) -> Address | None:
    """A SIP URI's own host, port and transport (``None`` for other schemes)."""
    try:
        uri = parse_uri(uri_text.strip().strip("<>"))
    except SipParseError:
        return None
    if not isinstance(uri, SipUri):
        return None
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).lower()
    return (uri.host.strip("[]"), uri.port or (5061 if transport == "tls" else 5060), transport)


@dataclass(slots=True)
class _Client:
    tx: ClientNonInviteTransaction
    address: Address
    on_response: Callable[[Response], None]
    on_failure: Callable[[], None]
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)


class Outbound:
    """Client transactions of one element. ``send(message, address)`` writes to the wire;
    ``resolve(uri)`` maps a URI to its next hop (``None``: the URI's own)."""

    def __init__(
        self,
        send: Callable[[Message, Address], None],
        resolve: Callable[[str], Address | None],
    ) -> None:
        self._send = send
        self._resolve = resolve
        self._clients: dict[str, _Client] = {}  # by branch

    def __len__(self) -> int:
        return len(self._clients)

    def address(self, request: Request) -> Address | None:
        routes = request.headers.get_all("Route")
        hop = routes[0] if routes else request.uri
        try:
            uri_text = str(parse_name_addr(hop).uri) if "<" in hop else hop
        except SipParseError:
            return None
        try:
            found = self._resolve(uri_text)
        except Exception:  # noqa: BLE001 -- a broken resolver must not stop the request
            log.exception("resolve(%s) failed", uri_text)
            found = None
        return found if found is not None else uri_address(uri_text)

    def request(
        self,
        request: Request,
        on_response: Callable[[Response], None],
        on_failure: Callable[[], None],
    ) -> None:
        address = self.address(request)
        if address is None:
            log.warning("no next hop for %s %s", request.method, request.uri)
            self._guard(on_failure)
            return
        tx = ClientNonInviteTransaction(request, reliable=is_reliable(address[2]))
        branch = request.branch or ""
        self._clients[branch] = _Client(tx, address, on_response, on_failure)
        self._run(branch, tx.start())

    def on_response(self, response: Response) -> bool:
        """A response from the network: True if it answers one of our requests."""
        branch = response.branch or ""
        client = self._clients.get(branch)
        if client is None:
            return False
        self._run(branch, client.tx.receive(response))
        return True

    def close(self) -> None:
        for client in self._clients.values():
            for handle in client.timers.values():
                handle.cancel()
        self._clients.clear()

    def _run(self, branch: str, events: list[Any]) -> None:
        client = self._clients.get(branch)
        if client is None:
            return
        loop = asyncio.get_running_loop()
        for event in events:
            if isinstance(event, Send):
                self._send(event.message, client.address)
            elif isinstance(event, StartTimer):
                old = client.timers.pop(event.name, None)
                if old is not None:
                    old.cancel()
                client.timers[event.name] = loop.call_later(event.delay, self._timer, branch, event.name)
            elif isinstance(event, CancelTimer):
                old = client.timers.pop(event.name, None)
                if old is not None:
                    old.cancel()
            elif isinstance(event, Deliver) and isinstance(event.message, Response):
                if event.message.status >= 200:
                    self._guard(client.on_response, event.message)
            elif isinstance(event, Timeout | TransportError):
                self._guard(client.on_failure)
            elif isinstance(event, Terminated):
                for handle in client.timers.values():
                    handle.cancel()
                self._clients.pop(branch, None)

    def _timer(self, branch: str, name: str) -> None:
        client = self._clients.get(branch)
        if client is None:
            return
        client.timers.pop(name, None)
        self._run(branch, client.tx.timer(name))

    @staticmethod
    def _guard(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("outbound request handler failed")
