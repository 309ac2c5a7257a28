"""Safe XML parsing shared by every codec (LoST, HELD, PIDF-LO, later CAP).

Untrusted bodies arrive from carriers, PSAPs and the public. The parser never resolves
external entities, never opens a file or touches the network, refuses every DOCTYPE (no
firebox protocol uses a DTD; entity declarations are billion-laughs and XXE attacks), and
caps the body size (libxml2's own limit caps the depth at 256 levels). Every failure is an
``XmlError`` with a message naming what was wrong, so a protocol layer can turn it into
its own precise error (LoST ``badRequest``, HELD ``xmlError``) instead of a 500.
"""

from __future__ import annotations

from lxml import etree

#: Largest body any firebox XML codec accepts. A LoST polygon with a few thousand
#: vertices is well under this; a 10 MiB "location" is an attack, not a caller.
MAX_XML_BYTES = 1 << 20


class XmlError(ValueError):
    """A body that is not acceptable XML; ``str()`` names the problem."""


class _Refuse(etree.Resolver):
    """Refuses every external resource (DTD, entity) so that the parser opens no file: a
    client could otherwise learn which files exist on the server from the answer."""

    def resolve(self, url, pubid, context):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        raise etree.XMLSyntaxError(f"external resource {url!r} refused", None, 0, 0)


_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
    collect_ids=False,
)
_PARSER.resolvers.add(_Refuse())


def parse_xml(data: bytes | str, *, max_bytes: int = MAX_XML_BYTES) -> etree._Element:
    """Parse ``data`` into an element tree root, or raise ``XmlError``.

    A ``str`` is encoded as UTF-8 first; an XML declaration naming another encoding is
    honoured when the input is bytes.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not data or not data.strip():
        raise XmlError("empty body: expected an XML document")
    if len(data) > max_bytes:
        raise XmlError(f"body of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    if b"<!ENTITY" in data or b"<!entity" in data:
        raise XmlError("DTD entity declarations are not accepted")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise XmlError(f"malformed XML: {exc.msg} (line {exc.lineno})") from None
    if root is None:
        raise XmlError("no root element")
    if root.getroottree().docinfo.doctype:
        raise XmlError("DOCTYPE declarations are not accepted (no firebox protocol uses a DTD)")
    return root


def local_name(el: etree._Element) -> str:
    """The element's name without its namespace."""
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def namespace(el: etree._Element) -> str:
    """The element's namespace URI, or ``""``."""
    tag = el.tag
    if isinstance(tag, str) and tag.startswith("{"):
        return tag[1:].split("}", 1)[0]
    return ""


def text(el: etree._Element | None) -> str:
    """Stripped text content of ``el`` (``""`` when absent)."""
    if el is None or el.text is None:
        return ""
    return el.text.strip()


def to_bytes(root: etree._Element) -> bytes:
    """Serialize with an XML declaration, UTF-8."""
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
