"""The policy document (NENA-STA-010.3 section 4.9, and the ``Policy`` object of NENA's
Policy Store OpenAPI): the payload of the JWS a policy owner stores.

===========================  =====================================================================
``policyOwner``              the agency owning the policy: an FQDN, or a URI holding one
                             (``sip:esrp@psap.example.net``); the signer must speak for it
``policyType``               what the rules are for (the Policy Types registry, section 10.33,
                             plus firebox's ``BcfRules``), see below
``policyId``                 the policy's id in this store (``policyName`` is taken as a
                             synonym): letters, digits, ``. _ ~ -``, at most 128; it is the
                             ``{policyId}`` of ``/Policies/{policyId}``
``policyQueueName``          (optional) the queue an origination policy is for (section 4.9)
``policyExpirationTime``     (optional) RFC 3339; the policy is not valid after it
``policyRules``              the rules, checked by the loader of the element that runs them
``description``              (optional) text
===========================  =====================================================================

Policy types and their rule loaders:

* ESRP policy routing rules (section 4.2.1, ``firebox.esrp.policy``, ``RuleSet.from_dicts``):
  ``OriginationRoutePolicy``, ``NormalNextHopRoutePolicy``, ``OtherRoutePolicy`` (registry
  names) and ``OriginationRoutingPolicy`` (firebox's earlier spelling).
* BCF rules (section 4.1, ``firebox.bcf.protection``, ``BcfRules.from_dicts``): ``BcfRules``.

Firebox's rule format is its own (``firebox.esrp.policy``'s module docstring), not the NENA
route-policy JSON; a bad rule is reported naming the rule and the member, e.g.
``policyRules[2].conditions[0].timezone``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from firebox.bcf.protection import BcfRules, RuleError
from firebox.esrp.policy import Chains, PolicyError, RuleSet
from firebox.logging.events import is_domain_name, parse_timestamp
from firebox.restapi import Problem as _Problem

__all__ = [
    "BCF_TYPES",
    "ESRP_TYPES",
    "POLICY_ID",
    "POLICY_TYPES",
    "DocumentError",
    "PolicyDocument",
    "Problem",
    "cert_names",
    "load_rules",
    "names_cover",
    "owner_domain",
    "parse_policy",
]

ESRP_TYPES = frozenset({"OriginationRoutePolicy", "NormalNextHopRoutePolicy", "OtherRoutePolicy",
                        "OriginationRoutingPolicy"})  # fmt: skip
BCF_TYPES = frozenset({"BcfRules"})
POLICY_TYPES = ESRP_TYPES | BCF_TYPES
#: A policy id: URL-safe as it stands (RFC 3986 unreserved characters).
POLICY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")
MEMBERS = frozenset({
    "policyOwner", "policyType", "policyId", "policyName", "policyQueueName", "policyExpirationTime",
    "policyRules", "policyLastModificationTime", "description",
})  # fmt: skip


# One wrong member (a dotted path, ``""`` for the document as a whole) and why: the shape
# every firebox REST service answers with (``firebox.restapi``).
Problem = _Problem


class DocumentError(ValueError):
    """A payload that is not an acceptable policy document; ``problems`` names every one."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(str(p) for p in problems) or "bad policy document")
        self.problems = problems


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    policy_id: str
    owner: str
    owner_domain: str
    policy_type: str
    expires: datetime | None
    rules: list[Any]
    queue_name: str | None = None


def owner_domain(owner: str) -> str | None:
    """The FQDN a ``policyOwner`` names: itself, or the host of a URI (``sip:x@host``,
    ``https://host/...``); None if there is none."""
    if is_domain_name(owner):
        return owner.lower()
    m = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:(?://)?(?:[^@/?#]*@)?([^:/;?#>\[\]]+)", owner)
    if m and is_domain_name(m.group(1)):
        return m.group(1).lower()
    return None


def cert_names(cert: x509.Certificate) -> list[str]:
    """The DNS names a certificate speaks for: its subjectAltName dNSNames, the hosts of its
    URI names, and (as many deployed certificates still rely on it) its subject CN."""
    names: list[str] = []
    try:
        san: x509.SubjectAlternativeName | None = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except Exception:  # noqa: BLE001 - no subjectAltName, or a malformed one: it names nothing
        san = None
    if san is not None:
        names += san.get_values_for_type(x509.DNSName)
        names += [d for uri in san.get_values_for_type(x509.UniformResourceIdentifier) if (d := owner_domain(uri))]
    try:
        cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    except Exception:  # noqa: BLE001 - an unreadable subject names nothing
        cns = []
    names += cns
    return [n.lower().rstrip(".") for n in names]


def names_cover(names: Sequence[str], domain: str) -> bool:
    """``domain`` is one of ``names``, or matches a wildcard name (``*.example.net`` covers
    ``psap.example.net``, one label deep; RFC 6125 section 6.4.3)."""
    domain = domain.lower()
    for name in names:
        if name == domain:
            return True
        if name.startswith("*.") and domain.endswith(name[1:]) and "." not in domain[: -len(name) + 1]:
            return True
    return False


def _rule_problem(text: str, rules: Sequence[Any]) -> Problem:
    """A loader's ``rule 'id': member: problem`` or ``rules[n]: ...`` as a member path."""
    ids = {r.get("id"): n for n, r in enumerate(rules) if isinstance(r, Mapping) and isinstance(r.get("id"), str)}
    m = re.fullmatch(r"rule '([^']*)': ([^:\s]+): (.*)", text, re.DOTALL)
    if m and m.group(1) in ids:
        return Problem(f"policyRules[{ids[m.group(1)]}].{m.group(2)}", f"rule '{m.group(1)}': {m.group(3)}")
    m = re.fullmatch(r"rules\[(\d+)\]: (?:([A-Za-z_][\w.\[\]]*): )?(.*)", text, re.DOTALL)
    if m:
        member = f"policyRules[{m.group(1)}]" + (f".{m.group(2)}" if m.group(2) else "")
        return Problem(member, m.group(3))
    return Problem("policyRules", text)


def load_rules(
    policy_type: str, rules: Any, *, chains: Chains | None = None, version: int = 0
) -> RuleSet | BcfRules:
    """The rules of a policy of ``policy_type``, loaded by their element's own loader
    (``chains``: also check the PSAPs ESRP rules name); ``DocumentError`` naming each bad rule
    and member."""
    if not isinstance(rules, list):
        raise DocumentError([Problem("policyRules", "must be an array of rules")])
    try:
        if policy_type in ESRP_TYPES:
            return RuleSet.from_dicts(rules, chains)
        if policy_type in BCF_TYPES:
            return BcfRules.from_dicts(rules, version)
    except (PolicyError, RuleError) as exc:
        raise DocumentError([_rule_problem(p, rules) for p in exc.problems]) from None
    raise DocumentError([Problem("policyType", f"{policy_type!r} is not a policy type this store knows")])


def parse_policy(payload: Mapping[str, Any], now: datetime | None = None) -> PolicyDocument:
    """Check a policy document (the JWS payload) and its rules; with ``now``, an expiry
    already passed is refused. ``DocumentError`` naming every wrong member."""
    problems: list[Problem] = []
    for key in sorted(set(payload) - MEMBERS):
        problems.append(Problem(key, "unknown member of a policy document"))

    def text(name: str, required: bool) -> str | None:
        value = payload.get(name)
        if value is None and name not in payload:
            if required:
                problems.append(Problem(name, "missing"))
            return None
        if not isinstance(value, str) or not value:
            problems.append(Problem(name, "must be a non-empty string"))
            return None
        return value

    owner = text("policyOwner", True)
    domain = owner_domain(owner) if owner else None
    if owner and domain is None:
        problems.append(Problem("policyOwner", f"{owner[:80]!r} is not an FQDN nor a URI holding one"))
    kind = text("policyType", True)
    if kind is not None and kind not in POLICY_TYPES:
        problems.append(Problem("policyType", f"{kind[:80]!r} is not one of {', '.join(sorted(POLICY_TYPES))}"))
    pid, name = text("policyId", False), text("policyName", False)
    if pid and name and pid != name:
        problems.append(Problem("policyName", "differs from policyId (give one of them)"))
    policy_id = pid or name
    if policy_id is None and "policyId" not in payload and "policyName" not in payload:
        problems.append(Problem("policyId", "missing (or policyName)"))
    elif policy_id is not None and not POLICY_ID.fullmatch(policy_id):
        problems.append(Problem("policyId" if pid else "policyName",
                                "must be 1 to 128 letters, digits, '.', '_', '~' or '-', starting with a letter or digit"))  # fmt: skip
    queue_name = text("policyQueueName", False)
    for optional in ("description", "policyLastModificationTime"):
        text(optional, False)
    expires: datetime | None = None
    raw = text("policyExpirationTime", False)
    if raw is not None:
        try:
            expires = parse_timestamp(raw)
        except ValueError as exc:
            problems.append(Problem("policyExpirationTime", str(exc)))
        else:
            if now is not None and expires <= now:
                problems.append(Problem("policyExpirationTime", f"{raw} has already passed"))
    rules = payload.get("policyRules")
    if "policyRules" not in payload:
        problems.append(Problem("policyRules", "missing"))
    elif kind in POLICY_TYPES:
        try:
            load_rules(kind, rules)
        except DocumentError as exc:
            problems += exc.problems
    if problems:
        raise DocumentError(problems)
    assert owner is not None and domain is not None and kind is not None and policy_id is not None
    return PolicyDocument(policy_id, owner, domain, kind, expires, list(rules), queue_name)  # type: ignore[arg-type]
