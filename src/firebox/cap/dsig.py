"""Enveloped XML signatures of CAP messages (CAP 1.2 section 3.3.4.1: "The alert element of a
CAP Alert Message MAY have an Enveloped Signature, as described by XML-Signature and Syntax
Processing"), with the ``signxml`` library: RSA-SHA256 or ECDSA-SHA256 (by the key's type),
SHA-256 digests, exclusive canonicalization (``xml-exc-c14n``, so that the signature stays
valid when the alert is carried inside another document, an Atom entry or an EDXL envelope).

``sign(xml, key_pem, cert_pem)`` puts the ``ds:Signature`` as the last child of ``<alert>``
(after the ``<info>`` blocks, where the CAP 1.2 schema's ``xs:any`` allows it) with the
signer's certificate in ``KeyInfo``; ``verify(xml, cert_pem)`` checks it against the
certificate the receiver trusts (never the one in the message) and returns the signed alert,
or raises ``SignatureInvalid``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, XMLSigner, XMLVerifier
from signxml.exceptions import InvalidInput, InvalidSignature

from firebox.cap.message import CAP_NS
from firebox.xmlsafe import XmlError, parse_xml

__all__ = ["SignatureInvalid", "sign", "verify"]

_EXC_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0


class SignatureInvalid(ValueError):
    """A CAP message whose signature is missing, malformed or does not verify."""


def sign(xml: bytes, key_pem: bytes, cert_pem: bytes, *, passphrase: bytes | None = None) -> bytes:
    """``xml`` (a CAP ``<alert>`` without signature) with an enveloped signature."""
    key = serialization.load_pem_private_key(key_pem, passphrase)
    if isinstance(key, rsa.RSAPrivateKey):
        method = SignatureMethod.RSA_SHA256
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        method = SignatureMethod.ECDSA_SHA256
    else:
        raise ValueError(f"a CAP signing key must be RSA or EC, not {type(key).__name__}")
    root = parse_xml(xml)
    if etree.QName(root).text != f"{{{CAP_NS}}}alert":
        raise ValueError("only a CAP 1.2 <alert> is signed here")
    signer = XMLSigner(signature_algorithm=method, digest_algorithm=DigestAlgorithm.SHA256, c14n_algorithm=_EXC_C14N)
    # An empty reference URI: the whole document, the alert, minus the signature itself.
    signed = signer.sign(root, key=key, cert=cert_pem.decode("ascii"))
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


def verify(xml: bytes, cert_pem: bytes) -> bytes:
    """The signed ``<alert>`` (as the signature covers it) if ``xml``'s signature verifies
    with ``cert_pem``; ``SignatureInvalid`` otherwise."""
    try:
        root = parse_xml(xml)
    except XmlError as exc:
        raise SignatureInvalid(f"not XML: {exc}") from exc
    if root.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is None:
        raise SignatureInvalid("the alert has no enveloped ds:Signature (CAP 1.2 section 3.3.4.1)")
    try:
        result = XMLVerifier().verify(root, x509_cert=cert_pem.decode("ascii"))
    except (InvalidSignature, InvalidInput) as exc:
        raise SignatureInvalid(f"the signature does not verify: {exc}") from exc
    assert not isinstance(result, list)
    return etree.tostring(result.signed_xml)
