"""Where alert drafts and the CAP messages sent are kept, so that they survive a restart and
are shared by the nodes of a cluster (issue 8: "an outage alert is drafted once, even when
two nodes see the same event").

Every node's ``AlertManager`` sees the same outage updates and drafts the same message. Each
draft is claimed under a *drafting key*: what was last told in the chain, the message type,
the outages and the towns (``draft_key``). The key is unique in the store, so of two nodes
drafting at once one inserts its draft and the other gets that draft back and adopts it (its
identifier, chain and state): one draft per outage picture. Every later change of a draft
(approvals, rejection, withdrawal, sent) is written back, and read again before the next
action, so a second approver may use another node. Publication is claimed too
(``claim_publication``: a unique key on the CAP identifier), so the webhooks and IPAWS get a
message from one node only.

* ``MemoryAlertStore``: one node (tests, the embedded default when restarts need not keep
  drafts);
* ``PostgresAlertStore``: psycopg 3, tables ``alert_drafts`` and ``alert_sent``.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, Protocol

from firebox.alerting.drafts import AlertDraft, DraftState, Transition
from firebox.cap.message import MsgType, parse_cap
from firebox.durable import SharedPostgres

__all__ = [
    "AlertStore",
    "MemoryAlertStore",
    "PostgresAlertStore",
    "draft_from_doc",
    "draft_key",
    "draft_to_doc",
    "open_alert_store",
]


def draft_key(chain_head: str | None, msg_type: MsgType, outages: tuple[str, ...], towns: tuple[str, ...],
              statewide: bool, clear: bool) -> str:  # fmt: skip
    """The drafting key: the last final message of the chain (None: a new chain), the type,
    the outages and the area. Two nodes drafting from the same picture compute the same."""
    text = "|".join([chain_head or "-", msg_type.value, ",".join(sorted(outages)), ",".join(towns),
                     "statewide" if statewide else "", "clear" if clear else ""])  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()


def draft_to_doc(d: AlertDraft) -> dict[str, Any]:
    """A draft as JSON: the CAP message as XML (the preview, or the final message), the
    signed bytes as sent, and the workflow."""
    return {
        "id": d.id, "chain": d.chain, "msgType": d.msg_type.value, "clear": d.clear, "towns": list(d.towns),
        "psaps": list(d.psaps), "statewide": d.statewide, "outages": list(d.outages), "created": d.created,
        "alert": d.alert.to_xml().decode(), "areaPsaps": list(d.area_psaps), "areaStatewide": d.area_statewide,
        "state": d.state.value, "approvals": list(d.approvals),
        "transitions": [{"state": t.state.value, "by": t.by, "at": t.at, "note": t.note} for t in d.transitions],
        "xml": None if d.xml is None else d.xml.decode(), "sentAt": d.sent_at,
    }  # fmt: skip


def draft_from_doc(doc: dict[str, Any]) -> AlertDraft:
    """A draft from ``draft_to_doc`` (its ``problems`` empty: the manager validates)."""
    return AlertDraft(
        id=doc["id"], chain=doc["chain"], msg_type=MsgType(doc["msgType"]), clear=doc["clear"],
        towns=tuple(doc["towns"]), psaps=tuple(doc["psaps"]), statewide=doc["statewide"],
        outages=tuple(doc["outages"]), created=doc["created"], alert=parse_cap(doc["alert"]), problems=[],
        area_psaps=tuple(doc["areaPsaps"]), area_statewide=doc["areaStatewide"], state=DraftState(doc["state"]),
        approvals=list(doc["approvals"]),
        transitions=[Transition(DraftState(t["state"]), t["by"], t["at"], t["note"]) for t in doc["transitions"]],
        xml=None if doc["xml"] is None else doc["xml"].encode(), sent_at=doc["sentAt"],
    )  # fmt: skip


class AlertStore(Protocol):
    def claim(self, key: str, draft: AlertDraft) -> AlertDraft:
        """Keep ``draft`` under ``key``, or answer the draft another node kept first."""
        ...

    def save(self, draft: AlertDraft) -> None: ...
    def get(self, draft_id: str) -> AlertDraft | None: ...
    def drafts(self) -> list[AlertDraft]: ...
    def claim_publication(self, draft_id: str, node: str, now: float) -> bool: ...
    def close(self) -> None: ...


class MemoryAlertStore:
    """One node's drafts, kept as their JSON form (as PostgreSQL keeps them)."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, str] = {}
        self._published: dict[str, str] = {}
        self._lock = threading.Lock()

    def claim(self, key: str, draft: AlertDraft) -> AlertDraft:
        with self._lock:
            held = self._keys.get(key)
            if held is not None:
                return draft_from_doc(self._docs[held])
            self._keys[key], self._docs[draft.id] = draft.id, draft_to_doc(draft)
            return draft

    def save(self, draft: AlertDraft) -> None:
        with self._lock:
            self._docs[draft.id] = draft_to_doc(draft)

    def get(self, draft_id: str) -> AlertDraft | None:
        doc = self._docs.get(draft_id)
        return None if doc is None else draft_from_doc(doc)

    def drafts(self) -> list[AlertDraft]:
        return sorted((draft_from_doc(d) for d in self._docs.values()), key=lambda d: (d.created, d.id))

    def claim_publication(self, draft_id: str, node: str, now: float) -> bool:
        with self._lock:
            return self._published.setdefault(draft_id, node) == node

    def close(self) -> None:
        pass


_PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS alert_drafts (
        id TEXT PRIMARY KEY, draft_key TEXT NOT NULL UNIQUE, chain TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, doc JSONB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alert_sent (
        identifier TEXT PRIMARY KEY, node TEXT NOT NULL, claimed_at DOUBLE PRECISION NOT NULL,
        sent TEXT, xml BYTEA)""",
)


class PostgresAlertStore(SharedPostgres):
    """Drafts and publications in PostgreSQL, shared by the nodes of a cluster: the drafting
    key and the CAP identifier are unique keys, so a race ends in one row and the loser
    reads the winner's."""

    def __init__(self, conninfo: str):
        super().__init__(conninfo, _PG_SCHEMA, 7244051)  # the lock: two nodes creating the tables at once

    def claim(self, key: str, draft: AlertDraft) -> AlertDraft:
        from psycopg.types.json import Jsonb

        rows = self._rows(
            "INSERT INTO alert_drafts (id, draft_key, chain, created, state, doc) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (draft_key) DO NOTHING RETURNING id",
            (draft.id, key, draft.chain, draft.created, draft.state.value, Jsonb(draft_to_doc(draft))),
        )
        if rows:
            return draft
        (held,) = self._rows("SELECT doc FROM alert_drafts WHERE draft_key = %s", (key,))
        return draft_from_doc(held[0])

    def save(self, draft: AlertDraft) -> None:
        from psycopg.types.json import Jsonb

        self._rows("UPDATE alert_drafts SET state = %s, doc = %s WHERE id = %s RETURNING id",
                   (draft.state.value, Jsonb(draft_to_doc(draft)), draft.id))  # fmt: skip
        if draft.state is DraftState.SENT and draft.xml is not None:
            self._rows("UPDATE alert_sent SET sent = %s, xml = %s WHERE identifier = %s RETURNING identifier",
                       (draft.alert.sent, draft.xml, draft.id))  # fmt: skip

    def get(self, draft_id: str) -> AlertDraft | None:
        rows = self._rows("SELECT doc FROM alert_drafts WHERE id = %s", (draft_id,))
        return draft_from_doc(rows[0][0]) if rows else None

    def drafts(self) -> list[AlertDraft]:
        return [draft_from_doc(r[0]) for r in self._rows("SELECT doc FROM alert_drafts ORDER BY created, id")]

    def claim_publication(self, draft_id: str, node: str, now: float) -> bool:
        rows = self._rows(
            "INSERT INTO alert_sent (identifier, node, claimed_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (identifier) DO NOTHING RETURNING identifier",
            (draft_id, node, now),
        )
        if rows:
            return True
        return bool(self._rows("SELECT 1 FROM alert_sent WHERE identifier = %s AND node = %s", (draft_id, node)))


def open_alert_store(url: str | None) -> MemoryAlertStore | PostgresAlertStore:
    """``None`` / ``memory:``: one node in memory; ``postgresql://...``: shared."""
    if url is None or url in ("memory", "memory:"):
        return MemoryAlertStore()
    if url.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        return PostgresAlertStore(url)
    raise ValueError(f"unknown alert store URL {url!r}: use memory: or postgresql://...")


