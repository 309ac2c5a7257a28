"""The shared safe XML parser refuses what an attacker would send, with a precise reason."""

from __future__ import annotations

import pytest

from firebox.xmlsafe import MAX_XML_BYTES, XmlError, local_name, namespace, parse_xml

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<lolz>&lol2;</lolz>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"""


def test_parses_plain_xml():
    root = parse_xml(b'<a xmlns="urn:x"><b>hi</b></a>')
    assert local_name(root) == "a" and namespace(root) == "urn:x"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "empty body"),
        (b"   \n", "empty body"),
        (b"<a><b></a>", "malformed XML"),
        (b"not xml at all", "malformed XML"),
        (BILLION_LAUGHS, "entity declarations"),
        (XXE, "entity declarations"),
        (b"<a>" + b"x" * MAX_XML_BYTES + b"</a>", "exceeds the limit"),
    ],
)
def test_rejects_with_reason(body, message):
    with pytest.raises(XmlError, match=message):
        parse_xml(body)


def test_external_dtd_is_refused_not_fetched():
    # A DOCTYPE pointing at the network is refused by the resolver, never fetched.
    with pytest.raises(XmlError, match="refused"):
        parse_xml(b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd"><r>ok</r>')


def test_local_files_are_never_opened_so_existence_does_not_leak(tmp_path):
    present = tmp_path / "present.dtd"
    present.write_text("not a dtd")
    answers = []
    for path in (present, tmp_path / "absent.dtd"):
        with pytest.raises(XmlError) as info:
            parse_xml(f'<!DOCTYPE r SYSTEM "file://{path}"><r>ok</r>'.encode())
        answers.append(str(info.value).replace(str(path), "P"))
    assert answers[0] == answers[1] and "refused" in answers[0]


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE r><r/>",
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>'.encode("utf-16"),
    ],
)
def test_every_doctype_is_refused_in_any_encoding(body):
    with pytest.raises(XmlError, match="DOCTYPE"):
        parse_xml(body)
