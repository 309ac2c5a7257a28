"""JWS in the flattened JSON serialization (RFC 7515 section 7.2.2) with EdDSA (RFC 8037):
round trips, every refusal naming its member, x5c chains against trust anchors, and a
fuzz showing that nothing but ``JwsError`` ever comes out of ``verify``."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firebox import jws
from firebox.jws import JwsError, b64url_decode, b64url_encode, sign, verify

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PAYLOAD = {"logEventType": "CallStartLogEvent", "elementId": "bcf.example.net", "n": 1, "text": "héllo"}


# --- certificates (cryptography's x509 builder) --------------------------------------------


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def certificate(
    subject_key,
    subject: str,
    issuer_key,
    issuer: str,
    *,
    ca: bool,
    path_length: int | None = None,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
    key_usage: bool = True,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    )
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    algorithm = hashes.SHA256() if isinstance(issuer_key, ec.EllipticCurvePrivateKey) else None
    return builder.sign(issuer_key, algorithm)


def make_ca(cn: str = "Test Root CA", key=None, **kw):
    key = key or Ed25519PrivateKey.generate()
    return key, certificate(key, cn, key, cn, ca=True, **kw)


def make_leaf(ca_key, ca_cert: x509.Certificate, cn: str = "bcf.example.net", key=None, **kw):
    key = key or Ed25519PrivateKey.generate()
    issuer = ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return key, certificate(key, cn, ca_key, issuer, ca=False, **kw)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki():
    """A root, an intermediate under it, a leaf under the intermediate, and another root."""
    root_key, root = make_ca("Root")
    inter_key = Ed25519PrivateKey.generate()
    inter = certificate(inter_key, "Intermediate", root_key, "Root", ca=True, path_length=0)
    leaf_key, leaf = make_leaf(inter_key, inter, "esrp.example.net")
    other_key, other = make_ca("Other Root")
    return {"root": root, "root_key": root_key, "inter": inter, "inter_key": inter_key,
            "leaf": leaf, "leaf_key": leaf_key, "other": other, "other_key": other_key}  # fmt: skip


def header_of(token: dict) -> dict:
    return json.loads(b64url_decode(token["protected"]))


def with_header(token: dict, header: dict) -> dict:
    return {**token, "protected": b64url_encode(json.dumps(header).encode())}


def refused(token, member, fragment, **kw) -> JwsError:
    with pytest.raises(JwsError) as info:
        verify(token, **kw)
    assert info.value.member == member, info.value
    assert fragment in str(info.value), str(info.value)
    return info.value


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Ed25519PrivateKey, Ed448PrivateKey])
def test_eddsa_round_trip_with_keys(kind):
    key = kind.generate()
    token = sign(PAYLOAD, key, kid="bcf-2025")
    assert set(token) == {"protected", "payload", "signature"}
    assert all("=" not in v for v in token.values())
    assert header_of(token) == {"alg": "EdDSA", "kid": "bcf-2025"}
    assert len(b64url_decode(token["signature"])) == (64 if kind is Ed25519PrivateKey else 114)
    decoy = kind.generate().public_key()
    for form in (token, json.dumps(token), jws.serialize(token), jws.serialize(token).decode()):
        out = verify(form, keys=[decoy, key.public_key()])
        assert out.payload == PAYLOAD
        assert out.header["alg"] == "EdDSA"
        assert out.signer == "bcf-2025"


def test_signer_without_kid_names_the_key_index():
    key = Ed25519PrivateKey.generate()
    out = verify(sign(PAYLOAD, key), keys=[Ed448PrivateKey.generate().public_key(), key.public_key()])
    assert out.signer == "keys[1]"


def test_private_keys_are_accepted_as_keys():
    key = Ed25519PrivateKey.generate()
    assert verify(sign(PAYLOAD, key), keys=[key]).payload == PAYLOAD


def test_alg_none_only_when_allowed():
    token = sign(PAYLOAD, None)
    assert header_of(token) == {"alg": "none"} and token["signature"] == ""
    out = verify(token, allow_none=True)
    assert out.payload == PAYLOAD and out.signer is None
    refused(token, "alg", "'none' (an unsigned JWS) is not accepted")


def test_alg_none_with_a_signature_or_x5c(pki):
    token = sign(PAYLOAD, None)
    refused({**token, "signature": "AAAA"}, "signature", "must be empty with alg 'none'", allow_none=True)
    header = {"alg": "none", "x5c": [base64.b64encode(der(pki["leaf"])).decode()]}
    refused(with_header(token, header), "x5c", "present with alg 'none'", allow_none=True)


def test_x5c_round_trip_and_trust(pki):
    token = sign(PAYLOAD, pki["leaf_key"], x5c=[der(pki["leaf"]), pki["inter"]])
    header = header_of(token)
    assert header["alg"] == "EdDSA"
    assert [base64.b64decode(c) for c in header["x5c"]] == [der(pki["leaf"]), der(pki["inter"])]
    # Self-asserted (no trust, no keys): integrity only, signer from the certificate.
    out = verify(token, now=NOW)
    assert out.signer == "CN=esrp.example.net"
    assert [c.subject for c in out.chain] == [pki["leaf"].subject, pki["inter"].subject]
    # Chains to the root, as DER bytes or certificate, alone or among others.
    assert verify(token, trust=[pki["other"], pki["root"]], now=NOW).payload == PAYLOAD
    assert verify(token, trust=[der(pki["root"])], now=NOW).signer == "CN=esrp.example.net"
    # The intermediate itself may be the anchor, and so may the leaf (pinning).
    assert verify(token, trust=[pki["inter"]], now=NOW).payload == PAYLOAD
    assert verify(token, trust=[pki["leaf"]], now=NOW).payload == PAYLOAD


def test_x5c_with_ed448(pki):
    ca_key, ca = make_ca("Ed448 Root", key=Ed448PrivateKey.generate())
    leaf_key, leaf = make_leaf(ca_key, ca, "lis.example.net", key=Ed448PrivateKey.generate())
    token = sign(PAYLOAD, leaf_key, x5c=[der(leaf)])
    assert verify(token, trust=[ca], now=NOW).signer == "CN=lis.example.net"
    refused(token, "x5c", "does not lead to a trust anchor", trust=[pki["root"]], now=NOW)


def test_x5c_untrusted(pki):
    token = sign(PAYLOAD, pki["leaf_key"], x5c=[pki["leaf"], pki["inter"]])
    refused(token, "x5c", "the chain ending at CN=Intermediate does not lead to a trust anchor (issuer CN=Root)",
            trust=[pki["other"]], now=NOW)  # fmt: skip
    refused(token, "x5c", "no trust anchor is configured", trust=[], now=NOW)


def test_x5c_missing_intermediate(pki):
    token = sign(PAYLOAD, pki["leaf_key"], x5c=[pki["leaf"]])
    refused(token, "x5c", "does not lead to a trust anchor (issuer CN=Intermediate)", trust=[pki["root"]], now=NOW)


def test_x5c_chain_out_of_order(pki):
    token = sign(PAYLOAD, pki["leaf_key"], x5c=[pki["leaf"], pki["other"], pki["inter"]])
    refused(token, "x5c", "certificate 0 (CN=esrp.example.net) is not signed by certificate 1 (CN=Other Root)",
            trust=[pki["root"]], now=NOW)  # fmt: skip


@pytest.mark.parametrize("when, fragment", [
    (NOW + timedelta(days=400), "certificate 0 (CN=esrp.example.net) expired at"),
    (NOW - timedelta(days=40), "certificate 0 (CN=esrp.example.net) is not valid before"),
])  # fmt: skip
def test_x5c_outside_validity(pki, when, fragment):
    token = sign(PAYLOAD, pki["leaf_key"], x5c=[pki["leaf"], pki["inter"]])
    refused(token, "x5c", fragment, trust=[pki["root"]], now=when)


def test_x5c_expired_intermediate_and_anchor(pki):
    inter = certificate(pki["inter_key"], "Intermediate", pki["root_key"], "Root", ca=True,
                        not_after=NOW - timedelta(days=1))  # fmt: skip
    token = sign(PAYLOAD, pki["leaf_key"], x5c=[pki["leaf"], inter])
    refused(token, "x5c", "certificate 1 (CN=Intermediate) expired at", trust=[pki["root"]], now=NOW)
    old_root_key, old_root = make_ca("Old Root", not_after=NOW - timedelta(days=1))
    key, leaf = make_leaf(old_root_key, old_root, "old.example.net")
    refused(sign(PAYLOAD, key, x5c=[leaf]), "x5c", "trust anchor for certificate 0 (CN=Old Root) expired",
            trust=[old_root], now=NOW)  # fmt: skip


def test_x5c_issuer_that_is_not_a_ca(pki):
    # A leaf certificate used to issue another one: refused even though the signature holds.
    mid_key, mid = make_leaf(pki["root_key"], pki["root"], "not-a-ca.example.net")
    key, leaf = make_leaf(mid_key, mid, "victim.example.net")
    token = sign(PAYLOAD, key, x5c=[leaf, mid])
    refused(token, "x5c", "certificate 1 (CN=not-a-ca.example.net) is not a CA certificate", trust=[pki["root"]], now=NOW)


def test_x5c_path_length_and_key_usage(pki):
    # The intermediate allows no further CA below it.
    sub_key = Ed25519PrivateKey.generate()
    sub = certificate(sub_key, "Sub", pki["inter_key"], "Intermediate", ca=True)
    key, leaf = make_leaf(sub_key, sub, "deep.example.net")
    token = sign(PAYLOAD, key, x5c=[leaf, sub, pki["inter"]])
    refused(token, "x5c", "certificate 2 (CN=Intermediate) allows a path length of 0", trust=[pki["root"]], now=NOW)
    # A leaf whose key usage does not include digitalSignature.
    no_sign_key = Ed25519PrivateKey.generate()
    no_sign = certificate(no_sign_key, "enc.example.net", pki["root_key"], "Root", ca=True)
    refused(sign(PAYLOAD, no_sign_key, x5c=[no_sign]), "x5c", "may not sign (key usage lacks digitalSignature)",
            trust=[pki["root"]], now=NOW)  # fmt: skip


def test_x5c_and_keys(pki):
    token = sign(PAYLOAD, pki["leaf_key"], x5c=[pki["leaf"]])
    assert verify(token, keys=[pki["leaf_key"].public_key()]).signer == "CN=esrp.example.net"
    refused(token, "x5c", "holds none of the accepted keys", keys=[Ed25519PrivateKey.generate().public_key()])


def test_x5c_signature_from_another_key(pki):
    token = sign(PAYLOAD, pki["leaf_key"], x5c=[pki["leaf"]])
    forged = sign(PAYLOAD, Ed25519PrivateKey.generate())
    refused({**token, "signature": forged["signature"]}, "signature",
            "does not verify with the key of x5c certificate 0 (CN=esrp.example.net)")  # fmt: skip


def test_sign_refuses_mismatched_x5c_and_bad_payloads(pki):
    with pytest.raises(ValueError, match="does not hold the signing key"):
        sign(PAYLOAD, Ed25519PrivateKey.generate(), x5c=[pki["leaf"]])
    with pytest.raises(ValueError, match="alg none"):
        sign(PAYLOAD, None, x5c=[pki["leaf"]])
    with pytest.raises(ValueError, match="at least the signer"):
        sign(PAYLOAD, pki["leaf_key"], x5c=[])
    with pytest.raises(ValueError, match="not JSON-serializable"):
        sign({"x": float("nan")}, None)
    with pytest.raises(ValueError, match="not JSON-serializable"):
        sign({"x": object()}, None)
    with pytest.raises(TypeError):
        sign([1, 2], None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sign(PAYLOAD, ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]


# --- tampering ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def token(key):
    return sign(PAYLOAD, key)


def test_tampered_payload(key, token):
    changed = b64url_encode(json.dumps({**PAYLOAD, "n": 2}).encode())
    refused({**token, "payload": changed}, "signature", "does not verify with any of the 1 accepted keys",
            keys=[key.public_key()])  # fmt: skip


def test_tampered_signature(key, token):
    raw = bytearray(b64url_decode(token["signature"]))
    raw[10] ^= 1
    refused({**token, "signature": b64url_encode(bytes(raw))}, "signature", "does not verify", keys=[key.public_key()])
    refused({**token, "signature": b64url_encode(bytes(raw[:-1]))}, "signature", "does not verify",
            keys=[key.public_key()])  # fmt: skip
    refused({**token, "signature": ""}, "signature", "does not verify", keys=[key.public_key()])


def test_tampered_protected_header(key, token):
    # Another kid (the header is signed) ...
    refused(with_header(token, {"alg": "EdDSA", "kid": "other"}), "signature", "does not verify",
            keys=[key.public_key()])  # fmt: skip
    # ... or a downgrade to none, which keeps the signature: refused either way.
    downgraded = with_header(token, {"alg": "none"})
    refused(downgraded, "alg", "'none'", keys=[key.public_key()])
    refused(downgraded, "signature", "must be empty", keys=[key.public_key()], allow_none=True)


def test_signature_of_the_wrong_curve(key, token):
    other = Ed448PrivateKey.generate()
    refused(token, "signature", "does not verify", keys=[other.public_key()])


# --- structure, base64url, JSON -------------------------------------------------------------------


def test_top_level_documents(token):
    refused("not json", None, "not JSON: Expecting value")
    refused(b"\xff\xfe", None, "not UTF-8")
    refused("[1, 2]", None, "must be a JSON object, not an array")
    refused(42, None, "a JWS must be a JSON object, str or bytes, not int")  # type: ignore[arg-type]
    refused('{"protected": "a", "protected": "b", "payload": "", "signature": ""}', None,
            "duplicate JSON member name 'protected'")  # fmt: skip
    refused("[" * 100000 + "]" * 100000, None, "nested too deeply")
    refused({**token, 1: "x"}, "1", "unexpected member")


@pytest.mark.parametrize("member", ["protected", "payload", "signature"])
def test_missing_and_mistyped_members(token, member):
    refused({k: v for k, v in token.items() if k != member}, member, "missing member")
    for value, kind in [(None, "null"), (5, "a number"), (["x"], "an array"), ({}, "an object"), (True, "a boolean")]:
        refused({**token, member: value}, member, f"must be a base64url string, not {kind}")


@pytest.mark.parametrize("extra, fragment", [
    ("header", "an unprotected header is not accepted"),
    ("signatures", "the general JSON serialization is not accepted"),
    ("kid", "not a member of a flattened JWS"),
])  # fmt: skip
def test_unexpected_members(token, extra, fragment):
    refused({**token, extra: {}}, extra, fragment)


@pytest.mark.parametrize("member", ["protected", "payload", "signature"])
@pytest.mark.parametrize("mutate, fragment", [
    (lambda v: v + "==", "padding '=' is not allowed"),
    (lambda v: v[:4] + "+" + v[5:], "character '+' is not base64url"),
    (lambda v: v[:4] + " " + v[4:], "character ' ' is not base64url"),
    (lambda v: v + "A" * ((1 - len(v)) % 4), "impossible length"),  # length 4k+1
])  # fmt: skip
def test_bad_base64url(token, member, mutate, fragment):
    refused({**token, member: mutate(token[member])}, member, fragment)


def test_non_canonical_base64url(token):
    # "QR" decodes to 0x41 with non-zero unused bits ("QQ" is the canonical spelling).
    assert b64url_decode("QQ") == b"A"
    refused({**token, "signature": "QR"}, "signature", "not canonical base64url")


def test_empty_protected_header(token):
    refused({**token, "protected": ""}, "protected", "empty")


@pytest.mark.parametrize("member", ["protected", "payload"])
@pytest.mark.parametrize("raw, fragment", [
    (b"[1]", "must be a JSON object, not an array"),
    (b'"x"', "must be a JSON object, not a string"),
    (b"{", "not JSON"),
    (b'{"a": NaN}', "not acceptable JSON: NaN is not JSON"),
    (b'{"a": 1, "a": 2}', "duplicate JSON member name 'a'"),
    (b'{"a": "\xff"}', "not UTF-8"),
])  # fmt: skip
def test_members_that_are_not_json_objects(token, member, raw, fragment):
    refused({**token, member: b64url_encode(raw)}, member, fragment, allow_none=True)


@pytest.mark.parametrize("header, member, fragment", [
    ({}, "alg", "missing from the protected header"),
    ({"alg": 1}, "alg", "must be a string, not a number"),
    ({"alg": "HS256"}, "alg", "'HS256' is not an accepted algorithm"),
    ({"alg": "ES256"}, "alg", "'ES256' is not an accepted algorithm"),
    ({"alg": "eddsa"}, "alg", "'eddsa' is not an accepted algorithm"),
    ({"alg": "EdDSA", "crit": ["exp"], "exp": 1}, "protected", "critical header parameter 'exp' is not understood"),
    ({"alg": "EdDSA", "crit": ["exp"]}, "protected", "crit lists 'exp', which is not in the header"),
    ({"alg": "EdDSA", "crit": []}, "protected", "crit must be a non-empty array"),
    ({"alg": "EdDSA", "kid": 7}, "protected", "kid must be a string"),
    ({"alg": "EdDSA", "b64": False}, "protected", "b64 header parameter"),
])  # fmt: skip
def test_bad_headers(token, key, header, member, fragment):
    refused(with_header(token, header), member, fragment, keys=[key.public_key()])


def test_no_key_to_verify_with(token, pki):
    refused(token, "signature", "no x5c in the header and no keys")
    refused(token, "x5c", "missing: the signer must present a certificate chain", trust=[pki["root"]])


@pytest.mark.parametrize("x5c, fragment", [
    ("MIIB", "must be an array of base64 certificates, not a string"),
    ([], "must hold at least the signer's certificate"),
    ([1], "certificate 0 must be a base64 string, not a number"),
    (["-_-_"], "certificate 0 is not base64 (RFC 4648 section 4, with padding"),
    (["QQ"], "certificate 0 is not base64"),
    ([""], "certificate 0 is not base64"),
    (["QUJD"], "certificate 0 is not a DER X.509 certificate"),
    (["QUJD"] * 9, "9 certificates: more than 8 are not accepted"),
])  # fmt: skip
def test_bad_x5c(token, key, x5c, fragment):
    refused(with_header(token, {"alg": "EdDSA", "x5c": x5c}), "x5c", fragment, keys=[key.public_key()])


def test_x5c_with_a_non_eddsa_key(token):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    _, cert = make_ca("EC CA", key=ec_key)
    header = {"alg": "EdDSA", "x5c": [base64.b64encode(der(cert)).decode()]}
    refused(with_header(token, header), "x5c", "certificate 0 holds an EC (secp256r1) key, not an Ed25519 or Ed448 key")


def test_misuse_of_arguments_is_a_type_error(token):
    with pytest.raises(TypeError):
        verify(token, keys=["not a key"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        verify(token, trust=["not a cert"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        verify(token, keys=[Ed25519PrivateKey.generate()], now=datetime(2025, 1, 1))


def test_b64url_helpers():
    for data in (b"", b"\x00", b"\xff\xfe", b"abc", bytes(range(256))):
        assert b64url_decode(b64url_encode(data)) == data
    with pytest.raises(JwsError) as info:
        b64url_decode(5, "payload")  # type: ignore[arg-type]
    assert info.value.member == "payload"


# --- fuzz ---------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
b64_text = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .", max_size=40)
FUZZ_KEY = Ed25519PrivateKey.generate()
FUZZ_TOKEN = sign(PAYLOAD, FUZZ_KEY)


def _outcome(value, **kw):
    try:
        out = verify(value, keys=[FUZZ_KEY.public_key()], **kw)
    except JwsError as exc:
        assert exc.member in (None, "protected", "payload", "signature", "x5c", "alg") or isinstance(exc.member, str)
        return exc
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    json_values,
    st.binary(max_size=60),
    st.text(max_size=60),
    st.dictionaries(st.sampled_from(["protected", "payload", "signature", "header"]), json_values | b64_text),
))  # fmt: skip
def test_fuzz_arbitrary_documents(value):
    out = _outcome(value, allow_none=True)
    assert isinstance(out, JwsError)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "x5c", "crit", "typ", "b64"]),
        json_values | st.sampled_from(["EdDSA", "none"]) | st.lists(b64_text, max_size=3),
        max_size=4,
    ),
    payload=json_values,
    signature=b64_text,
    allow_none=st.booleans(),
)
def test_fuzz_headers_and_payloads(header, payload, signature, allow_none):
    def enc(value) -> str:
        return b64url_encode(json.dumps(value).encode())

    token = {"protected": enc(header), "payload": enc(payload), "signature": signature}
    out = _outcome(token, allow_none=allow_none, trust=[], now=NOW)
    if not isinstance(out, JwsError):  # only an unsigned JWS can get through
        assert header.get("alg") == "none" and allow_none and signature == ""


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["protected", "payload", "signature"]), st.integers(0, 200), st.characters())
def test_fuzz_mutated_token(member, position, char):
    value = FUZZ_TOKEN[member]
    position %= len(value) + 1
    mutated = {**FUZZ_TOKEN, member: value[:position] + char + value[position + 1:]}
    out = _outcome(mutated)
    if mutated == FUZZ_TOKEN:
        assert not isinstance(out, JwsError)
    else:
        assert isinstance(out, JwsError)


@pytest.fixture(scope="module")
def chain_token(pki):
    return sign(PAYLOAD, pki["leaf_key"], x5c=[pki["leaf"], pki["inter"]])


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                              min_size=1, max_size=3))  # fmt: skip
def test_fuzz_damaged_certificates(pki, chain_token, which, flips):
    """Damaged DER in x5c (bad versions, lengths, names, extensions...) is a JwsError, whatever
    cryptography makes of it."""
    header = header_of(chain_token)
    raw = bytearray(base64.b64decode(header["x5c"][which]))
    for position, value in flips:
        raw[position % len(raw)] = value
    header["x5c"][which] = base64.b64encode(bytes(raw)).decode()
    damaged = with_header(chain_token, header)
    for kw in ({"trust": [pki["root"]], "now": NOW}, {}, {"keys": [pki["leaf_key"].public_key()]}):
        try:
            verify(damaged, **kw)
        except JwsError as exc:
            assert exc.member in ("x5c", "signature")
