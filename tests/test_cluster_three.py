"""Three firebox nodes, each a real ``firebox serve`` child process with its own ports, run one
911 system on this machine's PostgreSQL and NATS (JetStream). The PSAPs are one set of SIP
user agents outside every node (``elements.psap_agents.remote``), as real PSAPs are; the
carrier finds the nodes by the cluster's name (RFC 3263 SRV data: equal priority, equal
weight) and moves to the next when one does not answer.

Under a steady call load one node is SIGKILLed: every call placed after the kill reaches a
PSAP through another node; every call in conversation at the kill is released (its BYE carried
by a surviving node); a console signed in through the consoles' address keeps its session and
sees the same incidents, now served by another node; the dead node, restarted, delivers what
its spool held, and the Logging Service then has the story of every call (start, route, end)
with its hash chain intact.

Then one node is cut off from the database and NATS (a partition) instead of killed: calls
through it are still answered; a fire alarm box alarm seen by all three nodes makes one
incident; two dispatchers on two sides dispatching the same unit dispatch it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml
from netkit import TcpRelay, free_tcp_port
from pg_kit import pg_url  # noqa: F401 -- a fixture
from rich.console import Console

from firebox.cluster.process import NodeProcess
from firebox.deployment import load_deployment
from firebox.node import DEMO_CONSOLE_PASSWORD, cluster_resolver, write_demo
from firebox.psap.ua import AgentMode, PsapAgents, Queue
from firebox.sim.carrier import CallPlan, CallResult, Carrier, Outcome
from firebox.sim.peer import free_sip_port

NODES = ("node-a", "node-b", "node-c")
#: What the run measured (printed, and kept under artifacts/cluster for docs/cluster.md).
FIGURES: dict[str, Any] = {}
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "cluster"
SEED, TOWNS = 911, 40


def _via(url: str, relay: TcpRelay) -> str:
    """``url`` (postgresql:// or nats://) with its host:port replaced by the relay's."""
    scheme, rest = url.split("://", 1)
    auth, _, hostpath = rest.rpartition("@")
    path = hostpath.split("/", 1)[1] if "/" in hostpath else ""
    return f"{scheme}://{auth + '@' if auth else ''}{relay.address}" + (f"/{path}" if path else "")


def _write_node(tmp: Path, node_id: str, ports: dict[str, dict[str, int]], *, name: str, db: str, nats: str,
                agents: int, secret: Path) -> Path:  # fmt: skip
    http, sip = f"127.0.0.1:{ports[node_id]['http']}", f"127.0.0.1:{ports[node_id]['sip']}"
    path, state = write_demo(tmp / node_id, seed=SEED, n_towns=TOWNS, listen=http, sip_listen=sip,
                             console=Console(quiet=True))  # fmt: skip
    doc = yaml.safe_load(path.read_text())
    els = doc["elements"]
    els["psap_agents"] = {"remote": f"127.0.0.1:{agents}"}
    # One Logging Service per node, all on one store (one hash chain) in the shared database.
    els["logging"] = [{"listen": http, "store": db}]
    els["log_events"] = {"spool": "var/log-spool"}
    els["cad"] = {"listen": http, "stations": "stations.geojson", "boxes": "boxes.geojson",
                  "box_mqtt": {"url": "mqtt://127.0.0.1:1883", "topic": f"{name}/boxes/#",
                               "client_id": f"{name}-{node_id}"}}  # fmt: skip
    from firebox.console.auth import demo_users

    users = demo_users({p.id: [] for p in state.psaps[:2]}, DEMO_CONSOLE_PASSWORD)
    els["console"] = {
        "listen": http, "session_secret_file": str(secret),
        "users": [{"name": u.name, "role": u.role.value, "psap": u.psap_id, "password_hash": u.password_hash}
                  for u in users.values()],
    }  # fmt: skip
    els["monitor"] = {"listen": http, "probe_period_seconds": 0}
    doc["cluster"] = {
        "name": name, "node_id": node_id, "database": db, "nats": nats, "heartbeat_seconds": 0.25,
        "nodes": [{"id": n, "sip": f"127.0.0.1:{ports[n]['sip']}", "http": f"127.0.0.1:{ports[n]['http']}",
                   "priority": 10, "weight": 50} for n in NODES],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    return path


class Cluster:
    """The three nodes, the PSAPs' agents, the relays and the carrier of one test."""

    def __init__(self, tmp: Path, db: str) -> None:
        self.tmp, self.db = tmp, db
        self.name = f"core-{uuid.uuid4().hex[:10]}.test.invalid"
        self.ports = {n: {"http": free_tcp_port(), "sip": free_sip_port()} for n in NODES}
        self.procs: dict[str, NodeProcess] = {}
        self.relays: dict[str, TcpRelay] = {}
        self.agents: PsapAgents | None = None
        self.carrier: Carrier | None = None
        self.deployments: dict[str, Path] = {}

    async def start(self) -> None:
        pg_host = self.db.split("@", 1)[1].split("/", 1)[0]
        host, port = pg_host.rsplit(":", 1) if ":" in pg_host else (pg_host, "5432")
        # node-c reaches the database and NATS through relays the test can cut (a partition).
        self.relays["pg"] = await TcpRelay([(host, int(port))]).start()
        self.relays["nats"] = await TcpRelay([("127.0.0.1", 4222)]).start()
        # The consoles' address: node-a while it lives, then the next (a load balancer).
        self.relays["console"] = await TcpRelay([("127.0.0.1", self.ports[n]["http"]) for n in NODES]).start()
        secret = self.tmp / "console-secret"
        secret.write_bytes(uuid.uuid4().bytes * 2)
        agents_port = free_sip_port()
        for n in NODES:
            cut = n == "node-c"
            self.deployments[n] = _write_node(
                self.tmp, n, self.ports, name=self.name,
                db=_via(self.db, self.relays["pg"]) if cut else self.db,
                nats=_via("nats://127.0.0.1:4222", self.relays["nats"]) if cut else "nats://127.0.0.1:4222",
                agents=agents_port, secret=secret,
            )  # fmt: skip
            self.procs[n] = NodeProcess(self.deployments[n], n, f"127.0.0.1:{self.ports[n]['http']}",
                                        self.tmp / f"{n}.log")  # fmt: skip
        dep = load_deployment(self.deployments["node-a"])
        queues = [Queue(p.id, p.uri, p.name, p.business_line, AgentMode("answer")) for p in dep.psaps]
        # The PSAPs: they answer, and their in-dialog requests find a live node by the name.
        self.agents = PsapAgents(queues, host="127.0.0.1", port=agents_port, ring_seconds=0.1,
                                 resolver=cluster_resolver(dep, ("udp",)), failover_seconds=0.5)  # fmt: skip
        await self.agents.start()
        # Nodes start one after another: the first creates the shared tables.
        for n in NODES:
            await self.procs[n].start()
        self.carrier = Carrier(("127.0.0.1", self.ports["node-a"]["sip"], "udp"),
                               resolver=cluster_resolver(dep, ("udp",)), ingress_uri=f"sip:{self.name}",
                               failover_seconds=0.5, answer_timeout=8.0)  # fmt: skip
        await self.carrier.start()
        self.dep = dep

    async def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                await proc.stop(timeout=15)
        if self.carrier is not None:
            await self.carrier.close()
        if self.agents is not None:
            await self.agents.close()
        for relay in self.relays.values():
            await relay.close()

    async def cluster_view(self, node: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=3) as c:
            return (await c.get(f"http://127.0.0.1:{self.ports[node]['http']}/cluster")).json()


def _health(view: dict[str, Any]) -> dict[str, str]:
    return {n["id"]: n["health"] for n in view.get("nodes", [])}


async def _until(predicate: Any, what: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _load(cluster: Cluster, points: list[tuple[float, float]], *, rate: float, seconds: float,
                kill_at: float | None = None, kill: Any = None) -> list[tuple[float, float, CallResult]]:  # fmt: skip
    """A steady load: ``rate`` calls a second for ``seconds`` (bounded), each held 1.5-4 s by
    the caller; ``kill`` runs ``kill_at`` seconds in. Returns (start, end, result) per call."""
    assert cluster.carrier is not None
    rng = random.Random(7)
    out: list[tuple[float, float, CallResult]] = []
    tasks: list[asyncio.Task[None]] = []

    async def one(n: int) -> None:
        lon, lat = points[n % len(points)]
        started = time.time()
        result = await cluster.carrier.call(CallPlan(f"tel:+1603555{n:04d}", lon, lat, hold=rng.uniform(1.5, 4.0)))
        out.append((started, time.time(), result))

    t0 = time.monotonic()
    killed = False
    for n in range(int(rate * seconds)):
        if kill is not None and not killed and time.monotonic() - t0 >= kill_at:
            kill()
            killed = True
        tasks.append(asyncio.create_task(one(n)))
        await asyncio.sleep(max(0.0, t0 + (n + 1) / rate - time.monotonic()))
    done, pending = await asyncio.wait(tasks, timeout=40)
    for t in pending:
        t.cancel()
    assert not pending, f"{len(pending)} calls did not end within 40 s"
    return out


async def test_three_nodes_one_killed_then_one_cut_off(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    cluster = Cluster(tmp_path, pg_url)
    try:
        await cluster.start()
        await _until(lambda: _all_alive(cluster, NODES), "three nodes alive in each other's view")
        state = load_deployment(cluster.deployments["node-a"])
        points = _points(cluster)
        # --- a console signed in through the consoles' address (node-a behind it) ---------
        console = httpx.AsyncClient(base_url=f"http://{cluster.relays['console'].address}/console", timeout=10)
        user = next(u.name for u in state.elements.console.users if u.role == "dispatcher")
        r = await console.post("/signin", data={"user": user, "password": DEMO_CONSOLE_PASSWORD})
        assert r.status_code == 303, r.text
        csrf = (await console.get("/api/state")).json()["user"]["csrf"]
        made = await console.post("/incidents", headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
                                  json={"type": "fire", "subtype": "structure fire", "priority": 2,
                                        "description": "made on node-a before the kill"})  # fmt: skip
        assert made.status_code == 201, made.text
        incident_a = made.json()["incident"]["id"]

        # --- steady load; node-a SIGKILLed 5 s in ----------------------------------------
        killed_at: list[float] = []

        seen_dead: list[float] = []

        async def watch_dead() -> None:
            while not await _health_is(cluster, "node-b", "node-a", "dead"):
                await asyncio.sleep(0.05)
            seen_dead.append(time.time())

        def kill() -> None:
            killed_at.append(time.time())
            cluster.procs["node-a"].kill()
            watchers.append(asyncio.ensure_future(asyncio.wait_for(watch_dead(), 30)))

        watchers: list[asyncio.Future[None]] = []

        calls = await _load(cluster, points, rate=4.0, seconds=14.0, kill_at=5.0, kill=kill)
        kill_time = killed_at[0]
        FIGURES.update(offered=len(calls), carrier_failovers=cluster.carrier.stats.failovers)
        after = [r for s, _, r in calls if s >= kill_time]
        before = [r for s, _, r in calls if s < kill_time]
        assert len(after) >= 30 and len(before) >= 15
        # Every call placed after the kill reached a PSAP (another node carried it).
        assert all(r.outcome is Outcome.ANSWERED and r.status == 200 for r in after), \
            [(r.outcome, r.status, r.reason) for r in after if r.outcome is not Outcome.ANSWERED]  # fmt: skip
        # Every call answered before the kill and still up at it was released: its BYE answered.
        in_progress = [r for s, e, r in calls if r.outcome is Outcome.ANSWERED and r.answered_at
                       and r.answered_at < kill_time < e]  # fmt: skip
        assert in_progress and all(r.bye_status == 200 for r in in_progress), \
            [(r.call_id, r.bye_status) for r in in_progress if r.bye_status != 200]  # fmt: skip
        # A call in its setup at the instant of the kill (its 200 went to the dead node) is
        # the only kind that may have failed; the caller redials and is answered.
        redialed = [r for r in before if r.outcome is not Outcome.ANSWERED]
        setups = sorted(r.setup_ms or 0.0 for r in after)
        FIGURES.update(placed_after_kill=len(after), answered_after_kill=len(after), in_conversation_at_kill=len(in_progress),
                       released=len(in_progress), redialed=len(redialed),
                       setup_ms_after_kill_p50=round(setups[len(setups) // 2], 1), setup_ms_after_kill_max=round(setups[-1], 1))  # fmt: skip
        for _ in redialed:
            again = await cluster.carrier.call(CallPlan("tel:+16035559999", *points[0], hold=0.5))
            assert again.outcome is Outcome.ANSWERED, again
        # The others see node-a dead.
        await asyncio.gather(*watchers)
        FIGURES["dead_in_peers_view_s"] = round(seen_dead[0] - kill_time, 2)

        # --- the console: same session, same incidents, from another node ---------------
        state_b = await console.get("/api/state")
        assert state_b.status_code == 200, state_b.text
        listed = await console.get(f"/incidents/{incident_a}", headers={"Accept": "application/json"})
        assert listed.status_code == 200, listed.text

        # --- node-a restarted: its spool delivered; every call's story logged -----------
        FIGURES["events_stored_before_restart"] = _count_events(pg_url)
        await cluster.procs["node-a"].start()
        await _until(lambda: _health_is(cluster, "node-b", "node-a", "alive"), "node-a back")
        FIGURES["logged_calls"] = await _logged_every_call(pg_url, [r for _, _, r in calls if r.outcome is Outcome.ANSWERED])
        await console.aclose()

        # --- node-c cut off from the database and NATS (a partition) ---------------------
        await _partition(cluster, pg_url, state, points)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "three-nodes.json").write_text(json.dumps(FIGURES, indent=1))
        print("three nodes:", json.dumps(FIGURES))
    finally:
        await cluster.close()


async def _console(cluster: Cluster, node: str, user: str) -> tuple[httpx.AsyncClient, dict[str, str]]:
    c = httpx.AsyncClient(base_url=f"http://127.0.0.1:{cluster.ports[node]['http']}/console", timeout=10)
    r = await c.post("/signin", data={"user": user, "password": DEMO_CONSOLE_PASSWORD})
    assert r.status_code == 303, r.text
    csrf = (await c.get("/api/state")).json()["user"]["csrf"]
    return c, {"X-CSRF-Token": csrf, "Accept": "application/json"}


async def _partition(cluster: Cluster, db: str, state: Any, points: list[tuple[float, float]]) -> None:
    import aiomqtt

    from firebox.cad.store import open_cad_store

    dispatchers = [u.name for u in state.elements.console.users if u.role == "dispatcher"]
    on_b, h_b = await _console(cluster, "node-b", dispatchers[0])
    on_c, h_c = await _console(cluster, "node-c", dispatchers[1])
    cad = open_cad_store(db)
    try:
        cluster.relays["pg"].cut()
        cluster.relays["nats"].cut()
        cut_at = time.time()
        await _until(lambda: _health_is(cluster, "node-b", "node-c", "dead"), "node-c dead in node-b's view")
        FIGURES["partition_dead_in_peers_view_s"] = round(time.time() - cut_at, 2)
        # Calls that reach node-c are still answered: routing needs neither the database nor NATS.
        direct = Carrier(("127.0.0.1", cluster.ports["node-c"]["sip"], "udp"), answer_timeout=8.0)
        await direct.start()
        try:
            for n in range(4):
                r = await direct.call(CallPlan(f"tel:+1603556{n:04d}", *points[n], hold=0.3))
                assert r.outcome is Outcome.ANSWERED, r
            FIGURES["partition_calls_through_cut_node_answered"] = 4
        finally:
            await direct.close()
        # A box alarm every node receives: one incident, made by a node that reaches the CAD.
        box = json.loads((cluster.deployments["node-a"].parent / "boxes.geojson").read_text())["features"][0]
        number = box["properties"]["BOX"]
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"box-gw-{uuid.uuid4().hex[:8]}") as pub:
            await pub.publish(f"{cluster.name}/boxes/{number}", json.dumps(
                {"box": number, "kind": "alarm", "time": "2026-11-25T03:00:00Z", "device": "gw-1"}).encode(), qos=1)

        def box_incidents() -> list[Any]:
            return [i for i in cad.incidents() if i.source.box == number]

        async def one_incident() -> bool:
            return len(box_incidents()) == 1

        await _until(one_incident, "the box alarm's incident")
        incident = box_incidents()[0].id
        # Two dispatchers, one each side, dispatch the same recommendation at once.
        body = {"recommended": "1"}
        r_b, r_c = await asyncio.gather(on_b.post(f"/incidents/{incident}/dispatch", json=body, headers=h_b),
                                        on_c.post(f"/incidents/{incident}/dispatch", json=body, headers=h_c))  # fmt: skip
        assert r_b.status_code == 200, r_b.text
        assert r_c.status_code == 503, r_c.text  # node-c cannot reach the CAD: it says so
        sent = r_b.json()["incident"]["units"]
        # The link heals: node-c is back in the others' view, and its dispatcher trying again
        # is refused (the units are already on their way), never a second dispatch.
        cluster.relays["pg"].heal()
        cluster.relays["nats"].heal()
        await _until(lambda: _health_is(cluster, "node-b", "node-c", "alive"), "node-c back in node-b's view")
        again = await on_c.post(f"/incidents/{incident}/dispatch", json={"units": sent}, headers=h_c)
        assert again.status_code == 409, again.text
        await asyncio.sleep(2.0)  # node-c's held alarm is retried: it finds the alarm handled
        assert len(box_incidents()) == 1
        final = cad.get_incident(incident)
        assert final is not None and sorted(final.units) == sorted(sent)
        dispatched = [a for a in cad.audit(incident) if a.action == "dispatched"]
        assert len(dispatched) == 1, dispatched
        FIGURES.update(partition_box_incidents=1, partition_dispatches=1, partition_dispatch_on_cut_node=r_c.status_code,
                       partition_retry_after_heal=again.status_code)  # fmt: skip
    finally:
        cad.close()
        await on_b.aclose()
        await on_c.aclose()


def _points(cluster: Cluster) -> list[tuple[float, float]]:
    towns = json.loads((cluster.deployments["node-a"].parent / "towns.geojson").read_text())["features"]
    from shapely.geometry import shape

    return [(p.x, p.y) for p in (shape(f["geometry"]).representative_point() for f in towns)]


async def _all_alive(cluster: Cluster, nodes: tuple[str, ...]) -> bool:
    for n in nodes:
        try:
            health = _health(await cluster.cluster_view(n))
        except httpx.HTTPError:
            return False
        if any(health.get(m) != "alive" for m in nodes):
            return False
    return True


async def _health_is(cluster: Cluster, viewer: str, node: str, health: str) -> bool:
    try:
        return _health(await cluster.cluster_view(viewer)).get(node) == health
    except httpx.HTTPError:
        return False


def _count_events(db: str) -> int:
    from firebox.logging.store import open_store

    store = open_store(db)
    try:
        return store.count()
    finally:
        store.close()


async def _logged_every_call(db: str, answered: list[CallResult]) -> dict[str, Any]:
    """Every answered call has, in the one Logging Service store, its CallStart, a Route and
    its CallEnd (whichever node logged them); the hash chain verifies."""
    from firebox.jws import b64url_decode
    from firebox.logging.store import Filter, open_store

    store = open_store(db)
    try:
        missing: dict[str, set[str]] = {}
        for _ in range(100):  # the senders deliver within a few seconds of the restart
            kinds: dict[str, set[str]] = {}
            offset = 0
            while page := store.query(Filter(), offset=offset, limit=1000).items:
                for e in page:
                    payload = json.loads(b64url_decode(e.jws_object()["payload"]))
                    kinds.setdefault(payload.get("callIdSip") or "", set()).add(e.log_event_type)
                offset += len(page)
            need = {"CallStartLogEvent", "RouteLogEvent", "CallEndLogEvent"}
            missing = {r.call_id: need - kinds.get(r.call_id or "", set()) for r in answered}
            missing = {k: v for k, v in missing.items() if v}
            if not missing:
                break
            await asyncio.sleep(0.2)
        assert not missing, f"{len(missing)} of {len(answered)} calls miss events: {list(missing.items())[:5]}"
        assert store.verify() is None
        return {"calls": len(answered), "events_stored": store.count(), "chain": "verified"}
    finally:
        store.close()
