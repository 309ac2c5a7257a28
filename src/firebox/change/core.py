"""Rule changes, sans-I/O: the change record and its stages, the rule diff, the invariant
check and the shadow report (firebox issue 6, "Safe rule changes (the Massachusetts cause)").

On 18 June 2024 a firewall rule pushed into Massachusetts' NG911 core blocked every 911 call
for two hours. Here every change of a BCF rule set (NENA-STA-010.3 section 4.1) or of an ESRP
policy routing rule set (section 4.2.1) is a ``Change``: versioned, signed (a JWS, RFC 7515,
over its canonical content with the node's key), and moved through ``TRANSITIONS``::

    shadow --stage--> canary --promote--> full
      |                 |                  |
      +------------ rollback --------------+--> rolled_back       (refused: at submission)

* shadow: nothing is installed; the new rules are evaluated against recent calls and the
  report says which would have been blocked, diverted or moved to another PSAP.
* canary: the new rules apply to one ingress (a BCF source id) or, for routing, to calls
  whose candidate PSAP is in a region (a set of PSAP ids); every other call keeps the old.
* full: installed for every call. rolled_back: the rules before the change are back.

The invariant, checked at submission (a change breaking it is ``refused`` and lists the
calls it would have hit), over a corpus of emergency calls from every known carrier (each
source the BCF knows: INVITE ``urn:service:sos`` voice, MESSAGE text, the 911 dial strings
``tel:911`` and ``sip:911@...;user=phone``, a sub-service and the i3 test call
``urn:service:test.sos``) and over recent logged traffic:

* BCF: a rule whose action is REJECT matching an emergency or test call from a known
  carrier is refused (the BCF would soften it to DIVERT, but a rule that says reject for 911
  is wrong by construction). A DIVERT of *every* voice call, or of every text, of a known
  carrier is refused too: a diverted call gets an announcement and a callback record, not a
  call-taker, so diverting all of a carrier's calls is the Massachusetts outage with a
  callback list. DIVERT of some of a carrier's calls is allowed and shown in the report.
* routing: refused when, for a whole PSAP's area, every corpus call would end nowhere but a
  business line or the catch-all, or be answered busy (no call-taker on the line); and when
  a decision would be busy without a callback (``decide`` never does so today: a defensive
  check). Calls moved from one PSAP to another are reported, not refused.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from firebox import jws as jwslib
from firebox.bcf.marking import CallKind, recognize
from firebox.bcf.protection import Action, BcfRules, decide as bcf_decide
from firebox.esrp.policy import (
    TERMINAL_KINDS,
    CallContext,
    CallMedium,
    Chains,
    RouteDecision,
    RuleSet,
    TimeCondition,
    decide as route_decide,
)
from firebox.esrp.states import StateTable
from firebox.sip import Headers, Request, SipParseError, caller_uri, parse_message

__all__ = [
    "TRANSITIONS",
    "Assessment",
    "CanaryScope",
    "Change",
    "ChangeError",
    "ChangeKind",
    "Hit",
    "Op",
    "RecentCall",
    "RuleDiff",
    "ShadowEntry",
    "Stage",
    "assess",
    "canonical",
    "diff",
    "emergency_corpus",
    "load",
    "next_stage",
    "recent_calls_from_events",
    "routing_corpus",
    "sign_change",
    "verify_change",
]


class ChangeKind(StrEnum):
    BCF = "bcf"
    ROUTING = "routing"


class Stage(StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"
    FULL = "full"
    ROLLED_BACK = "rolled_back"
    REFUSED = "refused"


class Op(StrEnum):
    STAGE = "stage"  # to canary
    PROMOTE = "promote"  # canary to full
    ROLLBACK = "rollback"


#: (stage, operation) -> next stage. Anything else is refused: shadow cannot jump to full
#: (a change reaches every call only after a canary), refused and rolled_back are final.
TRANSITIONS: dict[tuple[Stage, Op], Stage] = {
    (Stage.SHADOW, Op.STAGE): Stage.CANARY,
    (Stage.CANARY, Op.PROMOTE): Stage.FULL,
    (Stage.SHADOW, Op.ROLLBACK): Stage.ROLLED_BACK,
    (Stage.CANARY, Op.ROLLBACK): Stage.ROLLED_BACK,
    (Stage.FULL, Op.ROLLBACK): Stage.ROLLED_BACK,
}


class ChangeError(ValueError):
    """A change or an operation that cannot be accepted; ``problems`` are (member, message)."""

    def __init__(self, problems: list[tuple[str, str]], status: int = 400):
        super().__init__("; ".join(f"{m}: {p}" if m else p for m, p in problems))
        self.problems = problems
        self.status = status


def next_stage(stage: Stage, op: Op) -> Stage:
    """The stage after ``op`` (``ChangeError`` with status 409 when the table has no entry)."""
    after = TRANSITIONS.get((stage, op))
    if after is None:
        allowed = sorted(o.value for (s, o) in TRANSITIONS if s is stage)
        hint = f"; from {stage.value} only: {', '.join(allowed)}" if allowed else f"; {stage.value} is final"
        raise ChangeError([("stage", f"cannot {op.value} a change in stage {stage.value}{hint}")], status=409)
    return after


# --- the change record ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanaryScope:
    """Where a canary applies: calls from one of ``sources`` (BCF source ids, the ingress)
    or, for routing, calls whose candidate PSAP is one of ``psaps`` (a region)."""

    sources: tuple[str, ...] = ()
    psaps: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.sources and not self.psaps:
            raise ChangeError([("scope", "a canary needs sources (ingress ids) or psaps (a region)")])

    def to_dict(self) -> dict[str, Any]:
        return {"sources": list(self.sources), "psaps": list(self.psaps)}

    @classmethod
    def from_dict(cls, data: Any) -> CanaryScope:
        if not isinstance(data, Mapping):
            raise ChangeError([("scope", "must be an object with sources and/or psaps")])
        problems = [(f"scope.{k}", "unknown member") for k in sorted(set(data) - {"sources", "psaps"})]
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("sources", "psaps"):
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                problems.append((f"scope.{key}", "must be a list of non-empty strings"))
                value = []
            lists[key] = tuple(value)
        if problems:
            raise ChangeError(problems)
        return cls(lists["sources"], lists["psaps"])


@dataclass(frozen=True, slots=True)
class Hit:
    """One emergency call a change would have blocked (or diverted), and why."""

    call: str  # a label: the corpus call, or the logged call's id
    source_id: str
    method: str
    kind: str
    action: str  # reject / divert / busy / business line only
    rule_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"call": self.call, "source": self.source_id, "method": self.method, "kind": self.kind,
                "action": self.action, "rule": self.rule_id, "reason": self.reason}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ShadowEntry:
    """One call whose treatment the change alters: ``before`` and ``after`` say what the old
    and new rules do (a BCF action, or the PSAP the call goes to first)."""

    call: str
    source_id: str | None
    effect: str  # blocked, diverted, deprioritized, unblocked, moved, busy
    before: str
    after: str
    rule_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"call": self.call, "source": self.source_id, "effect": self.effect, "before": self.before,
                "after": self.after, "rule": self.rule_id}  # fmt: skip


@dataclass(slots=True)
class Change:
    """One rule change. ``before`` / ``after`` are the rule sets as plain data (``to_dicts``);
    times are seconds since the epoch; ``history`` lists every stage entered with when and why;
    ``signature`` is the flattened JWS over ``canonical(change)``."""

    id: str
    version: int
    kind: ChangeKind
    target: str  # the policy id the rules are for (e.g. the Policy Store's "demo-bcf")
    author: str
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    created: float
    stage: Stage = Stage.SHADOW
    scope: CanaryScope | None = None
    updated: float = 0.0
    reason: str = ""
    signature: dict[str, str] | None = None
    hits: list[Hit] = field(default_factory=list)
    shadow: list[ShadowEntry] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def enter(self, stage: Stage, at: float, reason: str, scope: CanaryScope | None = None) -> None:
        self.stage, self.updated, self.reason = stage, at, reason
        if scope is not None:
            self.scope = scope
        self.history.append({"stage": stage.value, "at": at, "reason": reason,
                             "scope": scope.to_dict() if scope else None})  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "version": self.version, "kind": self.kind.value, "target": self.target,
            "author": self.author, "before": self.before, "after": self.after, "created": self.created,
            "stage": self.stage.value, "scope": self.scope.to_dict() if self.scope else None,
            "updated": self.updated, "reason": self.reason, "signature": self.signature,
            "hits": [h.to_dict() for h in self.hits], "shadow": [s.to_dict() for s in self.shadow],
            "history": list(self.history),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Change:
        return cls(
            d["id"], int(d["version"]), ChangeKind(d["kind"]), d["target"], d["author"], list(d["before"]),
            list(d["after"]), float(d["created"]), Stage(d["stage"]),
            CanaryScope(tuple(d["scope"]["sources"]), tuple(d["scope"]["psaps"])) if d.get("scope") else None,
            float(d.get("updated", 0.0)), d.get("reason", ""), d.get("signature"),
            [Hit(h["call"], h["source"], h["method"], h["kind"], h["action"], h["rule"], h["reason"]) for h in d.get("hits", [])],
            [ShadowEntry(s["call"], s["source"], s["effect"], s["before"], s["after"], s["rule"]) for s in d.get("shadow", [])],
            list(d.get("history", [])),
        )  # fmt: skip


def canonical(change: Change) -> dict[str, Any]:
    """What the signature covers: the change's identity and content, not its (moving) stage."""
    return {"changeId": change.id, "version": change.version, "kind": change.kind.value, "target": change.target,
            "author": change.author, "before": change.before, "after": change.after,
            "created": change.created}  # fmt: skip


def sign_change(change: Change, key: jwslib.PrivateKey | None, *, kid: str | None = None) -> dict[str, str]:
    """Sign the canonical change (EdDSA, or ``alg: none`` without a key: a lab only)."""
    change.signature = jwslib.sign(canonical(change), key, kid=kid)
    return change.signature


def verify_change(change: Change, *, keys: Iterable[Any] = (), allow_none: bool = False) -> jwslib.Verified:
    """Check the signature and that it covers this change as it stands (``JwsError``)."""
    if change.signature is None:
        raise jwslib.JwsError(None, f"change {change.id} is not signed")
    verified = jwslib.verify(change.signature, keys=keys, allow_none=allow_none)
    if verified.payload != json.loads(json.dumps(canonical(change))):
        raise jwslib.JwsError("payload", f"the signature does not cover change {change.id} as it stands")
    return verified


def load(kind: ChangeKind, rules: Any, *, chains: Chains | None = None, version: int = 0) -> BcfRules | RuleSet:
    """The rules as their element loads them; ``ChangeError`` naming each bad rule."""
    from firebox.bcf.protection import RuleError
    from firebox.esrp.policy import PolicyError

    if not isinstance(rules, list):
        raise ChangeError([("rules", "must be a list of rules")])
    try:
        if kind is ChangeKind.BCF:
            return BcfRules.from_dicts(rules, version)
        return RuleSet.from_dicts(rules, chains)
    except (RuleError, PolicyError) as exc:
        raise ChangeError([("rules", p) for p in exc.problems]) from None


# --- the diff ------------------------------------------------------------------------------


@dataclass(slots=True)
class RuleDiff:
    """Rules by id: added, removed, changed (member -> (old, new)), and moved (BCF rules
    are first-match-wins, so order matters there)."""

    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    moved: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.moved)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added, "removed": self.removed,
            "changed": {rid: {m: {"before": o, "after": n} for m, (o, n) in ms.items()} for rid, ms in self.changed.items()},
            "moved": {rid: {"before": a, "after": b} for rid, (a, b) in self.moved.items()},
        }  # fmt: skip

    def lines(self) -> list[str]:
        """The diff for people: one line per rule or member."""
        out = [f"+ rule {r.get('id')!r}: {_compact(r)}" for r in self.added]
        out += [f"- rule {r.get('id')!r}: {_compact(r)}" for r in self.removed]
        for rid, members in self.changed.items():
            out += [f"~ rule {rid!r} {m}: {_compact(o)} -> {_compact(n)}" for m, (o, n) in members.items()]
        out += [f"~ rule {rid!r} position: {a} -> {b}" for rid, (a, b) in self.moved.items()]
        return out or ["no change"]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True) if value is not None else "(absent)"


def diff(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]], *, ordered: bool = False) -> RuleDiff:
    """Compare two rule lists by rule id (``ordered``: report rules whose position moved)."""
    old = {str(r.get("id")): (n, r) for n, r in enumerate(before)}
    new = {str(r.get("id")): (n, r) for n, r in enumerate(after)}
    out = RuleDiff()
    out.added = [dict(r) for rid, (_, r) in new.items() if rid not in old]
    out.removed = [dict(r) for rid, (_, r) in old.items() if rid not in new]
    for rid, (n_new, r_new) in new.items():
        if rid not in old:
            continue
        n_old, r_old = old[rid]
        members = {k: (r_old.get(k), r_new.get(k)) for k in sorted(set(r_old) | set(r_new)) if r_old.get(k) != r_new.get(k)}
        if members:
            out.changed[rid] = members
        if ordered and n_old != n_new:
            out.moved[rid] = (n_old, n_new)
    return out


# --- the corpus and recent calls -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecentCall:
    """A call as the change checks see it: a corpus call or one rebuilt from the Logging
    Service's events. ``ecrf_uri`` is where LoST sent it (routing), ``routed_to`` where it
    went first (from its RouteLogEvent), when known."""

    label: str
    method: str
    request_uri: str
    source_ip: str | None
    source_id: str
    kind: CallKind
    service_urn: str
    medium: CallMedium = CallMedium.VOICE
    callback: str | None = None
    ecrf_uri: str | None = None
    routed_to: str | None = None

    def context(self) -> CallContext:
        return CallContext(self.label, self.service_urn, self.medium, self.source_id, self.callback)


def _first_address(cidr: str) -> str:
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net[1] if net.num_addresses > 2 else net[0])


def _request(method: str, uri: str, number: str, source_ip: str, n: int) -> Request:
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP {source_ip}:5060;branch=z9hG4bK-corpus-{n}")
    headers.add("Max-Forwards", "70")
    headers.add("From", f"<sip:{number}@carrier.invalid>;tag=corpus{n}")
    headers.add("To", f"<{uri}>")
    headers.add("Call-ID", f"corpus-{n}@change.firebox.invalid")
    headers.add("CSeq", f"1 {method}")
    headers.add("P-Asserted-Identity", f"<tel:{number}>")
    return Request(method, uri, headers, b"")


#: The forms of an emergency call every known carrier may send (RFC 5031 service URNs, the
#: 911 dial strings a carrier may not map, text to 911, the i3 test call).
CORPUS_FORMS: tuple[tuple[str, str, CallMedium], ...] = (
    ("INVITE", "urn:service:sos", CallMedium.VOICE),
    ("INVITE", "sip:911@bcf.invalid;user=phone", CallMedium.VOICE),
    ("INVITE", "tel:911", CallMedium.VOICE),
    ("INVITE", "urn:service:sos.fire", CallMedium.VOICE),
    ("MESSAGE", "urn:service:sos", CallMedium.TEXT),
    ("INVITE", "urn:service:test.sos", CallMedium.VOICE),
)
CORPUS_CALLBACK = "tel:+16175550100"


def emergency_corpus(sources: Mapping[str, str]) -> list[RecentCall]:
    """Synthetic emergency calls from every known carrier: ``sources`` is the BCF's CIDR ->
    source id table; each source sends each of ``CORPUS_FORMS`` from the first address of
    its network. Each request goes through the BCF's own ``recognize`` (so a form the BCF
    would not take for 911 could not hide here)."""
    out: list[RecentCall] = []
    seen: set[str] = set()
    n = 0
    for cidr, source in sorted(sources.items(), key=lambda kv: kv[1]):
        if source in seen:  # one network per carrier is enough: rules match the source id
            continue
        seen.add(source)
        ip = _first_address(cidr)
        for method, uri, medium in CORPUS_FORMS:
            n += 1
            request = _request(method, uri, CORPUS_CALLBACK.removeprefix("tel:"), ip, n)
            recognized = recognize(request)
            if recognized is None:  # not an emergency call to the BCF: no invariant to keep
                continue
            out.append(RecentCall(f"{source}: {method} {uri}", method, uri, ip, source, recognized.kind,
                                  recognized.service, medium, CORPUS_CALLBACK))  # fmt: skip
    return out


def routing_corpus(sources: Iterable[str], chains: Chains) -> list[RecentCall]:
    """Emergency calls into every PSAP's area (the ECRF answering its queue), voice and
    text, from every known source (or none), with a callback number."""
    out: list[RecentCall] = []
    for psap in chains.values():
        for source in sorted(set(sources)) or [""]:
            for medium in (CallMedium.VOICE, CallMedium.TEXT):
                method = "MESSAGE" if medium is CallMedium.TEXT else "INVITE"
                out.append(RecentCall(f"{psap.psap_id} area, {source or 'no source'}, {medium.value}", method,
                                      "urn:service:sos", None, source, CallKind.EMERGENCY, "urn:service:sos",
                                      medium, CORPUS_CALLBACK, ecrf_uri=psap.uri))  # fmt: skip
    return out


def _source_of(ip: str | None, sources: Mapping[str, str]) -> str:
    try:
        addr = ipaddress.ip_address(ip or "")
    except ValueError:
        return "unknown"
    nets = sorted(((ipaddress.ip_network(c, strict=False), s) for c, s in sources.items()),
                  key=lambda item: item[0].prefixlen, reverse=True)  # fmt: skip
    return next((s for net, s in nets if addr.version == net.version and addr in net), f"ip-{addr}")


def _peer_ip(peer: str | None) -> str | None:
    if not peer:
        return None
    if peer.startswith("["):
        return peer[1:].partition("]")[0]
    return peer.rpartition(":")[0] if peer.count(":") == 1 else peer


def recent_calls_from_events(events: Iterable[Mapping[str, Any]], sources: Mapping[str, str], *,
                             limit: int = 1000) -> list[RecentCall]:  # fmt: skip
    """Calls rebuilt from i3 log events (JSON objects, as the Logging Service stores them):
    each incoming INVITE or MESSAGE of a ``CallSignalingMessageLogEvent`` (its text is the
    request; ``ipAddressPort`` the previous hop, the carrier) and the call's first
    ``RouteLogEvent`` (``policyQueueName``: the ECRF's answer; ``recipientUri``: where it went).
    At most ``limit`` calls; unparseable messages are skipped."""
    starts: dict[str, tuple[Request, str | None]] = {}
    routes: dict[str, Mapping[str, Any]] = {}
    for event in events:
        kind = event.get("logEventType")
        key = event.get("callIdSip") or event.get("callId")
        if not isinstance(key, str):
            continue
        if kind == "RouteLogEvent" and key not in routes:
            routes[key] = event
        elif kind == "CallSignalingMessageLogEvent" and event.get("direction") == "incoming" and key not in starts:
            if len(starts) >= limit:
                continue
            try:
                message = parse_message(str(event.get("text", "")).encode())
            except SipParseError:
                continue
            if isinstance(message, Request) and message.method in ("INVITE", "MESSAGE") and message.to_tag is None:
                starts[key] = (message, _peer_ip(event.get("ipAddressPort")))
    out: list[RecentCall] = []
    for key, (request, ip) in starts.items():
        recognized = recognize(request)
        if recognized is None:
            continue
        route = routes.get(key, {})
        medium = CallMedium.TEXT if request.method == "MESSAGE" else CallMedium.VOICE
        out.append(RecentCall(key, request.method, request.uri, ip, _source_of(ip, sources), recognized.kind,
                              recognized.service, medium, caller_uri(request),
                              route.get("policyQueueName"), route.get("recipientUri")))  # fmt: skip
    return out


# --- the invariant and the shadow report -----------------------------------------------------


@dataclass(slots=True)
class Assessment:
    """What a candidate rule set would do: ``refused`` with ``reasons`` and the ``hits``
    (calls it would have blocked), and the ``shadow`` report of every call it alters."""

    refused: bool
    reasons: list[str]
    hits: list[Hit]
    shadow: list[ShadowEntry]

    def to_dict(self) -> dict[str, Any]:
        return {"refused": self.refused, "reasons": self.reasons, "hits": [h.to_dict() for h in self.hits],
                "shadow": [s.to_dict() for s in self.shadow]}  # fmt: skip


def _bcf_action(rules: BcfRules, call: RecentCall) -> tuple[Action, str | None, str]:
    """The rule set's own action for the call (not softened: the invariant looks at what the
    rule says), its rule id and reason."""
    rule = rules.match(call.source_id, call.source_ip, call.method, call.kind)
    if rule is None:
        return Action.ALLOW, None, "no rule"
    return rule.action, rule.id, rule.reason or f"rule {rule.id}"


def _assess_bcf(before: BcfRules, after: BcfRules, corpus: list[RecentCall], recent: list[RecentCall],
                known: set[str]) -> Assessment:  # fmt: skip
    hits: list[Hit] = []
    reasons: list[str] = []
    diverted: dict[tuple[str, str], list[bool]] = {}  # (carrier, method) -> diverted per call
    for in_corpus, call in [(True, c) for c in corpus] + [(False, c) for c in recent]:
        if call.source_id not in known or call.kind is CallKind.OTHER:
            continue
        action, rule_id, why = _bcf_action(after, call)
        if in_corpus and call.kind is CallKind.EMERGENCY:
            diverted.setdefault((call.source_id, call.method), []).append(action in (Action.DIVERT, Action.REJECT))
        if action is Action.REJECT:
            hits.append(Hit(call.label, call.source_id, call.method, call.kind.value, "reject", rule_id, why))
    rejecting = sorted({h.rule_id or "" for h in hits})
    if hits:
        reasons.append(f"rule(s) {', '.join(rejecting)} would reject emergency calls from a known carrier "
                       f"({len(hits)} calls)")  # fmt: skip
    for (source, method), flags in sorted(diverted.items()):
        if flags and all(flags):
            what = "text (MESSAGE)" if method == "MESSAGE" else "voice (INVITE)"
            reasons.append(f"every emergency {what} call from known carrier {source} would be diverted or rejected: "
                           "no call-taker would answer any of them")  # fmt: skip
            for call in corpus:
                if call.source_id == source and call.method == method and call.kind is CallKind.EMERGENCY:
                    action, rule_id, why = _bcf_action(after, call)
                    if action is Action.DIVERT:
                        hits.append(Hit(call.label, source, method, call.kind.value, "divert", rule_id, why))
    shadow: list[ShadowEntry] = []
    for call in recent:
        old = bcf_decide(call.kind, call.method, call.source_id, call.source_ip, within_rate=True, bad_actor=False,
                         rules=before)  # fmt: skip
        new = bcf_decide(call.kind, call.method, call.source_id, call.source_ip, within_rate=True, bad_actor=False,
                         rules=after)  # fmt: skip
        if old.action is new.action:
            continue
        effect = {Action.REJECT: "blocked", Action.DIVERT: "diverted", Action.DEPRIORITIZE: "deprioritized",
                  Action.ALLOW: "unblocked"}[new.action]  # fmt: skip
        shadow.append(ShadowEntry(call.label, call.source_id, effect, old.action.value, new.action.value, new.rule_id))
    return Assessment(bool(reasons), reasons, hits, shadow)


_STATES = StateTable()  # no states: the invariant must hold whatever the queues say


def _first_psap(decision: RouteDecision) -> str:
    if decision.busy:
        return "busy"
    first = decision.destinations[0]
    return first.psap_id or first.uri if first.kind not in TERMINAL_KINDS else f"{first.kind.value} only"


def _assess_routing(before: RuleSet, after: RuleSet, chains: Chains, corpus: list[RecentCall],
                    recent: list[RecentCall], now: datetime) -> Assessment:  # fmt: skip
    hits: list[Hit] = []
    reasons: list[str] = []
    by_area: dict[str, list[tuple[RecentCall, RouteDecision]]] = {}
    for call in corpus:
        decision = route_decide(call.context(), call.ecrf_uri, _STATES, after, chains, now)
        area = chains.psap_for_uri(call.ecrf_uri or "")
        by_area.setdefault(area.psap_id if area else "default", []).append((call, decision))
        if decision.busy and decision.callback is None:
            reasons.append(f"{call.label}: busy without a callback record")
            hits.append(Hit(call.label, call.source_id, call.method, call.kind.value, "busy",
                            decision.matched_rules[-1] if decision.matched_rules else None, "busy without callback"))
    for area, decided in sorted(by_area.items()):
        stranded = [(c, d) for c, d in decided if d.busy or d.destinations[0].kind in TERMINAL_KINDS]
        if decided and len(stranded) == len(decided):
            reasons.append(f"every emergency call in {area}'s area would end at a business line, the catch-all "
                           "or a busy answer: no PSAP queue")  # fmt: skip
            for c, d in stranded:
                hits.append(Hit(c.label, c.source_id, c.method, c.kind.value,
                                "busy" if d.busy else "business line only",
                                d.matched_rules[-1] if d.matched_rules else None, _first_psap(d)))  # fmt: skip
    shadow: list[ShadowEntry] = []
    for call in recent:
        old = route_decide(call.context(), call.ecrf_uri, _STATES, before, chains, now)
        new = route_decide(call.context(), call.ecrf_uri, _STATES, after, chains, now)
        a, b = _first_psap(old), _first_psap(new)
        if a != b:
            effect = "busy" if new.busy else "moved"
            shadow.append(ShadowEntry(call.label, call.source_id, effect, a, b,
                                      new.matched_rules[-1] if new.matched_rules else None))  # fmt: skip
    return Assessment(bool(reasons), reasons, hits, shadow)


def assess(
    kind: ChangeKind,
    before: BcfRules | RuleSet,
    after: BcfRules | RuleSet,
    *,
    sources: Mapping[str, str],
    recent: Sequence[RecentCall] = (),
    chains: Chains | None = None,
    now: datetime | None = None,
) -> Assessment:
    """Check ``after`` against the invariant (the corpus of every known carrier in
    ``sources``, CIDR -> source id, plus ``recent`` calls) and report what it changes for
    ``recent`` calls compared with ``before``. Routing needs ``chains``."""
    known = set(sources.values())
    if kind is ChangeKind.BCF:
        assert isinstance(before, BcfRules) and isinstance(after, BcfRules)
        return _assess_bcf(before, after, emergency_corpus(sources), list(recent), known)
    if chains is None:
        raise ChangeError([("chains", "a routing change is checked against the PSAP chains")])
    assert isinstance(before, RuleSet) and isinstance(after, RuleSet)
    when = now or datetime(2026, 1, 1, tzinfo=UTC)
    # A routing rule may depend on the time: then the corpus is routed at every hour of a week.
    timed = any(isinstance(c, TimeCondition) for r in after for c in r.conditions)
    corpus = routing_corpus(known, chains)
    out = Assessment(False, [], [], [])
    seen_reasons: set[str] = set()
    for hour in range(24 * 7 if timed else 1):
        at = when + timedelta(hours=hour)
        part = _assess_routing(before, after, chains, corpus, list(recent) if hour == 0 else [], at)
        new_reasons = [r for r in part.reasons if r not in seen_reasons]
        if new_reasons:
            seen_reasons.update(new_reasons)
            out.reasons += [f"{r} (at {at.isoformat()})" for r in new_reasons]
            out.hits += part.hits
        out.shadow += part.shadow
    out.refused = bool(out.reasons)
    return out


def with_assessment(change: Change, assessment: Assessment, at: float) -> Change:
    """The change with its hits and shadow report, entered in shadow or refused."""
    change = replace(change, hits=list(assessment.hits), shadow=list(assessment.shadow), history=list(change.history))
    if assessment.refused:
        change.enter(Stage.REFUSED, at, "; ".join(assessment.reasons))
    else:
        change.enter(Stage.SHADOW, at, f"shadow: {len(assessment.shadow)} recent calls treated differently")
    return change
