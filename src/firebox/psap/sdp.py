"""SDP offer/answer for the PSAP user agent, sans-I/O (RFC 4566 syntax, RFC 3264 model).

``parse_sdp`` reads the lines an answer needs (origin, connection, timing, direction, and per
``m=`` line the media, port, protocol, formats and ``rtpmap``); ``answer_sdp`` writes the
answer of RFC 3264 section 6: the same number of media lines in the same order (6), each
accepted stream with our own port and exactly one format taken from the offer (6.1, in the
offer's order of preference), a rejected stream with port zero and the offer's formats
(6), our own ``o=`` and ``c=`` (6, RFC 4566 5.2 and 5.7), the offer's ``t=`` (6), and the
direction mirrored (6.1: ``sendonly`` answered ``recvonly`` and so on).

Accepted: ``audio`` (PCMU, PCMA, G722, opus, in the offer's order) and ``text`` with T.140
(RFC 4103, real-time text, which NG911 requires PSAPs to take), over RTP/AVP or RTP/AVPF.
Anything else (video, SRTP profiles this UA holds no keys for) is declined with port zero.
No media flows: the ports are advertised, not opened; this UA stands in for a PSAP's
signalling only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Direction",
    "MediaDescription",
    "SdpError",
    "SessionDescription",
    "answer_sdp",
    "offer_sdp",
    "parse_sdp",
]

#: Static RTP payload types of RFC 3551 table 4 that the answer may pick by number alone.
STATIC_PAYLOADS = {"0": "PCMU/8000", "8": "PCMA/8000", "9": "G722/8000"}
#: Encodings this UA accepts, by media, in no particular order (the offer's order wins).
ACCEPTED = {"audio": {"pcmu", "pcma", "g722", "opus"}, "text": {"t140"}}
PROTOCOLS = {"RTP/AVP", "RTP/AVPF"}


class SdpError(ValueError):
    """An SDP body that cannot be read as an offer."""


class Direction(StrEnum):
    """Media direction attributes (RFC 4566 section 6, RFC 3264 section 6.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def mirrored(self) -> Direction:
        """The answer's direction for an offered one (RFC 3264 section 6.1)."""
        return {
            Direction.SENDONLY: Direction.RECVONLY,
            Direction.RECVONLY: Direction.SENDONLY,
        }.get(self, self)


@dataclass(slots=True)
class MediaDescription:
    """One ``m=`` section (RFC 4566 section 5.14) with its ``rtpmap`` and direction."""

    media: str
    port: int
    protocol: str
    formats: list[str]
    rtpmap: dict[str, str] = field(default_factory=dict)  # payload type -> "PCMU/8000"
    direction: Direction | None = None
    connection: str | None = None

    def encoding(self, fmt: str) -> str | None:
        """``PCMU/8000`` for a format, from ``rtpmap`` or the static table."""
        return self.rtpmap.get(fmt) or STATIC_PAYLOADS.get(fmt)


@dataclass(slots=True)
class SessionDescription:
    origin: str
    connection: str | None
    timing: str
    direction: Direction | None
    media: list[MediaDescription]


_DIRECTIONS = frozenset(d.value for d in Direction)


def parse_sdp(data: bytes | str) -> SessionDescription:
    """The parts of an SDP body an answer needs (RFC 4566 section 5). Raises ``SdpError``."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError("an SDP body starts with v=0 (RFC 4566 section 5.1)")
    origin, connection, timing = "", None, "0 0"
    direction: Direction | None = None
    media: list[MediaDescription] = []
    for line in lines[1:]:
        kind, eq, value = line.partition("=")
        if not eq or len(kind) != 1:
            raise SdpError(f"not a <type>=<value> line: {line!r}")
        current = media[-1] if media else None
        if kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SdpError(f"malformed m= line: {line!r}")
            media.append(MediaDescription(parts[0], int(parts[1].split("/")[0]), parts[2], parts[3:]))
        elif kind == "o":
            origin = value
        elif kind == "t" and current is None:
            timing = value
        elif kind == "c":
            if current is None:
                connection = value
            else:
                current.connection = value
        elif kind == "a":
            name, _, rest = value.partition(":")
            if name in _DIRECTIONS:
                if current is None:
                    direction = Direction(name)
                else:
                    current.direction = Direction(name)
            elif name == "rtpmap" and current is not None:
                pt, _, enc = rest.partition(" ")
                current.rtpmap[pt.strip()] = enc.strip()
    if not origin:
        raise SdpError("no o= line (RFC 4566 section 5.2)")
    if not media:
        raise SdpError("no m= line: nothing to answer")
    return SessionDescription(origin, connection, timing, direction, media)


def _pick(m: MediaDescription) -> str | None:
    """The first format of the offer that this UA accepts (RFC 3264 6.1: the offerer's
    order is its preference)."""
    if m.protocol not in PROTOCOLS or m.port == 0:
        return None
    accepted = ACCEPTED.get(m.media, set())
    for fmt in m.formats:
        enc = m.encoding(fmt)
        if enc is not None and enc.split("/")[0].lower() in accepted:
            return fmt
    return None


def answer_sdp(
    offer: SessionDescription,
    *,
    host: str,
    first_port: int,
    session_id: int,
    version: int = 1,
    username: str = "firebox-psap",
) -> bytes | None:
    """The answer to ``offer`` (RFC 3264 section 6), or ``None`` when no stream can be
    accepted (the INVITE is then answered 488, RFC 3261 section 21.4.26). Accepted stream
    ``i`` gets port ``first_port + 2 * i`` (RTP on even ports, RFC 3550 section 11)."""
    ip = "IP6" if ":" in host else "IP4"
    out = [
        "v=0",
        f"o={username} {session_id} {version} IN {ip} {host}",
        "s=firebox PSAP",
        f"c=IN {ip} {host}",
        f"t={offer.timing}",
    ]
    accepted = 0
    for i, m in enumerate(offer.media):
        fmt = _pick(m)
        if fmt is None:
            # Declined: port zero, the offer's formats (RFC 3264 section 6).
            out.append(f"m={m.media} 0 {m.protocol} {' '.join(m.formats)}")
            continue
        accepted += 1
        out.append(f"m={m.media} {first_port + 2 * i} {m.protocol} {fmt}")
        enc = m.encoding(fmt)
        if enc is not None:
            out.append(f"a=rtpmap:{fmt} {enc}")
        direction = m.direction or offer.direction or Direction.SENDRECV
        out.append(f"a={direction.mirrored().value}")
    if not accepted:
        return None
    return ("\r\n".join(out) + "\r\n").encode()


def offer_sdp(*, host: str, port: int, session_id: int, username: str = "firebox") -> bytes:
    """A plain audio offer (PCMU, PCMA, telephone-event), for a caller or for a 2xx to an
    INVITE that came without one (RFC 3261 section 13.2.1, RFC 3264 section 5)."""
    ip = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o={username} {session_id} 1 IN {ip} {host}",
        "s=-",
        f"c=IN {ip} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()
