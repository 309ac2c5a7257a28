"""The console's durable audit trail (firebox.console.audit) and its live-update hub
(firebox.console.live)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from firebox.console.audit import AuditEntry, ConsoleAudit
from firebox.console.live import LiveHub

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_audit_survives_reopen_newest_first_and_filters(tmp_path: Path) -> None:
    path = tmp_path / "var" / "console-audit.db"
    audit = ConsoleAudit(path)
    first = audit.record(AuditEntry(T0, "ann", "call-taker", "psap-01", "sign-in", "pos-1", "ok"))
    audit.record(AuditEntry(T0 + timedelta(seconds=5), "ann", "call-taker", "psap-01", "answer", "urn:x", "ok", {"position": "pos-1"}))
    audit.record(AuditEntry(T0 + timedelta(seconds=9), "bob", None, None, "sign-in", None, "failed: wrong user name or password"))
    assert first.seq == 1
    audit.close()

    again = ConsoleAudit(path)
    entries = again.entries()
    assert [e.action for e in entries] == ["sign-in", "answer", "sign-in"]
    assert entries[0].outcome.startswith("failed") and entries[0].role is None
    assert entries[1].detail == {"position": "pos-1"} and entries[1].at == T0 + timedelta(seconds=5)
    assert [e.user for e in again.entries(user="ann")] == ["ann", "ann"]
    assert [e.target for e in again.entries(action="answer")] == ["urn:x"]
    assert len(again.entries(limit=1)) == 1
    assert entries[1].to_json()["at"] == "2025-03-01T12:00:05+00:00"


def _messages(client) -> list[dict]:  # type: ignore[no-untyped-def]
    out = []
    while not client.queue.empty():
        ev = client.queue.get_nowait()
        out.append(None if ev is None else json.loads(ev.data))
    return out


async def test_hub_filters_by_psap_and_replays_after_a_sequence() -> None:
    hub = LiveHub(buffer=10)
    a = hub.connect("psap-01", None)
    b = hub.connect("psap-02", None)
    hub.publish("call", "psap-01", {"call": {"call_id": "c1"}})
    hub.publish("call", "psap-02", {"call": {"call_id": "c2"}})
    hub.publish("incident", None, {"incident": {"id": "i1"}})  # CAD: every PSAP
    assert [m["kind"] for m in _messages(a)] == ["call", "incident"]
    assert [(m["kind"], m["seq"]) for m in _messages(b)] == [("call", 2), ("incident", 3)]
    # A page that reconnects with Last-Event-ID 1 gets what came after, for its PSAP.
    c = hub.connect("psap-01", 1)
    assert [m["seq"] for m in _messages(c)] == [3]
    hub.disconnect(a)
    hub.publish("call", "psap-01", {})
    assert _messages(a) == [] and hub.clients == 2


async def test_hub_resync_when_the_buffer_no_longer_holds_the_gap() -> None:
    hub = LiveHub(buffer=3)
    for n in range(6):
        hub.publish("call", "p", {"n": n})
    late = hub.connect("p", 1)  # events 2..3 are gone from the buffer
    assert _messages(late) == [None]
    assert LiveHub.format(None, hub.seq) == 'id: 6\ndata: {"kind": "resync", "seq": 6}\n\n'
    fresh = hub.connect("p", 6)
    assert _messages(fresh) == []


async def test_hub_slow_client_is_told_to_resync_not_buffered_forever() -> None:
    hub = LiveHub(client_limit=5)
    slow = hub.connect("p", None)
    for n in range(50):
        hub.publish("call", "p", {"n": n})
    got = _messages(slow)
    assert got[-1] is None and len(got) <= 6
    assert slow.queue.qsize() == 0
    await asyncio.sleep(0)
