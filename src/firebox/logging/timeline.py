"""One call's story from its log events (NENA-STA-010.3 section 4.12.3): what
``firebox logs call CALLID`` prints.

``timeline(containers)`` turns the log event containers of a call (``logEventId`` plus the
JWS, as ``GET /Conversations/{callId}`` answers them) into ``Step``s in the order things
happened: each with its time, the element that logged it, the stage of the call
(signalling, location/LoST, route, answer, release, call, text) and a one-line summary, and
whether the JWS signature verified (with the key of its ``x5c`` leaf) or was ``none``.
Sans-I/O: no store, no HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from firebox import jws as jwslib
from firebox.logging.events import parse_timestamp

__all__ = ["Step", "timeline"]

_URI = re.compile(r"<uri>\s*([^<\s]+)\s*</uri>")
_CSEQ = re.compile(r"^CSeq:\s*\d+\s+(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Step:
    when: datetime | None
    timestamp: str
    element: str
    stage: str
    summary: str
    log_event_type: str
    log_event_id: str
    signature: str  # "EdDSA ✓ <signer>", "none", or "✗ <why>"


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def _arrow(event: Mapping[str, Any]) -> str:
    return {"incoming": "←", "outgoing": "→"}.get(str(event.get("direction")), "·")


def _signaling(event: Mapping[str, Any]) -> tuple[str, str]:
    text = str(event.get("text", ""))
    line = _first_line(text)
    cseq = _CSEQ.search(text)
    method = cseq.group(1).upper() if cseq else ""
    if line.startswith("SIP/2.0 2") and method == "INVITE":
        return "answer", f"{_arrow(event)} {line} (INVITE answered)"
    if line.split(" ", 1)[0] in ("BYE", "CANCEL"):
        return "release", f"{_arrow(event)} {line}"
    return "signalling", f"{_arrow(event)} {line}"


def describe(event: Mapping[str, Any]) -> tuple[str, str]:
    """The stage and a one-line summary of one log event."""
    kind = str(event.get("logEventType", "?"))
    if kind == "CallSignalingMessageLogEvent":
        return _signaling(event)
    if kind == "CallStartLogEvent":
        parties = " ".join(f"{k} {event[k]}" for k in ("from", "to") if event.get(k))
        return "call", f"{_arrow(event)} call starts {parties}".rstrip()
    if kind == "CallEndLogEvent":
        ext = event.get("extension")
        cause = ext.get("cause") if isinstance(ext, dict) else None
        return "release", f"{_arrow(event)} call ends" + (f" ({cause})" if cause else "")
    if kind == "LostQueryLogEvent":
        return "location/LoST", f"{_arrow(event)} LoST query {event.get('queryId', '')}".rstrip()
    if kind == "LostResponseLogEvent":
        uris = _URI.findall(str(event.get("responseAdapter", "")))
        status = f" [{event['responseStatus']}]" if event.get("responseStatus") else ""
        found = f": {', '.join(uris)}" if uris else ""
        return "location/LoST", f"{_arrow(event)} LoST response {event.get('responseId', '')}{status}{found}"
    if kind in ("LocationQueryLogEvent", "LocationResponseLogEvent", "AliLocationQueryLogEvent",
                "AliLocationResponseLogEvent"):  # fmt: skip
        return "location/LoST", kind.removesuffix("LogEvent")
    if kind == "RouteLogEvent":
        cause = f", cause {event['cause']}" if event.get("cause") else ""
        return "route", (
            f"→ {event.get('recipientUri')} by rule {event.get('ruleId')} of "
            f"{event.get('policyOwner')} {event.get('policyType')}{cause}"
        )
    if kind == "MessageLogEvent":
        by = f" ({event['agencyAgentId']})" if event.get("agencyAgentId") else ""
        return "text", f"{_arrow(event)} {str(event.get('text', ''))[:80]}{by}"
    if kind == "CallStateChangeLogEvent":
        return _call_state(event)
    if kind == "CallTransferLogEvent":
        status = (event.get("extension") or {}).get("transferStatus") if isinstance(event.get("extension"), dict) else None
        return "route", f"→ transfer to {event.get('target')}{f' ({status})' if status else ''}{_who(event)}"
    if kind == "CallProcessLogEvent" and isinstance(event.get("extension"), dict) and "callback" in event["extension"]:
        cb = event["extension"]["callback"] if isinstance(event["extension"]["callback"], dict) else {}
        return "callback", f"callback to {cb.get('number') or '?'}: {cb.get('outcome') or '?'}{_who(event)}"
    return "other", kind.removesuffix("LogEvent")


def _who(event: Mapping[str, Any]) -> str:
    """`` at <position> by <agent>`` of a PSAP event, as far as it names them."""
    out = f" at {event['agencyPositionId']}" if event.get("agencyPositionId") else ""
    return out + (f" by {event['agencyAgentId']}" if event.get("agencyAgentId") else "")


def _call_state(event: Mapping[str, Any]) -> tuple[str, str]:
    """A PSAP's ``CallStateChangeLogEvent`` (NENA-STA-010.3 section 4.12.3.7)."""
    state = str(event.get("state", "?"))
    reason = f" ({event['changeReason']})" if event.get("changeReason") else ""
    stage = {"callAnswered": "answer", "callCancel": "release", "callEnd": "release"}.get(state, "call")
    return stage, f"{state}{_who(event)}{reason}"


def _signature(token: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    try:
        v = jwslib.verify(dict(token), allow_none=True)
    except jwslib.JwsError as exc:
        return None, f"✗ {exc}"
    if v.header.get("alg") == "none":
        return v.payload, "none"
    return v.payload, f"EdDSA ✓ {v.signer or ''}".rstrip()


def timeline(containers: Iterable[Mapping[str, Any]]) -> list[Step]:
    """The steps of a call from its log event containers, sorted by the events' timestamps
    (stable: equal timestamps keep the given order)."""
    steps: list[Step] = []
    for c in containers:
        token = c.get("logEvent", {})
        payload, sig = _signature(token)
        if payload is None:  # show what it claims even when the signature fails
            try:
                payload = jwslib.parse_json_object(jwslib.b64url_decode(token.get("payload", "")), "payload")
            except jwslib.JwsError:
                payload = {}
        ts = str(payload.get("timestamp", ""))
        try:
            when: datetime | None = parse_timestamp(ts)
        except ValueError:
            when = None
        stage, summary = describe(payload)
        steps.append(Step(when, ts, str(payload.get("elementId", "?")), stage, summary,
                          str(payload.get("logEventType", "?")), str(c.get("logEventId", "")), sig))  # fmt: skip
    known = sorted((s for s in steps if s.when is not None), key=lambda s: s.when)  # type: ignore[arg-type,return-value]
    return known + [s for s in steps if s.when is None]
