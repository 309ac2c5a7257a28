"""RTP media at a PSAP position: an echo or a recorder that a SIP phone can talk to.

Sans-I/O core:

* ``parse_rtp(data) -> RtpPacket`` and ``build_rtp(...) -> bytes``: the fixed RTP header of
  RFC 3550 section 5.1 (version 2, padding, extension, CSRC list, marker, payload type,
  sequence number, timestamp, SSRC) and the header extension of section 5.3.1. A malformed
  packet is an ``RtpError`` naming the fault; an RTCP packet multiplexed on the RTP port
  (RFC 5761 section 4: second octet 192..223) is an ``RtcpPacket`` error, not media.
* ``decode_g711(payload_type, payload)``: PCMU (payload type 0) and PCMA (8) of RFC 3551
  table 4, decoded to 16-bit linear PCM by ITU-T G.711 (segment and mantissa).
* ``RtpSession``: what an endpoint does with each datagram, time passed in. In ``echo`` mode
  every packet is sent back as *our* stream: RFC 3550 section 8 makes each sender a source
  of its own, so the echo carries our own random SSRC, our own sequence numbers (random
  start, +1 per packet) and timestamps (random start, advancing as the caller's do), and
  the caller's payload type, marker and payload. A plain reflection of the caller's header
  would be the caller's SSRC coming back at it, which RFC 3550 section 8.2 treats as a
  collision or a loop. In ``record`` mode the payload is handed to the recorder.
  Symmetric RTP (RFC 4961): the remote address from the SDP is replaced by the source of
  the first packet received (a caller behind a NAT is reached where it sends from).
  Malformed packets and RTCP are counted and dropped, never fatal.

asyncio adapter: ``await RtpEndpoint.open(host, mode=..., record_dir=...)`` binds an even
UDP port (RFC 3550 section 11: RTP on an even port, RTCP on the next odd one). RTCP is not
opened: this endpoint sends no reports, and RTCP that a peer muxes onto the RTP port is
counted and ignored. A recording of PCMU/PCMA is a 8 kHz mono 16-bit WAV; another payload
type is kept raw in a ``.rtp`` file (``FBRTP1\\n`` then, per packet, ``!IHBH`` timestamp,
sequence number, payload type, payload length, and the payload).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import struct
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "MODES",
    "Recorder",
    "RtcpPacket",
    "RtpEndpoint",
    "RtpError",
    "RtpPacket",
    "RtpSession",
    "build_rtp",
    "decode_g711",
    "parse_rtp",
]

MODES = ("echo", "record")
PCMU, PCMA = 0, 8  # RFC 3551 table 4
G711_RATE = 8000
#: The longest silence a recording fills in for lost packets (beyond: the gap is cut).
MAX_GAP_SAMPLES = 2 * G711_RATE
RAW_MAGIC = b"FBRTP1\n"

_HEADER = struct.Struct("!BBHII")


class RtpError(ValueError):
    """A datagram that is not an RTP packet; ``str()`` says why."""


class RtcpPacket(RtpError):
    """An RTCP packet on the RTP port (RFC 5761 section 4), not media."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 section 5.1). ``extension`` is ``(profile, data)`` of the
    header extension (section 5.3.1), ``padding`` the number of padding octets removed."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0


def parse_rtp(data: bytes) -> RtpPacket:
    """Read one RTP packet (RFC 3550 section 5.1). Raises ``RtpError`` naming the fault."""
    if len(data) >= 2 and data[0] >> 6 == 2 and 192 <= data[1] <= 223:  # an RTCP RR may be 8 octets
        raise RtcpPacket(f"RTCP packet type {data[1]} on the RTP port")
    if len(data) < _HEADER.size:
        raise RtpError(f"{len(data)} octets: shorter than the 12-octet RTP header")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise RtpError(f"version {b0 >> 6}, not 2")
    cc = b0 & 0x0F
    pos = _HEADER.size + 4 * cc
    if len(data) < pos:
        raise RtpError(f"{cc} CSRC identifiers announced, {(len(data) - 12) // 4} present")
    csrc = struct.unpack_from(f"!{cc}I", data, _HEADER.size) if cc else ()
    extension = None
    if b0 & 0x10:
        if len(data) < pos + 4:
            raise RtpError("extension bit set but no extension header")
        profile, words = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + 4 * words
        if len(data) < end:
            raise RtpError(f"header extension of {words} words runs past the packet")
        extension = (profile, bytes(data[pos + 4 : end]))
        pos = end
    end = len(data)
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or padding > end - pos:
            raise RtpError(f"padding count {padding} does not fit the {end - pos}-octet payload")
        end -= padding
    return RtpPacket(
        payload_type=b1 & 0x7F, sequence=seq, timestamp=ts, ssrc=ssrc, payload=bytes(data[pos:end]),
        marker=bool(b1 & 0x80), csrc=tuple(csrc), extension=extension, padding=padding,
    )  # fmt: skip


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes = b"",
    *,
    marker: bool = False,
    csrc: tuple[int, ...] = (),
    extension: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> bytes:
    """An RTP packet (RFC 3550 section 5.1). Raises ``ValueError`` for a field out of range."""
    if not 0 <= payload_type <= 127:
        raise ValueError(f"payload type {payload_type} is not 0..127")
    if len(csrc) > 15:
        raise ValueError(f"{len(csrc)} CSRC identifiers: at most 15")
    if not 0 <= padding <= 255:
        raise ValueError(f"padding {padding} is not 0..255")
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | len(csrc)
    out = bytearray(_HEADER.pack(b0, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF,
                                 timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF))  # fmt: skip
    for c in csrc:
        out += struct.pack("!I", c)
    if extension is not None:
        profile, data = extension
        if len(data) % 4:
            raise ValueError("header extension data must be a whole number of 32-bit words")
        out += struct.pack("!HH", profile, len(data) // 4) + data
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return bytes(out)


# --- G.711 ----------------------------------------------------------------------------------


def _ulaw(code: int) -> int:
    u = ~code & 0xFF
    sample = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return 0x84 - sample if u & 0x80 else sample - 0x84


def _alaw(code: int) -> int:
    a = code ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    sample = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if a & 0x80 else -sample


#: Each code's 16-bit little-endian sample (a WAV's byte order).
_TABLES = {
    PCMU: [struct.pack("<h", _ulaw(c)) for c in range(256)],
    PCMA: [struct.pack("<h", _alaw(c)) for c in range(256)],
}


def decode_g711(payload_type: int, payload: bytes) -> bytes:
    """16-bit little-endian linear PCM of a PCMU (0) or PCMA (8) payload (ITU-T G.711)."""
    table = _TABLES.get(payload_type)
    if table is None:
        raise ValueError(f"payload type {payload_type} is not PCMU (0) or PCMA (8)")
    return b"".join(table[c] for c in payload)


# --- the recorder (file I/O, driven by the session) --------------------------------------------


class Recorder:
    """Writes a stream's payloads to ``path_stem`` + ``.wav`` (PCMU/PCMA, the payload type of
    the first packet) or ``.rtp`` (anything else). Lost packets become silence up to
    ``MAX_GAP_SAMPLES``; a packet older than what is written is dropped (counted ``late``)."""

    def __init__(self, path_stem: Path) -> None:
        self.stem = path_stem
        self.path: Path | None = None
        self.samples = 0
        self.late = 0
        self._wav: wave.Wave_write | None = None
        self._raw: BinaryIO | None = None
        self._pt: int | None = None
        self._next_ts: int | None = None

    def write(self, packet: RtpPacket) -> None:
        if self._pt is None:
            self._open(packet.payload_type)
        if self._wav is not None:
            if packet.payload_type != self._pt:
                return  # a comfort-noise or DTMF packet (RFC 3389, RFC 4733): not audio here
            if self._next_ts is not None:
                gap = (packet.timestamp - self._next_ts) & 0xFFFFFFFF
                if gap >= 0x80000000:  # behind what is written: late or duplicate
                    self.late += 1
                    return
                if 0 < gap <= MAX_GAP_SAMPLES:
                    self._wav.writeframes(b"\x00\x00" * gap)
                    self.samples += gap
            self._wav.writeframes(decode_g711(packet.payload_type, packet.payload))
            self.samples += len(packet.payload)
            self._next_ts = (packet.timestamp + len(packet.payload)) & 0xFFFFFFFF
        elif self._raw is not None:
            self._raw.write(struct.pack("!IHBH", packet.timestamp, packet.sequence, packet.payload_type,
                                        len(packet.payload)) + packet.payload)  # fmt: skip

    def _open(self, payload_type: int) -> None:
        self._pt = payload_type
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        if payload_type in _TABLES:
            self.path = self.stem.with_name(self.stem.name + ".wav")
            self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115 -- closed by close()
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(G711_RATE)
        else:
            self.path = self.stem.with_name(self.stem.name + ".rtp")
            self._raw = self.path.open("wb")
            self._raw.write(RAW_MAGIC)

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()  # writes the final lengths into the header
            self._wav = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None


# --- the session (sans-I/O) -------------------------------------------------------------------

Address = tuple[str, int]


@dataclass(slots=True)
class _Stats:
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    malformed: int = 0
    rtcp: int = 0
    first_packet_at: float | None = None
    last_packet_at: float | None = None
    payload_type: int | None = None
    ssrc: int | None = None


@dataclass(slots=True)
class RtpSession:
    """One endpoint's media logic (see the module docstring). ``receive`` takes a datagram,
    its source and the time (UNIX seconds) and answers the datagrams to send."""

    mode: str = "echo"
    remote: Address | None = None
    recorder: Recorder | None = None
    local_ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    _seq: int = field(default_factory=lambda: secrets.randbits(16))
    _ts_base: int = field(default_factory=lambda: secrets.randbits(32))
    _their_ssrc: int | None = None
    _their_first_ts: int = 0
    _latched: bool = False
    _last_ts: int | None = None
    stats_: _Stats = field(default_factory=_Stats)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")

    def set_remote(self, host: str, port: int) -> None:
        """Where to send (the SDP's ``c=`` and ``m=``); replaced by the first packet's source."""
        self.remote = (host, port)

    def receive(self, data: bytes, source: Address, now: float) -> list[tuple[bytes, Address]]:
        try:
            packet = parse_rtp(data)
        except RtcpPacket:
            self.stats_.rtcp += 1
            return []
        except RtpError:
            self.stats_.malformed += 1
            return []
        s = self.stats_
        s.packets_in += 1
        s.bytes_in += len(data)
        s.first_packet_at = now if s.first_packet_at is None else s.first_packet_at
        s.last_packet_at = now
        s.payload_type, s.ssrc = packet.payload_type, packet.ssrc
        if not self._latched:  # symmetric RTP, RFC 4961
            self.remote, self._latched = source, True
        if self.mode == "record":
            if self.recorder is not None:
                self.recorder.write(packet)
            return []
        return [self._echo(packet)] if self.remote is not None else []

    def _echo(self, packet: RtpPacket) -> tuple[bytes, Address]:
        if packet.ssrc != self._their_ssrc:  # a new stream: our timestamps carry on from here
            if self._last_ts is not None:
                self._ts_base = (self._last_ts + 1) & 0xFFFFFFFF
            self._their_ssrc, self._their_first_ts = packet.ssrc, packet.timestamp
        ts = (self._ts_base + packet.timestamp - self._their_first_ts) & 0xFFFFFFFF
        self._last_ts = ts
        out = build_rtp(packet.payload_type, self._seq, ts, self.local_ssrc, packet.payload, marker=packet.marker)
        self._seq = (self._seq + 1) & 0xFFFF
        self.stats_.packets_out += 1
        self.stats_.bytes_out += len(out)
        assert self.remote is not None
        return out, self.remote

    def stats(self) -> dict[str, Any]:
        """Counters (octets are whole datagrams), first/last packet times, the last payload
        type and SSRC received, our SSRC, the remote address."""
        s = self.stats_
        return {
            "mode": self.mode,
            "packets_in": s.packets_in, "bytes_in": s.bytes_in,
            "packets_out": s.packets_out, "bytes_out": s.bytes_out,
            "malformed": s.malformed, "rtcp": s.rtcp,
            "first_packet_at": s.first_packet_at, "last_packet_at": s.last_packet_at,
            "payload_type": s.payload_type, "ssrc": s.ssrc, "local_ssrc": self.local_ssrc,
            "remote": f"{self.remote[0]}:{self.remote[1]}" if self.remote else None,
            "recording": str(self.recorder.path) if self.recorder and self.recorder.path else None,
        }  # fmt: skip


# --- the asyncio adapter ----------------------------------------------------------------------


class _Protocol(asyncio.DatagramProtocol):
    endpoint: RtpEndpoint | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.endpoint is not None:
            self.endpoint._received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:  # an ICMP unreachable: the peer is gone
        if self.endpoint is not None:
            self.endpoint.errors += 1


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Tries at binding an even port before giving up (each odd port drawn is released).
BIND_TRIES = 64


class RtpEndpoint:
    """A UDP RTP endpoint at a position (see the module docstring). Make one with ``open``."""

    def __init__(self, session: RtpSession, transport: asyncio.DatagramTransport, port: int,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.session = session
        self.port = port
        self.errors = 0
        self._transport = transport
        self._clock = clock

    @classmethod
    async def open(
        cls, host: str, *, mode: str = "echo", record_dir: Path | None = None, name: str | None = None
    ) -> RtpEndpoint:
        """Bind an even UDP port on ``host``. ``record`` mode needs ``record_dir``; the file
        is named after ``name`` (e.g. the call's identifier, made file-safe) or the port."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "record" and record_dir is None:
            raise ValueError("record mode needs a record_dir")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = None
        for _ in range(BIND_TRIES):
            candidate = socket.socket(family, socket.SOCK_DGRAM)
            candidate.bind((host, 0))
            if candidate.getsockname()[1] % 2 == 0:
                sock = candidate
                break
            candidate.close()
        if sock is None:
            raise OSError(f"no even UDP port on {host} after {BIND_TRIES} tries")
        port = sock.getsockname()[1]
        recorder = None
        if mode == "record":
            assert record_dir is not None
            stem = _SAFE.sub("_", name).strip("_") if name else f"rtp-{port}"
            recorder = Recorder(Path(record_dir) / (stem or f"rtp-{port}"))
        session = RtpSession(mode=mode, recorder=recorder)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_Protocol, sock=sock)
        endpoint = cls(session, transport, port)
        protocol.endpoint = endpoint  # before any datagram: none is read until we yield
        return endpoint

    def set_remote(self, host: str, port: int) -> None:
        """The address the SDP offer names; the first packet's source replaces it."""
        self.session.set_remote(host, port)

    def stats(self) -> dict[str, Any]:
        out = self.session.stats()
        out["port"], out["send_errors"] = self.port, self.errors
        return out

    @property
    def recording(self) -> Path | None:
        rec = self.session.recorder
        return rec.path if rec is not None else None

    def _received(self, data: bytes, source: Address) -> None:
        try:
            for out, dest in self.session.receive(data, source, self._clock()):
                self._transport.sendto(out, dest)
        except OSError:  # a write error on the recording or the socket: media stops, call goes on
            self.errors += 1

    async def close(self) -> None:
        """Stop receiving and finish the recording."""
        self._transport.close()
        if self.session.recorder is not None:
            self.session.recorder.close()
        await asyncio.sleep(0)  # let the transport's close callback run
