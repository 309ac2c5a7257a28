"""Publication of approved CAP messages, and the asyncio service around ``AlertManager``.

* ``AtomFeed`` (sans-I/O): an Atom feed (RFC 4287) of the messages sent, newest first; each
  entry carries the CAP message inline (``<content type="application/xml">``, RFC 4287
  section 4.1.3.3: an XML media type's content is the element itself) byte-for-byte as
  signed (the signature uses exclusive c14n, so it verifies inside the feed too) and links
  to it (``rel="alternate"``).
* ``WebhookPublisher``: POSTs each message (``application/xml``) to a URL with httpx, a
  bounded number of attempts with backoff.
* ``IpawsAdapter``: the hook for an IPAWS-OPEN gateway (``async submit(xml) -> str``, a
  receipt); ``SpoolIpawsAdapter`` writes each message atomically to a directory that an
  operator's IPAWS-OPEN client (which holds the COG's credentials) picks up.
* ``AlertLogger``: one i3 log event per message published (NENA-STA-010.3 section 4.12.3),
  through a ``LogSender``. i3 registers no log event type for public alerts; a CAP message
  about 9-1-1 tells the public the state of the 9-1-1 service, so it is logged as a
  ``ServiceStateChangeLogEvent`` whose ``extension.capAlert`` holds the message's
  identifier, type, references, where it went, and the CAP XML verbatim.
* ``AlertService``: the manager's I/O side: the monitor's outage updates in (``listener``,
  batched per detector step), approvals in, approved messages published on every channel
  and marked sent. A channel that fails is logged and retried by its own bounds; the feed
  (local) always takes the message, so a message is never silently lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from lxml import etree

from firebox.alerting.drafts import AlertDraft, AlertManager, ApprovalError
from firebox.logging.events import LogEvent
from firebox.logging.queue import EventSink
from firebox.xmlsafe import parse_xml

__all__ = [
    "ATOM_NS",
    "AlertLogger",
    "AlertService",
    "AtomFeed",
    "Delivery",
    "IpawsAdapter",
    "SpoolIpawsAdapter",
    "WebhookPublisher",
]

log = logging.getLogger(__name__)

ATOM_NS = "http://www.w3.org/2005/Atom"
_A = f"{{{ATOM_NS}}}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one channel did with one message."""

    channel: str
    identifier: str
    ok: bool
    detail: str
    attempts: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "identifier": self.identifier, "ok": self.ok, "detail": self.detail,
                "attempts": self.attempts}  # fmt: skip


# --- the Atom feed -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    identifier: str
    sender: str
    sent: str
    msg_type: str
    title: str
    summary: str
    xml: bytes
    updated: float


class AtomFeed:
    """The CAP messages sent, as an Atom feed (RFC 4287). ``feed_id``: the feed's permanent
    IRI (section 4.2.6); ``base_url``: where the alerts are served (``{base_url}/{identifier}``
    is each message's CAP XML); ``max_entries`` the newest kept."""

    def __init__(self, feed_id: str, title: str, author: str, base_url: str, *, max_entries: int = 200) -> None:
        self.feed_id, self.title, self.author = feed_id, title, author
        self.base_url = base_url.rstrip("/")
        self.max_entries = max_entries
        self.entries: list[_Entry] = []

    def add(self, draft: AlertDraft, now: float) -> None:
        assert draft.xml is not None, "only approved messages are published"
        a = draft.alert
        info = a.infos[0] if a.infos else None
        title = f"{a.msg_type}: {info.headline}" if info is not None and info.headline else f"{a.msg_type} {a.identifier}"
        summary = (info.parameter("CMAMlongtext") or info.description or "") if info is not None else ""
        self.entries.insert(0, _Entry(a.identifier, a.sender, a.sent, a.msg_type, title, summary, draft.xml, now))
        del self.entries[self.max_entries :]

    def entry_id(self, e: _Entry) -> str:
        # A tag URI (RFC 4151): the sender's domain, the day sent, the CAP identifier.
        domain = e.sender.rsplit("@", 1)[-1]
        return f"tag:{domain},{e.sent[:10]}:cap:{e.identifier}"

    def to_xml(self, now: float) -> bytes:
        feed = etree.Element(_A + "feed", nsmap={None: ATOM_NS})
        etree.SubElement(feed, _A + "id").text = self.feed_id
        etree.SubElement(feed, _A + "title").text = self.title
        updated = self.entries[0].updated if self.entries else now
        etree.SubElement(feed, _A + "updated").text = _rfc3339(updated)
        author = etree.SubElement(feed, _A + "author")
        etree.SubElement(author, _A + "name").text = self.author
        etree.SubElement(feed, _A + "link", rel="self", type="application/atom+xml", href=f"{self.base_url}/feed")
        for e in self.entries:
            entry = etree.SubElement(feed, _A + "entry")
            etree.SubElement(entry, _A + "id").text = self.entry_id(e)
            etree.SubElement(entry, _A + "title").text = e.title
            etree.SubElement(entry, _A + "updated").text = _rfc3339(e.updated)
            etree.SubElement(entry, _A + "published").text = _rfc3339(datetime.fromisoformat(e.sent).timestamp())
            etree.SubElement(entry, _A + "link", rel="alternate", type="application/xml",
                             href=f"{self.base_url}/{e.identifier}")  # fmt: skip
            etree.SubElement(entry, _A + "category", term=e.msg_type)
            if e.summary:
                etree.SubElement(entry, _A + "summary").text = e.summary
            content = etree.SubElement(entry, _A + "content", type="application/xml")
            content.append(parse_xml(e.xml))
        return etree.tostring(feed, xml_declaration=True, encoding="UTF-8")


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- webhook, IPAWS, log --------------------------------------------------------------------


class WebhookPublisher:
    """POST each message to ``url`` (``application/xml``); a 2xx answer is delivery. Up to
    ``attempts`` tries, ``backoff`` seconds doubling between them; 4xx answers other than
    408/429 are not retried (the receiver refuses the message itself)."""

    def __init__(self, url: str, *, client: httpx.AsyncClient | None = None, attempts: int = 3,
                 backoff: float = 0.5, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.url, self.attempts, self.backoff, self.timeout = url, max(1, attempts), backoff, timeout
        self.headers = dict(headers or {})
        self._client = client

    @property
    def channel(self) -> str:
        return f"webhook {self.url}"

    async def publish(self, identifier: str, xml: bytes) -> Delivery:
        client = self._client or httpx.AsyncClient(timeout=self.timeout)
        detail = ""
        try:
            for attempt in range(1, self.attempts + 1):
                try:
                    answer = await client.post(self.url, content=xml, headers={"Content-Type": "application/xml",
                                                                               **self.headers})  # fmt: skip
                except httpx.HTTPError as exc:
                    detail = f"{type(exc).__name__}: {exc}"
                else:
                    if answer.is_success:
                        return Delivery(self.channel, identifier, True, f"HTTP {answer.status_code}", attempt)
                    detail = f"HTTP {answer.status_code}"
                    if 400 <= answer.status_code < 500 and answer.status_code not in (408, 429):
                        return Delivery(self.channel, identifier, False, detail, attempt)
                if attempt < self.attempts:
                    await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            return Delivery(self.channel, identifier, False, detail, self.attempts)
        finally:
            if self._client is None:
                await client.aclose()


class IpawsAdapter(Protocol):
    """The hook to IPAWS-OPEN: submit one CAP message, return a receipt (an identifier of
    the submission), raise on failure."""

    async def submit(self, xml: bytes) -> str: ...


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class SpoolIpawsAdapter:
    """Writes each message to ``directory`` as ``<identifier>.xml`` (written to a temporary
    name, flushed to disk, then renamed: the gateway never reads half a message); the
    receipt is the file's path."""

    def __init__(self, directory: str | Path, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync

    async def submit(self, xml: bytes) -> str:
        root = parse_xml(xml)
        ident = root.findtext("{urn:oasis:names:tc:emergency:cap:1.2}identifier") or ""
        if not ident:
            raise ValueError("the CAP message has no identifier")
        path = self.directory / f"{_UNSAFE.sub('_', ident)}.xml"
        await asyncio.to_thread(self._write, path, xml)
        return str(path)

    def _write(self, path: Path, xml: bytes) -> None:
        tmp = path.with_suffix(".xml.tmp")
        with open(tmp, "wb") as f:
            f.write(xml)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)


class AlertLogger:
    """One i3 log event per published message (see the module's docstring)."""

    TYPE = "ServiceStateChangeLogEvent"

    def __init__(self, sender: EventSink, *, element_id: str, agency_id: str) -> None:
        self.sender, self.element_id, self.agency_id = sender, element_id, agency_id

    def event(self, draft: AlertDraft, deliveries: Sequence[Delivery], now: float) -> LogEvent:
        a = draft.alert
        assert draft.xml is not None
        cap = {
            "identifier": a.identifier, "sender": a.sender, "sent": a.sent, "msgType": a.msg_type,
            "status": a.status, "references": [str(r) for r in a.references], "chain": draft.chain,
            "approvedBy": list(draft.approvals), "towns": list(draft.towns), "psaps": list(draft.psaps),
            "outages": list(draft.outages), "deliveries": [d.as_dict() for d in deliveries],
            "xml": draft.xml.decode("utf-8"),
        }  # fmt: skip
        at = datetime.fromtimestamp(now, UTC)
        return LogEvent(log_event_type=self.TYPE, timestamp=at.replace(microsecond=at.microsecond // 1000 * 1000),
                        element_id=self.element_id, agency_id=self.agency_id,
                        extension={"service": "urn:service:sos", "capAlert": cap})  # fmt: skip

    async def log(self, draft: AlertDraft, deliveries: Sequence[Delivery], now: float) -> str:
        return await self.sender.send(self.event(draft, deliveries, now))


# --- the service ---------------------------------------------------------------------------


class AlertService:
    """``AlertManager`` with publication. ``webhooks``, ``ipaws`` and ``logger`` are
    optional channels; ``clock`` gives POSIX seconds. Register ``listener`` with the monitor
    (``monitor.listeners.append(service.listener)``) and call ``start()`` inside the loop."""

    def __init__(self, manager: AlertManager, feed: AtomFeed, *, webhooks: Sequence[WebhookPublisher] = (),
                 ipaws: IpawsAdapter | None = None, logger: AlertLogger | None = None,
                 clock: Callable[[], float] = time.time, tick: float = 60.0) -> None:  # fmt: skip
        self.manager, self.feed, self.webhooks, self.ipaws, self.logger = manager, feed, list(webhooks), ipaws, logger
        self.clock, self.tick_seconds = clock, tick
        self.deliveries: list[Delivery] = []
        self._batch: list[dict[str, Any]] = []
        self._flush_scheduled = False
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def listener(self, update: Any) -> None:
        """A monitor outage listener (``OutageUpdate``, or an ``Outage.as_dict()``): the
        updates of one detector step are handled together (a narrowing is not an all-clear
        and a new alert)."""
        self._batch.append(dict(getattr(update, "outage", update)))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._batch, self._flush_scheduled = self._batch, [], False
        try:
            self.manager.on_outages(batch, self.clock())
        except Exception:  # noqa: BLE001 -- an alerting bug must not stop the monitor
            log.exception("alerting: outage update failed")
        self._spawn(self.pump())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="alert-publish")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_outages(self, updates: Sequence[Mapping[str, Any]]) -> list[AlertDraft]:
        drafts = self.manager.on_outages(updates, self.clock())
        await self.pump()
        return drafts

    async def approve(self, draft_id: str, user: str) -> AlertDraft:
        draft = self.manager.approve(draft_id, user, self.clock())
        await self.pump()
        return draft

    async def pump(self) -> list[Delivery]:
        """Publish every approved message (in order) and mark it sent."""
        out: list[Delivery] = []
        async with self._lock:
            for draft in self.manager.take_outbox():
                out += await self._publish(draft)
        return out

    async def _publish(self, draft: AlertDraft) -> list[Delivery]:
        assert draft.xml is not None
        now = self.clock()
        self.feed.add(draft, now)
        deliveries = [Delivery("atom", draft.id, True, "in the feed")]
        store, node = getattr(self.manager, "store", None), getattr(self.manager, "node", None)
        if store is not None and node is not None and not store.claim_publication(draft.id, node, now):
            # Another node of the cluster sends this message to the outside channels: the
            # public gets it once; every node's own feed carries it.
            deliveries.append(Delivery("cluster", draft.id, True, "sent by another node"))
            try:
                self.manager.sent(draft.id, now, "atom: ok in the feed; webhooks and IPAWS by another node")
            except ApprovalError:
                pass  # the sending node recorded it first
            self.deliveries += deliveries
            return deliveries
        for hook in self.webhooks:
            deliveries.append(await hook.publish(draft.id, draft.xml))
        if self.ipaws is not None:
            try:
                deliveries.append(Delivery("ipaws", draft.id, True, await self.ipaws.submit(draft.xml)))
            except Exception as exc:  # noqa: BLE001 -- recorded and logged; the other channels stand
                deliveries.append(Delivery("ipaws", draft.id, False, f"{type(exc).__name__}: {exc}"))
        for d in deliveries:
            (log.info if d.ok else log.error)("alerting: %s %s via %s: %s", draft.msg_type.value, draft.id, d.channel,
                                              d.detail)  # fmt: skip
        self.manager.sent(draft.id, now, "; ".join(f"{d.channel}: {'ok' if d.ok else 'FAILED'} {d.detail}"
                                                    for d in deliveries))  # fmt: skip
        if self.logger is not None:
            try:
                await self.logger.log(draft, deliveries, now)
            except Exception:  # noqa: BLE001 -- logging never blocks publication
                log.exception("alerting: i3 log event of %s failed", draft.id)
        self.deliveries += deliveries
        return deliveries

    async def settle(self) -> None:
        """Wait until the updates handed to ``listener`` are handled and published."""
        for _ in range(100):  # bounded: each round runs what the last one scheduled
            if not self._flush_scheduled and not self._tasks:
                return
            await asyncio.sleep(0)
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="alert-renewal")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                self.manager.tick(self.clock())
                await self.pump()
            except Exception:  # noqa: BLE001 -- keep renewing
                log.exception("alerting: renewal failed")

    async def aclose(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
