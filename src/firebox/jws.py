"""JSON Web Signatures for i3 messages: the flattened JSON serialization only.

NENA-STA-010.3 section 4.12.3 carries every log event as a JWS (RFC 7515) in the flattened
JSON serialization (RFC 7515 section 7.2.2)::

    {"protected": b64url(header JSON), "payload": b64url(payload JSON), "signature": b64url(sig)}

with no unprotected ``header`` member: everything the receiver relies on is signed.

Algorithms (RFC 7518 section 3.1, RFC 8037 section 3.1):

* ``EdDSA`` with an Ed25519 or Ed448 key (the OKP key type of RFC 8037; the curve follows from
  the key, RFC 8037 does not put it in the header). Signatures are 64 and 114 bytes long.
* ``none`` (RFC 7518 section 3.6), an Unsecured JWS with an empty signature, only when the
  caller of ``verify`` says ``allow_none=True`` (a lab without certificates). It is never
  accepted by default: RFC 7518 section 8.5 warns that accepting it by default defeats
  signing altogether.

Who signed: the ``x5c`` header parameter (RFC 7515 section 4.1.6) holds the signer's
certificate first, then the certificates that certify it, each base64 (RFC 4648 section 4,
*not* base64url) of its DER. ``verify`` checks the signature with the first certificate's
public key; when ``trust`` anchors are given, the chain must also lead to one of them (each
link's signature, its issuer name, CA basic constraints, path length and validity dates at
``now``). Without ``x5c`` the signature must verify with one of the caller's ``keys``
(public keys configured out of band, e.g. from a JWK set, RFC 7517).

The parser is strict and total: duplicate JSON member names, padding or non-canonical
base64url, non-object JSON, unknown critical header parameters (RFC 7515 section 4.1.11)
and unexpected top-level members are refused, and every failure, whatever the input, is a
``JwsError`` naming the member at fault (``protected``, ``payload``, ``signature``, ``x5c``,
``alg``, or ``None`` when the document itself is not a JWS object).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import (
    Ed448PrivateKey,
    Ed448PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "ALG_EDDSA",
    "ALG_NONE",
    "MAX_JWS_BYTES",
    "JwsError",
    "Verified",
    "b64url_decode",
    "b64url_encode",
    "sign",
    "verify",
]

ALG_EDDSA = "EdDSA"
ALG_NONE = "none"
#: The members of a flattened JWS as firebox accepts it (RFC 7515 section 7.2.2 minus the
#: unprotected ``header``).
MEMBERS = ("protected", "payload", "signature")
#: Largest JWS accepted (sum of the three members' lengths). A log event carrying a SIP
#: INVITE with a PIDF-LO body is a few tens of kilobytes.
MAX_JWS_BYTES = 4 << 20
#: Longest ``x5c`` chain looked at (RFC 7515 does not bound it; a verifier must).
MAX_CHAIN = 8
#: Header parameters whose meaning ``verify`` understands, hence acceptable in ``crit``:
#: none (RFC 7515 section 4.1.11 forbids listing the registered ones there).
UNDERSTOOD_CRIT: frozenset[str] = frozenset()

PrivateKey = Ed25519PrivateKey | Ed448PrivateKey
PublicKey = Ed25519PublicKey | Ed448PublicKey
_SIG_LEN = {Ed25519PublicKey: 64, Ed448PublicKey: 114}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class JwsError(ValueError):
    """A JWS that is not acceptable. ``member`` names the member at fault: ``protected``,
    ``payload``, ``signature``, ``x5c`` or ``alg``; ``None`` when the document as a whole is
    not a flattened JWS object."""

    def __init__(self, member: str | None, message: str):
        super().__init__(f"{member}: {message}" if member else message)
        self.member = member
        self.message = message


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified JWS: its payload and protected header (both JSON objects), and who signed:
    the subject of the ``x5c`` leaf certificate (RFC 4514 string), else the header's ``kid``
    or ``keys[i]`` for the caller's key that verified, or ``None`` for ``alg: none``."""

    payload: dict[str, Any]
    header: dict[str, Any]
    signer: str | None
    chain: tuple[x509.Certificate, ...] = field(default=())


# --- base64url (RFC 7515 section 2 and appendix C) ----------------------------------------


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2, "Base64url Encoding")."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, member: str | None = None) -> bytes:
    """Strict inverse of ``b64url_encode``: only the URL-safe alphabet, no padding, no
    whitespace, and the canonical encoding (unused trailing bits zero), so a JWS has exactly
    one spelling. Raises ``JwsError`` naming ``member``."""
    if not isinstance(text, str):
        raise JwsError(member, f"must be a base64url string, not {json_type(text)}")
    if not _B64URL.fullmatch(text):
        bad = next(c for c in text if not (c.isascii() and (c.isalnum() or c in "-_")))
        what = "padding '=' is not allowed" if bad == "=" else f"character {bad!r} is not base64url"
        raise JwsError(member, f"not base64url without padding: {what}")
    if len(text) % 4 == 1:
        raise JwsError(member, f"not base64url: impossible length {len(text)}")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - excluded above
        raise JwsError(member, f"not base64url: {exc}") from None
    if b64url_encode(data) != text:
        raise JwsError(member, "not canonical base64url: the unused trailing bits are not zero")
    return data


# --- JSON ---------------------------------------------------------------------------------


def json_type(value: object) -> str:
    """How a JSON value is named in an error message ("a string", "an array", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


class _Duplicate(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(data: bytes | str, member: str | None) -> dict[str, Any]:
    """Parse a JSON object strictly (RFC 8259 text, UTF-8, no duplicate member names, no
    NaN/Infinity), raising ``JwsError`` naming ``member``."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    except UnicodeDecodeError as exc:
        raise JwsError(member, f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except _Duplicate as exc:
        raise JwsError(member, f"duplicate JSON member name {exc.key!r}") from None
    except json.JSONDecodeError as exc:
        raise JwsError(member, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JwsError(member, "not acceptable JSON: nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity, integers too long to convert
        raise JwsError(member, f"not acceptable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise JwsError(member, f"must be a JSON object, not {json_type(value)}")
    return value


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


# --- signing ------------------------------------------------------------------------------


def _der(cert: bytes | x509.Certificate) -> bytes:
    if isinstance(cert, x509.Certificate):
        return cert.public_bytes(serialization.Encoding.DER)
    if isinstance(cert, (bytes, bytearray, memoryview)):
        return bytes(cert)
    raise TypeError(f"x5c entries must be DER bytes or certificates, not {type(cert).__name__}")


def _raw(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(
    payload: dict[str, Any],
    key: PrivateKey | None,
    *,
    x5c: Sequence[bytes | x509.Certificate] | None = None,
    kid: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Sign ``payload`` (a JSON object) into a flattened JWS (RFC 7515 section 7.2.2).

    ``key`` is an Ed25519 or Ed448 private key (``alg: EdDSA``, RFC 8037 section 3.1), or
    ``None`` for an Unsecured JWS (``alg: none``, RFC 7518 section 3.6, empty signature).
    ``x5c`` lists the signer's certificate first then its issuers (DER bytes or
    ``x509.Certificate``); the first one must hold ``key``'s public key. ``kid`` (RFC 7515
    section 4.1.4) names the key for receivers holding a key set (RFC 7517). ``extra``: more
    protected header parameters (e.g. ``iat``, the Policy Store's issued-at; not ``alg``,
    ``kid``, ``x5c``).

    Raises ``TypeError`` for a payload that is not a dict or a key of another type, and
    ``ValueError`` for a payload that is not JSON-serializable or an x5c not matching.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict (a JSON object), not {type(payload).__name__}")
    if key is not None and not isinstance(key, (Ed25519PrivateKey, Ed448PrivateKey)):
        raise TypeError(f"key must be an Ed25519 or Ed448 private key or None, not {type(key).__name__}")
    header: dict[str, Any] = {"alg": ALG_EDDSA if key is not None else ALG_NONE}
    for name, value in (extra or {}).items():
        if name in ("alg", "kid", "x5c", "crit"):
            raise ValueError(f"extra header parameter {name!r} is set by sign itself")
        header[name] = value
    if kid is not None:
        if not isinstance(kid, str):
            raise TypeError("kid must be a string")
        header["kid"] = kid
    if x5c is not None:
        ders = [_der(c) for c in x5c]
        if not ders:
            raise ValueError("x5c must hold at least the signer's certificate")
        if key is None:
            raise ValueError("x5c makes no sense with alg none: there is no signature to check")
        leaf = x509.load_der_x509_certificate(ders[0])
        leaf_key = leaf.public_key()
        if not isinstance(leaf_key, (Ed25519PublicKey, Ed448PublicKey)) or _raw(leaf_key) != _raw(
            key.public_key()
        ):
            raise ValueError("the first x5c certificate does not hold the signing key's public key")
        header["x5c"] = [base64.b64encode(d).decode("ascii") for d in ders]
    try:
        body = _dumps(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"payload is not JSON-serializable: {exc}") from None
    protected = b64url_encode(_dumps(header))
    encoded = b64url_encode(body)
    signing_input = f"{protected}.{encoded}".encode("ascii")
    signature = key.sign(signing_input) if key is not None else b""
    return {"protected": protected, "payload": encoded, "signature": b64url_encode(signature)}


def serialize(jws: dict[str, str]) -> bytes:
    """The JWS as a JSON document (the body of a ``POST /LogEvents``)."""
    return _dumps(jws)


# --- verification -------------------------------------------------------------------------


def _as_object(jws: object) -> dict[str, Any]:
    if isinstance(jws, dict):
        return jws
    if isinstance(jws, (bytes, bytearray, memoryview, str)):
        raw = bytes(jws) if isinstance(jws, (bytearray, memoryview)) else jws
        if len(raw) > MAX_JWS_BYTES:
            raise JwsError(None, f"JWS of {len(raw)} bytes exceeds the limit of {MAX_JWS_BYTES}")
        return parse_json_object(raw, None)
    raise JwsError(None, f"a JWS must be a JSON object, str or bytes, not {type(jws).__name__}")


def _structure(doc: dict[str, Any]) -> tuple[str, str, str]:
    extra = [k for k in doc if k not in MEMBERS]
    if extra:
        name = extra[0] if isinstance(extra[0], str) else repr(extra[0])
        why = {
            "header": "an unprotected header is not accepted: every header parameter must be "
            "integrity-protected",
            "signatures": "the general JSON serialization is not accepted: use the flattened one",
        }.get(name, "not a member of a flattened JWS (RFC 7515 section 7.2.2)")
        raise JwsError(name, f"unexpected member: {why}")
    for name in MEMBERS:
        if name not in doc:
            raise JwsError(name, "missing member")
        if not isinstance(doc[name], str):
            raise JwsError(name, f"must be a base64url string, not {json_type(doc[name])}")
    total = sum(len(doc[n]) for n in MEMBERS)
    if total > MAX_JWS_BYTES:
        raise JwsError(None, f"JWS of {total} characters exceeds the limit of {MAX_JWS_BYTES}")
    return doc["protected"], doc["payload"], doc["signature"]


def _check_header(header: dict[str, Any], allow_none: bool) -> str:
    if "alg" not in header:
        raise JwsError("alg", "missing from the protected header (RFC 7515 section 4.1.1)")
    alg = header["alg"]
    if not isinstance(alg, str):
        raise JwsError("alg", f"must be a string, not {json_type(alg)}")
    if alg == ALG_NONE and not allow_none:
        raise JwsError("alg", "'none' (an unsigned JWS) is not accepted here")
    if alg not in (ALG_EDDSA, ALG_NONE):
        raise JwsError("alg", f"{alg!r} is not an accepted algorithm (only {ALG_EDDSA!r})")
    if "crit" in header:
        crit = header["crit"]
        if (
            not isinstance(crit, list)
            or not crit
            or not all(isinstance(c, str) for c in crit)
            or len(set(crit)) != len(crit)
        ):
            raise JwsError("protected", "crit must be a non-empty array of distinct strings")
        for name in crit:
            if name not in header:
                raise JwsError("protected", f"crit lists {name!r}, which is not in the header")
            if name not in UNDERSTOOD_CRIT:
                raise JwsError("protected", f"critical header parameter {name!r} is not understood")
    if "kid" in header and not isinstance(header["kid"], str):
        raise JwsError("protected", f"kid must be a string, not {json_type(header['kid'])}")
    if "b64" in header:  # RFC 7797: only the default (true) is supported
        raise JwsError("protected", "the b64 header parameter (RFC 7797) is not supported")
    return alg


def _parse_x5c(value: object) -> list[x509.Certificate]:
    if not isinstance(value, list):
        raise JwsError("x5c", f"must be an array of base64 certificates, not {json_type(value)}")
    if not value:
        raise JwsError("x5c", "must hold at least the signer's certificate")
    if len(value) > MAX_CHAIN:
        raise JwsError("x5c", f"{len(value)} certificates: more than {MAX_CHAIN} are not accepted")
    certs = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise JwsError("x5c", f"certificate {i} must be a base64 string, not {json_type(item)}")
        if not item or not _B64.fullmatch(item) or len(item) % 4:
            raise JwsError(
                "x5c", f"certificate {i} is not base64 (RFC 4648 section 4, with padding; "
                "x5c does not use base64url)"
            )
        try:
            der = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError) as exc:  # pragma: no cover - excluded above
            raise JwsError("x5c", f"certificate {i} is not base64: {exc}") from None
        try:
            cert = x509.load_der_x509_certificate(der)
        except Exception as exc:  # noqa: BLE001 - ValueError, InvalidVersion, ...
            raise JwsError("x5c", f"certificate {i} is not a DER X.509 certificate: {exc}") from None
        certs.append(cert)
    return certs


def _eddsa_key(cert: x509.Certificate, i: int) -> PublicKey:
    try:
        key = cert.public_key()
    except Exception as exc:  # noqa: BLE001 - cryptography raises assorted types for odd keys
        raise JwsError("x5c", f"certificate {i} has an unusable public key: {exc}") from None
    if not isinstance(key, (Ed25519PublicKey, Ed448PublicKey)):
        raise JwsError(
            "x5c", f"certificate {i} holds {_key_kind(key)} key, not an Ed25519 or Ed448 key as "
            "EdDSA needs (RFC 8037)"
        )  # fmt: skip
    return key


def _key_kind(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"an RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC ({key.curve.name})"
    return f"a {type(key).__name__.removesuffix('PublicKey').lstrip('_')}"


def _check_signature(key: PublicKey, signature: bytes, signing_input: bytes) -> bool:
    if len(signature) != _SIG_LEN[_base(key)]:
        return False
    try:
        key.verify(signature, signing_input)
    except InvalidSignature:
        return False
    return True


def _base(key: PublicKey) -> type:
    return Ed25519PublicKey if isinstance(key, Ed25519PublicKey) else Ed448PublicKey


def _subject(cert: x509.Certificate) -> str:
    return _name(cert, "subject")


def _name(cert: x509.Certificate, which: str) -> str:
    try:
        return getattr(cert, which).rfc4514_string()
    except Exception:  # noqa: BLE001  # pragma: no cover - names that cannot be rendered
        return f"(unprintable {which})"


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _check_dates(cert: x509.Certificate, what: str, now: datetime) -> None:
    try:
        before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    except Exception as exc:  # noqa: BLE001  # pragma: no cover - unparseable times
        raise JwsError("x5c", f"{what} has unusable validity dates: {exc}") from None
    if now < before:
        raise JwsError("x5c", f"{what} ({_subject(cert)}) is not valid before {before.isoformat()}")
    if now > after:
        raise JwsError("x5c", f"{what} ({_subject(cert)}) expired at {after.isoformat()}")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001 - wrong name, bad signature, unsupported algorithm: no link
        return False
    return True


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType], what: str) -> Any:
    """The value of ``cert``'s extension of type ``kind``, or None if it has none."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except Exception as exc:  # noqa: BLE001 - duplicate or malformed extensions raise assorted types
        raise JwsError("x5c", f"{what} has unusable extensions: {exc}") from None


def _check_ca(cert: x509.Certificate, what: str, below: int) -> None:
    """``cert`` issues the certificate ``below`` intermediates under it (RFC 5280 section
    4.2.1.9 basic constraints, 4.2.1.3 key usage)."""
    bc = _extension(cert, x509.BasicConstraints, what)
    if bc is None:
        raise JwsError("x5c", f"{what} ({_subject(cert)}) is not a CA: no basic constraints")
    if not bc.ca:
        raise JwsError("x5c", f"{what} ({_subject(cert)}) is not a CA certificate")
    if bc.path_length is not None and below > bc.path_length:
        raise JwsError("x5c", f"{what} ({_subject(cert)}) allows a path length of {bc.path_length}")
    ku = _extension(cert, x509.KeyUsage, what)
    if ku is not None and not ku.key_cert_sign:
        raise JwsError("x5c", f"{what} ({_subject(cert)}) may not sign certificates (key usage)")


def _check_leaf_usage(cert: x509.Certificate) -> None:
    ku = _extension(cert, x509.KeyUsage, "certificate 0")
    if ku is not None and not ku.digital_signature:
        raise JwsError("x5c", "certificate 0 may not sign (key usage lacks digitalSignature)")


def _check_chain(chain: list[x509.Certificate], anchors: list[x509.Certificate], now: datetime) -> None:
    """The x5c chain leads to one of ``anchors``: each certificate is valid at ``now`` and
    signed by the next, until one is an anchor or is signed by one (RFC 5280 section 6, in
    the simple form JWS needs: no policies, no name constraints)."""
    if not anchors:
        raise JwsError("x5c", "no trust anchor is configured, so no chain can be trusted")
    _check_leaf_usage(chain[0])
    fingerprints = {_fingerprint(a) for a in anchors}
    for i, cert in enumerate(chain):
        what = f"certificate {i}"
        _check_dates(cert, what, now)
        if i > 0:
            _check_ca(cert, what, i - 1)
        if _fingerprint(cert) in fingerprints:
            return
        for anchor in anchors:
            if _issued_by(cert, anchor):
                _check_dates(anchor, f"trust anchor for {what}", now)
                _check_ca(anchor, f"trust anchor ({_subject(anchor)})", i)
                return
        if i + 1 < len(chain) and not _issued_by(cert, chain[i + 1]):
            raise JwsError(
                "x5c", f"certificate {i} ({_subject(cert)}) is not signed by certificate {i + 1} "
                f"({_subject(chain[i + 1])})"
            )  # fmt: skip
    raise JwsError(
        "x5c", f"the chain ending at {_subject(chain[-1])} does not lead to a trust anchor "
        f"(issuer {_name(chain[-1], 'issuer')})"
    )  # fmt: skip


def _anchor(a: x509.Certificate | bytes) -> x509.Certificate:
    if isinstance(a, x509.Certificate):
        return a
    if isinstance(a, (bytes, bytearray, memoryview)):
        return x509.load_der_x509_certificate(bytes(a))
    raise TypeError(f"trust anchors must be certificates or DER bytes, not {type(a).__name__}")


def _public(k: object) -> PublicKey:
    if isinstance(k, (Ed25519PublicKey, Ed448PublicKey)):
        return k
    if isinstance(k, (Ed25519PrivateKey, Ed448PrivateKey)):
        return k.public_key()
    raise TypeError(f"keys must be Ed25519 or Ed448 public keys, not {type(k).__name__}")


def verify(
    jws: dict[str, Any] | str | bytes,
    *,
    keys: Iterable[PublicKey] = (),
    allow_none: bool = False,
    trust: Sequence[x509.Certificate | bytes] | None = None,
    now: datetime | None = None,
) -> Verified:
    """Check a flattened JWS and return its payload, header and signer.

    * structure: a JSON object (or its text) with exactly ``protected``, ``payload`` and
      ``signature``, each base64url without padding; header and payload are JSON objects;
    * ``alg`` is ``EdDSA``, or ``none`` when ``allow_none`` (then the signature is empty and
      no ``x5c`` is present);
    * with ``x5c``: the signature verifies with the first certificate's key; if ``trust`` is
      given the chain must lead to one of those anchors at ``now`` (default: the current
      time); else, if ``keys`` are given, the certificate's key must be one of them; with
      neither, the certificate is taken at its word (integrity only, not authenticity);
    * without ``x5c``: the signature verifies with one of ``keys``.

    Raises ``JwsError`` for every problem with ``jws``; ``TypeError`` only for misuse of the
    other arguments (keys or anchors of the wrong type, a naive ``now``).
    """
    accepted = [_public(k) for k in keys]
    anchors = [_anchor(a) for a in trust] if trust is not None else None
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise TypeError("now must be a timezone-aware datetime")

    protected_b64, payload_b64, signature_b64 = _structure(_as_object(jws))
    if not protected_b64:
        raise JwsError("protected", "empty: the protected header must hold at least alg")
    header = parse_json_object(b64url_decode(protected_b64, "protected"), "protected")
    payload = parse_json_object(b64url_decode(payload_b64, "payload"), "payload")
    signature = b64url_decode(signature_b64, "signature")
    alg = _check_header(header, allow_none)
    signing_input = f"{protected_b64}.{payload_b64}".encode("ascii")

    if alg == ALG_NONE:
        if "x5c" in header:
            raise JwsError("x5c", "present with alg 'none': there is no signature to check it")
        if signature:
            raise JwsError("signature", "must be empty with alg 'none' (RFC 7518 section 3.6)")
        return Verified(payload, header, None)

    if "x5c" in header:
        chain = _parse_x5c(header["x5c"])
        key = _eddsa_key(chain[0], 0)
        if not _check_signature(key, signature, signing_input):
            raise JwsError(
                "signature", f"does not verify with the key of x5c certificate 0 ({_subject(chain[0])})"
            )
        if anchors is not None:
            _check_chain(chain, anchors, now)
        elif accepted and not any(type(k) is type(key) and _raw(k) == _raw(key) for k in accepted):
            raise JwsError("x5c", f"certificate 0 ({_subject(chain[0])}) holds none of the accepted keys")
        return Verified(payload, header, _subject(chain[0]), tuple(chain))

    if not accepted:
        if anchors is not None:
            raise JwsError("x5c", "missing: the signer must present a certificate chain (x5c)")
        raise JwsError("signature", "no x5c in the header and no keys to verify with")
    for i, key in enumerate(accepted):
        if _check_signature(key, signature, signing_input):
            return Verified(payload, header, header.get("kid") or f"keys[{i}]")
    raise JwsError("signature", f"does not verify with any of the {len(accepted)} accepted keys")
