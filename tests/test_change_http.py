"""The /changes HTTP API on a real Starlette app (httpx ASGI transport) over a real BCF."""

from __future__ import annotations

import httpx
import pytest

from firebox.bcf.core import Bcf
from firebox.change.apply import ChangeManager
from firebox.change.http import create_change_app
from firebox.change.store import ChangeStore

SOURCES = {"192.0.2.0/24": "carrier-a", "198.51.100.0/24": "carrier-b"}
MASSACHUSETTS = [{"id": "block-invites", "action": "reject", "methods": ["INVITE"]}]


@pytest.fixture
async def client(tmp_path):
    bcf = Bcf("bcf.example", sources=SOURCES)
    manager = ChangeManager(ChangeStore(tmp_path / "changes.db"), sources=SOURCES, bcf=bcf)
    transport = httpx.ASGITransport(app=create_change_app(manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://node.test") as http:
        yield http, bcf


async def test_massachusetts_rule_refused_with_the_calls_listed(client):
    http, bcf = client
    reply = await http.post("/changes", json={"kind": "bcf", "rules": MASSACHUSETTS, "author": "ops@example"})
    assert reply.status_code == 422 and reply.headers["content-type"].startswith("application/problem+json")
    body = reply.json()
    assert body["title"] == "Change refused" and body["errors"][0]["member"] == "rules"
    assert any(e["member"].startswith("hits[") and "carrier-a: INVITE tel:911" in e["detail"] for e in body["errors"])
    assert len(body["hits"]) >= 10
    stored = (await http.get(f"/changes/{body['changeId']}")).json()
    assert stored["stage"] == "refused" and stored["signature"]["protected"]
    assert bcf.rules.rules == ()


async def test_submit_diff_stage_promote_rollback(client):
    http, bcf = client
    rules = [{"id": "tests-low", "action": "deprioritize", "kinds": ["test"]}]
    reply = await http.post("/changes", json={"kind": "bcf", "rules": rules, "author": "ops@example", "target": "demo-bcf"})
    assert reply.status_code == 201, reply.text
    change = reply.json()
    cid = change["id"]
    assert reply.headers["location"] == f"/changes/{cid}" and change["stage"] == "shadow"
    d = (await http.get(f"/changes/{cid}/diff")).json()
    assert d["lines"] == ['+ rule \'tests-low\': {"action":"deprioritize","id":"tests-low","kinds":["test"]}']

    early = await http.post(f"/changes/{cid}/promote")
    assert early.status_code == 409 and "from shadow only: rollback, stage" in early.json()["detail"]
    bad = await http.post(f"/changes/{cid}/stage", json={"scope": {"sources": ["nobody"]}})
    assert bad.status_code == 400 and bad.json()["errors"][0]["member"] == "scope.sources[0]"

    staged = await http.post(f"/changes/{cid}/stage", json={"scope": {"sources": ["carrier-a"]}})
    assert staged.status_code == 200 and staged.json()["stage"] == "canary"
    assert (await http.post(f"/changes/{cid}/promote")).json()["stage"] == "full"
    assert bcf.rules.to_dicts() == rules
    back = await http.post(f"/changes/{cid}/rollback", json={"reason": "drill over"})
    assert back.json()["stage"] == "rolled_back" and back.json()["reason"] == "drill over"
    assert bcf.rules.rules == ()

    listed = (await http.get("/changes", params={"target": "demo-bcf"})).json()["changes"]
    assert [c["id"] for c in listed] == [cid]
    log = (await http.get(f"/changes/{cid}/log")).json()["log"]
    assert [e["action"] for e in log] == ["submitted", "canary", "full", "rolled_back"]


@pytest.mark.parametrize(("body", "member"), [
    ({"kind": "firewall", "rules": [], "author": "a"}, "kind"),
    ({"kind": "bcf", "rules": [], "author": ""}, "author"),
    ({"kind": "bcf", "author": "a"}, "rules"),
    ({"kind": "bcf", "rules": [{"id": "x", "action": "explode"}], "author": "a"}, "rules"),
    ({"kind": "bcf", "rules": [], "author": "a", "when": "now"}, "when"),
])  # fmt: skip
async def test_bad_submissions_name_the_member(client, body, member):
    http, _ = client
    reply = await http.post("/changes", json=body)
    assert reply.status_code == 400 and reply.json()["errors"][0]["member"] == member


async def test_unknown_change_and_bad_queries(client):
    http, _ = client
    assert (await http.get("/changes/chg-nope")).status_code == 404
    assert (await http.get("/changes", params={"stage": "half"})).json()["errors"][0]["member"] == "stage"
    assert (await http.post("/changes", content=b"{not json")).status_code == 400
    assert (await http.delete("/changes")).status_code == 405


def test_cli_against_a_served_node(tmp_path):
    """``firebox change`` talking to a real uvicorn server on 127.0.0.1 (port 0)."""
    import json
    import socket
    import threading
    import time

    import uvicorn
    from typer.testing import CliRunner

    from firebox.change.cli import change_app

    bcf = Bcf("bcf.example", sources=SOURCES)
    manager = ChangeManager(ChangeStore(tmp_path / "changes.db"), sources=SOURCES, bcf=bcf)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_change_app(manager), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    try:
        runner = CliRunner()
        bad = tmp_path / "ma.json"
        bad.write_text(json.dumps(MASSACHUSETTS))
        refused = runner.invoke(change_app, ["submit", "bcf", str(bad), "--author", "ops", "--url", url])
        assert refused.exit_code == 1 and "calls it would have hit" in refused.output
        good = tmp_path / "good.yaml"
        good.write_text("- id: tests-low\n  action: deprioritize\n  kinds: [test]\n")
        ok = runner.invoke(change_app, ["submit", "bcf", str(good), "--author", "ops", "--url", url])
        assert ok.exit_code == 0, ok.output
        cid = next(w for w in ok.output.split() if w.startswith("chg-"))
        assert "+ rule 'tests-low'" in runner.invoke(change_app, ["diff", cid, "--url", url]).output
        assert "canary" in runner.invoke(change_app, ["stage", cid, "--source", "carrier-a", "--url", url]).output
        assert "full" in runner.invoke(change_app, ["promote", cid, "--url", url]).output
        assert bcf.rules.to_dicts()[0]["id"] == "tests-low"
        back = runner.invoke(change_app, ["rollback", cid, "--reason", "drill", "--url", url])
        assert "rolled_back" in back.output and bcf.rules.rules == ()
        listed = runner.invoke(change_app, ["list", "--url", url], terminal_width=200)
        assert cid in listed.output and "refused" in listed.output
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
