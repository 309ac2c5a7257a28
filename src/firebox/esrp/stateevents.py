"""The ESRP's i3 state notifications over SIP: the asyncio adapter of
``firebox.sip.subscription`` (RFC 6665) for the three i3 event packages.

As a **notifier** (NENA-STA-010.3 sections 2.4.1, 2.4.2, 4.2.1.3) the element answers
SUBSCRIBE for

* ``emergency-ElementState``: its own element state (``set_element_state``);
* ``emergency-ServiceState``: the ESRP service of its domain (``set_service_state``);
* ``emergency-QueueState``: its own queue, the one upstream elements (a BCF, another ESRP)
  route calls into; its length and maximum are read from ``queue_state()`` (the overload
  guard's places), and a change is notified at most once per ``queue_interval`` seconds,
  since the queue moves with every call (section 4.2.1.3 lets the notifier limit the rate).

As a **subscriber** (section 4.2.1.3: the ESRP subscribes to the queue state of the queues
it routes to) it subscribes to ``emergency-QueueState`` of every downstream queue URI it is
given and applies each NOTIFY to the ``StateTable`` the policy routing function reads. A
queue whose notifier cannot be reached is recorded ``Unreachable`` (which the table ranks
as unknown: still tried, after those known to be good).

Every request we send (NOTIFY, SUBSCRIBE) runs in an RFC 3261 non-INVITE client
transaction (``esrp.outbound``); a notifier's NOTIFY that times out ends that subscription (RFC 6665 section 4.2.2), a
subscriber's SUBSCRIBE that times out is retried after ``retry_delay``. The element hands
in SUBSCRIBE and NOTIFY requests (``on_subscribe``, ``on_notify``: each returns the response
for the element's server transaction); responses go to ``Outbound.on_response``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from firebox.esrp.states import (
    EVENT_ELEMENT_STATE,
    EVENT_QUEUE_STATE,
    EVENT_SERVICE_STATE,
    ElementState,
    ElementStateValue,
    QueueState,
    QueueStateValue,
    ServiceName,
    ServiceState,
    ServiceStateValue,
    StateError,
    StateTable,
)
from firebox.esrp.outbound import Outbound
from firebox.sip.message import Request, Response, make_response
from firebox.sip.subscription import (
    DialogId,
    Notifier,
    NotifierEvent,
    Subscriber,
    SubscriberState,
    SubscriptionEnded,
    SubscriptionStarted,
    event_package,
)
from firebox.sip.transaction import Send

__all__ = ["QueueFigures", "StateEvents"]

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class QueueFigures:
    """The element's own queue: calls held, the most it holds, and whether it is full."""

    length: int
    max_length: int
    full: bool = False


class StateEvents:
    """State notifications of one element (see the module docstring).

    ``outbound`` runs the client transactions of our requests (NOTIFY, SUBSCRIBE), with
    the element's transport. ``contact`` is our SIP
    URI (Contact of our requests and the Via sent-by); ``queue_uri`` our own queue's URI;
    ``subscribe_to`` the downstream queue URIs to follow."""

    def __init__(
        self,
        states: StateTable,
        *,
        element_id: str,
        service_domain: str,
        contact: str,
        queue_uri: str,
        outbound: Outbound,
        queue_state: Callable[[], QueueFigures] | None = None,
        subscribe_to: Iterable[str] = (),
        expires: int = 600,
        retry_delay: float = 30.0,
        queue_interval: float = 1.0,
        tick_interval: float = 1.0,
    ) -> None:
        self.states = states
        self.element_id = element_id
        self.service_domain = service_domain
        self.contact = contact
        self.queue_uri = queue_uri
        self.outbound = outbound
        self._queue_state = queue_state or (lambda: QueueFigures(0, 0))
        self.queue_interval = queue_interval
        self.tick_interval = tick_interval
        self.element_state = ElementState(element_id, ElementStateValue.NORMAL)
        self.service_state = ServiceState(ServiceName.ESRP, service_domain, ServiceStateValue.NORMAL)
        local = f"sip:{element_id}"
        self.notifiers: dict[str, Notifier] = {
            EVENT_ELEMENT_STATE: Notifier(EVENT_ELEMENT_STATE, local, contact),
            EVENT_SERVICE_STATE: Notifier(EVENT_SERVICE_STATE, local, contact),
            EVENT_QUEUE_STATE: Notifier(EVENT_QUEUE_STATE, queue_uri, contact),
        }
        self.subscribers: dict[str, Subscriber] = {
            uri: Subscriber(EVENT_QUEUE_STATE, uri, local, contact, expires, retry_delay=retry_delay)
            for uri in dict.fromkeys(subscribe_to)
        }
        self._last_queue: bytes | None = None
        self._task: asyncio.Task[None] | None = None
        #: notifications applied, refused, subscriptions started / ended, failures
        self.counts: dict[str, int] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe downstream and start the periodic tick (refreshes, expiries, queue)."""
        now = self._now()
        for sub in self.subscribers.values():
            self._send_subscribe(sub, sub.subscribe(now))
        self._task = asyncio.get_running_loop().create_task(self._ticker(), name="esrp-state-events")

    async def close(self, timeout: float = 1.0) -> None:
        """End our subscriptions both ways: subscribers are told ``noresource``; our own
        subscriptions are ended with ``Expires: 0`` and their final NOTIFY awaited for at
        most ``timeout`` seconds (the element still answers meanwhile)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        now = self._now()
        for notifier in self.notifiers.values():
            self._run_notifier(notifier, notifier.terminate_all())
        for sub in self.subscribers.values():
            request = sub.unsubscribe(now)
            if request is not None:
                self._send_subscribe(sub, request)
        for _ in range(max(1, int(timeout / 0.02))):
            if all(sub.state is SubscriberState.IDLE for sub in self.subscribers.values()):
                break
            await asyncio.sleep(0.02)

    # -- our own state -------------------------------------------------------------------

    def body(self, event: str) -> bytes:
        """The current state body of one of our packages."""
        if event == EVENT_ELEMENT_STATE:
            return self.element_state.to_json().encode()
        if event == EVENT_SERVICE_STATE:
            return self.service_state.to_json().encode()
        figures = self._queue_state()
        if figures.full:
            value = QueueStateValue.FULL
        else:
            value = QueueStateValue.ACTIVE
        return QueueState(self.queue_uri, figures.length, figures.max_length, value).to_json().encode()

    def set_element_state(self, value: ElementStateValue, reason: str = "") -> None:
        self.element_state = ElementState(self.element_id, value, reason)
        self._publish(EVENT_ELEMENT_STATE)

    def set_service_state(self, value: ServiceStateValue, reason: str = "") -> None:
        self.service_state = ServiceState(ServiceName.ESRP, self.service_domain, value, reason)
        self._publish(EVENT_SERVICE_STATE)

    def _publish(self, event: str) -> None:
        notifier = self.notifiers[event]
        body = self.body(event)
        if event == EVENT_QUEUE_STATE:
            self._last_queue = body
        self._run_notifier(notifier, notifier.publish(body, self._now()))

    # -- what the element hands in ---------------------------------------------------------

    def on_subscribe(self, request: Request) -> Response:
        """A SUBSCRIBE to us: the response for the element's server transaction (the
        NOTIFY that follows an accepted one is sent here, RFC 6665 section 4.2.1.2)."""
        package, _ = event_package(request.headers.get("Event") or "")
        notifier = next((n for e, n in self.notifiers.items() if e.lower() == (package or "").lower()), None)
        if notifier is None:
            self._count("subscribe_refused")
            # RFC 6665 section 8.2.2: unknown package, with the ones we serve.
            return make_response(request, 489, headers=[("Allow-Events", ", ".join(self.notifiers))])
        body = self.body(notifier.event)
        events = notifier.handle_subscribe(request, self._now(), body)
        if notifier.event == EVENT_QUEUE_STATE:
            self._last_queue = body
        response: Response | None = None
        rest: list[NotifierEvent] = []
        for event in events:
            if response is None and isinstance(event, Send) and isinstance(event.message, Response):
                response = event.message
            else:
                rest.append(event)
        # The NOTIFY goes out after the element sent this 200 (RFC 6665 section 4.2.1.2
        # lets them cross, but a strict subscriber is not helped by that).
        asyncio.get_running_loop().call_soon(self._run_notifier, notifier, rest)
        assert response is not None
        return response

    def owns_notify(self, request: Request) -> bool:
        """Whether a NOTIFY belongs to one of our subscriptions (else it is a call's,
        to be forwarded)."""
        return self._subscriber_of(request.call_id) is not None

    def on_notify(self, request: Request) -> Response:
        """A NOTIFY for one of our subscriptions: answer it, apply its state."""
        sub = self._subscriber_of(request.call_id)
        if sub is None:
            return make_response(request, 481)
        response, body, _ = sub.handle_notify(request, self._now())
        if body is not None and response.status == 200:
            try:
                state = self.states.apply_notify(sub.event, body, datetime.now(UTC))
            except StateError as exc:
                self._count("notify_refused")
                log.warning("%s from %s refused: %s", sub.event, sub.target_uri, exc)
                return make_response(request, 400, f"Bad {sub.event} body: {exc}"[:120])
            self._count("notify_applied")
            log.debug("%s: %s", sub.event, state)
        self._after_subscriber(sub)
        return response

    # -- internals -------------------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _subscriber_of(self, call_id: str) -> Subscriber | None:
        return next((sub for sub in self.subscribers.values() if sub.call_id == call_id), None)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                self._tick()
            except Exception:
                log.exception("state events: tick failed")

    def _tick(self) -> None:
        now = self._now()
        for notifier in self.notifiers.values():
            self._run_notifier(notifier, notifier.tick(now))
        queue = self.body(EVENT_QUEUE_STATE)
        if queue != self._last_queue and len(self.notifiers[EVENT_QUEUE_STATE]):
            self._publish(EVENT_QUEUE_STATE)
        for sub in self.subscribers.values():
            request = sub.tick(now)
            if request is not None:
                self._send_subscribe(sub, request)

    # notifier side

    def _run_notifier(self, notifier: Notifier, events: list[NotifierEvent]) -> None:
        for event in events:
            if isinstance(event, Send) and isinstance(event.message, Request):
                notify = event.message
                dialog_key = (notify.call_id, notify.from_tag, notify.to_tag)

                def failed(notifier: Notifier = notifier, key: tuple[Any, ...] = dialog_key) -> None:
                    self._count("notify_failed")
                    self._run_notifier(notifier, notifier.notify_failed(DialogId(key[0], key[1] or "", key[2] or "")))

                def answered(response: Response, notifier: Notifier = notifier) -> None:
                    self._run_notifier(notifier, notifier.handle_response(response, self._now()))

                self.outbound.request(notify, answered, failed)
            elif isinstance(event, SubscriptionStarted):
                self._count("subscriptions_started")
                log.info("%s: %s subscribed for %d s", notifier.event, event.subscriber, event.expires)
            elif isinstance(event, SubscriptionEnded):
                self._count("subscriptions_ended")
                log.info("%s: subscription %s ended (%s)", notifier.event, event.dialog.call_id, event.reason)

    # subscriber side

    def _send_subscribe(self, sub: Subscriber, request: Request) -> None:
        def answered(response: Response) -> None:
            again = sub.handle_response(response, self._now())
            if again is not None:
                self._send_subscribe(sub, again)
            self._after_subscriber(sub)

        def failed() -> None:
            self._count("subscribe_failed")
            sub.transaction_failed(self._now())
            self._after_subscriber(sub)

        self.outbound.request(request, answered, failed)

    def _after_subscriber(self, sub: Subscriber) -> None:
        """A subscription that ended or failed leaves its queue's state ``Unreachable``
        (ranked unknown) rather than the last state it told, which may no longer hold."""
        if sub.state is SubscriberState.TERMINATED:
            self.states.update(QueueState(sub.target_uri, 0, 0, QueueStateValue.UNREACHABLE), datetime.now(UTC))
