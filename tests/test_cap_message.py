"""CAP 1.2 codec (firebox.cap.message) and enveloped XML signatures (firebox.cap.dsig)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from firebox.cap import dsig
from firebox.cap.message import (
    CAP_NS,
    Alert,
    Area,
    CapError,
    Info,
    Reference,
    Resource,
    ValuePair,
    format_datetime,
    format_references,
    parse_cap,
    parse_datetime,
    parse_references,
)

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z


def full_alert() -> Alert:
    """Every element CAP 1.2 defines, once or more."""
    info = Info(
        language="en-US", categories=("Infra", "Safety"), event="911 Telephone Outage", response_types=("Execute",),
        urgency="Immediate", severity="Severe", certainty="Observed", audience="public",
        event_codes=(ValuePair("SAME", "TOE"),), effective=format_datetime(T0), onset=format_datetime(T0 - 60),
        expires=format_datetime(T0 + 3600), sender_name="Demo 9-1-1", headline="911 outage in Dorton",
        description="Calls to 9-1-1 may not go through & <that> is escaped.", instruction="Call 603-555-0101.",
        web="https://alerts.example.test/", contact="603-555-0199",
        parameters=(ValuePair("EAS-ORG", "CIV"), ValuePair("CMAMtext", "911 down in Dorton.")),
        resources=(Resource("map", "image/png", "1024", "https://alerts.example.test/map.png", None, "ab" * 20),),
        areas=(Area("Dorton", ("43.1,-71.5 43.2,-71.5 43.2,-71.6 43.1,-71.5",), ("43.15,-71.55 2.5",),
                    (ValuePair("SAME", "033000"),), "100", "200"),),
    )  # fmt: skip
    es = Info(language="es-US", categories=("Infra",), event="Interrupción del 911", urgency="Immediate",
              severity="Severe", certainty="Observed", headline="Interrupción del 911 en Dorton")  # fmt: skip
    return Alert(
        identifier="FIREBOX-1", sender="alerts@demo.firebox.test", sent=format_datetime(T0), status="Actual",
        msg_type="Update", scope="Public", source="monitor", codes=("IPAWSv1.0", "x-test"), note="a note",
        references=(Reference("alerts@demo.firebox.test", "FIREBOX-0", format_datetime(T0 - 600)),),
        incidents="chain-1", infos=(info, es),
    )  # fmt: skip


def test_round_trip_keeps_every_element():
    alert = full_alert()
    xml = alert.to_xml()
    assert xml.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = etree.fromstring(xml)
    assert root.tag == f"{{{CAP_NS}}}alert"
    # Schema order (CAP 1.2 section 3.4): source before scope, references after note.
    names = [etree.QName(c).localname for c in root]
    assert names[:8] == ["identifier", "sender", "sent", "status", "msgType", "source", "scope", "code"]
    assert parse_cap(xml) == alert
    assert "ó" in parse_cap(xml).infos[1].event  # UTF-8 (CAP 1.2 section 3.3.1)


def test_dates_are_whole_seconds_with_numeric_offsets():
    assert format_datetime(T0) == "2025-06-15T15:06:40-00:00"
    assert format_datetime(datetime(2025, 6, 15, 11, 6, 40, 999_999, tzinfo=timezone(timedelta(hours=-4)))) == (
        "2025-06-15T11:06:40-04:00")  # fmt: skip
    assert parse_datetime("2025-06-15T15:06:40-00:00") == datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC)
    for bad in ("2025-06-15T15:06:40Z", "2025-06-15T15:06:40.5-00:00", "2025-06-15 15:06:40-00:00"):
        with pytest.raises(ValueError, match="3.3.3"):
            parse_datetime(bad)
    with pytest.raises(ValueError, match="timezone"):
        format_datetime(datetime(2025, 1, 1))


def test_references_are_sender_identifier_sent_groups():
    refs = (Reference("a@x.test", "ID-1", "2025-06-15T15:06:40-00:00"), Reference("a@x.test", "ID-2", "2025-06-15T16:00:00-00:00"))
    text = format_references(refs)
    assert text == "a@x.test,ID-1,2025-06-15T15:06:40-00:00 a@x.test,ID-2,2025-06-15T16:00:00-00:00"
    assert parse_references(text + "\n") == refs
    with pytest.raises(ValueError, match="'a@x.test,ID-1' is not sender,identifier,sent"):
        parse_references("a@x.test,ID-1")


@pytest.mark.parametrize(("xml", "member", "message"), [
    (b"<alert", "", "not XML"),
    (b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.1"/>', "", "root element must be"),
    (f'<alert xmlns="{CAP_NS}"><identifier>x</identifier><colour>red</colour></alert>'.encode(), "alert", "unexpected element"),
    (f'<alert xmlns="{CAP_NS}"><sender>s</sender><identifier>x</identifier></alert>'.encode(), "alert.identifier", "out of order"),
    (f'<alert xmlns="{CAP_NS}"><identifier>x</identifier><identifier>y</identifier></alert>'.encode(), "alert.identifier", "more than once"),
    (f'<alert xmlns="{CAP_NS}"><references>only,two</references></alert>'.encode(), "alert.references", "sender,identifier,sent"),
    (f'<alert xmlns="{CAP_NS}"><info><event>e</event><category>Geo</category></info></alert>'.encode(), "alert.info[0].category", "out of order"),
])  # fmt: skip
def test_parse_names_structural_problems(xml, member, message):
    with pytest.raises(CapError) as err:
        parse_cap(xml)
    assert err.value.problems[0].member == member and message in err.value.problems[0].message


def test_a_dtd_is_refused():
    with pytest.raises(CapError, match="not XML"):
        parse_cap(b'<!DOCTYPE a [<!ENTITY x "y">]><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>')


# --- signatures ---------------------------------------------------------------------------


def self_signed(key) -> tuple[bytes, bytes]:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alerts.demo.firebox.test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))  # fmt: skip
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module", params=["rsa", "ec"])
def keypair(request):
    key = rsa.generate_private_key(65537, 2048) if request.param == "rsa" else ec.generate_private_key(ec.SECP256R1())
    return request.param, *self_signed(key)


def test_signed_message_verifies_and_tampering_fails(keypair):
    kind, key_pem, cert_pem = keypair
    xml = full_alert().to_xml()
    signed = dsig.sign(xml, key_pem, cert_pem)
    root = etree.fromstring(signed)
    sig = root[-1]
    assert etree.QName(sig).localname == "Signature"  # enveloped, the alert's last child
    method = sig.find(".//{http://www.w3.org/2000/09/xmldsig#}SignatureMethod").get("Algorithm")
    assert method.endswith("rsa-sha256" if kind == "rsa" else "ecdsa-sha256")
    c14n = sig.find(".//{http://www.w3.org/2000/09/xmldsig#}CanonicalizationMethod").get("Algorithm")
    assert c14n == "http://www.w3.org/2001/10/xml-exc-c14n#"
    assert parse_cap(dsig.verify(signed, cert_pem)) == full_alert()
    parsed = parse_cap(signed)
    assert parsed == full_alert() and parsed.signature is not None
    assert b"Signature" not in parsed.to_xml()  # never re-serialized with a stale signature

    tampered = signed.replace(b"911 outage in Dorton", b"911 outage in Dortan")
    with pytest.raises(dsig.SignatureInvalid, match="does not verify"):
        dsig.verify(tampered, cert_pem)
    other_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(dsig.SignatureInvalid):
        dsig.verify(signed, self_signed(other_key)[1])
    with pytest.raises(dsig.SignatureInvalid, match="no enveloped"):
        dsig.verify(xml, cert_pem)
