"""multipart/mixed bodies (RFC 2046 section 5.1, RFC 5621) and cid: references (RFC 2392)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firebox.sip import (
    BodyPart,
    SipParseError,
    build_multipart,
    find_by_cid,
    make_part,
    parse_media_type,
    parse_multipart,
)

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n"
PIDF = (
    b'<?xml version="1.0"?>\r\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:caller@example.com">'
    b"</presence>\r\n"
)

#: The shape of the RFC 6442 section 4.1 example body: SDP, then the PIDF-LO referenced by
#: ``Geolocation: <cid:target123@atlanta.example.com>``.
RFC6442_BODY = (
    b"--boundary1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"\r\n" + SDP + b"\r\n"
    b"--boundary1\r\n"
    b"Content-Type: application/pidf+xml\r\n"
    b"Content-ID: <target123@atlanta.example.com>\r\n"
    b"Content-Disposition: render;handling=optional\r\n"
    b"\r\n" + PIDF + b"\r\n"
    b"--boundary1--\r\n"
)


def test_rfc6442_style_body() -> None:
    parts = parse_multipart("multipart/mixed; boundary=boundary1", RFC6442_BODY)
    assert parts == [
        BodyPart("application/sdp", None, {"content-type": "application/sdp"}, SDP),
        BodyPart(
            "application/pidf+xml",
            "target123@atlanta.example.com",
            {
                "content-type": "application/pidf+xml",
                "content-id": "<target123@atlanta.example.com>",
                "content-disposition": "render;handling=optional",
            },
            PIDF,
        ),
    ]
    assert find_by_cid(parts, "cid:target123@atlanta.example.com") is parts[1]
    assert find_by_cid(parts, "<cid:target123@atlanta.example.com>") is parts[1]
    assert find_by_cid(parts, "CID:target123%40atlanta.example.com") is parts[1]
    assert find_by_cid(parts, "cid:other@atlanta.example.com") is None
    assert find_by_cid(parts, "https://lis.example.com/loc/1") is None


def test_quoted_boundary_lf_only_preamble_epilogue_and_padding() -> None:
    body = (
        b"This is the preamble; it is ignored.\n"
        b"--simple boundary   \n"
        b"\n"
        b"implicitly typed text, ends without a line break"
        b"\n--simple boundary\n"
        b"Content-type: text/plain; charset=us-ascii\n"
        b"Content-ID:<a@b>\n"
        b"X-Folded: one\n"
        b"  two\n"
        b"\n"
        b"line 1\nline 2\n"
        b"\n--simple boundary--\n"
        b"This is the epilogue. --simple boundary\n"
    )
    parts = parse_multipart('Multipart/Mixed; BOUNDARY="simple boundary"', body)
    assert [(p.content_type, p.content_id, p.body) for p in parts] == [
        ("text/plain", None, b"implicitly typed text, ends without a line break"),
        ("text/plain; charset=us-ascii", "a@b", b"line 1\nline 2\n"),
    ]
    assert parts[0].headers == {}
    assert parts[1].headers["x-folded"] == "one two"


def test_boundary_that_only_starts_a_longer_line_is_not_a_delimiter() -> None:
    body = b"--b\r\nContent-Type: text/plain\r\n\r\n--bb is not a delimiter\r\n--b--\r\n"
    parts = parse_multipart("multipart/mixed;boundary=b", body)
    assert [p.body for p in parts] == [b"--bb is not a delimiter"]


def test_part_with_headers_only_and_empty_parts() -> None:
    body = b"--x\r\nContent-Type: application/sdp\r\n--x\r\n--x--"
    parts = parse_multipart("multipart/related; boundary=x", body)
    assert parts == [
        BodyPart("application/sdp", None, {"content-type": "application/sdp"}, b""),
        BodyPart("text/plain", None, {}, b""),
    ]


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("application/sdp", b"", "Bad Request: Content-Type 'application/sdp' is not multipart"),
        ("multipart/mixed", b"", "Bad Request: multipart Content-Type has no boundary"),
        ("multipart/mixed; boundary=", b"", "Bad Request: multipart Content-Type has no boundary"),
        ("multipart", b"", "Bad Request: malformed Content-Type 'multipart'"),
        ("multipart/mixed; boundary", b"", "Bad Request: malformed Content-Type parameter 'boundary'"),
        ('multipart/mixed; boundary="x', b"", "Bad Request: unclosed quoted string in Content-Type"),
        ("multipart/mixed; boundary=x", b"no delimiter here", "Bad Request: multipart body has no delimiter '--x'"),
        ("multipart/mixed; boundary=x", b"--x\r\n\r\nabc\r\n", "Bad Request: multipart body has no closing delimiter '--x--'"),
        ("multipart/mixed; boundary=x", b"--x--\r\n", "Bad Request: multipart body has no parts"),
        ("multipart/mixed; boundary=x", b"--x\r\nbroken header\r\n\r\nabc\r\n--x--",
         "Bad Request: malformed header line 'broken header' in multipart body part 1"),
        ("multipart/mixed; boundary=x", b"--x\r\n\r\n\r\n--x\r\n continued: x\r\n\r\n\r\n--x--",
         "Bad Request: multipart body part 2 starts with a continuation line"),
        ("multipart/mixed; boundary=x", b"--x\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n\r\n\r\n--x--",
         "Bad Request: multipart body part 1 has multiple content-type headers"),
    ],
)  # fmt: skip
def test_errors(content_type: str, body: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_multipart(content_type, body)
    assert (info.value.status, info.value.reason) == (400, reason)


def test_parse_media_type() -> None:
    assert parse_media_type('Multipart/Mixed ; Boundary="a \\"b\\"" ; x=y') == (
        "multipart/mixed",
        {"boundary": 'a "b"', "x": "y"},
    )
    assert parse_media_type("application/pidf+xml") == ("application/pidf+xml", {})


def test_build_multipart_default_boundary_is_reproducible_and_absent_from_parts() -> None:
    parts = [
        make_part("application/sdp", SDP),
        make_part(
            "application/pidf+xml",
            PIDF,
            content_id="loc@bcf.example.net",
            headers={"Content-Disposition": "render;handling=optional"},
        ),
    ]
    content_type, body = build_multipart(parts)
    assert (content_type, body) == build_multipart(parts)
    media, params = parse_media_type(content_type)
    assert media == "multipart/mixed"
    boundary = params["boundary"].encode()
    assert body.startswith(b"--" + boundary + b"\r\nContent-Type: application/sdp\r\n\r\n" + SDP)
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    assert (
        b"\r\nContent-ID: <loc@bcf.example.net>\r\nContent-Disposition: render;handling=optional\r\n"
        in body
    )
    assert parse_multipart(content_type, body) == parts
    # A part that happens to contain the default boundary gets another one.
    tricky = [make_part("text/plain", b"--" + boundary)]
    other_type, other_body = build_multipart(tricky)
    assert parse_multipart(other_type, other_body) == tricky


def test_build_multipart_given_boundary() -> None:
    content_type, body = build_multipart(
        [make_part("text/plain", b"hi")], "with space", subtype="related"
    )
    assert content_type == 'multipart/related; boundary="with space"'
    assert body == b"--with space\r\nContent-Type: text/plain\r\n\r\nhi\r\n--with space--\r\n"
    with pytest.raises(ValueError, match="occurs in a part"):
        build_multipart([make_part("text/plain", b"x--b")], "b")
    with pytest.raises(ValueError, match="bchars"):
        build_multipart([make_part("text/plain", b"x")], "bad;boundary")
    with pytest.raises(ValueError, match="bchars"):
        build_multipart([make_part("text/plain", b"x")], "x" * 71)
    with pytest.raises(ValueError, match="at least one part"):
        build_multipart([])
    with pytest.raises(ValueError, match="CR or LF"):
        build_multipart([make_part("text/plain\r\nX: y", b"x")])


_header_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20
).map(lambda s: s.strip(" \t") or "v")

parts_strategy = st.lists(
    st.builds(
        make_part,
        st.sampled_from(
            ["application/sdp", "application/pidf+xml", "text/plain",
             "application/EmergencyCallData.ProviderInfo+xml"]
        ),
        st.binary(max_size=80),
        content_id=st.none() | st.from_regex(r"[a-z0-9]{1,8}@[a-z]{1,8}\.example", fullmatch=True),
        headers=st.dictionaries(
            st.sampled_from(["Content-Disposition", "X-Note", "Content-Language"]),
            _header_value,
            max_size=2,
        ),
    ),
    min_size=1,
    max_size=4,
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(parts_strategy, st.booleans())
def test_round_trip(parts: list[BodyPart], lf_only: bool) -> None:
    content_type, body = build_multipart(parts)
    if lf_only and all(b"\r" not in p.body for p in parts):
        body = body.replace(b"\r\n", b"\n")
    assert parse_multipart(content_type, body) == parts
    for part in parts:
        if part.content_id is not None:
            found = find_by_cid(parts, f"cid:{part.content_id}")
            assert found is not None and found.content_id == part.content_id


_pieces = st.sampled_from(
    [b"--b", b"--b c", b"--b--", b"--b c--", b"\r\n", b"\n", b"\r", b" ", b":", b"\x00"]
    + [b"Content-ID: <x>", b"Content-Type: a/b"]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_pieces | st.binary(max_size=8), max_size=25).map(b"".join),
    st.sampled_from(["multipart/mixed; boundary=b", 'multipart/mixed; boundary="b c"']),
)
def test_arbitrary_bodies_give_parts_or_sip_parse_error(body: bytes, content_type: str) -> None:
    try:
        parts = parse_multipart(content_type, body)
    except SipParseError as exc:
        assert exc.status == 400 and exc.reason.isprintable()
    else:
        assert parts and all(isinstance(p, BodyPart) and isinstance(p.body, bytes) for p in parts)
