"""BCF + ESRP on Massachusetts: SIPp as the carrier places calls located in real towns
(MassGIS boundaries from ../shared/data, the ECRF built from `examples/massachusetts.yaml`),
and each INVITE must arrive routed to that town's PSAP queue.

The example names no PSAPs, so the test gives every town a PSAP queue
``sip:psap-<TOWN_ID>@mass911.example`` (the example's URI template) with a 555 business
line: test values, not a registry.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import shapely
from rich.console import Console

from firebox.deployment import PsapConfig, load_deployment
from firebox.location.shapes import Point
from firebox.node import build_node

from test_esrp_sip import (  # the SIP test kit of the demo-state tests
    SIPP_DIR,
    Endpoint,
    cleanup,  # noqa: F401 -- the fixture
    endpoint,
    finish_sipp,
    free_port_pair,
    sipp_command,
    start_sipp,
)

ROOT = Path(__file__).resolve().parents[1]
GW = "pstn-gw.mass911.example"
N_CALLS = 24


@pytest.fixture(scope="module")
def ma(shared_data: Path):
    doc = json.loads((shared_data / "ma" / "towns.geojson").read_text())
    towns = []
    for f in doc["features"]:
        geom = shapely.make_valid(shapely.geometry.shape(f["geometry"]))
        p = geom.point_on_surface()
        towns.append((str(f["properties"]["TOWN_ID"]), f["properties"]["TOWN"], Point(p.y, p.x)))
    dep = load_deployment(ROOT / "examples" / "massachusetts.yaml")
    psaps = [
        PsapConfig(id=f"town-{tid}", name=f"{name} PSAP", uri=f"sip:psap-{tid}@mass911.example",
                   business_line=f"617555{int(tid):04d}")  # fmt: skip
        for tid, name, _ in towns
    ]
    elements = dep.elements.model_copy(update={"lis": None, "web": None, "ecrf": dep.elements.ecrf.model_copy(update={"peers": []})})
    dep = dep.model_copy(update={"psaps": psaps, "elements": elements})
    node = build_node(dep, console=Console(quiet=True))
    return towns, node


class MaNet:
    """Every MA PSAP queue and the gateway resolve to local test endpoints."""

    def __init__(self, psap_port: int, gateway_port: int) -> None:
        self.psap_port, self.gateway_port = psap_port, gateway_port

    def resolve(self, uri: str):
        if "@mass911.example" in uri:
            return ("127.0.0.1", self.psap_port, "udp")
        if GW in uri:
            return ("127.0.0.1", self.gateway_port, "udp")
        return None


async def test_sipp_calls_from_real_towns_reach_each_towns_psap(ma, tmp_path, cleanup):
    from firebox.bcf.core import Bcf
    from firebox.esrp.element import EmergencyCore
    from firebox.esrp.policy import RuleSet, chains_from_deployment
    from firebox.esrp.router import InProcessLost, Router
    from firebox.esrp.states import StateTable
    from firebox.location.pidf import PidfLocation, Presence

    towns, node = ma
    chosen = random.Random(2024).sample(towns, N_CALLS)
    psap: Endpoint = await endpoint("answer")
    gateway: Endpoint = await endpoint("answer")
    cleanup += [psap, gateway]
    boston = next(t for t in towns if t[1] == "BOSTON")
    router = Router(
        fqdn="esrp.mass911.example",
        lost=InProcessLost(node.ecrf),
        chains=chains_from_deployment(node.deployment, GW),
        rules=RuleSet(),
        states=StateTable(),
        default_location=Presence("sip:ingress@bcf.mass911.example", [PidfLocation(shapes=[boston[2]], method="Manual")]),
    )
    core = EmergencyCore(
        Bcf("bcf.mass911.example", sources={"127.0.0.0/8": "carrier-sipp"}),
        router, host="127.0.0.1", port=0, transports=("udp",),
        resolve=MaNet(psap.port, gateway.port).resolve,
    )  # fmt: skip
    await core.start()
    cleanup.append(core)

    inf = tmp_path / "towns.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"{p.lat:.6f};{p.lon:.6f};\n" for _, _, p in chosen))
    command = sipp_command(
        ["-sf", str(SIPP_DIR / "esrp_uac.xml"), "-inf", str(inf), f"127.0.0.1:{core.port}"],
        tmp_path, free_port_pair(), "udp",
    )  # fmt: skip
    command[command.index("-m") + 1] = str(N_CALLS)
    command += ["-r", "20"]
    code, diag = await finish_sipp(await start_sipp(command, tmp_path), tmp_path, "carrier")
    assert code == 0, diag

    invites = [r for r, _ in psap.requests if r.method == "INVITE"]
    assert len(invites) == N_CALLS and not gateway.requests
    routed = [inv.headers.get_all("Route")[0] for inv in invites]
    assert routed == [f"<sip:psap-{tid}@mass911.example;lr>" for tid, _, _ in chosen]
    for inv in invites:
        assert inv.uri == "urn:service:sos"
        assert inv.headers.get("Resource-Priority") == "esnet.1"
        assert any("purpose=emergency-CallId" in v for v in inv.headers.get_all("Call-Info"))
    assert core.stats["calls_in"] == N_CALLS and core.stats["answered"] == N_CALLS
