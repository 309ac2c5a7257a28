"""RTP media at a position (firebox.psap.media): the RFC 3550 header codec, G.711 decoding,
the echo/record session logic, and real UDP on 127.0.0.1 (an echo answering every packet
under its own SSRC; a recording that is a valid WAV of the right length)."""

from __future__ import annotations

import asyncio
import socket
import struct
import wave

import pytest

from firebox.psap.media import (
    PCMA,
    PCMU,
    RAW_MAGIC,
    Recorder,
    RtcpPacket,
    RtpEndpoint,
    RtpError,
    RtpPacket,
    RtpSession,
    build_rtp,
    decode_g711,
    parse_rtp,
)

WAIT = 5.0  # bound on any wait for a datagram


# --- the header codec ----------------------------------------------------------------------------


def test_round_trip_of_every_header_field():
    data = build_rtp(96, 65535, 0xFFFFFFF0, 0xDEADBEEF, b"hello", marker=True, csrc=(1, 2),
                     extension=(0xBEDE, b"\x10\xff\x00\x00"), padding=3)  # fmt: skip
    assert len(data) == 12 + 8 + 8 + 5 + 3
    assert data[0] == 0x80 | 0x20 | 0x10 | 2 and data[1] == 0x80 | 96
    assert parse_rtp(data) == RtpPacket(96, 65535, 0xFFFFFFF0, 0xDEADBEEF, b"hello", True, (1, 2),
                                        (0xBEDE, b"\x10\xff\x00\x00"), 3)  # fmt: skip
    plain = build_rtp(PCMU, 1, 160, 7, b"\xff" * 160)
    assert plain[:12] == struct.pack("!BBHII", 0x80, 0, 1, 160, 7)
    assert parse_rtp(plain) == RtpPacket(PCMU, 1, 160, 7, b"\xff" * 160)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x80\x00\x00", "shorter than the 12-octet RTP header"),
        (b"\x40" + bytes(11), "version 1, not 2"),
        (b"\x83" + bytes(11) + bytes(8), "3 CSRC identifiers announced, 2 present"),
        (b"\x90" + bytes(11), "extension bit set but no extension header"),
        (b"\x90" + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), "header extension of 2 words runs past"),
        (b"\xa0" + bytes(11) + b"ab\x00", "padding count 0"),
        (b"\xa0" + bytes(11) + b"ab\x09", "padding count 9 does not fit the 3-octet payload"),
    ],
)
def test_malformed_packets_are_named(data, why):
    with pytest.raises(RtpError, match=why):
        parse_rtp(data)


def test_rtcp_on_the_rtp_port_is_told_apart():
    sender_report = b"\x80\xc8\x00\x06" + bytes(24)
    with pytest.raises(RtcpPacket, match="RTCP packet type 200"):
        parse_rtp(sender_report)


def test_build_refuses_what_the_header_cannot_carry():
    with pytest.raises(ValueError, match="payload type 128"):
        build_rtp(128, 0, 0, 0)
    with pytest.raises(ValueError, match="16 CSRC"):
        build_rtp(0, 0, 0, 0, csrc=tuple(range(16)))
    with pytest.raises(ValueError, match="32-bit words"):
        build_rtp(0, 0, 0, 0, extension=(1, b"abc"))


def test_g711_decoding_matches_the_itu_tables():
    # ITU-T G.711: u-law 0xFF/0x7F are zero, 0x00/0x80 the extremes; A-law 0xD5/0x55 the
    # smallest steps, 0xAA/0x2A the extremes.
    assert struct.unpack("<4h", decode_g711(PCMU, b"\xff\x7f\x00\x80")) == (0, 0, -32124, 32124)
    assert struct.unpack("<4h", decode_g711(PCMA, b"\xd5\x55\xaa\x2a")) == (8, -8, 32256, -32256)
    with pytest.raises(ValueError, match="payload type 9"):
        decode_g711(9, b"\x00")


# --- the session, sans-I/O -----------------------------------------------------------------------


def test_echo_is_our_own_stream_with_the_callers_payload():
    session = RtpSession(mode="echo")
    session.set_remote("192.0.2.1", 40000)
    caller = ("198.51.100.7", 31000)  # behind a NAT: not where the SDP said
    outs = [session.receive(build_rtp(PCMU, 1000 + i, 5000 + 160 * i, 0xCAFE, bytes([i]) * 160,
                                      marker=(i == 0)), caller, 100.0 + i / 50) for i in range(3)]  # fmt: skip
    echoed = [parse_rtp(o[0][0]) for o in outs]
    assert all(o[0][1] == caller for o in outs)  # symmetric RTP: latched on the first packet
    assert {p.ssrc for p in echoed} == {session.local_ssrc} and session.local_ssrc != 0xCAFE
    assert [(p.sequence - echoed[0].sequence) & 0xFFFF for p in echoed] == [0, 1, 2]
    assert [(p.timestamp - echoed[0].timestamp) & 0xFFFFFFFF for p in echoed] == [0, 160, 320]
    assert [p.payload for p in echoed] == [bytes([i]) * 160 for i in range(3)]
    assert [p.marker for p in echoed] == [True, False, False] and echoed[0].payload_type == PCMU
    # a new stream from the caller: our timestamps go on, never back
    nxt = parse_rtp(session.receive(build_rtp(PCMU, 7, 9, 0xBEEF, b"x"), caller, 101.0)[0][0])
    assert (nxt.timestamp - echoed[-1].timestamp) & 0xFFFFFFFF == 1
    assert session.receive(b"junk", caller, 101.1) == [] and session.receive(b"\x80\xc9" + bytes(6), caller, 101.2) == []
    stats = session.stats()
    assert (stats["packets_in"], stats["packets_out"], stats["malformed"], stats["rtcp"]) == (4, 4, 1, 1)
    assert stats["first_packet_at"] == 100.0 and stats["last_packet_at"] == 101.0
    assert stats["ssrc"] == 0xBEEF and stats["remote"] == "198.51.100.7:31000"


def test_no_echo_before_anyone_is_known_and_bad_modes():
    session = RtpSession(mode="record")
    assert session.receive(build_rtp(0, 1, 1, 1, b"a"), ("127.0.0.1", 9), 1.0) == []
    with pytest.raises(ValueError, match="mode 'loop'"):
        RtpSession(mode="loop")


def test_recorder_fills_a_lost_packet_with_silence_and_drops_late_ones(tmp_path):
    rec = Recorder(tmp_path / "call")
    for i in (0, 1, 3):  # packet 2 lost
        rec.write(RtpPacket(PCMA, i, 160 * i, 1, b"\xd5" * 160))
    rec.write(RtpPacket(PCMA, 2, 320, 1, b"\xd5" * 160))  # arrives late
    rec.write(RtpPacket(101, 4, 640, 1, b"\x01\x00\x00\xa0"))  # RFC 4733 DTMF: not audio
    rec.close()
    assert rec.path == tmp_path / "call.wav" and rec.late == 1
    with wave.open(str(rec.path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 640)
        frames = struct.unpack("<640h", w.readframes(640))
    assert frames[:320] == (8,) * 320 and frames[320:480] == (0,) * 160 and frames[480:] == (8,) * 160


def test_a_payload_type_that_is_not_g711_is_kept_raw(tmp_path):
    rec = Recorder(tmp_path / "opus")
    rec.write(RtpPacket(111, 5, 960, 1, b"opus-frame"))
    rec.close()
    assert rec.path == tmp_path / "opus.rtp"
    assert rec.path.read_bytes() == RAW_MAGIC + struct.pack("!IHBH", 960, 5, 111, 10) + b"opus-frame"


# --- real UDP on 127.0.0.1 -----------------------------------------------------------------------


async def recv(sock: socket.socket) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 2048), WAIT)


@pytest.fixture
def phone():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


async def test_an_echo_answers_every_packet_over_udp(phone):
    endpoint = await RtpEndpoint.open("127.0.0.1")
    try:
        assert endpoint.port % 2 == 0
        endpoint.set_remote(*phone.getsockname())
        loop = asyncio.get_running_loop()
        n, ssrc = 50, 0x1234ABCD
        sent = [build_rtp(PCMU, 60000 + i, 1_000_000 + 160 * i, ssrc, bytes([i % 256]) * 160) for i in range(n)]
        await loop.sock_sendto(phone, b"\x00garbage", ("127.0.0.1", endpoint.port))
        echoes = []
        for packet in sent:  # one at a time, as a phone does every 20 ms (without the wait)
            await loop.sock_sendto(phone, packet, ("127.0.0.1", endpoint.port))
            echoes.append(parse_rtp(await recv(phone)))
        local = endpoint.stats()["local_ssrc"]
        assert all(e.ssrc == local != ssrc for e in echoes)
        assert [e.payload for e in echoes] == [parse_rtp(p).payload for p in sent]
        assert [(e.sequence - echoes[0].sequence) & 0xFFFF for e in echoes] == list(range(n))
        assert [(e.timestamp - echoes[0].timestamp) & 0xFFFFFFFF for e in echoes] == [160 * i for i in range(n)]
        stats = endpoint.stats()
        assert (stats["packets_in"], stats["packets_out"], stats["malformed"]) == (n, n, 1)
        assert stats["bytes_in"] == stats["bytes_out"] == n * 172
        assert stats["payload_type"] == PCMU and stats["ssrc"] == ssrc and stats["port"] == endpoint.port
        assert stats["first_packet_at"] <= stats["last_packet_at"]
    finally:
        await endpoint.close()


async def test_a_recording_is_a_wav_of_the_right_length(phone, tmp_path):
    endpoint = await RtpEndpoint.open("127.0.0.1", mode="record", record_dir=tmp_path,
                                      name="urn:emergency:uid:callid:ab12:bcf.example.net")  # fmt: skip
    loop = asyncio.get_running_loop()
    tone = bytes(range(0, 256, 2))[:80] * 2  # 160 distinct-ish u-law codes per 20 ms packet
    for i in range(50):  # one second of PCMU
        await loop.sock_sendto(phone, build_rtp(PCMU, i, 160 * i, 99, tone), ("127.0.0.1", endpoint.port))
    for _ in range(int(WAIT / 0.01)):  # bounded wait until the endpoint has read them all
        if endpoint.stats()["packets_in"] == 50:
            break
        await asyncio.sleep(0.01)
    await endpoint.close()
    path = endpoint.recording
    assert path == tmp_path / "urn_emergency_uid_callid_ab12_bcf.example.net.wav"
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() == 8000 and w.getnframes() / w.getframerate() == 1.0
        assert w.readframes(160) == decode_g711(PCMU, tone)
    assert endpoint.stats()["packets_out"] == 0


async def test_open_refuses_a_bad_mode_or_a_recording_without_a_directory():
    with pytest.raises(ValueError, match="mode 'both'"):
        await RtpEndpoint.open("127.0.0.1", mode="both")
    with pytest.raises(ValueError, match="record_dir"):
        await RtpEndpoint.open("127.0.0.1", mode="record")
