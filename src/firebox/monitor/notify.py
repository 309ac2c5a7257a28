"""Outage notification, at once and on every update: a JSON POST to each configured webhook
(httpx, retried with exponential backoff, bounded) and an e-mail to the configured
addresses (SMTP, run in a worker thread so the loop never blocks).

The content follows what the FCC asks of 911 outage notifications to PSAPs (47 CFR 4.9(h)
and 9.19(b)/(c), as amended in 2022: "all available material information"): who notifies and
who has the outage, when it began (with the time zone; UTC here), the services affected,
the geographic area (scope and key), the effect on the ability to take 911 calls (state,
calls affected), the expected restoration when known, the best-known cause, a contact, and
whether the notice is initial, an update or final. The FCC gives providers 30 minutes;
firebox sends as soon as the detector decides.

``notice(update, ...)`` builds the body (pure); ``Notifier`` sends it. Sending never raises:
each delivery's outcome is kept in ``deliveries`` and failures are logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx

from firebox.monitor.detector import OutageUpdate, UpdateKind

__all__ = ["Delivery", "Notifier", "NotifyConfig", "email_text", "notice"]

log = logging.getLogger(__name__)

_STATUS = {UpdateKind.NEW: "initial", UpdateKind.CONFIRMED: "update", UpdateKind.UPDATED: "update",
           UpdateKind.CLEARED: "final"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """``webhooks``: URLs to POST to; ``emails``: addresses; ``smtp``: (host, port) of the
    relay; ``sender``: the From address; ``provider`` and ``contact``: who notifies and how
    to reach them (the FCC's name, telephone number and e-mail address)."""

    webhooks: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    smtp: tuple[str, int] = ("127.0.0.1", 25)
    sender: str = "firebox-monitor@localhost"
    provider: str = "firebox NG911"
    contact: dict[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = ("911 voice", "911 text")
    attempts: int = 4
    backoff: float = 0.5  # seconds before the second attempt; doubled each time
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class Delivery:
    channel: str  # "webhook" or "email"
    target: str
    outage_id: str
    kind: str
    ok: bool
    attempts: int
    at: float
    error: str | None = None


def notice(update: OutageUpdate, config: NotifyConfig) -> dict[str, Any]:
    """The notification body of one outage update (47 CFR 4.9(h) content)."""
    o = update.outage
    affected = "none known" if o["calls_affected"] == 0 else f"{o['calls_affected']} calls not answered where intended"
    area = "the whole state" if o["scope"] == "statewide" else f"{o['scope']} {o['key']}"
    effect = {
        "suspected": f"911 calls to {area} may be failing (suspected; being confirmed)",
        "confirmed": f"911 calls to {area} are failing or being rerouted",
        "cleared": f"911 service to {area} restored",
    }[o["state"]]
    return {
        "notification": _STATUS[update.kind],
        "event": update.kind.value,
        "outage_id": o["id"],
        "notifying_provider": config.provider,
        "provider_with_outage": config.provider,
        "start": o["start"],
        "time_zone": "UTC",
        "confirmed_at": o["confirmed_at"],
        "end": o["end"],
        "state": o["state"],
        "scope": o["scope"],
        "area": o["key"],
        "services_affected": list(config.services),
        "impact": effect,
        "cause": o["cause"],
        "calls_affected": o["calls_affected"],
        "calls_affected_text": affected,
        "test_calls_failed": o["probes_failed"],
        "config_change": o["config_change"],
        "expected_restoration": None if o["state"] != "cleared" else o["end"],
        "contact": dict(config.contact),
        "history": o["history"],
    }


def email_text(body: dict[str, Any]) -> tuple[str, str]:
    """Subject and plain text of the e-mail of a notification body."""
    subject = (f"[911 outage {body['notification']}] {body['scope']} {body['area']}: {body['state']} "
               f"since {body['start']}")  # fmt: skip
    lines = [
        f"Notification: {body['notification']} ({body['event']})",
        f"Outage: {body['outage_id']}",
        f"Provider: {body['notifying_provider']}",
        f"Start: {body['start']} ({body['time_zone']})",
        f"Confirmed: {body['confirmed_at'] or '-'}",
        f"End: {body['end'] or 'ongoing'}",
        f"Area: {body['scope']} {body['area']}",
        f"Services: {', '.join(body['services_affected'])}",
        f"Impact: {body['impact']}",
        f"Cause: {body['cause']}",
        f"Calls affected: {body['calls_affected_text']}",
        f"Expected restoration: {body['expected_restoration'] or 'unknown'}",
        "Contact: " + (", ".join(f"{k} {v}" for k, v in body["contact"].items()) or "-"),
    ]
    return subject, "\n".join(lines) + "\n"


class Notifier:
    """Sends every update to every webhook and, as one e-mail, to every address. ``send``
    returns once all deliveries are done or given up (bounded by attempts and timeouts)."""

    def __init__(self, config: NotifyConfig, *, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._http = http
        self._own_http = http is None
        self.deliveries: list[Delivery] = []

    async def aclose(self) -> None:
        if self._http is not None and self._own_http:
            await self._http.aclose()
            self._http = None

    async def send(self, update: OutageUpdate) -> list[Delivery]:
        body = notice(update, self.config)
        jobs = [self._webhook(url, body, update) for url in self.config.webhooks]
        if self.config.emails:
            jobs.append(self._email(body, update))
        done = list(await asyncio.gather(*jobs))
        self.deliveries += done
        del self.deliveries[:-1000]
        return done

    async def _webhook(self, url: str, body: dict[str, Any], update: OutageUpdate) -> Delivery:
        c = self.config
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=c.timeout)
        error = None
        for attempt in range(1, c.attempts + 1):
            try:
                response = await self._http.post(url, json=body, timeout=c.timeout)
                if response.status_code < 300:
                    return self._done("webhook", url, update, True, attempt)
                error = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    break  # the receiver refuses this body: retrying will not help
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < c.attempts:
                await asyncio.sleep(c.backoff * 2 ** (attempt - 1))
        log.error("monitor: outage notification to %s failed: %s", url, error)
        return self._done("webhook", url, update, False, attempt, error)

    async def _email(self, body: dict[str, Any], update: OutageUpdate) -> Delivery:
        c = self.config
        subject, text = email_text(body)
        message = EmailMessage()
        message["From"] = c.sender
        message["To"] = ", ".join(c.emails)
        message["Subject"] = subject
        message.set_content(text)
        message.add_attachment(json.dumps(body, indent=2).encode(), maintype="application", subtype="json",
                               filename=f"{body['outage_id']}.json")  # fmt: skip
        error = None
        for attempt in range(1, c.attempts + 1):
            try:
                await asyncio.to_thread(self._smtp_send, message)
                return self._done("email", ", ".join(c.emails), update, True, attempt)
            except (OSError, smtplib.SMTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < c.attempts:
                await asyncio.sleep(c.backoff * 2 ** (attempt - 1))
        log.error("monitor: outage e-mail to %s failed: %s", ", ".join(c.emails), error)
        return self._done("email", ", ".join(c.emails), update, False, attempt, error)

    def _smtp_send(self, message: EmailMessage) -> None:
        host, port = self.config.smtp
        with smtplib.SMTP(host, port, timeout=self.config.timeout) as smtp:
            smtp.send_message(message)

    def _done(self, channel: str, target: str, update: OutageUpdate, ok: bool, attempts: int,
              error: str | None = None) -> Delivery:  # fmt: skip
        return Delivery(channel, target, update.outage["id"], update.kind.value, ok, attempts, time.time(), error)

