"""The OpenAPI 3.0 document of firebox's Policy Store (``GET /openapi.json``).

It follows NENA's Policy Store OpenAPI (``i3-policy-store.yaml``, NENA-STA-010.3 section 4.9:
``PolicyArray``, the ``Jws`` of ``i3-common.yaml``, 434 and 438) and says exactly what
``firebox.policy.app`` does: NENA's query form of naming a policy (``policyOwner``,
``policyType``, ``policyId``/``policyName``/``policyQueueName``) and, as an alias, the policy
addressed by ``policyId`` in the path; and what firebox adds (versions, ``ETag``/``If-Match``,
a signed ``DELETE``, problem JSON on every 4xx). Property tests (schemathesis) hold the service to it.
"""

from __future__ import annotations

from typing import Any

from firebox import __version__
from firebox.policy.document import POLICY_ID
from firebox.restapi import openapi_problem_response, openapi_problem_schema, openapi_ref, openapi_versions_schema

__all__ = ["openapi_document"]

_ref = openapi_ref
_problem = openapi_problem_response


def _json(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_ID = {"name": "policyId", "in": "path", "required": True, "description": "The policy's policyId",
       "schema": {"type": "string", "pattern": f"^{POLICY_ID.pattern}$"}}  # fmt: skip
_ETAG = {"ETag": {"description": "The version's entity tag", "schema": {"type": "string"}}}
_DOC_HEADERS = {**_ETAG, "Last-Modified": {"description": "When the version was stored", "schema": {"type": "string"}}}
_IF_NONE_MATCH = {"name": "If-None-Match", "in": "header", "required": False,
                  "description": "An ETag the client holds: 304 if it is still the served version",
                  "schema": {"type": "string"}}  # fmt: skip
_WRITE_ERRORS = {
    "400": _problem("Not a flattened JSON JWS, or a bad policy document or rule (each named in errors)"),
    "403": _problem("The signer does not speak for the policyOwner"),
    "413": _problem("Policy too big"),
    "434": _problem("Signature Verification Failure"),
    "438": _problem("Unacceptable Algorithm"),
}
_JWS_BODY = {"required": True, "content": {"application/json": {"schema": _ref("Jws")}}}
_IF_MATCH = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "The ETag of the version the writer saw (or *)"}  # fmt: skip
# NENA's way of naming one policy (section 4.9): its owner, its type, and its id (policyName
# is a synonym) or, for a route policy, its queue name.
_SELECTOR_PARAMS = [
    _query("policyId", "The policy's id", {"type": "string"}),
    _query("policyName", "The policy's id (a synonym of policyId)", {"type": "string"}),
    _query("policyQueueName", "The queue a route policy is for", {"type": "string"}),
]
_NAMED = [
    {**_query("policyOwner", "The policy's owner", {"type": "string", "minLength": 1}), "required": True},
    {**_query("policyType", "The policy's type", {"type": "string", "minLength": 1}), "required": True},
    *_SELECTOR_PARAMS,
]
_DELETE_RESPONSES = {
    "200": _json("Deleted", {
        "type": "object", "required": ["policyId", "deletedVersion"],
        "properties": {"policyId": {"type": "string"}, "deletedVersion": {"type": "integer"}},
    }),
    "400": _problem("Not a flattened JSON JWS, a bad delete request, or a bad query"),
    "403": _problem("The signer is not the policy's owner"),
    "404": _problem("No such policy"),
    "412": _problem("policyVersion is not the current version"),
    "413": _problem("Request too big"),
    "434": _problem("Signature Verification Failure"),
    "438": _problem("Unacceptable Algorithm"),
}  # fmt: skip


def openapi_document() -> dict[str, Any]:
    written = {"Location": {"description": "The policy's URL", "schema": {"type": "string"}}, **_ETAG}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "firebox Policy Store (NENA-STA-010.3 section 4.9)",
            "version": f"1.0 (firebox {__version__})",
        },
        "paths": {
            "/Policies": {
                "get": {
                    "operationId": "RetrievePolicy",
                    "summary": "The served policies (not deleted, not expired), by policyId",
                    "parameters": [
                        _query("limit", "Maximum number of results to return (default 100)",
                               {"type": "integer", "format": "int32", "minimum": 1, "maximum": 1000}),
                        _query("start", "First item in the page of results, as an ordinal 1-based integer",
                               {"type": "integer", "format": "int32", "minimum": 1}),
                        _query("policyOwner", "Owner of the policies", {"type": "string"}),
                        _query("policyType", "Type of the policies", {"type": "string"}),
                        *_SELECTOR_PARAMS,
                    ],
                    "responses": {
                        "200": _json("Policies found (one at most when a policyId, policyName or "
                                     "policyQueueName names it)", _ref("PolicyArray")),
                        "400": _problem("Bad query parameter (each one named in errors)"),
                    },
                },
                "put": {
                    "operationId": "StorePolicy",
                    "summary": "NENA's store-or-replace: the policy named by policyOwner, policyType and one of "
                    "policyId, policyName, policyQueueName (NENA-STA-010.3 4.9)",
                    "parameters": [*_NAMED, _IF_MATCH],
                    "requestBody": _JWS_BODY,
                    "responses": {
                        "200": _json("Stored as the next version", _ref("Written"), written),
                        "201": _json("Stored as a new policy", _ref("Written"), written),
                        **_WRITE_ERRORS,
                        "409": _problem("The policyId belongs to another owner or type, or the JWS was issued "
                                        "(iat) no later than the stored version (a replay)"),
                        "412": _problem("If-Match does not name the current version"),
                        "503": _problem("The policy kept changing under the request; try again"),
                    },
                },
                "delete": {
                    "operationId": "DeleteNamedPolicy",
                    "summary": "Delete the policy named by the query (as DELETE /Policies/{policyId})",
                    "parameters": _NAMED,
                    "requestBody": _JWS_BODY,
                    "responses": _DELETE_RESPONSES,
                },
                "post": {
                    "operationId": "CreatePolicy",
                    "summary": "Store a new policy (a JWS in the flattened JSON serialization)",
                    "requestBody": _JWS_BODY,
                    "responses": {
                        "201": _json("Stored as version 1 (or the next version of a deleted policy)",
                                     _ref("Written"), written),
                        **_WRITE_ERRORS,
                        "409": _problem("The policyId is in use, or (a deleted policy stored again) the JWS was "
                                        "issued (iat) no later than its last version"),
                    },
                },
            },
            "/Policies/{policyId}": {
                "get": {
                    "operationId": "RetrieveOnePolicy",
                    "summary": "The current version, byte for byte as stored",
                    "parameters": [_ID, _IF_NONE_MATCH],
                    "responses": {
                        "200": _json("The policy (its JWS)", _ref("Jws"), _DOC_HEADERS),
                        "304": {"description": "Not modified: the If-None-Match ETag is the current version",
                                "headers": _DOC_HEADERS},
                        "404": _problem("No such policy served (unknown, deleted or expired)"),
                    },
                },
                "put": {
                    "operationId": "UpdatePolicy",
                    "summary": "Store a new version (its JWS protected header's iat later than the stored one's)",
                    "parameters": [
                        _ID,
                        _IF_MATCH,
                    ],
                    "requestBody": _JWS_BODY,
                    "responses": {
                        "200": _json("Stored as the next version", _ref("Written"), written),
                        **_WRITE_ERRORS,
                        "404": _problem("No such policy"),
                        "409": _problem("The document names another owner or type than the policy has, or "
                                        "its JWS was issued (iat) no later than the stored version (a replay)"),
                        "412": _problem("If-Match does not name the current version"),
                        "503": _problem("The policy kept changing under the request; try again"),
                    },
                },
                "delete": {
                    "operationId": "DeletePolicy",
                    "summary": "Delete the policy: a JWS of {policyOwner, policyId, policyVersion}, signed "
                    "as a policy of that owner",
                    "parameters": [_ID],
                    "requestBody": _JWS_BODY,
                    "responses": _DELETE_RESPONSES,
                },
            },
            "/Policies/{policyId}/versions": {
                "get": {
                    "operationId": "RetrievePolicyVersions",
                    "summary": "The served (unexpired) versions of a policy, oldest first",
                    "parameters": [_ID],
                    "responses": {
                        "200": _json("Versions", _ref("PolicyVersions")),
                        "404": _problem("No such policy served"),
                    },
                }
            },
            "/Policies/{policyId}/versions/{version}": {
                "get": {
                    "operationId": "RetrievePolicyVersion",
                    "summary": "One version, byte for byte as stored",
                    "parameters": [
                        _ID,
                        {"name": "version", "in": "path", "required": True,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 999999999999}},
                        _IF_NONE_MATCH,
                    ],
                    "responses": {
                        "200": _json("The version (its JWS)", _ref("Jws"), _DOC_HEADERS),
                        "304": {"description": "Not modified", "headers": _DOC_HEADERS},
                        "404": _problem("No such version served"),
                    },
                }
            },
            "/Versions": {
                "get": {
                    "operationId": "RetrieveVersions",
                    "responses": {"200": _json("Versions", _ref("VersionsArray"))},
                }
            },
        },
        "components": {"schemas": _schemas()},
    }


def _schemas() -> dict[str, Any]:
    summary = {
        "type": "object",
        "required": ["policyId", "policyOwner", "policyType", "version", "policyLastModificationTime"],
        "properties": {
            "policyId": {"type": "string"},
            "policyOwner": {"type": "string"},
            "policyType": {"type": "string"},
            "version": {"type": "integer"},
            "policyLastModificationTime": {"type": "string", "format": "date-time"},
            "policyExpirationTime": {"type": "string", "format": "date-time"},
        },
    }
    return {
        "Jws": {
            "type": "object",
            "required": ["protected", "payload", "signature"],
            "properties": {
                "protected": {"type": "string"},
                "payload": {"type": "string"},
                "signature": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "Written": {
            "type": "object",
            "required": ["policyId", "version"],
            "properties": {"policyId": {"type": "string"}, "version": {"type": "integer", "minimum": 1}},
        },
        "PolicySummary": summary,
        "PolicyArray": {
            "type": "object",
            "required": ["count", "totalCount", "policies", "summaries"],
            "properties": {
                "count": {"type": "integer"},
                "totalCount": {"type": "integer"},
                "policies": {"type": "array", "items": _ref("Jws")},
                "summaries": {"type": "array", "items": _ref("PolicySummary")},
            },
        },
        "PolicyVersions": {
            "type": "object",
            "required": ["policyId", "policyOwner", "policyType", "currentVersion", "versions"],
            "properties": {
                "policyId": {"type": "string"},
                "policyOwner": {"type": "string"},
                "policyType": {"type": "string"},
                "currentVersion": {"type": "integer"},
                "versions": {"type": "array", "items": _ref("PolicySummary")},
            },
        },
        "VersionsArray": openapi_versions_schema(),
        "Problem": openapi_problem_schema(),
    }
