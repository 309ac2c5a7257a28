"""i3 logging as the node composes it (NENA-STA-010.3 section 4.12): two Logging Services
(``elements.logging`` as a list), the ECRF and the ESRP sending every log event to both
through their durable spools. One service goes down mid-run: the other keeps receiving, the
events meant for the one that is down wait in the spool, and once it is back they reach it
in order, none twice. Real HTTP servers (uvicorn) on 127.0.0.1, real SQLite stores; every
wait bounded."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml
from rich.console import Console

from firebox.deployment import load_deployment
from firebox.logging.store import Filter
from firebox.node import build_node, log_event_urls, start_sip, stop_sip, write_demo

CALL = "urn:emergency:uid:callid:c0ffee:bcf.demo.firebox.test"


def bound_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def serve(app, sock: socket.socket) -> tuple[uvicorn.Server, asyncio.Task]:
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):  # bounded wait for start-up
        if server.started:
            return server, task
        await asyncio.sleep(0.01)
    raise AssertionError("a server did not start")


async def shut(server: uvicorn.Server, task: asyncio.Task) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def until(predicate, what: str, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def find_service(lon: float, lat: float) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><findService xmlns="urn:ietf:params:xml:ns:lost1">'
        '<location id="l1" profile="geodetic-2d"><gml:Point xmlns:gml="http://www.opengis.net/gml" '
        f'srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>{lat} {lon}</gml:pos></gml:Point></location>'
        "<service>urn:service:sos</service></findService>"
    )


@pytest.fixture
def deployment(tmp_path: Path):
    main, second = bound_socket(), bound_socket()
    listen = f"127.0.0.1:{main.getsockname()[1]}"
    path, state = write_demo(tmp_path, seed=911, n_towns=40, listen=listen, sip_listen="127.0.0.1:0",
                             console=Console(quiet=True))  # fmt: skip
    data = yaml.safe_load(path.read_text())
    # The demo's second service on an address of its own, so that it can go down alone.
    data["elements"]["logging"][1] = {"listen": f"127.0.0.1:{second.getsockname()[1]}", "store": "var/b.db"}
    path.write_text(yaml.safe_dump(data))
    yield load_deployment(path), state, main, second
    main.close()
    second.close()


def test_the_demo_runs_two_logging_services(tmp_path: Path):
    path, _ = write_demo(tmp_path, seed=911, n_towns=40, listen="127.0.0.1:7999", console=Console(quiet=True))
    dep = load_deployment(path)
    assert [s.url for s in dep.elements.logging_services()] == ["http://127.0.0.1:7999", "http://127.0.0.1:7999/logging2"]
    assert log_event_urls(dep) == ["http://127.0.0.1:7999", "http://127.0.0.1:7999/logging2"]
    node = build_node(dep, console=Console(quiet=True))
    try:
        # Both on the page's address: the second under its path, the first at the root, last.
        (app,) = node.apps.values()
        mounts = [getattr(r, "path", None) for r in app.routes]
        assert mounts.index("/logging2") < len(mounts) - 1 and mounts[-1] == ""
        assert len(node.log_stores) == 2 and node.log_store is node.log_stores["http://127.0.0.1:7999"]
    finally:
        for store in node.log_stores.values():
            store.close()
        node.policy_store.close()


async def test_one_service_down_mid_run_gets_everything_in_order_after(deployment):
    dep, state, main_sock, second_sock = deployment
    node = build_node(dep, console=Console(quiet=True))
    url_a, url_b = log_event_urls(dep)
    port_b = second_sock.getsockname()[1]
    store_a, store_b = node.log_stores[url_a], node.log_stores[url_b]
    app_main, app_b = node.apps[dep.elements.ecrf.listen], node.apps[url_b.removeprefix("http://")]
    main = await serve(app_main, main_sock)
    second = await serve(app_b, second_sock)
    http = await start_sip(node)
    lost_url = f"http://{dep.elements.ecrf.listen}/lost"
    points = [t.geometry.point_on_surface() for t in state.towns]
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def ask(n: int) -> None:
                p = points[n % len(points)]
                headers = {"Call-Info": f"<{CALL}>;purpose=emergency-CallId"} if n % 2 else {}
                answer = await client.post(lost_url, content=find_service(p.x, p.y), headers=headers)
                assert answer.status_code == 200 and b"<findServiceResponse" in answer.content

            for n in range(10):
                await ask(n)
            await until(lambda: store_a.count() == store_b.count() == 20, "both services to hold the first 20")
            await shut(*second)  # the second Logging Service goes down mid-run
            for n in range(10, 30):
                await ask(n)
            sender = node.ecrf_log_sender
            await until(lambda: store_a.count() == 60, "the service still up to get everything")
            assert store_b.count() == 20 and sender.backlog(url_b) == 40
            await until(lambda: sender.core.dests[url_b].failed >= 1, "a delivery to the one down to fail")
            # It comes back on the same address.
            second = await serve(app_b, bound_socket(port_b))
            for n in range(30, 35):
                await ask(n)
        await stop_sip(node)  # drains the spools (bounded)
        assert node.log_figures["services"][url_a]["delivered"] and node.log_figures["services"][url_b]["delivered"]
        assert node.log_figures["logged"]["ECRF"] == 70 and not node.log_figures.get("rejected")
        # Both hold every event once, in the order the ECRF logged them, their chains intact.
        a = [e.client_id for e in store_a.query(Filter(), limit=1000).items]
        b = [e.client_id for e in store_b.query(Filter(), limit=1000).items]
        assert len(a) == len(set(a)) == 70 and a == b
        assert store_a.verify() is None and store_b.verify() is None
        assert [e.log_event_type for e in store_b.conversation(CALL)] == ["LostQueryLogEvent", "LostResponseLogEvent"] * 17
    finally:
        await stop_sip(node)
        if http is not None:
            await http.aclose()
        await shut(*second)
        await shut(*main)
        for store in node.log_stores.values():
            store.close()
        node.policy_store.close()
