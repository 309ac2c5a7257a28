"""Helpers shared by the Policy Store's tests: policy documents, signed request bodies (as
an owner's tool might write them: JSON with its own spacing, kept byte for byte by the
store), delete requests. Not used by the service itself."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from firebox import jws as jwslib
from firebox.logging.events import format_timestamp
from firebox.logging.testing import Signer

__all__ = ["Signer", "body", "delete_body", "esrp_route_rule", "policy"]


def esrp_route_rule(rule_id: str, uri: str, priority: int = 100) -> dict[str, Any]:
    """An ESRP policy routing rule (``firebox.esrp.policy``) sending every call to ``uri``."""
    return {"id": rule_id, "priority": priority, "actions": [{"type": "route", "uri": uri, "cause": rule_id}]}


def policy(
    policy_id: str,
    rules: list[Any],
    *,
    owner: str = "psap.example.net",
    policy_type: str = "OriginationRoutePolicy",
    expires: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"policyOwner": owner, "policyType": policy_type, "policyId": policy_id,
                           "policyRules": rules, **extra}  # fmt: skip
    if expires is not None:
        doc["policyExpirationTime"] = format_timestamp(expires)
    return doc


def body(signer: Signer, payload: dict[str, Any], iat: float | None = None) -> bytes:
    """The JWS of ``payload`` as a request body, pretty-printed (not the compact form the
    store would produce if it re-serialized), issued now (``iat`` in its protected header;
    given: that time)."""
    issued = time.time() if iat is None else iat
    token = jwslib.sign(payload, signer.key, x5c=signer.x5c, extra={"iat": issued})
    return (json.dumps(token, indent=2) + "\n").encode()


def delete_body(signer: Signer, policy_id: str, version: int, owner: str = "psap.example.net") -> bytes:
    return jwslib.serialize(signer.sign({"policyOwner": owner, "policyId": policy_id, "policyVersion": version}))
