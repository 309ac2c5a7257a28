"""The OpenAPI 3.0 document of firebox's Logging Service (``GET /openapi.json``).

It follows NENA's Logging Service OpenAPI (``loggingservice.yaml``, NENA-STA-010.3 section
4.12.3) and the i3 common schemas (``i3-common.yaml``: ``Jws``, ``VersionsArray``), and says
exactly what ``firebox.logging.service`` does: the status codes it answers (NENA's 434, 438,
460, 461 among them), the problem JSON of every error, and ``/Conversations/{callId}`` as
a list of log event containers. Property tests (schemathesis) hold the service to it.
"""

from __future__ import annotations

from typing import Any

from firebox import __version__
from firebox.logging.events import LOG_EVENT_TYPES
from firebox.restapi import openapi_problem_response, openapi_problem_schema, openapi_ref, openapi_versions_schema

__all__ = ["openapi_document"]

_ref = openapi_ref
_problem = openapi_problem_response


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_PAGING = [
    _query("limit", "Maximum number of results to return (default 100)",
           {"type": "integer", "format": "int32", "minimum": 1, "maximum": 1000}),
    _query("start", "First item in the page of results, as an ordinal 1-based integer",
           {"type": "integer", "format": "int32", "minimum": 1}),
]  # fmt: skip
_TIME = [
    _query("startTime", "Earliest event timestamp (RFC 3339, inclusive)", {"type": "string", "format": "date-time"}),
    _query("endTime", "Latest event timestamp (RFC 3339, inclusive)", {"type": "string", "format": "date-time"}),
]


def _id_array(member: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["count", "totalCount", member],
        "properties": {
            "count": {"type": "integer"},
            "totalCount": {"type": "integer"},
            member: {"type": "array", "items": {"type": "string"}},
        },
    }


def openapi_document() -> dict[str, Any]:
    bad_query = _problem("Bad query parameter (each one named in errors)")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "firebox Logging Service (NENA-STA-010.3 section 4.12)",
            "version": f"1.0 (firebox {__version__})",
        },
        "paths": {
            "/LogEvents": {
                "post": {
                    "operationId": "LogEvent",
                    "summary": "Log a new event (a JWS in the flattened JSON serialization)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Jws")}}},
                    "responses": {
                        "201": _json("Logged", _ref("LogEventId")),
                        "400": _problem("Not a flattened JSON JWS"),
                        "409": _problem("Already logged (same clientAssignedIdentifier); logEventId is the original",
                                        "DuplicateProblem"),
                        "434": _problem("Signature Verification Failure"),
                        "438": _problem("Unacceptable Algorithm"),
                        "460": _problem("Bad LogEvent (each wrong member named in errors)"),
                        "461": _problem("LogEvent too big"),
                        "503": _problem("Storage unavailable; retry later"),
                    },
                },
                "get": {
                    "operationId": "RetrieveLogEvents",
                    "summary": "LogEvents by time range, element, agency and type, in log order",
                    "parameters": [
                        *_PAGING,
                        _query("logEventType", "LogEvent type", _ref("LogEventType")),
                        *_TIME,
                        _query("elementId", "Logging element", {"type": "string"}),
                        _query("agencyId", "Agency of the logging element", {"type": "string"}),
                    ],
                    "responses": {
                        "200": _json("LogEvents found", _ref("LogEventContainerArray")),
                        "400": bad_query,
                    },
                },
            },
            "/LogEvents/{logEventId}": {
                "get": {
                    "operationId": "RetrieveLogEvent",
                    "summary": "One LogEvent as the JWS it was logged as",
                    "parameters": [
                        {"name": "logEventId", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"200": _json("LogEvent found", _ref("Jws")), "404": _problem("Not found")},
                }
            },
            "/LogEventIds": {
                "get": {
                    "operationId": "ListLogEventsById",
                    "parameters": [
                        *_PAGING,
                        _query("callId", "Call identifier", {"type": "string"}),
                        _query("incidentId", "Incident tracking identifier", {"type": "string"}),
                    ],
                    "responses": {"200": _json("LogEvent IDs", _id_array("logEventIds")), "400": bad_query},
                }
            },
            "/CallIds": {
                "get": {
                    "operationId": "ListCalls",
                    "parameters": [*_PAGING, _query("incidentId", "Incident tracking identifier", {"type": "string"}), *_TIME],
                    "responses": {"200": _json("Call IDs", _id_array("callIds")), "400": bad_query},
                }
            },
            "/IncidentIds": {
                "get": {
                    "operationId": "ListIncidents",
                    "parameters": [*_PAGING, *_TIME],
                    "responses": {"200": _json("Incident IDs", _id_array("incidentIds")), "400": bad_query},
                }
            },
            "/Conversations/{callId}": {
                "get": {
                    "operationId": "RetrieveConversation",
                    "summary": "Every LogEvent of a call, in the order of their timestamps",
                    "parameters": [{"name": "callId", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json("The call's LogEvents", _ref("LogEventContainerArray")),
                        "404": _problem("No LogEvent of that call"),
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
        "components": {
            "schemas": {
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
                "LogEventId": {
                    "type": "object",
                    "required": ["logEventId"],
                    "properties": {"logEventId": {"type": "string", "pattern": "^urn:emergency:uid:logid:"}},
                },
                "LogEventType": {"type": "string", "enum": sorted(LOG_EVENT_TYPES)},
                "LogEventContainer": {
                    "type": "object",
                    "required": ["logEventId", "logEvent"],
                    "properties": {"logEventId": {"type": "string"}, "logEvent": _ref("Jws")},
                },
                "LogEventContainerArray": {
                    "type": "object",
                    "required": ["count", "totalCount", "logEventContainers"],
                    "properties": {
                        "count": {"type": "integer"},
                        "totalCount": {"type": "integer"},
                        "logEventContainers": {"type": "array", "items": _ref("LogEventContainer")},
                    },
                },
                "VersionsArray": openapi_versions_schema(),
                "Problem": openapi_problem_schema(),
                "DuplicateProblem": {
                    "allOf": [
                        _ref("Problem"),
                        {"type": "object", "required": ["logEventId"], "properties": {"logEventId": {"type": "string"}}},
                    ]
                },
            }
        },
    }
