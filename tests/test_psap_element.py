"""The PSAP call handling element (firebox.psap.element) over real UDP on 127.0.0.1, with SIPp
as the ESRP side: a call with a PIDF-LO rings until the test answers it through the API, a
caller who CANCELs lands on the callback list, texts become a chat the position answers.
Every wait is bounded; nothing asserts on timing."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from firebox.psap.api import CallStatus, EventKind, Medium, PositionStatus, RingStrategy
from firebox.psap.callhandling import PositionSetup, PsapSetup
from firebox.psap.element import CallHandlingElement

SIPP_DIR = Path(__file__).parent / "sipp"
NORTH = PsapSetup(
    "north", "sip:north@psap.demo.firebox.test", "North",
    (PositionSetup("n1"), PositionSetup("n2")), RingStrategy.RING_ALL, max_queue=5,
)  # fmt: skip


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def sipp(scenario: str, port: int, tmp_path: Path, service: str = "north") -> asyncio.subprocess.Process:
    binary = shutil.which("sipp")
    if binary is None:
        pytest.fail("sipp is not installed (apt-get install sip-tester); these tests need it")
    command = [
        binary, "-sf", str(SIPP_DIR / scenario), "-s", service, "-t", "u1",
        "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
        "-m", "1", "-timeout", "20s", "-timeout_error", "-trace_err", "-nostdin", f"127.0.0.1:{port}",
    ]  # fmt: skip
    return await asyncio.create_subprocess_exec(
        *command, cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def finished(proc: asyncio.subprocess.Process, tmp_path: Path) -> tuple[int, str]:
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 40)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "sipp did not finish"
    errors = "".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*errors*"))
    return proc.returncode or 0, f"rc={proc.returncode}\nstderr: {err.decode(errors='replace')[-1500:]}\nerrors: {errors}"


async def until(predicate, what: str, limit: float = 10.0):
    """Poll ``predicate`` (bounded) until it gives something true."""
    for _ in range(int(limit / 0.02)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: not within {limit} s")


async def test_a_call_with_a_pidf_lo_rings_until_a_position_answers_it_then_the_caller_hangs_up(tmp_path):
    element = CallHandlingElement([NORTH])
    await element.start()
    events = []

    async def watch():
        async for event in element.subscribe():
            events.append(event)

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.sleep(0)
        element.sign_in("n1", "ann")
        proc = await sipp("psap_uac.xml", element.port, tmp_path)
        (ringing,) = await until(lambda: element.calls("north"), "the call rings")
        assert ringing.status is CallStatus.RINGING and ringing.offered_to == ("n1",)
        assert ringing.location is not None and ringing.location.shape == "point"
        assert (round(ringing.location.lat, 2), round(ringing.location.lon, 2)) == (42.37, -71.11)
        assert ringing.callback is not None and "6035550100" in ringing.callback
        answered = element.answer("n1", "ann")
        assert answered.status is CallStatus.CONNECTED
        code, diag = await finished(proc, tmp_path)
        assert code == 0, diag + f"\n{element.core.counters}"
        (ended,) = await until(
            lambda: [v for v in element.calls("north", include_ended=True) if v.status is CallStatus.RELEASED],
            "the caller's BYE releases the call",
        )
        assert ended.media["local_port"] % 2 == 0  # the RTP endpoint the SDP answer named
        assert element.positions("north")[0].status is PositionStatus.AVAILABLE
        stats = element.stats("north")
        assert (stats.offered, stats.answered, stats.answered_15s) == (1, 1, 1)
        kinds = {e.kind for e in events}
        assert {EventKind.CALL, EventKind.POSITION, EventKind.STATS} <= kinds
        assert [e.call.status for e in events if e.kind is EventKind.CALL][-1] is CallStatus.RELEASED
    finally:
        watcher.cancel()
        await element.close()


async def test_a_caller_who_cancels_while_it_rings_is_on_the_callback_list(tmp_path):
    element = CallHandlingElement([NORTH])
    await element.start()
    try:
        element.sign_in("n2", "bob")
        proc = await sipp("psap_uac_cancel.xml", element.port, tmp_path)
        code, diag = await finished(proc, tmp_path)
        assert code == 0, diag
        (entry,) = await until(lambda: element.callbacks("north"), "the callback entry")
        assert entry.callback is not None and "6035550100" in entry.callback
        assert entry.location is not None and entry.location.shape == "point"
        (view,) = element.calls("north", include_ended=True)
        assert view.status is CallStatus.ABANDONED
        assert element.stats("north").abandoned == 1
        done = element.record_callback(entry.id, "bob", "called back: all fine", done=True)
        assert done.attempts[0]["by"] == "bob"
    finally:
        await element.close()


async def test_texts_become_a_chat_that_a_position_answers_and_replies_to(tmp_path):
    element = CallHandlingElement([NORTH])
    await element.start()
    try:
        element.sign_in("n1", "ann")
        proc = await sipp("ch_text_uac.xml", element.port, tmp_path)
        view = await until(
            lambda: next((v for v in element.calls("north") if len(v.messages) == 2), None), "both texts in one chat"
        )
        assert view.medium is Medium.TEXT and view.call_id.startswith("urn:emergency:uid:callid:text")
        assert [m.text.strip() for m in view.messages] == ["There is a fire next door", "I cannot talk"]
        element.answer("n1", "ann", view.call_id)
        element.send_text("n1", "ann", view.call_id, "Help is on the way. Leave the building if you can.")
        code, diag = await finished(proc, tmp_path)
        assert code == 0, diag + f"\n{element.core.counters}"
        assert element.core.counters["texts_refused"] == 0 and element.core.counters["texts_failed"] == 0
        view = element.release("n1", "ann", view.call_id)
        assert view.status is CallStatus.RELEASED and [m.direction for m in view.messages] == ["in", "in", "out"]
    finally:
        await element.close()


async def test_a_slow_subscriber_is_told_to_resynchronize_and_never_blocks_the_element():
    element = CallHandlingElement([NORTH], queue_size=3)
    await element.start()
    try:
        stream = element.subscribe()
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)  # the subscriber is registered, and reads nothing meanwhile
        for _ in range(5):  # each sign in/out is a POSITION and a STATS event: 20 events
            element.sign_in("n1", "ann")
            element.sign_out("n1", "ann")
        assert element.positions("north")[0].status is PositionStatus.SIGNED_OUT  # nothing waited
        kinds = [(await asyncio.wait_for(first, 5)).kind]
        while kinds[-1] is not EventKind.RESYNC and len(kinds) < 4:  # at most the queue's 3
            kinds.append((await asyncio.wait_for(anext(stream), 5)).kind)
        assert EventKind.RESYNC in kinds and element.counters["events_dropped"] > 0
        # After the resync the subscriber follows again.
        element.sign_in("n2", "bob")
        later = await asyncio.wait_for(anext(stream), 5)
        while later.kind is not EventKind.POSITION:
            later = await asyncio.wait_for(anext(stream), 5)
        assert later.position.id == "n2"
        await stream.aclose()
    finally:
        await element.close()


# -- composed as `firebox demo` composes it: carrier -> BCF + ESRP -> call handling -------------


async def test_a_carrier_call_through_the_bcf_and_esrp_is_queued_and_answered_by_a_call_taker(tmp_path):
    import yaml
    from rich.console import Console

    from firebox.deployment import load_deployment, parse_deployment
    from firebox.node import build_node, start_sip, stop_sip, write_demo
    from firebox.sim.carrier import CallPlan, Carrier, LocationMode, Outcome

    path, state = write_demo(tmp_path, seed=911, n_towns=40, listen="127.0.0.1:7070", console=Console(quiet=True),
                             call_handling=True)  # fmt: skip
    data = load_deployment(path).model_dump(mode="json", exclude_none=True)
    data["elements"]["bcf"].update(listen="127.0.0.1:0", transports=["udp"])
    data["elements"].pop("log_events", None)  # not what this test is about
    data["elements"].pop("monitor", None)  # its test calls would be counted below
    for follower in ("status_page", "alerting"):  # they show the monitor's outages
        data["elements"].pop(follower, None)
    dep = parse_deployment(yaml.safe_dump(data), base=path)
    psap = state.psaps[1]
    # The person's desk position is free; the simulated call-takers answer.
    assert [p.id for p in dep.elements.call_handling.psaps[psap.id].positions][-1] == f"{psap.id}-desk"
    node = build_node(dep, console=Console(quiet=True))
    http = await start_sip(node)
    carrier = Carrier(("127.0.0.1", node.core.port, "udp"))
    await carrier.start()
    try:
        town = next(t for t in state.towns if t.psap_id == psap.id)
        p = town.geometry.point_on_surface()
        result = await carrier.call(CallPlan("tel:+12005550077", p.x, p.y, LocationMode.VALUE, hold=0.3))
        assert result.outcome is Outcome.ANSWERED and result.status == 200, result
        handling = node.call_handling
        (view,) = await until(lambda: handling.calls(psap.id, include_ended=True), "the call in the PSAP's list")
        assert view.call_id.startswith("urn:emergency:uid:callid:")  # the BCF's i3 id
        assert view.position is not None and view.position.startswith(f"{psap.id}-sim")
        assert view.location is not None and abs(view.location.lat - p.y) < 1e-3 and abs(view.location.lon - p.x) < 1e-3
        stats = handling.stats(psap.id)
        assert (stats.offered, stats.answered) == (1, 1)
        assert node.agents.counts[psap.id].offered == 0  # the agents only take business lines now
        assert node.core.stats["answered"] == 1
    finally:
        await carrier.close()
        await stop_sip(node)
        await http.aclose()


def test_the_deployment_names_what_is_wrong_with_a_call_handling_section(tmp_path):
    import yaml
    from rich.console import Console

    from firebox.deployment import DeploymentError, load_deployment, parse_deployment
    from firebox.node import write_demo

    path, state = write_demo(tmp_path, seed=911, n_towns=40, listen="127.0.0.1:7070", console=Console(quiet=True),
                             call_handling=True)  # fmt: skip
    data = load_deployment(path).model_dump(mode="json", exclude_none=True)
    first, second = state.psaps[0].id, state.psaps[1].id
    ch = data["elements"]["call_handling"]
    ch["psaps"]["nowhere"] = {"positions": [{"id": "x1"}]}
    ch["psaps"][second]["positions"].append({"id": f"{first}-desk"})
    ch["psaps"][first]["strategy"] = "random"
    ch["media"] = "record"
    with pytest.raises(DeploymentError) as caught:
        parse_deployment(yaml.safe_dump(data))
    problems = "\n".join(caught.value.problems)
    assert f"elements.call_handling.psaps.{first}.strategy: Input should be 'ring-all', 'longest-idle' or 'round-robin'" in problems
    del ch["psaps"][first]["strategy"]
    with pytest.raises(DeploymentError) as caught:
        parse_deployment(yaml.safe_dump(data))
    problems = "\n".join(caught.value.problems)
    assert "elements.call_handling.record_dir: media: record needs a record_dir" in problems
    assert "elements.call_handling.psaps.nowhere: unknown PSAP id 'nowhere'" in problems
    assert f"duplicate position id '{first}-desk'" in problems
