"""SIP message layer, sans-I/O (RFC 3261): bytes in, dataclasses out, and back.

``message`` parses and writes requests and responses (one datagram at a time), ``framing``
cuts a TCP/TLS byte stream into messages, ``multipart`` reads and writes the multipart bodies
that carry SDP with a PIDF-LO (RFC 5621, RFC 6442). No sockets, no clocks: transactions, the
proxy, the BCF and the ESRP build on this.
"""

from firebox.sip.address import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    Uri,
    Via,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from firebox.sip.errors import SipParseError
from firebox.sip.framing import DEFAULT_MAX_MESSAGE_SIZE, PING, PONG, Ping, StreamFramer
from firebox.sip.headers import COMPACT_FORMS, Headers, split_list
from firebox.sip.message import (
    DEFAULT_MAX_FORWARDS,
    REASON_PHRASES,
    Message,
    Request,
    Response,
    caller_uri,
    make_response,
    parse_message,
    reason_phrase,
    serialize,
)
from firebox.sip.multipart import (
    BodyPart,
    build_multipart,
    find_by_cid,
    make_part,
    parse_media_type,
    parse_multipart,
)

__all__ = [
    "COMPACT_FORMS",
    "DEFAULT_MAX_FORWARDS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "PING",
    "PONG",
    "REASON_PHRASES",
    "AbsoluteUri",
    "BodyPart",
    "Headers",
    "Message",
    "NameAddr",
    "Ping",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "Uri",
    "Via",
    "build_multipart",
    "caller_uri",
    "find_by_cid",
    "make_part",
    "make_response",
    "parse_media_type",
    "parse_message",
    "parse_multipart",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "reason_phrase",
    "serialize",
    "split_list",
]
