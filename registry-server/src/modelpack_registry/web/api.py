"""The JSON API under ``/api/v1/`` (what ``modelpack list/show/promote/yank`` speak)::

    GET    /api/v1/models[?q=&task=&framework=&tag=&sort=]  model summaries, by name or
                                                            best first by a metric
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

Reads come from the per-snapshot view (:mod:`modelpack_registry.web.models`); writes go
through :mod:`modelpack_registry.stages` and :mod:`modelpack_registry.access.owners`
(conditional writes of ``state/`` documents, retried on a race; generation bumped).
When the registry has ``--htpasswd``, writes need credentials, the user is recorded as
``by``, and :mod:`modelpack_registry.access.policy`
decides who may change which model (owners, maintainers, admins, API tokens);
:mod:`modelpack_registry.web.api_tokens` who may make, see and revoke API tokens.
Every error is raised as an :class:`HTTPFailure` and answered by the app as
``{"error": "..."}`` with its status.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from packaging.utils import canonicalize_name

from modelpack_registry.access.owners import (
    Owners,
    check_user,
    model_name,
    read_owners,
    read_owners_file,
    remove_user,
    set_role,
)
from modelpack_registry.access.policy import Access, Principal
from modelpack_registry.errors import (
    BadRequest,
    Conflict,
    HTTPFailure,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from modelpack_registry.index import Index, Snapshot
from modelpack_registry.stages import check_reason, check_stage, set_stage, set_yank
from modelpack_registry.validate import versions_equal
from modelpack_registry.web import api_tokens
from modelpack_registry.web.files import Response
from modelpack_registry.web.models import (
    describe_model,
    filter_models,
    parse_sort,
    select_models,
    summaries,
    summary_json,
    version_records,
    yanked_versions,
)
from modelpack_registry.web.openapi import openapi_document

__all__ = ["PREFIX", "ROUTES", "handle_api", "json_error", "owners_doc"]

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
    name = canonicalize_name(raw)
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


@dataclass(frozen=True)
class Call:
    """One API request, matched to a route: its path parameters already unquoted."""

    environ: dict[str, Any]
    method: str  # HEAD is answered as GET
    params: dict[str, str]
    index: Index
    access: Access


Handler = Callable[[Call], Response]


def _openapi(call: Call) -> Response:
    return json_response("200 OK", openapi_document())


def _list_models(call: Call) -> Response:
    params = parse_qs(call.environ.get("QUERY_STRING", ""))

    def one(key: str) -> str | None:
        return params.get(key, [None])[0] or None

    try:
        metric = parse_sort(one("sort"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    models = filter_models(summaries(call.index.snapshot()), one("q"))
    models = select_models(models, one("task"), one("framework"), one("tag"), metric)
    return json_response("200 OK", {"models": [summary_json(m) for m in models]})


def _get_model(call: Call) -> Response:
    snap = call.index.snapshot()
    name = _model(snap, call.params["name"])
    script = call.environ.get("SCRIPT_NAME", "")
    return json_response("200 OK", describe_model(snap, name, script))


def handle_api(environ: dict[str, Any], method: str, path: str, index: Index,
               access: Access) -> Response:  # fmt: skip
    """Answer one request whose path starts with ``/api/v1``, through :data:`ROUTES`.

    :raises HTTPFailure: for every answer that is not a success.
    """
    parts = [p for p in path.split("/") if p]
    wanted = "GET" if method == "HEAD" else method
    allowed: list[str] = []
    for route_method, template, handler in ROUTES:
        params = _match(template, parts)
        if params is None:
            continue
        if route_method == wanted:
            return handler(Call(environ, wanted, params, index, access))
        allowed += [route_method, "HEAD"] if route_method == "GET" else [route_method]
    if allowed:
        _allow(method, tuple(allowed))
    raise NotFound(f"no API endpoint {method} {path}; see GET {PREFIX}/openapi.json")


def _match(template: str, parts: list[str]) -> dict[str, str] | None:
    """The path parameters if ``parts`` (the path's non-empty segments) fit ``template``."""
    pattern = template.strip("/").split("/")
    if len(pattern) != len(parts):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, parts, strict=True):
        if want.startswith("{"):
            params[want[1:-1]] = unquote(got)
        elif want != got:
            return None
    return params


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise MethodNotAllowed(
            f"{method} is not supported here; use {' or '.join(allowed)}",
            [("Allow", ", ".join(allowed))],
        )


def _fresh(index: Index) -> Snapshot:
    index.invalidate()  # see uploads made through another server a moment ago
    return index.snapshot()


def _stage(call: Call) -> Response:
    """PUT promotes ``{"version": ...}`` to the stage; DELETE removes the stage."""
    environ, method, index, access = call.environ, call.method, call.index, call.access
    who = _user(environ, access)
    stage = check_stage(call.params["stage"])
    snap = _fresh(index)
    name = _model(snap, call.params["name"])
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


def _yank(call: Call) -> Response:
    """PUT yanks every file of the version (``{"reason": ...}``); DELETE un-yanks."""
    environ, method, index, access = call.environ, call.method, call.index, call.access
    who = _user(environ, access)
    snap = _fresh(index)
    name = _model(snap, call.params["name"])
    access.authorize(who, name, "yank" if method == "PUT" else "un-yank")
    version = _version(snap, name, call.params["version"])
    reason = check_reason(_read_json(environ).get("reason")) if method == "PUT" else None
    files = [r.filename for r in version_records(snap, name, version)]
    set_yank(access.data, files, reason, who.user if who else None)
    index.invalidate()
    doc = {"name": name, "version": version, "yanked": reason is not None, "reason": reason}
    return json_response("200 OK", doc)


def owners_doc(name: str, owners: Owners | None, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``Owners`` schema: what GET, PUT and DELETE ``.../owners`` all answer."""
    found = owners or Owners()
    return {"name": name, **found.as_dict(), "history": history}


def _known(name: str, access: Access, index: Index) -> bool:
    return name in _fresh(index).projects or read_owners(access.data, name) is not None


def _get_owners(call: Call) -> Response:
    name = model_name(call.params["name"])
    if not _known(name, call.access, call.index):
        raise NotFound(f"no model named {name!r} in this registry; `modelpack list` shows them")
    return json_response("200 OK", owners_doc(name, *read_owners_file(call.access.data, name)))


def _change_owners(call: Call) -> Response:
    """PUT gives ``user`` a role (``{"role": ...}``); DELETE takes it away."""
    environ, access, index = call.environ, call.access, call.index
    who = _user(environ, access)
    name, user = model_name(call.params["name"]), check_user(call.params["user"])
    if not _known(name, access, index) and not (who is None or who.admin):
        raise NotFound(
            f"no model named {name!r} in this registry; its first upload makes its uploader "
            "the owner (an admin may reserve a name by adding an owner)"
        )
    access.authorize_owners_change(who, name)
    by = who.user if who else None
    if call.method == "PUT":
        role = _read_json(environ).get("role")
        if role not in ("owner", "maintainer"):
            raise BadRequest('send {"role": "owner"} or {"role": "maintainer"}')
        if access.htpasswd is not None and not access.htpasswd.has_user(user):
            raise BadRequest(f"no user {user!r} in this registry's htpasswd file")
        owners, history = set_role(access.data, name, user, str(role), by)
    else:
        owners, history = remove_user(access.data, name, user, by)
    index.invalidate()
    return json_response("200 OK", owners_doc(name, owners, history))


def _create_token(call: Call) -> Response:
    """The rules for ``/models/<name>/tokens[/<id>]`` are in :mod:`.api_tokens`."""
    who = api_tokens.caller(call.environ, call.access)
    name = model_name(call.params["name"])
    known = _known(name, call.access, call.index)
    made = api_tokens.create(call.access, who, name, known, lambda: _read_json(call.environ))
    return json_response("201 Created", made)


def _list_tokens(call: Call) -> Response:
    who = api_tokens.caller(call.environ, call.access)
    name = model_name(call.params["name"])
    known = _known(name, call.access, call.index)
    return json_response("200 OK", api_tokens.listing(call.access, who, name, known))


def _revoke_token(call: Call) -> Response:
    who = api_tokens.caller(call.environ, call.access)
    name = model_name(call.params["name"])
    return json_response("200 OK", api_tokens.revoke(call.access, who, name, call.params["id"]))


#: Every endpoint: (method, path template, handler). HEAD is answered wherever GET is.
#: tests/test_registry_api_contract.py checks this equals the (path, method) pairs of
#: :func:`~modelpack_registry.web.openapi.openapi_document`.
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", f"{PREFIX}/openapi.json", _openapi),
    ("GET", f"{PREFIX}/models", _list_models),
    ("GET", f"{PREFIX}/models/{{name}}", _get_model),
    ("PUT", f"{PREFIX}/models/{{name}}/stages/{{stage}}", _stage),
    ("DELETE", f"{PREFIX}/models/{{name}}/stages/{{stage}}", _stage),
    ("PUT", f"{PREFIX}/models/{{name}}/versions/{{version}}/yank", _yank),
    ("DELETE", f"{PREFIX}/models/{{name}}/versions/{{version}}/yank", _yank),
    ("GET", f"{PREFIX}/models/{{name}}/owners", _get_owners),
    ("PUT", f"{PREFIX}/models/{{name}}/owners/{{user}}", _change_owners),
    ("DELETE", f"{PREFIX}/models/{{name}}/owners/{{user}}", _change_owners),
    ("GET", f"{PREFIX}/models/{{name}}/tokens", _list_tokens),
    ("POST", f"{PREFIX}/models/{{name}}/tokens", _create_token),
    ("DELETE", f"{PREFIX}/models/{{name}}/tokens/{{id}}", _revoke_token),
)
