"""One path for rule changes (issue 6): a Policy Store version installed by a watch is
reported (so an outage after it is attributed "since configuration change ..."), and with
the change system as its gate a version becomes a change: refused when it breaks the 911
invariant, deferred while another change is in canary, installed in full otherwise. The
Policy Store runs under uvicorn on 127.0.0.1; the BCF and the ChangeManager are real."""

from __future__ import annotations

import httpx
from test_monitor_detector import QUEUES, Harness
from test_policy_watch import OWNER, SIGNER, served, store_policy  # noqa: F401 -- the fixture

from firebox.bcf.core import Bcf
from firebox.bcf.protection import Action
from firebox.change.apply import CanaryBcfRules, ChangeManager
from firebox.change.core import CanaryScope, ChangeKind, Stage
from firebox.change.store import ChangeStore
from firebox.monitor.probes import ProbeAnswer
from firebox.policy.testing import delete_body, policy
from firebox.policy.watch import watch_bcf
from test_change_apply import MASSACHUSETTS, SOURCES, Clock, _invite

NOISY = [{"id": "noisy", "action": "deprioritize", "kinds": ["test"]}]
QUIET = [{"id": "quiet", "action": "divert", "kinds": ["test"]}]


def _bcf() -> Bcf:
    return Bcf("bcf.example", sources=SOURCES)


def _watch(bcf: Bcf, url: str, **kw):
    return watch_bcf(bcf, url, "bcf", trust=[SIGNER.ca], owner=OWNER, timeout=0.5, **kw)


async def test_an_install_is_reported_and_an_outage_after_it_names_it(served):  # noqa: F811
    h = Harness()
    h.round()
    bcf = _bcf()
    own = bcf.rules
    installs: list[str] = []

    def report(install_id: str) -> None:
        installs.append(install_id)
        h.detector.config_change(install_id, h.now)

    watch = _watch(bcf, served.url, on_install=report)
    await store_policy(served.url, policy("bcf", MASSACHUSETTS, policy_type="BcfRules"))
    assert await watch.poll_once() and bcf.rules.to_dicts() == MASSACHUSETTS
    assert installs == ["bcf v1"]
    # The rule blocks every INVITE: the probes are refused at the ingress, and the outage
    # names the version the watch installed as its cause.
    forbidden = {pid: ProbeAnswer(403, "Forbidden") for pid in QUEUES}
    updates = h.round(forbidden)
    statewide = [u for u in updates if u.outage["scope"] == "statewide"]
    assert statewide and "since configuration change bcf v1" in statewide[-1].outage["cause"]
    assert statewide[-1].outage["config_change"] == "bcf v1"
    # Withdrawn by its owner: the BCF's own rules again, reported as an install too.
    async with httpx.AsyncClient(base_url=served.url) as http:
        reply = await http.request("DELETE", "/Policies/bcf", content=delete_body(SIGNER, "bcf", 1, owner=OWNER))
        assert reply.status_code == 200, reply.text
    assert await watch.poll_once() and bcf.rules is own
    assert installs == ["bcf v1", "bcf v1 withdrawn"]
    assert not await watch.poll_once() and len(installs) == 2  # nothing new, nothing reported


async def test_through_the_change_system_the_massachusetts_rule_is_refused(served, tmp_path):  # noqa: F811
    bcf = _bcf()
    manager = ChangeManager(ChangeStore(tmp_path / "changes.db"), sources=SOURCES, bcf=bcf, clock=Clock(),
                            targets={ChangeKind.BCF: "bcf"})  # fmt: skip
    installs: list[str] = []
    watch = _watch(bcf, served.url, gate=manager.gate(ChangeKind.BCF), on_install=installs.append)
    await store_policy(served.url, policy("bcf", MASSACHUSETTS, policy_type="BcfRules"))
    assert not await watch.poll_once()
    assert bcf.rules.rules == () and watch.installed is None and watch.pending is None and installs == []
    assert "refused by the change system" in (watch.last_error or "")
    [refused] = [c for c in manager.store.list() if c.stage is Stage.REFUSED]
    assert refused.author == "Policy Store bcf version 1" and refused.id in (watch.last_error or "")
    assert {h.call for h in refused.hits} >= {"carrier-a: INVITE tel:911"}
    assert not await watch.poll_once() and len(manager.store.list()) == 1  # not offered again
    # A good version 2 is installed as a change, in full, reported under its change id.
    await store_policy(served.url, policy("bcf", NOISY, policy_type="BcfRules"), 1)
    assert await watch.poll_once() and bcf.rules.to_dicts() == NOISY and watch.version == 2
    [full] = [c for c in manager.store.list() if c.stage is Stage.FULL]
    assert installs == [full.id] and full.id in manager.guards
    assert bcf.process(_invite("urn:service:test.sos", n=1), "192.0.2.5", 1.0).action is Action.DEPRIORITIZE


async def test_a_version_landing_during_a_canary_waits_for_it(served, tmp_path):  # noqa: F811
    bcf = _bcf()
    h = Harness()
    # The detector stands in for the monitor: config_change is the part the manager uses.
    manager = ChangeManager(ChangeStore(tmp_path / "changes.db"), sources=SOURCES, bcf=bcf, clock=Clock(),
                            targets={ChangeKind.BCF: "bcf"}, monitor=h.detector)  # fmt: skip
    installs: list[str] = []
    watch = _watch(bcf, served.url, gate=manager.gate(ChangeKind.BCF), on_install=installs.append)
    change = await manager.submit(ChangeKind.BCF, QUIET, author="ops@example")
    await manager.stage(change.id, CanaryScope(sources=("carrier-a",)))
    assert isinstance(bcf.rules, CanaryBcfRules)

    await store_policy(served.url, policy("bcf", NOISY, policy_type="BcfRules"))
    assert not await watch.poll_once()
    assert isinstance(bcf.rules, CanaryBcfRules) and bcf.rules.candidate.to_dicts() == QUIET  # the canary stands
    assert watch.pending is not None and watch.pending.version == 1 and installs == []
    assert f"change {change.id} is in canary" in (watch.last_error or "")
    assert not await watch.poll_once() and watch.pending is not None  # still waiting, not lost
    # The canary is promoted: the waiting version is offered again at the next poll and
    # installed over it as a change; the promoted change's guard is superseded (its rollback
    # would now undo the Policy Store's version).
    await manager.promote(change.id)
    assert change.id in manager.guards
    assert await watch.poll_once()
    assert bcf.rules.to_dicts() == NOISY and watch.pending is None and watch.version == 1
    [adopted] = [c for c in manager.store.list() if c.author == "Policy Store bcf version 1"]
    assert adopted.stage is Stage.FULL and adopted.before == QUIET and installs == [adopted.id]
    assert change.id not in manager.guards and adopted.id in manager.guards
    assert [e["action"] for e in manager.store.log(change.id)][-1] == "superseded"
    # The monitor heard of each change that took effect, the adopted one last.
    assert [cid for cid, _ in h.detector.changes] == [change.id, change.id, adopted.id]
