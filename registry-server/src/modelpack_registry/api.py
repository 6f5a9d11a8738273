"""The JSON API under ``/api/v1/`` (what ``modelpack list/show/promote/yank`` speak)::

    GET    /api/v1/models[?q=text]                          model summaries, by name
    GET    /api/v1/models/<name>                            one model: versions, stages, history
    PUT    /api/v1/models/<name>/stages/<stage>             {"version": "1.2.0"}: promote
    DELETE /api/v1/models/<name>/stages/<stage>             remove the stage
    PUT    /api/v1/models/<name>/versions/<version>/yank    {"reason": "..."}: yank (PEP 592)
    DELETE /api/v1/models/<name>/versions/<version>/yank    un-yank
    GET    /api/v1/models/<name>/owners                     {"owners", "maintainers", "history"}
    PUT    /api/v1/models/<name>/owners/<user>              {"role": "owner"|"maintainer"}
    DELETE /api/v1/models/<name>/owners/<user>              (never the last owner)
    POST   /api/v1/models/<name>/tokens                     {"expires": "90d"}: a CI token
    GET    /api/v1/models/<name>/tokens                     the tokens the caller may see
    DELETE /api/v1/models/<name>/tokens/<id>                revoke one
    GET    /api/v1/openapi.json                             the OpenAPI 3.1 description

Reads come from the per-snapshot view (:mod:`modelpack_registry.models`); writes go
through :mod:`modelpack_registry.stages` and :mod:`modelpack_registry.owners` (locked,
atomic, generation bumped). When the registry has ``--htpasswd``, writes need
credentials, the user is recorded as ``by``, and :mod:`modelpack_registry.access`
decides who may change which model (owners, maintainers, admins, API tokens);
:mod:`modelpack_registry.api_tokens` who may make, see and revoke API tokens.
Every error is raised as an :class:`HTTPFailure` and answered by the app as
``{"error": "..."}`` with its status.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, unquote

from packaging.utils import canonicalize_name

from modelpack_registry import api_tokens
from modelpack_registry.access import Access, Principal
from modelpack_registry.errors import (
    BadRequest,
    Conflict,
    HTTPFailure,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from modelpack_registry.files import Response
from modelpack_registry.index import Index, Snapshot
from modelpack_registry.models import (
    describe_model,
    filter_models,
    summaries,
    summary_json,
    version_records,
    yanked_versions,
)
from modelpack_registry.openapi import openapi_document
from modelpack_registry.owners import (
    check_user,
    model_name,
    read_owners,
    read_owners_file,
    remove_user,
    set_role,
)
from modelpack_registry.stages import check_reason, check_stage, set_stage, set_yank
from modelpack_registry.validate import versions_equal

__all__ = ["PREFIX", "handle_api", "json_error"]

PREFIX = "/api/v1"
MAX_BODY = 64 * 1024


def json_response(status: str, doc: object, extra: list[tuple[str, str]] | None = None) -> Response:
    """A JSON answer."""
    body = json.dumps(doc).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-cache"),
    ]
    return status, headers + (extra or []), [body]


def json_error(exc: HTTPFailure) -> Response:
    """``{"error": message}`` with the failure's status and headers."""
    return json_response(f"{exc.status} {exc.reason}", {"error": exc.message}, list(exc.headers))


def _read_json(environ: dict[str, Any]) -> dict[str, Any]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("invalid Content-Length") from None
    if length > MAX_BODY:
        raise PayloadTooLarge("the request body is over 64 KiB; send a small JSON object")
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    try:
        doc: Any = json.loads(raw or b"{}")
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    return doc


def _model(snap: Snapshot, raw: str) -> str:
    name = canonicalize_name(unquote(raw))
    if name not in snap.projects:
        raise NotFound(f"no model named {name!r} in this registry; `modelpack list` shows them")
    return name


def _version(snap: Snapshot, name: str, wanted: object) -> str:
    if not isinstance(wanted, str) or not wanted.strip():
        raise BadRequest('send the version to promote as {"version": "1.2.0"}')
    versions = snap.versions(name)
    for version in versions:
        if versions_equal(version, wanted):
            return version
    raise NotFound(
        f"model {name!r} has no version {wanted!r}; existing versions: {', '.join(versions)} "
        f"(`modelpack show {name}`)"
    )


def _user(environ: dict[str, Any], access: Access) -> Principal | None:
    return access.authenticate(environ, "for changes")


def handle_api(environ: dict[str, Any], method: str, path: str, index: Index,
               access: Access) -> Response:  # fmt: skip
    """Answer one request whose path starts with ``/api/v1``.

    :raises HTTPFailure: for every answer that is not a success.
    """
    parts = [p for p in path[len(PREFIX) :].split("/") if p]
    reads = ("GET", "HEAD")
    if parts == ["openapi.json"] and method in reads:
        return json_response("200 OK", openapi_document())
    if parts == ["models"] and method in reads:
        query = parse_qs(environ.get("QUERY_STRING", "")).get("q", [""])[0]
        models = filter_models(summaries(index.snapshot()), query)
        return json_response("200 OK", {"models": [summary_json(m) for m in models]})
    if len(parts) == 2 and parts[0] == "models" and method in reads:
        snap = index.snapshot()
        name = _model(snap, parts[1])
        return json_response("200 OK", describe_model(snap, name, environ.get("SCRIPT_NAME", "")))
    if len(parts) == 4 and parts[0] == "models" and parts[2] == "stages":
        _allow(method, ("PUT", "DELETE"))
        who = _user(environ, access)
        return _stage(environ, method, parts[1], unquote(parts[3]), access, index, who)
    if len(parts) == 5 and parts[0] == "models" and parts[2] == "versions" and parts[4] == "yank":
        _allow(method, ("PUT", "DELETE"))
        who = _user(environ, access)
        return _yank(environ, method, parts[1], unquote(parts[3]), access, index, who)
    if len(parts) == 3 and parts[:1] == ["models"] and parts[2] == "owners" and method in reads:
        return _get_owners(parts[1], access, index)
    if len(parts) == 4 and parts[0] == "models" and parts[2] == "owners":
        _allow(method, ("PUT", "DELETE"))
        who = _user(environ, access)
        return _change_owners(environ, method, parts[1], unquote(parts[3]), access, index, who)
    if len(parts) in (3, 4) and parts[0] == "models" and parts[2] == "tokens":
        return _tokens(environ, method, parts, access, index)
    if parts in (["models"], ["openapi.json"]) or (len(parts) == 2 and parts[0] == "models"):
        _allow(method, reads)
    if len(parts) == 3 and parts[0] == "models" and parts[2] == "owners":
        _allow(method, reads)
    raise NotFound(f"no API endpoint {method} {path}; see GET {PREFIX}/openapi.json")


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise MethodNotAllowed(
            f"{method} is not supported here; use {' or '.join(allowed)}",
            [("Allow", ", ".join(allowed))],
        )


def _fresh(index: Index) -> Snapshot:
    index.invalidate()  # see uploads made through another server a moment ago
    return index.snapshot()


def _stage(environ: dict[str, Any], method: str, raw_name: str, stage: str, access: Access,
           index: Index, who: Principal | None) -> Response:  # fmt: skip
    check_stage(stage)
    snap = _fresh(index)
    name = _model(snap, raw_name)
    access.authorize(who, name, "promote" if method == "PUT" else "remove a stage of")
    version: str | None = None
    if method == "PUT":
        version = _version(snap, name, _read_json(environ).get("version"))
        if version in yanked_versions(snap, name):
            raise Conflict(
                f"{name} {version} is yanked and cannot be promoted to {stage!r}; "
                f"un-yank it first (`modelpack yank {name}=={version} --undo`) or promote "
                "another version"
            )
    else:
        current = snap.stages.get(name, {}).get("stages", {})
        if stage not in current:
            have = ", ".join(current) or "none"
            raise NotFound(f"model {name!r} has no stage {stage!r} (its stages: {have})")
    result = set_stage(access.data, name, stage, version, who.user if who else None)
    index.invalidate()
    return json_response("200 OK", result)


def _yank(environ: dict[str, Any], method: str, raw_name: str, raw_version: str,
          access: Access, index: Index, who: Principal | None) -> Response:  # fmt: skip
    snap = _fresh(index)
    name = _model(snap, raw_name)
    access.authorize(who, name, "yank" if method == "PUT" else "un-yank")
    version = _version(snap, name, raw_version)
    reason = check_reason(_read_json(environ).get("reason")) if method == "PUT" else None
    files = [r.filename for r in version_records(snap, name, version)]
    set_yank(access.data, files, reason, who.user if who else None)
    index.invalidate()
    doc = {"name": name, "version": version, "yanked": reason is not None, "reason": reason}
    return json_response("200 OK", doc)


def _owners_doc(name: str, access: Access) -> dict[str, Any]:
    owners, history = read_owners_file(access.data, name)
    doc: dict[str, Any] = {"name": name, "owners": [], "maintainers": []}
    if owners is not None:
        doc.update(owners.as_dict())
    doc["history"] = history
    return doc


def _known(name: str, access: Access, index: Index) -> bool:
    return name in _fresh(index).projects or read_owners(access.data, name) is not None


def _get_owners(raw_name: str, access: Access, index: Index) -> Response:
    name = model_name(unquote(raw_name))
    if not _known(name, access, index):
        raise NotFound(f"no model named {name!r} in this registry; `modelpack list` shows them")
    return json_response("200 OK", _owners_doc(name, access))


def _change_owners(environ: dict[str, Any], method: str, raw_name: str, user: str,
                   access: Access, index: Index, who: Principal | None) -> Response:  # fmt: skip
    name = model_name(unquote(raw_name))
    check_user(user)
    if not _known(name, access, index) and not (who is None or who.admin):
        raise NotFound(
            f"no model named {name!r} in this registry; its first upload makes its uploader "
            "the owner (an admin may reserve a name by adding an owner)"
        )
    access.authorize_owners_change(who, name)
    if method == "PUT":
        role = _read_json(environ).get("role")
        if role not in ("owner", "maintainer"):
            raise BadRequest('send {"role": "owner"} or {"role": "maintainer"}')
        if access.htpasswd is not None and not access.htpasswd.has_user(user):
            raise BadRequest(f"no user {user!r} in this registry's htpasswd file")
        owners = set_role(access.data, name, user, str(role), who.user if who else None)
    else:
        owners = remove_user(access.data, name, user, who.user if who else None)
    index.invalidate()
    return json_response("200 OK", {"name": name, **owners.as_dict()})


def _tokens(environ: dict[str, Any], method: str, parts: list[str], access: Access,
            index: Index) -> Response:  # fmt: skip
    """``/models/<name>/tokens[/<id>]``; the rules are in :mod:`.api_tokens`."""
    _allow(method, ("GET", "HEAD", "POST") if len(parts) == 3 else ("DELETE",))
    who = api_tokens.caller(environ, access)
    name = model_name(unquote(parts[1]))
    if method == "DELETE":
        return json_response("200 OK", api_tokens.revoke(access, who, name, unquote(parts[3])))
    known = _known(name, access, index)
    if method == "POST":
        made = api_tokens.create(access, who, name, known, lambda: _read_json(environ))
        return json_response("201 Created", made)
    return json_response("200 OK", api_tokens.listing(access, who, name, known))
