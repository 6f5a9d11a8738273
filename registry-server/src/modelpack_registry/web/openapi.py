"""The OpenAPI 3.1 description of the JSON API, served at ``GET /api/v1/openapi.json``.

Kept next to :mod:`modelpack_registry.web.api` and checked by the tests with
``openapi-spec-validator``; schemas here are the contract the client is written against.
"""

from __future__ import annotations

from typing import Any

from modelpack_registry import __version__

__all__ = ["openapi_document"]

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_STRS = {"type": "array", "items": _STR}
# A field of the signature `modelpack build` infers (modelpack/serving/signature.py).
_FIELD = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "type": {"type": "string", "enum": ["bool", "int64", "float64", "string"]},
        "shape": {"type": "array", "items": {"type": "integer"}, "description": "-1: any size"},
    },
    "required": ["name", "type", "shape"],
}
_SIGNATURE = {
    "type": "object",
    "description": "What predict takes and returns, inferred from input_example at build; "
    "`modelpack serve` checks requests against it. Absent when the build could not infer one.",
    "properties": {
        "layout": {"type": "string", "enum": ["tensor", "columns"],
                   "description": "tensor: rows of values; columns: records, one field per input"},
        "inputs": {"type": "array", "items": _FIELD},
        "outputs": {"type": "array", "items": _FIELD},
    },
    "required": ["layout", "inputs", "outputs"],
}  # fmt: skip
_MANIFEST = {
    "type": ["object", "null"],
    "description": "modelpack.json of the wheel: [tool.modelpack] and what the build added",
    "properties": {"signature": _SIGNATURE},
    "additionalProperties": True,
}
_METRICS = {
    "type": "object",
    "description": "name -> value and which is better, from the wheel's modelpack.json",
    "additionalProperties": {
        "type": "object",
        "properties": {"value": {"type": "number"}, "better": {"enum": ["higher", "lower"]}},
        "required": ["value", "better"],
    },
}
_DATASET = {
    "type": ["object", "null"],
    "properties": {"name": _STR, "version": _STR, "url": _STR},
    "required": ["name"],
    "additionalProperties": False,
}
_LINEAGE = {
    "type": ["object", "null"],
    "description": "Recorded by modelpack build: vcs, commit, dirty (absent outside git), "
    "build_time, framework {name, version}, python",
    "properties": {
        "vcs": _STR,
        "commit": _STR,
        "dirty": {"type": "boolean"},
        "build_time": _STR,
        "framework": {"type": "object", "properties": {"name": _STR, "version": _STR}},
        "python": _STR,
    },
    "additionalProperties": True,
}
_CARD = {"metrics": _METRICS, "dataset": _DATASET, "lineage": _LINEAGE}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or list(props)}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str, **special: str) -> dict[str, Any]:
    """Error answers for ``codes``; ``special`` (``e409="..."``) words one for this path."""
    text = {
        "400": "Invalid model, stage or user name, body or reason",
        "401": "Credentials needed (the registry runs with --htpasswd)",
        "403": "Wrong credentials, or not allowed to change this model (the message says "
        "who owns it and who to ask)",
        "404": "Unknown model, version, stage or owner",
        "409": "The version is yanked and cannot be promoted, or the last owner would go",
        "413": "The request body is over 64 KiB",
        "507": "The data folder is out of space or inodes; nothing was changed",
    }
    text.update({code[1:]: words for code, words in special.items()})
    return {code: _json(_ref("Error"), text[code]) for code in codes}


def _read_errors(*codes: str) -> dict[str, Any]:
    """Error answers of a read: ``codes``, and 401/403 when reads are protected."""
    return _errors(
        *codes,
        "401",
        "403",
        e401="Credentials needed (the registry runs with --protect-reads)",
        e403="Wrong credentials (the registry runs with --protect-reads)",
    )


def _write_errors(*codes: str, **special: str) -> dict[str, Any]:
    """Error answers of a write: ``codes``, and those every write may give."""
    return _errors(*sorted({*codes, "401", "403", "404", "507"}), **special)


_NAME = {"name": "name", "in": "path", "required": True, "schema": _STR,
         "description": "Model (distribution) name; any spelling, normalized per PEP 503"}  # fmt: skip
_STAGE = {"name": "stage", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,31}$"}}  # fmt: skip
_VERSION = {"name": "version", "in": "path", "required": True, "schema": _STR}
_USER = {"name": "user", "in": "path", "required": True, "schema": _STR,
         "description": "A user of the registry's htpasswd file"}  # fmt: skip
_TOKEN_ID = {"name": "id", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
             "description": "The token's id (not secret: mpk_<id>_<secret>)"}  # fmt: skip
_WRITE: list[dict[str, list[str]]] = [{"basic": []}, {}]
_BASIC_ONLY: list[dict[str, list[str]]] = [{"basic": []}]  # a user and password, not a token
_NO_TOKENS = "The registry runs without --htpasswd: it has no API tokens"
_CREATE_403 = (
    "Wrong credentials, an API token, not an owner or maintainer (the message says who "
    "to ask), or another user without being an admin"
)

_SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _STR}),
    "ModelSummary": _obj(
        {
            "name": _STR,
            "version": _STR,
            "summary": _NSTR,
            "task": _NSTR,
            "framework": _NSTR,
            "tags": _STRS,
            "license": _NSTR,
            "size": {"type": "integer"},
            "upload_time": {"type": ["string", "null"]},
            "versions": _STRS,
            "stages": {"type": "object", "additionalProperties": _STR},
            **_CARD,
        }
    ),
    "ModelList": _obj({"models": {"type": "array", "items": _ref("ModelSummary")}}),
    "File": _obj(
        {
            "filename": _STR,
            "url": _STR,
            "sha256": _STR,
            "size": {"type": "integer"},
            "upload_time": _TIME,
            "uploaded_by": _NSTR,
            "upload_token": _NSTR,
        }
    ),
    "Version": _obj(
        {
            "version": _STR,
            "upload_time": _TIME,
            "uploaded_by": _NSTR,
            "yanked": {"type": "boolean"},
            "yanked_reason": _NSTR,
            "summary": _NSTR,
            "requires_python": _NSTR,
            "requires_dist": _STRS,
            "manifest": _MANIFEST,
            **_CARD,
            "files": {"type": "array", "items": _ref("File")},
        }
    ),
    "Stage": _obj({"version": _STR, "promoted_by": _NSTR, "promoted_at": _TIME}),
    "HistoryEntry": _obj({"stage": _STR, "from": _NSTR, "to": _NSTR, "by": _NSTR, "at": _TIME}),
    "Model": _obj(
        {
            "name": _STR,
            "summary": _NSTR,
            "latest": _STR,
            "manifest": _MANIFEST,
            "task": _NSTR,
            "framework": _NSTR,
            "tags": _STRS,
            **_CARD,
            "requires_dist": _STRS,
            "stages": {"type": "object", "additionalProperties": _ref("Stage")},
            "history": {"type": "array", "items": _ref("HistoryEntry")},
            "versions": {"type": "array", "items": _ref("Version")},
        }
    ),
    "Promote": _obj({"version": _STR}),
    "StageChange": _obj(
        {"stage": _STR, "version": _NSTR, "previous": _NSTR, "by": _NSTR, "at": _TIME}
    ),
    "YankRequest": _obj({"reason": {"type": "string", "minLength": 1, "maxLength": 500}}),
    "Owners": _obj(
        {
            "name": _STR,
            "owners": _STRS,
            "maintainers": _STRS,
            "history": {"type": "array", "items": _ref("RoleChange")},
        }
    ),
    "RoleChange": _obj({"user": _STR, "from": _NSTR, "to": _NSTR, "by": _NSTR, "at": _TIME}),
    "Role": _obj({"role": {"type": "string", "enum": ["owner", "maintainer"]}}),
    "YankState": _obj(
        {"name": _STR, "version": _STR, "yanked": {"type": "boolean"}, "reason": _NSTR}
    ),
    "TokenRequest": _obj(
        {
            "expires": {
                "type": ["string", "null"],
                "description": "A lifetime (90d, 12h), a UTC date (2027-06-30) or never; "
                "default 365d",
            },
            "user": {
                "type": ["string", "null"],
                "description": "The user the token acts as (admins only); default the caller",
            },
        },
        [],
    ),
    "NewToken": _obj(
        {
            "token": {"type": "string", "description": "mpk_<id>_<secret>: shown only here"},
            "id": _STR,
            "model": _STR,
            "user": _STR,
            "created": _TIME,
            "expires": {"type": ["string", "null"], "format": "date-time"},
        }
    ),
    "Token": _obj(
        {
            "id": _STR,
            "user": _STR,
            "created": _TIME,
            "expires": {"type": ["string", "null"], "format": "date-time"},
            "last_used": {"type": ["string", "null"], "format": "date-time"},
            "expired": {"type": "boolean"},
        }
    ),
    "TokenList": _obj({"tokens": {"type": "array", "items": _ref("Token")}}),
    "RevokedToken": _obj(
        {"id": _STR, "model": _STR, "user": _STR, "revoked": {"type": "boolean", "const": True}}
    ),
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict each call)."""
    body = {
        "promote": {"required": True, "content": {"application/json": {"schema": _ref("Promote")}}},
        "yank": {"required": True, "content": {"application/json": {"schema": _ref("YankRequest")}}},
        "role": {"required": True, "content": {"application/json": {"schema": _ref("Role")}}},
        "token": {"required": False, "content": {"application/json": {"schema": _ref("TokenRequest")}}},
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelpack registry API",
            "version": __version__,
            "description": "Browse models, move stage aliases, yank versions and manage "
            "owners. Writes need HTTP Basic credentials when the registry runs with "
            "--htpasswd (a user, or __token__ and an API token), and only a model's owners, "
            "maintainers and admins may change it. Its owners and maintainers make its API "
            "tokens, with their password.",
        },
        "paths": {
            "/api/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "Every model with its latest version (filtered, sorted by name or a metric)",
                    "parameters": [
                        {
                            "name": "q",
                            "in": "query",
                            "required": False,
                            "schema": _STR,
                            "description": "Words that must all appear",
                        },
                        *(
                            {
                                "name": key,
                                "in": "query",
                                "required": False,
                                "schema": _STR,
                                "description": f"Only models whose {key} is this (any case)",
                            }
                            for key in ("task", "framework", "tag")
                        ),
                        {
                            "name": "sort",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^(name|metric:.+)$"},
                            "description": "name (default), or metric:<name>: best first "
                            "(the direction most models declare), models without it last",
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("ModelList"), "The models"),
                        **_read_errors("400"),
                    },
                }
            },
            "/api/v1/models/{name}": {
                "get": {
                    "operationId": "getModel",
                    "summary": "One model: versions (ascending), stages and stage history",
                    "parameters": [_NAME],
                    "responses": {"200": _json(_ref("Model"), "The model"), **_read_errors("404")},
                }
            },
            "/api/v1/models/{name}/stages/{stage}": {
                "put": {
                    "operationId": "promote",
                    "summary": "Point a stage at a version",
                    "parameters": [_NAME, _STAGE],
                    "security": _WRITE,
                    "requestBody": body["promote"],
                    "responses": {
                        "200": _json(_ref("StageChange"), "Promoted"),
                        **_write_errors("400", "409", "413"),
                    },
                },
                "delete": {
                    "operationId": "removeStage",
                    "summary": "Remove a stage (history records to=null)",
                    "parameters": [_NAME, _STAGE],
                    "security": _WRITE,
                    "responses": {
                        "200": _json(_ref("StageChange"), "Removed"),
                        **_write_errors("400"),
                    },
                },
            },
            "/api/v1/models/{name}/versions/{version}/yank": {
                "put": {
                    "operationId": "yank",
                    "summary": "Yank every file of a version (PEP 592)",
                    "parameters": [_NAME, _VERSION],
                    "security": _WRITE,
                    "requestBody": body["yank"],
                    "responses": {
                        "200": _json(_ref("YankState"), "Yanked"),
                        **_write_errors("400", "413"),
                    },
                },
                "delete": {
                    "operationId": "unyank",
                    "summary": "Un-yank a version",
                    "parameters": [_NAME, _VERSION],
                    "security": _WRITE,
                    "responses": {
                        "200": _json(_ref("YankState"), "Un-yanked"),
                        **_write_errors(),
                    },
                },
            },
            "/api/v1/models/{name}/owners": {
                "get": {
                    "operationId": "getOwners",
                    "summary": "Who may change a model (both lists empty: ownerless)",
                    "parameters": [_NAME],
                    "responses": {
                        "200": _json(_ref("Owners"), "The owners"),
                        **_read_errors("400", "404"),
                    },
                }
            },
            "/api/v1/models/{name}/owners/{user}": {
                "put": {
                    "operationId": "setOwner",
                    "summary": "Make a user an owner or a maintainer (owners and admins only)",
                    "parameters": [_NAME, _USER],
                    "security": _WRITE,
                    "requestBody": body["role"],
                    "responses": {
                        "200": _json(_ref("Owners"), "The owners after the change"),
                        **_write_errors("400", "409", "413"),
                    },
                },
                "delete": {
                    "operationId": "removeOwner",
                    "summary": "Remove an owner or maintainer (never the last owner)",
                    "parameters": [_NAME, _USER],
                    "security": _WRITE,
                    "responses": {
                        "200": _json(_ref("Owners"), "The owners after the change"),
                        **_write_errors("400", "409"),
                    },
                },
            },
            "/api/v1/models/{name}/tokens": {
                "post": {
                    "operationId": "createToken",
                    "summary": "Make an API token for this model (owners, maintainers and "
                    "admins, with a password); the answer is the only time it is shown",
                    "parameters": [_NAME],
                    "security": _BASIC_ONLY,
                    "requestBody": body["token"],
                    "responses": {
                        "201": _json(_ref("NewToken"), "The token"),
                        **_write_errors(
                            "400",
                            "409",
                            "413",
                            e400="Invalid expires or user",
                            e403=_CREATE_403,
                            e409=_NO_TOKENS,
                        ),
                    },
                },
                "get": {
                    "operationId": "listTokens",
                    "summary": "The model's tokens: all for owners and admins, else the "
                    "caller's own (never a secret)",
                    "parameters": [_NAME],
                    "security": _BASIC_ONLY,
                    "responses": {
                        "200": _json(_ref("TokenList"), "The tokens, oldest first"),
                        **_errors("400", "401", "403", "404", "409", e409=_NO_TOKENS),
                    },
                },
            },
            "/api/v1/models/{name}/tokens/{id}": {
                "delete": {
                    "operationId": "revokeToken",
                    "summary": "Revoke a token: your own, or any of the model as an owner or "
                    "admin; a token may revoke itself",
                    "parameters": [_NAME, _TOKEN_ID],
                    "security": _BASIC_ONLY,
                    "responses": {
                        "200": _json(_ref("RevokedToken"), "Revoked"),
                        **_errors(  # revoking deletes a file: never a 507
                            *("400", "401", "403", "404", "409"),
                            e404="No such token of this model",
                            e409=_NO_TOKENS,
                        ),
                    },
                },
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "OpenAPI 3.1 document"},
                        **_read_errors(),
                    },
                }
            },
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
        },
    }
