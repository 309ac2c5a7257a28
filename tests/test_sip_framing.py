"""Stream framing of SIP over TCP/TLS (RFC 3261 section 18.3, RFC 5626 keep-alives)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firebox.sip import (
    PING,
    PONG,
    Headers,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    parse_message,
    serialize,
)

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n"


def invite(n: int = 1, body: bytes = SDP) -> bytes:
    return serialize(
        Request(
            "INVITE",
            "urn:service:sos",
            Headers(
                [
                    ("Via", f"SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK{n}"),
                    ("Max-Forwards", "70"),
                    ("To", "<urn:service:sos>"),
                    ("From", f"<sip:+15085550100@carrier.example.net>;tag=f{n}"),
                    ("Call-ID", f"call{n}@carrier.example.net"),
                    ("CSeq", f"{n} INVITE"),
                    ("Content-Type", "application/sdp"),
                ]
            ),
            body,
        )
    )


TRYING = (
    b"SIP/2.0 100 Trying\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK1\r\n"
    b"To: <urn:service:sos>\r\n"
    b"From: <sip:+15085550100@carrier.example.net>;tag=f1\r\n"
    b"Call-ID: call1@carrier.example.net\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

NO_LENGTH = invite(7).replace(b"Content-Length: %d\r\n" % len(SDP), b"")
BAD_HEADER = invite(8).replace(b"Max-Forwards: 70", b"Max Forwards 70")
BAD_CSEQ = invite(9).replace(b"CSeq: 9 INVITE", b"CSeq: 9 BYE")


def test_messages_back_to_back_in_one_chunk() -> None:
    framer = StreamFramer()
    frames = framer.feed(invite(1) + TRYING + invite(2))
    assert frames == [parse_message(invite(1)), parse_message(TRYING), parse_message(invite(2))]
    assert isinstance(frames[1], Response) and frames[1].status == 100
    assert framer.buffered == 0


def test_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    data = invite(1) + TRYING
    frames = []
    for i in range(len(data)):
        got = framer.feed(data[i : i + 1])
        if i not in (len(invite(1)) - 1, len(data) - 1):
            assert got == []
        frames += got
    assert frames == [parse_message(invite(1)), parse_message(TRYING)]


def test_body_with_blank_lines_is_framed_by_content_length() -> None:
    body = b"--b\r\n\r\nSIP/2.0 200 OK\r\n\r\n\r\n--b--\r\n"
    framer = StreamFramer()
    frames = framer.feed(invite(1, body) + TRYING)
    assert [type(f) for f in frames] == [Request, Response]
    assert frames[0].body == body


def test_keep_alive_pings() -> None:
    framer = StreamFramer()
    assert PONG == b"\r\n"
    assert framer.feed(b"\r\n\r\n") == [PING]
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [PING]
    assert framer.feed(b"\r\n\r\n\r\n\r\n") == [PING, PING]
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n\r\n") == [PING]
    assert framer.feed(b"\n\r\n\r") == []  # a stray LF, then most of a ping
    assert framer.feed(b"\n") == [PING]
    # A lone CRLF before a message is skipped (RFC 3261 7.5), pings are reported in order.
    assert framer.feed(b"\r\n" + TRYING + b"\r\n\r\n" + TRYING) == [
        parse_message(TRYING),
        PING,
        parse_message(TRYING),
    ]
    assert framer.buffered == 0


def test_missing_content_length_is_an_error_then_the_framer_resyncs() -> None:
    framer = StreamFramer()
    frames = framer.feed(NO_LENGTH + invite(2))
    assert frames == [
        SipParseError(400, "Bad Request: missing Content-Length (required on stream transports)"),
        parse_message(invite(2)),
    ]


def test_malformed_content_length_is_an_error_then_the_framer_resyncs() -> None:
    data = invite(3).replace(b"Content-Length: %d" % len(SDP), b"Content-Length: -1")
    frames = StreamFramer().feed(data + TRYING)
    assert frames == [
        SipParseError(400, "Bad Request: malformed Content-Length '-1'"),
        parse_message(TRYING),
    ]


def test_unreadable_head_with_a_content_length_skips_exactly_its_body() -> None:
    sipfrag = b"SIP/2.0 200 OK\r\n"  # a body line that looks like a start line
    data = BAD_HEADER.replace(SDP, sipfrag).replace(
        b"Content-Length: %d" % len(SDP), b"Content-Length: %d" % len(sipfrag)
    )
    frames = StreamFramer().feed(data + TRYING)
    assert frames == [
        SipParseError(400, "Bad Request: malformed header line 'Max Forwards 70'"),
        parse_message(TRYING),
    ]


def test_message_errors_after_framing_do_not_lose_sync() -> None:
    frames = StreamFramer().feed(BAD_CSEQ + TRYING)
    assert frames == [
        SipParseError(400, "Bad Request: CSeq method 'BYE' does not match request method 'INVITE'"),
        parse_message(TRYING),
    ]


def test_oversize_body_is_413_and_skipped() -> None:
    framer = StreamFramer(max_message_size=1024)
    big = invite(4, b"x" * 2000)
    head_len = big.index(b"\r\n\r\n") + 4
    # Reported as soon as the header section says how long the message is ...
    assert framer.feed(big[:700]) == [
        SipParseError(
            413, f"Request Entity Too Large: message of {head_len + 2000} bytes exceeds 1024"
        )
    ]
    assert framer.buffered == 0
    # ... and the body is skipped exactly, however it arrives.
    assert framer.feed(big[700:1500]) == []
    assert framer.feed(big[1500:] + TRYING) == [parse_message(TRYING)]


def test_oversize_header_section_is_413_and_the_framer_resets() -> None:
    framer = StreamFramer(max_message_size=1024)
    huge = invite(5).replace(
        b"Max-Forwards: 70\r\n", b"X-Padding: " + b"p" * 1500 + b"\r\nMax-Forwards: 70\r\n"
    )
    frames = framer.feed(huge[:1100])
    assert frames == [
        SipParseError(413, "Request Entity Too Large: header section exceeds 1024 bytes")
    ]
    assert framer.buffered < 1024
    assert framer.feed(huge[1100:] + TRYING) == [parse_message(TRYING)]


def test_garbage_line_longer_than_the_limit_while_resyncing() -> None:
    framer = StreamFramer(max_message_size=256)
    frames = framer.feed(b"GARBAGE\r\n\r\n" + b"z" * 600)
    assert frames == [
        SipParseError(400, "Bad Request: missing Content-Length (required on stream transports)")
    ]
    assert framer.buffered == 0  # a line longer than any message could be is dropped at once
    assert framer.feed(b"zz SIP/2.0 zz\r\n" + TRYING) == [parse_message(TRYING)]


def test_reset_and_buffered() -> None:
    framer = StreamFramer()
    framer.feed(TRYING[:30])
    assert framer.buffered == 30
    framer.reset()
    assert framer.buffered == 0
    assert framer.feed(TRYING) == [parse_message(TRYING)]
    with pytest.raises(ValueError):
        StreamFramer(max_message_size=8)


# --- properties -----------------------------------------------------------------------------

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 2**31 - 1))
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS", "MESSAGE"]))
    lines = [
        ("Via", f"SIP/2.0/TLS {draw(_word)}.example;branch=z9hG4bK{draw(_word)}"),
        ("From", f"<sip:{draw(_word)}@a.example>;tag={draw(_word)}"),
        ("To", "<urn:service:sos>"),
        ("Call-ID", draw(_word)),
        ("CSeq", f"{n} {method}"),
    ]
    lines += draw(
        st.lists(st.tuples(st.sampled_from(["Subject", "X-Extra", "Supported"]), _word), max_size=3)
    )
    body = draw(
        st.binary(max_size=60)
        | st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b"x\r\n\r\nSIP/2.0 200 OK\r\n"])
    )
    if draw(st.booleans()):
        msg: Request | Response = Request(method, "sip:psap@example.net", Headers(lines), body)
    else:
        msg = Response(draw(st.integers(100, 699)), draw(_word), Headers(lines), body)
    return serialize(msg)


separators = st.sampled_from([b"", b"", b"\r\n\r\n", b"\r\n", b"\r\n\r\n\r\n", b"\n"])


def feed_in_chunks(framer: StreamFramer, data: bytes, cuts: list[int]) -> list[object]:
    frames: list[object] = []
    last = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        frames += framer.feed(data[last:cut])
        last = cut
    return frames


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(separators, messages()), min_size=1, max_size=5), st.data())
def test_chunk_boundaries_do_not_matter(
    segments: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(sep + msg for sep, msg in segments)
    expected: list[object] = []
    for sep, msg in segments:
        expected += [PING] * sep.count(b"\r\n\r\n")
        expected.append(parse_message(msg))
    assert StreamFramer().feed(stream) == expected
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    framer = StreamFramer()
    assert feed_in_chunks(framer, stream, cuts) == expected
    assert framer.buffered == 0


bad_segments = st.sampled_from(
    [NO_LENGTH, BAD_HEADER, BAD_CSEQ, invite(4, b"x" * 700), b"GARBAGE\r\n\r\n", b"\x00\xff junk\n"]
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(messages(), bad_segments, separators), min_size=1, max_size=6),
    st.data(),
)
def test_chunk_boundaries_do_not_matter_with_errors(
    segments: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(segments) + TRYING
    whole = StreamFramer(max_message_size=512).feed(stream)
    assert all(isinstance(f, Request | Response | SipParseError) or f is PING for f in whole)
    assert not any(isinstance(f, SipParseError) and "unparseable" in f.reason for f in whole)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert feed_in_chunks(StreamFramer(max_message_size=512), stream, cuts) == whole


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_arbitrary_bytes_in_arbitrary_chunks(stream: bytes, data: st.DataObject) -> None:
    whole = StreamFramer(max_message_size=128).feed(stream)
    assert not any(isinstance(f, SipParseError) and "unparseable" in f.reason for f in whole)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    assert feed_in_chunks(StreamFramer(max_message_size=128), stream, cuts) == whole
