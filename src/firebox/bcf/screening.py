"""The BCF's screening answer: where calls the BCF diverts go first (NENA-STA-010.3 section
4.1, "divert to an announcement and callback"; during a TDoS, NENA's guidance to keep
suspect calls off the call-takers' queues without rejecting them).

``ScreeningService`` is a SIP user agent at ``sip:screening@<host>:<port>`` that answers
every call at once (200 OK with an SDP answer), holds it for ``announce_seconds`` (the
announcement: "you have reached 9-1-1; your call is being screened; stay on the line or a
call-taker will call you back") and hangs up. It reuses the PSAP agent
(``firebox.psap.ua``, one queue, answer mode): the same RFC 3261 dialog handling, a
different purpose. Every call it answers was diverted by the BCF, which kept a callback
record for it (``EmergencyCore.callbacks``): no diverted call ends nowhere. Should the
service not answer, the ESRP's normal route follows it (``EmergencyCore.divert_to``).

Not done: media (the announcement is not played: there is no RTP), DTMF screening that
would bridge a caller who presses a key to a PSAP queue at once.
"""

from __future__ import annotations

from typing import Any

from firebox.psap.ua import AgentMode, PsapAgents, Queue

__all__ = ["SCREENING_USER", "ScreeningService"]

SCREENING_USER = "screening"


class ScreeningService:
    """``host``/``port`` to listen on (0: a free port, known after ``start``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, announce_seconds: float = 10.0,
                 advertised_host: str | None = None) -> None:  # fmt: skip
        self.host = host
        self.announce_seconds = announce_seconds
        self._agents = PsapAgents(
            [Queue(SCREENING_USER, f"sip:{SCREENING_USER}@{advertised_host or host}", "BCF screening",
                   mode=AgentMode.ANSWER)],
            host=host, port=port, ring_seconds=0.0, hold_seconds=announce_seconds, advertised_host=advertised_host,
        )  # fmt: skip

    @property
    def port(self) -> int:
        return self._agents.port

    @property
    def uri(self) -> str:
        """The URI to divert to (``EmergencyCore.divert_to``, deployment ``esrp.divert_to``)."""
        host, port, _t = self._agents.address
        return f"sip:{SCREENING_USER}@{host}:{port}"

    def counts(self) -> dict[str, Any]:
        """Calls offered, answered, ended... (``firebox.psap.ua.QueueCounts``)."""
        return {**self._agents.counts[SCREENING_USER].as_dict(), "stats": dict(self._agents.core.stats)}

    async def start(self) -> None:
        await self._agents.start()

    async def close(self) -> None:
        self._agents.hang_up_all()
        await self._agents.close()
