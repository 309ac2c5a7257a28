"""``firebox logs verify`` and ``firebox logs call`` (NENA-STA-010.3 section 4.12): the chain
check naming the first broken link, and one call's story as a timeline, read from the
store and from a running Logging Service."""

from __future__ import annotations

import socket
import sqlite3
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from typer.testing import CliRunner

from firebox import jws as jwslib
from firebox.cli import app
from firebox.logging.events import (
    new_call_id,
    new_incident_id,
    new_log_event_id,
    parse_timestamp,
)
from firebox.logging.service import LoggingService
from firebox.logging.store import AppendItem, open_store, to_micros
from firebox.logging.testing import Signer, call_events
from firebox.logging.timeline import timeline

runner = CliRunner()
SIGNER = Signer("ed448")


@pytest.fixture
def filled(tmp_path) -> Iterator[tuple[str, str, list]]:
    url = f"sqlite:///{tmp_path}/logs.db"
    call = new_call_id("bcf.example.net")
    events = call_events(call, new_incident_id("bcf.example.net"))
    with open_store(url) as store:
        stored = store.append([
            AppendItem(new_log_event_id("logs.example.net"), e, jwslib.serialize(SIGNER.sign(e)).decode(),
                       to_micros(parse_timestamp(e["timestamp"])))
            for e in reversed(events)
        ])  # fmt: skip
    yield url, call, stored


def test_verify_ok_and_broken(filled, tmp_path):
    url, _, stored = filled
    ok = runner.invoke(app, ["logs", "verify", "--db", url])
    assert ok.exit_code == 0 and "9 log events, the hash chain verifies" in ok.stdout
    head = ok.stdout.split("head ", 1)[1].split()[0]
    assert head == f"9:{stored[-1].hash}"
    assert runner.invoke(app, ["logs", "verify", "--db", url, "--anchor", f"4:{stored[3].hash}"]).exit_code == 0
    with sqlite3.connect(tmp_path / "logs.db") as conn:  # cut back the tail: the chain is intact...
        conn.execute("DELETE FROM log_events WHERE seq = 9")
    assert runner.invoke(app, ["logs", "verify", "--db", url]).exit_code == 0
    cut = runner.invoke(app, ["logs", "verify", "--db", url, "--anchor", head])  # ...but not the anchor
    assert cut.exit_code == 1 and f"anchor {head} is not in the chain" in " ".join(cut.output.split())
    with sqlite3.connect(tmp_path / "logs.db") as conn:
        conn.execute("UPDATE log_events SET element_id = 'x', jws = replace(jws, 'A', 'B') WHERE seq = 6")
    bad = runner.invoke(app, ["logs", "verify", "--db", url])
    assert bad.exit_code == 1
    text = " ".join(bad.output.split())
    assert f"sequence 6 ({stored[5].log_event_id})" in text and "hash does not match" in text


def test_timeline_stages_in_order(filled):
    url, call, _ = filled
    with open_store(url) as store:
        steps = timeline({"logEventId": e.log_event_id, "logEvent": e.jws_object()} for e in store.conversation(call))
    assert [s.stage for s in steps] == ["call", "signalling", "location/LoST", "location/LoST", "route",
                                        "signalling", "answer", "release", "release"]  # fmt: skip
    assert steps[3].summary.endswith("sip:queue@psap.example.net")
    assert steps[4].summary.startswith("→ sip:queue@psap.example.net by rule r1")
    assert steps[6].summary == "← SIP/2.0 200 OK (INVITE answered)"
    assert all(s.signature.startswith("EdDSA ✓ CN=bcf.example.net") for s in steps)


def test_call_from_the_store_and_from_the_service(filled):
    url, call, _ = filled
    shown = runner.invoke(app, ["logs", "call", call, "--db", url], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    for fragment in ("INVITE urn:service:sos", "LoST response q1", "by rule r1", "INVITE answered", "BYE", "call ends"):
        assert fragment in shown.output
    store = open_store(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(LoggingService(store).app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            thread.join(0.01)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        remote = runner.invoke(app, ["logs", "call", call, "--url", base], env={"COLUMNS": "200"})
        assert remote.exit_code == 0, remote.output
        assert remote.output == shown.output
        unknown = runner.invoke(app, ["logs", "call", "urn:emergency:uid:callid:x:y.net", "--url", base])
        assert unknown.exit_code == 1 and "no log event of call" in unknown.output
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        store.close()
    both = runner.invoke(app, ["logs", "call", call])
    assert both.exit_code == 2
