"""Keeping an element's rules in step with the Policy Store (NENA-STA-010.3 section 4.9: the
ESRP retrieves its policy routing rules, section 4.2.1, and the BCF its rules, section 4.1,
from the Policy Store).

``PolicyWatch`` polls ``GET /Policies/{policyId}`` (with ``If-None-Match``, so an unchanged
policy costs a 304) every ``interval`` seconds. A new version is checked as a retriever must
(the JWS signature and its x5c chain, the policy id, type and owner, the expiry, and the
rules by the element's own loader, for ESRP rules against the element's PSAP chains), and
only then installed, as a whole, by one assignment (``router.rules = ruleset``,
``bcf.set_rules(rules)``):

* a call already routed keeps the decision it has (``Router.route`` reads the rules once,
  its failover list is fixed at that moment); the next call uses the new rules;
* a version that does not pass, an error answer, a timeout or a store that is down leave
  the last good rules in place, logged with the reason (``last_error``): the rules are never
  emptied because the store cannot be read. The bad version is not looked at again until the
  store serves another one;
* a policy withdrawn is another matter. A 404 from the store (the policy was deleted, or
  has expired: section 4.9, an expired policy is not served) is an explicit answer, not a
  failure: its owner no longer wants those rules applied. So is the installed version's own
  ``policyExpirationTime`` passing, even while the store cannot be reached. The watch then
  reverts the element to its own rules from the deployment (``baseline``: what it ran before
  any policy was installed; for an ESRP, routing by the ECRF's answer and the PSAPs'
  alternates, so calls keep being routed), logs it at WARNING and announces it
  (``on_change``, ``changes``). A later version of the policy is installed as usual.

Every install (a version, or the element's own rules back) is reported to ``on_install``
with an id (the change id when a gate gave one, else ``"<policyId> v<N>"``), so that the
monitor can name it as the cause of an outage that follows (``Monitor.config_change``).

One path for rule changes (issue 6): given a ``gate`` (``ChangeManager.gate(kind)``), the
watch does not install a version itself but hands it to the change system, which
installs it as a change (checked against the 911 invariant, signed, logged, reported to the
monitor, watched by a guard that rolls it back when probes fail), refuses it (the watch then
keeps the last good rules, as for any version that does not pass), or defers it while
another change on the same policy is in canary (installing over a canary would end it
unseen, and staging would then refuse). A deferred version is ``pending`` and offered again
at every poll; a newer one replaces it.

``watch_esrp`` / ``watch_bcf`` build one for an ESRP ``Router`` / a ``Bcf``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from cryptography import x509

from firebox import jws as jwslib
from firebox.bcf.core import Bcf
from firebox.bcf.protection import BcfRules
from firebox.esrp.policy import Chains, RuleSet
from firebox.esrp.router import Router
from firebox.policy.document import (
    BCF_TYPES,
    ESRP_TYPES,
    DocumentError,
    load_rules,
    parse_policy,
)

__all__ = ["Adoption", "AdoptOutcome", "Change", "Installed", "Pending", "PolicyGate", "PolicyWatch", "watch_bcf", "watch_esrp"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Installed:
    """What a watch last installed: the policy version and its rules."""

    version: int
    etag: str
    rules: Any
    at: datetime
    expires: datetime | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """A change of the rules an element runs: ``installed`` (a policy version) or
    ``reverted`` (back to the element's own rules: the policy was deleted or expired)."""

    kind: str
    policy_id: str
    version: int | None
    reason: str
    at: datetime


class AdoptOutcome(StrEnum):
    INSTALLED = "installed"
    #: Another change is in canary or under its guard: offered again at the next poll.
    DEFERRED = "deferred"
    #: The change system will not install it (the 911 invariant): the last good rules stay.
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Adoption:
    """A gate's answer to a version; ``change_id`` names the change that installed or
    refused it."""

    outcome: AdoptOutcome
    reason: str = ""
    change_id: str | None = None


class PolicyGate(Protocol):
    """The change system as a watch sees it (``ChangeManager.gate(kind)``): install ``rules``
    for policy ``target`` as a change, or say why not now or not at all."""

    async def adopt(self, rules: Any, *, target: str, origin: str) -> Adoption: ...


@dataclass(frozen=True, slots=True)
class Pending:
    """A version (or a revert to the element's own rules) waiting for the gate."""

    kind: str  # "installed" or "reverted"
    rules: Any
    version: int | None
    etag: str
    expires: datetime | None
    reason: str
    since: datetime


class PolicyWatch:
    """Polls one policy and installs each new good version with ``install``.

    ``load(policy_type, rules, version)`` turns the policy's rules into the element's rules
    object (raising ``DocumentError``); ``types`` the policy types accepted; ``owner`` (if
    given) the ``policyOwner`` required; ``trust`` the anchors the signer's x5c chain must
    lead to (None: the leaf's key checks integrity only); ``allow_unsigned`` accept
    ``alg: none``."""

    def __init__(
        self,
        url: str,
        policy_id: str,
        install: Callable[[Any], object],
        load: Callable[[str, Any, int], Any],
        *,
        types: Collection[str],
        owner: str | None = None,
        trust: Sequence[x509.Certificate | bytes] | None = None,
        allow_unsigned: bool = False,
        interval: float = 5.0,
        timeout: float = 2.0,
        http: httpx.AsyncClient | None = None,
        name: str = "policy",
        baseline: Any = None,
        on_change: Callable[[Change], object] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_install: Callable[[str], object] | None = None,
        gate: PolicyGate | None = None,
    ):
        self.url = f"{url.rstrip('/')}/Policies/{quote(policy_id, safe='')}"
        self.policy_id = policy_id
        self.install = install
        self.load = load
        self.types = frozenset(types)
        self.owner = owner
        self.trust = list(trust) if trust is not None else None
        self.allow_unsigned = allow_unsigned
        self.interval = interval
        self.timeout = timeout
        self.http = http
        self.name = name
        #: the element's own rules, installed again when the policy is withdrawn
        self.baseline = baseline
        self.on_change = on_change
        self.clock = clock
        #: told the id of every install (``Monitor.config_change``)
        self.on_install = on_install
        #: the change system every install goes through (None: installed directly)
        self.gate = gate
        #: a version (or revert) the gate deferred, offered again at every poll
        self.pending: Pending | None = None
        #: every change of the rules, in order (installed, reverted)
        self.changes: list[Change] = []
        self.installed: Installed | None = None
        #: why the last poll did not install anything new (None: it did, or nothing changed)
        self.last_error: str | None = None
        self._seen: str | None = None  # the ETag last looked at, good or bad
        self._task: asyncio.Task[None] | None = None

    @property
    def version(self) -> int | None:
        return self.installed.version if self.installed else None

    async def poll_once(self) -> bool:
        """One look at the store; True if the rules changed (a new version installed, or the
        element's own rules back because the policy was deleted or expired)."""
        changed = False
        if self.pending is not None:
            changed = await self._land(self.pending)
        expired = self._expired()
        if expired is not None:
            changed = await self._revert(expired) or changed
        return await self._poll() or changed

    def _expired(self) -> str | None:
        inst = self.installed
        if inst is not None and inst.expires is not None and inst.expires <= self.clock():
            return f"version {inst.version} expired at {inst.expires.isoformat()}"
        return None

    async def _poll(self) -> bool:
        headers = {"Accept": "application/json"}
        if self._seen is not None:
            headers["If-None-Match"] = self._seen
        http = self.http or httpx.AsyncClient()
        try:
            reply = await http.get(self.url, headers=headers, timeout=self.timeout)
        except (httpx.HTTPError, OSError) as exc:
            return self._keep(f"store unreachable ({type(exc).__name__}: {exc})")
        finally:
            if self.http is None:
                await http.aclose()
        if reply.status_code == 304:
            return False
        if reply.status_code == 404 and self.installed is not None:
            return await self._revert(f"the store no longer serves it (deleted or expired): {_detail(reply)}")
        if reply.status_code != 200:
            return self._keep(f"store answered {reply.status_code}: {_detail(reply)}")
        etag = reply.headers.get("etag", "")
        self._seen = etag or None
        try:
            version, rules, expires = self._check(reply.content, etag)
        except ValueError as exc:
            return self._keep(f"version {etag or '?'} refused: {exc}")
        return await self._land(Pending("installed", rules, version, etag, expires, "a new version", self.clock()))

    async def _revert(self, why: str) -> bool:
        """The policy is withdrawn: the element's own rules again, logged and announced."""
        old = self.installed
        if old is None:
            return False
        if self.baseline is None:  # a watch given no own rules: the last good ones stay
            return self._keep(f"{why}; no own rules to revert to")
        return await self._land(Pending("reverted", self.baseline, old.version, "", None, why, self.clock()))

    async def _adopt(self, p: Pending) -> Adoption:
        """Install ``p`` directly, or through the gate (a gate that fails defers: the
        version is offered again at the next poll, the last good rules stay meanwhile)."""
        if self.gate is None:
            self.install(p.rules)
            return Adoption(AdoptOutcome.INSTALLED)
        origin = (f"Policy Store {self.policy_id} version {p.version}" if p.kind == "installed"
                  else f"Policy Store {self.policy_id} withdrawn ({p.reason}): the element's own rules")  # fmt: skip
        try:
            return await self.gate.adopt(p.rules, target=self.policy_id, origin=origin)
        except Exception as exc:  # noqa: BLE001 -- a gate failure must not lose the version
            log.exception("%s %s: the change system failed on version %s", self.name, self.policy_id, p.version)
            return Adoption(AdoptOutcome.DEFERRED, f"the change system failed ({type(exc).__name__}: {exc})")

    async def _land(self, p: Pending) -> bool:
        """Install a checked version (or the revert) and report it, unless the gate defers
        or refuses it."""
        adoption = await self._adopt(p)
        what = f"version {p.version}" if p.kind == "installed" else f"the revert from version {p.version}"
        if adoption.outcome is AdoptOutcome.DEFERRED:
            self.pending = p
            return self._keep(f"{what} waits: {adoption.reason}")
        self.pending = None
        if adoption.outcome is AdoptOutcome.REFUSED:
            ref = f" (change {adoption.change_id})" if adoption.change_id else ""
            return self._keep(f"{what} refused by the change system{ref}: {adoption.reason}")
        now = self.clock()
        if p.kind == "installed":
            assert p.version is not None
            self.installed = Installed(p.version, p.etag, p.rules, now, p.expires)
            self.last_error = None
            log.info("%s %s: version %d installed", self.name, self.policy_id, p.version)
            self._announce(Change("installed", self.policy_id, p.version, p.reason, now))
            self._report(adoption.change_id or f"{self.policy_id} v{p.version}")
        else:
            self.installed = None
            self._seen = None
            self.last_error = p.reason
            log.warning("%s %s: %s; reverted from version %s to the element's own rules",
                        self.name, self.policy_id, p.reason, p.version)  # fmt: skip
            self._announce(Change("reverted", self.policy_id, p.version, p.reason, now))
            self._report(adoption.change_id or f"{self.policy_id} v{p.version} withdrawn")
        return True

    def _report(self, install_id: str) -> None:
        if self.on_install is not None:
            try:
                self.on_install(install_id)
            except Exception:  # noqa: BLE001 -- a report never stops the watch
                log.exception("%s %s: reporting install %s failed", self.name, self.policy_id, install_id)

    def _announce(self, change: Change) -> None:
        self.changes.append(change)
        if self.on_change is not None:
            try:
                self.on_change(change)
            except Exception:  # noqa: BLE001 -- an announcement never stops the watch
                log.exception("%s %s: announcing a change failed", self.name, self.policy_id)

    def _check(self, document: bytes, etag: str) -> tuple[int, Any, datetime | None]:
        """The version number, the element's rules and the expiry of a served policy
        (``ValueError``)."""
        verified = jwslib.verify(document, trust=self.trust, allow_none=self.allow_unsigned)
        payload = verified.payload
        try:
            doc = parse_policy(payload, self.clock())
        except DocumentError as exc:
            raise ValueError(str(exc)) from None
        if doc.policy_id != self.policy_id:
            raise ValueError(f"it is policy {doc.policy_id!r}, not {self.policy_id!r}")
        if doc.policy_type not in self.types:
            raise ValueError(f"policyType {doc.policy_type!r} is not one of {', '.join(sorted(self.types))}")
        if self.owner is not None and doc.owner != self.owner:
            raise ValueError(f"policyOwner {doc.owner!r} is not {self.owner!r}")
        version = int(etag[2:-1]) if etag.startswith('"v') and etag[2:-1].isdigit() else 0
        try:
            rules = self.load(doc.policy_type, doc.rules, version)
        except DocumentError as exc:
            raise ValueError(str(exc)) from None
        return version, rules, doc.expires

    def _keep(self, why: str) -> bool:
        kept = f"version {self.installed.version}" if self.installed else "the element's own rules"
        if why != self.last_error:
            log.warning("%s %s: %s; keeping %s", self.name, self.policy_id, why, kept)
        self.last_error = why
        return False

    async def run(self) -> None:
        """Poll until cancelled (every ``interval`` seconds; nothing escapes a poll)."""
        while True:
            try:
                await self.poll_once()
            except Exception as exc:  # noqa: BLE001 - the watch must outlive any one failure
                self._keep(f"poll failed ({type(exc).__name__}: {exc})")
            await asyncio.sleep(self.interval)

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"policy-watch-{self.policy_id}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _detail(reply: httpx.Response) -> str:
    try:
        data = reply.json()
    except ValueError:
        return reply.text[:200]
    return str(data.get("detail", ""))[:200] if isinstance(data, dict) else reply.text[:200]


def watch_esrp(router: Router, url: str, policy_id: str, *, chains: Chains | None = None, **kw: Any) -> PolicyWatch:
    """A watch installing an ESRP routing policy into ``router.rules`` (its PSAPs checked
    against ``chains``, by default the router's)."""
    against = chains if chains is not None else router.chains

    def load(policy_type: str, rules: Any, version: int) -> RuleSet:
        loaded = load_rules(policy_type, rules, chains=against, version=version)
        assert isinstance(loaded, RuleSet)
        return loaded

    def install(rules: RuleSet) -> None:
        router.rules = rules

    kw.setdefault("name", "ESRP routing policy")
    kw.setdefault("baseline", router.rules)  # the deployment's: ECRF answer, then alternates
    return PolicyWatch(url, policy_id, install, load, types=ESRP_TYPES, **kw)


def watch_bcf(bcf: Bcf, url: str, policy_id: str, **kw: Any) -> PolicyWatch:
    """A watch installing BCF rules with ``bcf.set_rules`` (the rules' version is the
    policy's)."""

    def load(policy_type: str, rules: Any, version: int) -> BcfRules:
        loaded = load_rules(policy_type, rules, version=version)
        assert isinstance(loaded, BcfRules)
        return loaded

    kw.setdefault("name", "BCF rules")
    kw.setdefault("baseline", bcf.rules)
    return PolicyWatch(url, policy_id, bcf.set_rules, load, types=BCF_TYPES, **kw)
