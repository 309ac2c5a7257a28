"""Helpers shared by the Logging Service's tests and benchmark: a scratch PostgreSQL
database, signers with x5c chains (Ed25519 / Ed448), and log events of a call.

Not used by the service itself.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from firebox import jws as jwslib
from firebox.logging.events import format_timestamp, new_log_event_id

__all__ = [
    "PG_ADMIN_URL",
    "Signer",
    "call_events",
    "free_port",
    "postgres_unavailable",
    "scratch_postgres",
]

#: Where the scratch databases are created (``FIREBOX_TEST_PG`` overrides).
PG_ADMIN_URL = os.environ.get("FIREBOX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None if it can."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - a dependency
        return f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any reason is a reason to skip
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"
    return None


@contextmanager
def scratch_postgres(prefix: str = "firebox_logtest") -> Iterator[str]:
    """A fresh database (its URL), dropped afterwards with every connection to it."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(PG_ADMIN_URL)._replace(path="/" + name))
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Signer:
    """An element's signing key with a two-certificate x5c chain (leaf, CA), or no key at
    all (``kind="none"``: ``alg: none``)."""

    def __init__(self, kind: str = "ed25519", cn: str = "bcf.example.net"):
        self.kind = kind
        self.key: Ed25519PrivateKey | Ed448PrivateKey | None
        self.x5c: list[x509.Certificate] | None = None
        if kind == "none":
            self.key = None
            return
        make = Ed25519PrivateKey.generate if kind == "ed25519" else Ed448PrivateKey.generate
        ca_key, self.key = make(), make()
        now = datetime.now(UTC)

        def cert(subject: str, issuer: str, public: Any, signer: Any, ca: bool) -> x509.Certificate:
            return (
                x509.CertificateBuilder()
                .subject_name(_name(subject))
                .issuer_name(_name(issuer))
                .public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(signer, None)
            )

        self.ca = cert("firebox test CA", "firebox test CA", ca_key.public_key(), ca_key, True)
        self.x5c = [cert(cn, "firebox test CA", self.key.public_key(), ca_key, False), self.ca]

    def sign(self, payload: dict[str, Any]) -> dict[str, str]:
        return jwslib.sign(payload, self.key, x5c=self.x5c)


def call_events(
    call_id: str,
    incident_id: str,
    *,
    element: str = "esrp.example.net",
    agency: str = "example.net",
    start: datetime | None = None,
    fqdn: str = "esrp.example.net",
) -> list[dict[str, Any]]:
    """The log events of one call through a BCF/ESRP, as JSON payloads with a
    ``clientAssignedIdentifier`` each: start, INVITE in, LoST query/response, route, INVITE
    out, 200 OK, BYE, end; one second apart."""
    t0 = start or datetime.now(UTC).replace(microsecond=0)
    common = {"elementId": element, "agencyId": agency, "callId": call_id, "incidentId": incident_id}
    sip_in = "INVITE urn:service:sos SIP/2.0\r\nCall-ID: abc@carrier\r\n\r\n"
    sip_out = "INVITE sip:queue@psap.example.net SIP/2.0\r\nCall-ID: abc@carrier\r\n\r\n"
    steps: list[dict[str, Any]] = [
        {"logEventType": "CallStartLogEvent", "direction": "incoming", "from": "sip:+16175550100@carrier.net"},
        {"logEventType": "CallSignalingMessageLogEvent", "direction": "incoming", "text": sip_in, "protocol": "sip"},
        {"logEventType": "LostQueryLogEvent", "direction": "outgoing", "queryId": "q1",
         "queryAdapter": "<findService xmlns='urn:ietf:params:xml:ns:lost1'/>"},
        {"logEventType": "LostResponseLogEvent", "direction": "incoming", "responseId": "q1",
         "responseAdapter": "<findServiceResponse xmlns='urn:ietf:params:xml:ns:lost1'><uri>sip:queue@psap.example.net</uri></findServiceResponse>"},
        {"logEventType": "RouteLogEvent", "recipientUri": "sip:queue@psap.example.net", "ruleId": "r1",
         "policyOwner": "example.net", "policyType": "OriginationPolicy", "cause": "normal"},
        {"logEventType": "CallSignalingMessageLogEvent", "direction": "outgoing", "text": sip_out, "protocol": "sip"},
        {"logEventType": "CallSignalingMessageLogEvent", "direction": "incoming",
         "text": "SIP/2.0 200 OK\r\nCall-ID: abc@carrier\r\nCSeq: 1 INVITE\r\n\r\n", "protocol": "sip"},
        {"logEventType": "CallSignalingMessageLogEvent", "direction": "incoming",
         "text": "BYE sip:esrp.example.net SIP/2.0\r\nCall-ID: abc@carrier\r\n\r\n", "protocol": "sip"},
        {"logEventType": "CallEndLogEvent", "direction": "incoming"},
    ]  # fmt: skip
    out = []
    for i, step in enumerate(steps):
        event = {**step, **common, "timestamp": format_timestamp(t0 + timedelta(seconds=i))}
        event["clientAssignedIdentifier"] = new_log_event_id(fqdn)
        out.append(event)
    return out
