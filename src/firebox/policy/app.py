"""The Policy Store's REST interface (NENA-STA-010.3 section 4.9, and NENA's Policy Store
OpenAPI, ``i3-policy-store.yaml``) as a Starlette app over a ``PolicyStore``.

==========================================  =======================================================
``POST /Policies``                          store a new policy: a flattened JSON JWS (RFC 7515
                                            section 7.2.2) whose payload is the policy document
                                            (``document.py``); 201, ``Location``, ``ETag``
``GET /Policies``                           the served policies (``policyOwner``, ``policyType``;
                                            ``limit``, ``start``): ``count``, ``totalCount``,
                                            ``policies`` (the JWSs, NENA's ``PolicyArray``) and
                                            ``summaries`` (id, owner, type, version, times);
                                            with ``policyId``, ``policyName`` or
                                            ``policyQueueName``: the one policy so named
``PUT /Policies?policyOwner=&policyType=&   NENA's form: store the policy so named (201) or its
policyId= (or policyName, policyQueueName)``  next version (200); the document must be it
``DELETE /Policies?`` (the same)              NENA's form of ``DELETE /Policies/{policyId}``
``GET /Policies/{policyId}``                the current version, byte for byte as stored;
                                            ``ETag``, ``Last-Modified``; 304 for ``If-None-Match``
``PUT /Policies/{policyId}``                a new version; ``If-Match`` the ETag the writer saw
                                            (412 when another version came first)
``DELETE /Policies/{policyId}``             a JWS of ``{policyOwner, policyId, policyVersion}``
                                            signed like a policy (412 if not the current version)
``GET /Policies/{policyId}/versions``       the served versions, oldest first
``GET /Policies/{policyId}/versions/{n}``   version ``n``, byte for byte
``GET /Versions``                           the i3 versions document (section 2.8)
``GET /openapi.json``                       the OpenAPI document of all this (``openapi.py``)
==========================================  =======================================================

Naming a policy: NENA's interface (section 4.9) names it by query parameters, its
``policyOwner``, its ``policyType`` and its ``policyId`` (``policyName`` a synonym) or, for a
route policy, its ``policyQueueName``; firebox accepts that form for ``GET``, ``PUT`` and
``DELETE`` on ``/Policies``, and the path form ``/Policies/{policyId}`` as an alias (versions
and ``If-None-Match`` polling use it). Where firebox differs from NENA's interface: a stored
policy always has a ``policyId`` (a document naming only its queue is refused); ``DELETE`` carries a signed body so that the owner can be checked without TLS client
certificates; every 4xx is an RFC 9457 problem JSON (``application/problem+json``) whose
``errors`` name each wrong member. Status codes: 400 (not a flattened JWS, or a bad policy
document or rule; NENA's 437/451/459 are folded into it), 403 (the signer does not speak for
the ``policyOwner``), 404, 409 (the id is in use, or belongs to another owner or type), 412
(not the current version), 413 (too big), 434 (signature verification failure), 438
(unacceptable algorithm), as NENA's OpenAPI numbers the last two.

Replays: a signed policy document captured and sent again later must not roll a policy
back. A replacement (``PUT``, either form; or storing again a deleted policy) must carry
its issue time, ``iat`` (RFC 7519 NumericDate, fractions allowed) in the JWS protected
header, later than the ``iat`` of the last version stored: 400 naming ``protected.iat`` when
it is missing, malformed or more than ``MAX_CLOCK_SKEW`` seconds ahead of the store's clock;
409 when it is not later. A first ``POST`` may omit it (nothing to roll back).

Who may write (section 4.9: "a policy owner ... or an agency authorized to store policies on
behalf of the owner"): the JWS is ``alg: EdDSA`` (Ed25519 or Ed448) with an ``x5c`` chain,
and the leaf certificate's subjectAltName (or CN) names the owner's domain, or, when the
store has ``owner_keys`` for that domain, the leaf holds one of those keys. With ``trust``
anchors the chain must lead to one of them; without, a certificate is taken at its word
(fine for a lab, not for production). ``alg: none`` is accepted only with
``allow_unsigned=True`` and then nothing about the owner is checked.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firebox import jws as jwslib
from firebox.logging.events import format_timestamp
from firebox.policy.document import (
    POLICY_ID,
    DocumentError,
    PolicyDocument,
    Problem,
    cert_names,
    names_cover,
    owner_domain,
    parse_policy,
)
from firebox.policy.store import (
    PolicyExists,
    PolicyMismatch,
    PolicyMissing,
    PolicyStore,
    PolicyVersion,
    VersionConflict,
    from_micros,
    to_micros,
)
from firebox.restapi import Reject, http_error, int_param, problem
from firebox.restapi import versions_document as i3_versions_document

__all__ = ["PolicyService", "create_app", "etag", "problem"]

log = logging.getLogger(__name__)

MAX_POLICY_BYTES = 1 << 20
#: How far (s) an ``iat`` may lie ahead of this store's clock.
MAX_CLOCK_SKEW = 300
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def etag(version: int) -> str:
    """The entity tag of a policy version (RFC 9110 section 8.8.3): a strong one, since the
    bytes served for a version never change."""
    return f'"v{version}"'


def _parse_etag(value: str) -> int | None:
    value = value.strip()
    if value.startswith('"v') and value.endswith('"') and value[2:-1].isdigit() and len(value) < 20:
        return int(value[2:-1])
    return None


def versions_document() -> dict[str, Any]:
    """``GET /Versions``: policies signed with EdDSA."""
    return i3_versions_document(["EdDSA"])


def _raw(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


class PolicyService:
    """The service: ``store`` where policies go; ``allow_unsigned`` accept ``alg: none``;
    ``trust`` anchors the ``x5c`` chains must lead to; ``owner_keys`` maps an owner's domain
    to the public keys (Ed25519/Ed448) whose certificates may sign for it; ``clock`` the
    time expiry is judged by."""

    def __init__(
        self,
        store: PolicyStore,
        *,
        allow_unsigned: bool = False,
        trust: Sequence[x509.Certificate | bytes] | None = None,
        owner_keys: Mapping[str, Sequence[jwslib.PublicKey]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.store = store
        self.allow_unsigned = allow_unsigned
        self.trust = list(trust) if trust is not None else None
        self.owner_keys = {k.lower(): [_raw(key) for key in v] for k, v in (owner_keys or {}).items()}
        self.clock = clock

    # --- checking a signed body -----------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_POLICY_BYTES:
                raise Reject(413, "Policy too big", [Problem("", f"more than {MAX_POLICY_BYTES} bytes")])
        return body

    def _verify(self, body: bytes) -> jwslib.Verified:
        """The verified JWS of a body (400 / 434 / 438)."""
        try:
            doc = jwslib.parse_json_object(body, None)
            for name in doc:
                if name not in jwslib.MEMBERS:
                    raise jwslib.JwsError(name, "not a member of a flattened JWS as accepted here "
                                          "(protected, payload, signature; no unprotected header)")  # fmt: skip
            for name in jwslib.MEMBERS:
                if name not in doc:
                    raise jwslib.JwsError(name, "missing member")
                jwslib.b64url_decode(doc[name], name)
        except jwslib.JwsError as exc:
            raise Reject(400, "Not a flattened JSON JWS", [Problem(exc.member or "", exc.message)]) from None
        try:
            return jwslib.verify(doc, allow_none=self.allow_unsigned, trust=self.trust, now=self.clock())
        except jwslib.JwsError as exc:
            member = exc.member or ""
            if member in ("signature", "x5c"):
                status, title = 434, "Signature Verification Failure"
            elif member == "alg":
                status, title = 438, "Unacceptable Algorithm"
            else:
                status, title = 400, "Not a flattened JSON JWS"
            raise Reject(status, title, [Problem(member, exc.message)]) from None

    def _check_owner(self, verified: jwslib.Verified, owner: str, domain: str) -> None:
        """The signer speaks for ``domain`` (403 otherwise)."""
        if verified.signer is None:  # alg none, accepted only when allow_unsigned
            return
        if "x5c" not in verified.header or not verified.chain:
            raise Reject(403, "Not the policy owner", [Problem("x5c", "a policy must be signed with an x5c chain")])
        leaf = verified.chain[0]
        keys = self.owner_keys.get(domain)
        if keys is not None:
            if _raw(leaf.public_key()) not in keys:
                raise Reject(403, "Not the policy owner", [Problem(
                    "policyOwner", f"the signer ({verified.signer}) holds none of the keys configured for {domain}"
                )])  # fmt: skip
            return
        names = cert_names(leaf)
        if not names_cover(names, domain):
            raise Reject(403, "Not the policy owner", [Problem(
                "policyOwner", f"{owner[:80]!r}: the signer's certificate ({verified.signer}) names "
                f"{', '.join(names[:5]) or 'no domain'}, not {domain}"
            )])  # fmt: skip

    def check(self, body: bytes) -> PolicyDocument:
        """Verify a ``POST``/``PUT`` body and its policy document; raises ``Reject``."""
        return self._checked(body)[0]

    def _checked(self, body: bytes) -> tuple[PolicyDocument, float | None]:
        """``check``, and the ``iat`` of the JWS protected header (None when absent)."""
        verified = self._verify(body)
        try:
            doc = parse_policy(verified.payload, self.clock())
        except DocumentError as exc:
            raise Reject(400, "Bad Policy", exc.problems) from None
        self._check_owner(verified, doc.owner, doc.owner_domain)
        return doc, self._iat(verified.header)

    def _iat(self, header: Mapping[str, Any]) -> float | None:
        """The issued-at time (RFC 7519 NumericDate: seconds since the epoch, fractions
        allowed) of a protected header; 400 if it is not a number or lies in the future."""
        if "iat" not in header:
            return None
        iat = header["iat"]
        if isinstance(iat, bool) or not isinstance(iat, (int, float)) or not 0 <= iat < 2**41:
            raise Reject(400, "Bad Policy", [Problem("protected.iat", "must be a NumericDate (seconds since 1970, RFC 7519)")])
        now = self.clock().timestamp()
        if iat > now + MAX_CLOCK_SKEW:
            raise Reject(400, "Bad Policy", [Problem("protected.iat", f"{iat} is {iat - now:.0f} s in the future "
                                                     f"(more than the {MAX_CLOCK_SKEW} s allowed for clock skew)")])  # fmt: skip
        return float(iat)

    def _newer(self, policy_id: str, iat: float | None, required: bool) -> int | None:
        """No replay (an old signed document sent again must not roll the policy back): the
        ``iat`` must be after the last stored version's, whose number is returned. 400 when
        ``required`` and missing, 409 when not newer."""
        latest = self.store.latest(policy_id)
        if latest is None:
            return None
        if iat is None:
            if required:
                raise Reject(400, "Bad Policy", [Problem("protected.iat", "missing: a replacement must carry its issued-at "
                                                         "time in the JWS protected header")])  # fmt: skip
            return latest.version
        stored = _stored_iat(latest.document)
        if stored is not None and iat <= stored:
            raise Reject(409, "Not newer than the stored version", [Problem("protected.iat", (
                f"issued at {_when(iat)}, not after version {latest.version} (issued at {_when(stored)}): "
                "an old document sent again cannot replace a newer one"))])  # fmt: skip
        return latest.version

    # --- writing ------------------------------------------------------------------------------

    def _now_us(self) -> int:
        return to_micros(self.clock())

    async def policies(self, request: Request) -> Response:
        """``/Policies``: one route for every method, so that a 405 lists them all in Allow.
        ``PUT`` and ``DELETE`` take the policy as NENA's interface names it (query form)."""
        try:
            if request.method == "POST":
                return await self.create(request)
            if request.method == "PUT":
                return await self.replace(request)
            if request.method == "DELETE":
                return await self.delete(request, await self._named(request))
            return await self.list_policies(request)
        except Reject as exc:
            return problem(exc.status, exc.title, exc.problems)

    # --- NENA's query form (section 4.9) ------------------------------------------------------

    def _selector(self, request: Request) -> tuple[str, str, str, str]:
        """``policyOwner``, ``policyType`` and the one of ``policyId`` / ``policyName`` /
        ``policyQueueName`` given (its name, its value); 400 naming what is missing."""
        q = request.query_params
        problems = [Problem(n, "missing (the query form names the policy by owner and type)")
                    for n in ("policyOwner", "policyType") if not q.get(n)]  # fmt: skip
        given = [(n, q[n]) for n in _SELECTORS if q.get(n)]
        if not given:
            problems.append(Problem("policyId", "missing: give policyId, policyName or policyQueueName"))
        elif len(given) > 1 and not (len(given) == 2 and given[0][1] == given[1][1] and "policyQueueName" not in q):
            problems += [Problem(n, "give only one of policyId, policyName and policyQueueName") for n, _ in given[1:]]
        if problems:
            raise Reject(400, "Bad query", problems)
        return q["policyOwner"], q["policyType"], given[0][0], given[0][1]

    async def _named(self, request: Request) -> str:
        """The ``policyId`` of the served policy the query form names (404 if none)."""
        owner, kind, by, value = self._selector(request)
        found = await asyncio.to_thread(self._find, owner, kind, by, value)
        if found is None:
            raise Reject(404, "Not found", [Problem(by, f"no policy of {owner[:80]!r} of type {kind[:80]!r} "
                                                    f"with {by} {value[:80]!r} is served here")])  # fmt: skip
        return found

    def _find(self, owner: str | None, kind: str | None, by: str, value: str) -> str | None:
        """The policyId of a stored (not deleted) policy of ``owner`` and ``kind`` (None:
        any) whose ``by`` is ``value``."""
        if by != "policyQueueName":
            head = self.store.head(value) if POLICY_ID.fullmatch(value) else None
            ok = head is not None and not head.deleted and owner in (None, head.owner) and kind in (None, head.policy_type)
            return value if ok else None
        offset = 0
        while True:
            page = self.store.query(self._now_us(), owner=owner, policy_type=kind, offset=offset, limit=MAX_LIMIT)
            for record in page.items:
                if _queue_name(record.document) == value:
                    return record.policy_id
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return None

    async def replace(self, request: Request) -> Response:
        """``PUT /Policies?policyOwner=&policyType=&policyId=`` (or ``policyName``,
        ``policyQueueName``): NENA's store-or-replace. The document must be the policy the
        query names; 201 when it is new, 200 for the next version of a stored one."""
        owner, kind, by, value = self._selector(request)
        body = await self._body(request)
        doc, iat = self._checked(body)
        mine = {"policyOwner": doc.owner, "policyType": doc.policy_type,
                "policyId": doc.policy_id, "policyName": doc.policy_id, "policyQueueName": doc.queue_name}  # fmt: skip
        problems = [Problem(n, f"the query names {v[:80]!r}, the document {mine[n]!r}")
                    for n, v in (("policyOwner", owner), ("policyType", kind), (by, value)) if mine[n] != v]  # fmt: skip
        if problems:
            raise Reject(400, "Bad Policy", problems)
        head = await asyncio.to_thread(self.store.head, doc.policy_id)
        if head is None or head.deleted:
            return await self._create(doc, iat, body)
        return await self._update(request, doc.policy_id, doc, iat, body)

    async def create(self, request: Request) -> Response:
        body = await self._body(request)
        return await self._create(*self._checked(body), body)

    async def _create(self, doc: PolicyDocument, iat: float | None, body: bytes) -> Response:
        # Storing again a deleted policy: no older document than its last version either.
        head = await asyncio.to_thread(self.store.head, doc.policy_id)
        if head is not None and head.deleted and (head.owner, head.policy_type) == (doc.owner, doc.policy_type):
            await asyncio.to_thread(self._newer, doc.policy_id, iat, False)
        expires = to_micros(doc.expires) if doc.expires else None
        try:
            record = await asyncio.to_thread(
                self.store.create, doc.policy_id, doc.owner, doc.policy_type, body, expires, self._now_us()
            )
        except PolicyExists as exc:
            whose = f" (a {exc.head.policy_type} of {exc.head.owner})" if exc.head else ""
            raise Reject(409, "Policy exists", [Problem("policyId", f"{doc.policy_id!r} is in use{whose}; "
                                                        "PUT /Policies/{policyId} stores a new version")]) from None  # fmt: skip
        return self._written(record, 201)

    def _written(self, record: PolicyVersion, status: int) -> Response:
        return JSONResponse(
            {"policyId": record.policy_id, "version": record.version},
            status_code=status,
            headers={"Location": f"/Policies/{record.policy_id}", "ETag": etag(record.version)},
        )

    async def one(self, request: Request) -> Response:
        """``/Policies/{policyId}``: GET, PUT, DELETE."""
        try:
            if not POLICY_ID.fullmatch(request.path_params["policyId"]):
                raise _not_found(request.path_params["policyId"])
            if request.method == "PUT":
                return await self.update(request)
            if request.method == "DELETE":
                return await self.delete(request, request.path_params["policyId"])
            return await self.get(request)
        except Reject as exc:
            return problem(exc.status, exc.title, exc.problems)

    async def update(self, request: Request) -> Response:
        policy_id = request.path_params["policyId"]
        body = await self._body(request)
        doc, iat = self._checked(body)
        if doc.policy_id != policy_id:
            raise Reject(400, "Bad Policy", [Problem("policyId", f"{doc.policy_id!r} is not the policy of this URL")])
        return await self._update(request, policy_id, doc, iat, body)

    async def _update(
        self, request: Request, policy_id: str, doc: PolicyDocument, iat: float | None, body: bytes
    ) -> Response:  # fmt: skip
        expected = _if_match(request)
        expires = to_micros(doc.expires) if doc.expires else None
        try:
            for _ in range(3):
                # The version the iat was judged against is the one replaced: a version stored
                # meanwhile is judged again (with If-Match, it is a 412 as asked).
                checked = await asyncio.to_thread(self._newer, policy_id, iat, True)
                try:
                    record = await asyncio.to_thread(
                        self.store.update, policy_id, doc.owner, doc.policy_type, body, expires, self._now_us(),
                        expected if expected is not None else checked,
                    )  # fmt: skip
                    break
                except VersionConflict:
                    if expected is not None:
                        raise
            else:
                raise Reject(503, "Busy", [Problem("", "the policy kept changing; try again")])
        except PolicyMissing:
            raise _not_found(policy_id) from None
        except PolicyMismatch as exc:
            head = exc.head
            problems = [Problem(m, f"the policy's is {v!r}") for m, v, mine in (
                ("policyOwner", head.owner, doc.owner), ("policyType", head.policy_type, doc.policy_type)) if v != mine]  # fmt: skip
            raise Reject(409, "Policy of another owner or type", problems) from None
        except VersionConflict as exc:
            raise _stale(exc) from None
        return self._written(record, 200)

    async def delete(self, request: Request, policy_id: str) -> Response:
        verified = self._verify(await self._body(request))
        payload = verified.payload
        problems = [Problem(k, "unknown member of a delete request") for k in sorted(payload)
                    if k not in ("policyOwner", "policyId", "policyVersion")]  # fmt: skip
        owner, pid, version = payload.get("policyOwner"), payload.get("policyId"), payload.get("policyVersion")
        if not isinstance(owner, str) or not owner:
            problems.append(Problem("policyOwner", "must be the policy's owner (a non-empty string)"))
        if pid != policy_id:
            problems.append(Problem("policyId", "must be the id of the policy in the URL"))
        if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 2**62:
            problems.append(Problem("policyVersion", "must be the current version number (a positive integer)"))
        if problems:
            raise Reject(400, "Bad delete request", problems)
        head = await asyncio.to_thread(self.store.head, policy_id)
        if head is None or head.deleted:
            raise _not_found(policy_id)
        if owner != head.owner:
            raise Reject(403, "Not the policy owner", [Problem("policyOwner", f"the policy belongs to {head.owner!r}")])
        self._check_owner(verified, head.owner, owner_domain(head.owner) or head.owner)
        try:
            deleted = await asyncio.to_thread(self.store.delete, policy_id, version)
        except PolicyMissing:
            raise _not_found(policy_id) from None
        except VersionConflict as exc:
            raise _stale(exc) from None
        return JSONResponse({"policyId": policy_id, "deletedVersion": deleted})

    # --- reading ------------------------------------------------------------------------------

    def _document(self, request: Request, record: PolicyVersion) -> Response:
        headers = {
            "ETag": etag(record.version),
            "Last-Modified": format_datetime(from_micros(record.created_us), usegmt=True),
        }
        wanted = request.headers.get("if-none-match")
        if wanted is not None and (wanted.strip() == "*" or etag(record.version) in [t.strip() for t in wanted.split(",")]):
            return Response(status_code=304, headers=headers)
        return Response(record.document, media_type="application/json", headers=headers)

    async def get(self, request: Request) -> Response:
        policy_id = request.path_params["policyId"]
        record = await asyncio.to_thread(self.store.current, policy_id, self._now_us())
        if record is None:
            raise _not_found(policy_id)
        return self._document(request, record)

    async def get_version(self, request: Request) -> Response:
        policy_id, raw = request.path_params["policyId"], request.path_params["version"]
        try:
            if not raw.isdigit() or len(raw) > 12:
                raise Reject(404, "Not found", [Problem("version", f"{raw[:40]!r} is not a version number")])
            record = await asyncio.to_thread(self.store.version, policy_id, int(raw), self._now_us())
            if record is None:
                raise Reject(404, "Not found", [Problem("version", f"policy {policy_id!r} has no served version {raw}")])
        except Reject as exc:
            return problem(exc.status, exc.title, exc.problems)
        return self._document(request, record)

    async def get_versions(self, request: Request) -> Response:
        policy_id = request.path_params["policyId"]
        records = await asyncio.to_thread(self.store.versions, policy_id, self._now_us())
        if not records:
            return problem(404, "Not found", [_missing(policy_id)])
        last = records[-1]
        return JSONResponse({
            "policyId": policy_id, "policyOwner": last.owner, "policyType": last.policy_type,
            "currentVersion": last.version, "versions": [_summary(r) for r in records],
        })  # fmt: skip

    async def list_policies(self, request: Request) -> Response:
        q = request.query_params
        problems: list[Problem] = []
        limit = int_param(q.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, problems)
        start = int_param(q.get("start"), "start", 1, 1, 2**31 - 1, problems)
        if problems:
            raise Reject(400, "Bad query", problems)
        given = [(n, q[n]) for n in _SELECTORS if q.get(n)]
        if given:  # NENA's retrieval of one policy (by id, name or queue name) as a PolicyArray
            found = await asyncio.to_thread(self._find, q.get("policyOwner"), q.get("policyType"), *given[0])
            record = await asyncio.to_thread(self.store.current, found, self._now_us()) if found else None
            names = {"policyId": record.policy_id, "policyName": record.policy_id,
                     "policyQueueName": _queue_name(record.document)} if record else {}  # fmt: skip
            if record is not None and any(names[n] != v for n, v in given):
                record = None
            items = [record] if record is not None and start == 1 else []
            total = 1 if record is not None else 0
        else:
            page = await asyncio.to_thread(
                lambda: self.store.query(self._now_us(), owner=q.get("policyOwner"), policy_type=q.get("policyType"),
                                         offset=start - 1, limit=limit)
            )  # fmt: skip
            items, total = page.items, page.total
        return JSONResponse({
            "count": len(items), "totalCount": total,
            "policies": [json.loads(r.document) for r in items],
            "summaries": [_summary(r) for r in items],
        })  # fmt: skip

    async def get_versions_document(self, request: Request) -> Response:
        return JSONResponse(versions_document())

    async def get_openapi(self, request: Request) -> Response:
        from firebox.policy.openapi import openapi_document

        return JSONResponse(openapi_document())

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/Policies", self.policies, methods=["GET", "POST", "PUT", "DELETE"]),
                Route("/Policies/{policyId}", self.one, methods=["GET", "PUT", "DELETE"]),
                Route("/Policies/{policyId}/versions", self.get_versions, methods=["GET"]),
                Route("/Policies/{policyId}/versions/{version}", self.get_version, methods=["GET"]),
                Route("/Versions", self.get_versions_document, methods=["GET"]),
                Route("/openapi.json", self.get_openapi, methods=["GET"]),
            ],
            exception_handlers={HTTPException: http_error},
        )


def create_app(store: PolicyStore, **kw: Any) -> Starlette:
    """The Policy Store app over ``store`` (keyword arguments: ``PolicyService``'s)."""
    return PolicyService(store, **kw).app()


# --- helpers --------------------------------------------------------------------------------------


def _stored_iat(document: bytes) -> float | None:
    """The ``iat`` of a stored policy's protected header (None: it had none)."""
    try:
        header = json.loads(jwslib.b64url_decode(json.loads(document)["protected"], "protected"))
    except (ValueError, KeyError, TypeError, jwslib.JwsError):
        return None
    iat = header.get("iat") if isinstance(header, dict) else None
    return float(iat) if isinstance(iat, (int, float)) and not isinstance(iat, bool) else None


def _when(numeric_date: float) -> str:
    return format_timestamp(datetime.fromtimestamp(numeric_date, UTC))


#: The query parameters that name one policy of an owner and type (NENA-STA-010.3 4.9).
_SELECTORS = ("policyId", "policyName", "policyQueueName")


def _queue_name(document: bytes) -> str | None:
    """The ``policyQueueName`` of a stored policy (its JWS payload), or None."""
    try:
        payload = json.loads(jwslib.b64url_decode(json.loads(document)["payload"], "payload"))
    except (ValueError, KeyError, TypeError, jwslib.JwsError):
        return None
    value = payload.get("policyQueueName") if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None


def _missing(policy_id: str) -> Problem:
    return Problem("policyId", f"no policy {policy_id[:80]!r} is served here (unknown, deleted or expired)")


def _not_found(policy_id: str) -> Reject:
    return Reject(404, "Not found", [_missing(policy_id)])


def _stale(exc: VersionConflict) -> Reject:
    return Reject(412, "Not the current version", [Problem(
        "policyVersion", f"version {exc.expected} was replaced: the current version is {exc.current} "
        f"(ETag {etag(exc.current)})"
    )])  # fmt: skip


def _if_match(request: Request) -> int | None:
    """The version an ``If-Match`` names (None: no precondition, or ``*``); 412 if it
    names no version of ours (RFC 9110 section 13.1.1)."""
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    version = _parse_etag(raw)
    if version is None:
        raise Reject(412, "Not the current version", [Problem("If-Match", f"{raw[:40]!r} is not an ETag of this policy")])
    return version


def _summary(r: PolicyVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "policyId": r.policy_id, "policyOwner": r.owner, "policyType": r.policy_type, "version": r.version,
        "policyLastModificationTime": format_timestamp(from_micros(r.created_us)),
    }  # fmt: skip
    if r.expires_us is not None:
        out["policyExpirationTime"] = format_timestamp(from_micros(r.expires_us))
    return out
