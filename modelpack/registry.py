"""Browse and manage models in a registry: list, show, promote, yank.

Reading works against any standard index: modelpack-registry's JSON API
(``/api/v1/models``) when the registry has it, else the simple API (PEP 691 JSON or
PEP 503 HTML), which tells names, versions, files and yank state (and, with PEP 658
metadata files, the summary). Stages and yanking are writes that only
modelpack-registry offers (``PUT /api/v1/models/<name>/stages/<stage>``,
``PUT|DELETE /api/v1/models/<name>/versions/<version>/yank``).
"""

from __future__ import annotations

import email.parser
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from modelpack.config import redact, resolve_credentials, resolve_registry
from modelpack.errors import ModelNotFoundError, ModelpackError, RegistryError, UsageError
from modelpack.index import IndexClient, IndexFile, error_detail
from modelpack.publishing import name_version

__all__ = [
    "api_call",
    "install_advice",
    "list_registry",
    "name_clash",
    "parse_spec",
    "promote",
    "show",
    "yank",
]


def parse_spec(spec: str) -> tuple[str, str]:
    """``model-foo==1.2`` -> (``model-foo``, ``1.2``).

    :raises UsageError: *spec* is not ``NAME==VERSION``.
    """
    name, sep, version = spec.partition("==")
    if not sep or not name.strip() or not version.strip():
        raise UsageError(f"expected NAME==VERSION (like model-foo==1.2.0), got {spec!r}")
    try:
        Version(version.strip())
    except InvalidVersion as exc:
        raise UsageError(f"{version.strip()!r} in {spec!r} is not a version") from exc
    return canonicalize_name(name.strip()), version.strip()


def _client(registry: str | None) -> IndexClient:
    url = resolve_registry(registry)
    return IndexClient(url, resolve_credentials(url))


def _api(client: IndexClient, path: str) -> Any | None:
    """The JSON API's answer, ``None`` when the registry has no such API (a plain index)."""
    resp = client.get(f"api/v1/{path}", headers={"Accept": "application/json"})
    if not _is_our_api(resp):
        return None
    if resp.status_code == 404:
        raise ModelNotFoundError(error_detail(resp) or f"{path} is not in the registry")
    if resp.status_code != 200:
        raise RegistryError(
            f"{redact(resp.url)} answered HTTP {resp.status_code}: {error_detail(resp)}"
        )
    return resp.json()


def _is_our_api(resp: Any) -> bool:
    """A JSON answer of modelpack-registry, not another index's JSON 404 (devpi's)."""
    if "json" not in resp.headers.get("Content-Type", ""):
        return False
    return bool(resp.status_code != 404 or error_detail(resp))


def _versions(filenames: list[str]) -> list[str]:
    found: dict[str, None] = {}
    for filename in filenames:
        try:
            found[name_version(Path(filename))[1]] = None
        except UsageError:
            continue
    return sorted(found, key=Version)


def list_registry(registry: str | None = None) -> list[dict[str, Any]]:
    """Every model in the registry: name, latest version, summary, stages, ...

    :raises RegistryUnreachableError: nothing answers at the registry URL.
    """
    client = _client(registry)
    data = _api(client, "models")
    if data is not None:
        return list(data["models"])
    names = client.projects()
    models: list[dict[str, Any]] = []
    for name in sorted({canonicalize_name(n) for n in names if n}):
        versions = _versions([f.filename for f in client.project_files(name)])
        models.append({"name": name, "version": versions[-1] if versions else None,
                       "summary": None, "versions": versions, "stages": {}})  # fmt: skip
    return models


def show(name: str, registry: str | None = None) -> dict[str, Any]:
    """One model's versions, files, yank state, stages and summary.

    :raises ModelNotFoundError: the registry has no such model.
    """
    client = _client(registry)
    canonical = canonicalize_name(name)
    data = _api(client, f"models/{canonical}")
    if data is not None:
        return dict(data)
    files = client.project_files(canonical)
    if not files:
        raise ModelNotFoundError(f"the registry at {redact(client.registry)} has no model {canonical!r}; "
                                 "see `modelpack list`")  # fmt: skip
    versions: list[dict[str, Any]] = []

    for version in _versions([f.filename for f in files]):
        mine = [f for f in files if name_version(Path(f.filename))[1] == version]
        yanked = [f.yanked for f in mine if f.yanked]
        versions.append({
            "version": version, "yanked": bool(yanked),
            "yanked_reason": yanked[0] if yanked and isinstance(yanked[0], str) else None,
            "files": [{"filename": f.filename, "url": f.url, "sha256": f.sha256} for f in mine],
        })  # fmt: skip
    latest = str(versions[-1]["version"])
    return {"name": canonical, "latest": latest, "summary": _summary(client, files, latest),
            "stages": {}, "history": [], "versions": versions}  # fmt: skip


def _summary(client: IndexClient, files: list[IndexFile], version: str) -> str | None:
    """The Summary from the PEP 658 metadata file of *version*'s wheel, if served."""
    wheel = next(
        (f for f in files if f.filename.endswith(".whl") and f"-{version}-" in f.filename), None
    )
    if wheel is None:
        return None
    resp = client.session.get(wheel.url + ".metadata", timeout=client.timeout)
    if resp.status_code != 200:
        return None
    meta = email.parser.BytesParser().parsebytes(resp.content, headersonly=True)
    return str(meta["Summary"]) if meta["Summary"] else None


def name_clash(name: str, registry: str | None = None, *, timeout: float = 5) -> str | None:
    """A warning when the registry's upstream index holds *name*, else ``None``.

    The registry answers ``/simple/<name>/`` with ``X-Modelpack-Source: upstream`` for a
    name it passes through from its upstream. A registry that cannot be reached, or one
    without an upstream, gives no warning: this is advice, never a reason to fail.
    """
    try:
        client = IndexClient(resolve_registry(registry), timeout=timeout)
        client.credentials = resolve_credentials(client.registry)
        resp = client.get(f"simple/{canonicalize_name(name)}/", stream=True)
        resp.close()
    except ModelpackError:
        return None
    if resp.status_code != 200 or resp.headers.get("X-Modelpack-Source") != "upstream":
        return None
    return (
        f"{canonicalize_name(name)} is also a name on the upstream index of the registry at "
        f"{redact(client.registry)}: two packages with one name invite confusion. Choose "
        "another name, or have the platform team claim it for you before the first publish "
        f"with `modelpack-registry reserve {canonicalize_name(name)}`"
    )


def install_advice(
    name: str, version: str, requires_dist: list[str] | None, registry: str | None = None
) -> list[str]:
    """The lines that tell a consumer how to install ``name==version`` from *registry*.

    One command with the registry as the only index, when that works: the registry has an
    upstream index, or the model has no dependencies. Otherwise (``requires_dist`` unknown
    counts as having some) the command is followed by what to do instead, and never by
    ``--extra-index-url``, which lets any index answer for the model's name.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    client = _client(registry)
    index = client.simple_url
    command = f"pip install {name}=={version} --index-url {index}"
    deps: list[str] = []
    for line in requires_dist or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None or "extra" not in str(req.marker):
            deps.append(req.name)
    if (requires_dist is not None and not deps) or client.upstream() is not None:
        return [f"install: {command}"]
    which = f" ({', '.join(deps)})" if deps else ""
    return [
        f"install: {command}",
        f"  this registry has no upstream index, so that command cannot find {name}'s public "
        f"dependencies{which}. Ask the platform team to serve it with `modelpack-registry "
        "serve --upstream URL`. Until then, with the public index as index-url in your "
        "pip.conf, take the model alone from the registry, then its dependencies:",
        f"    pip install --no-deps {name}=={version} --index-url {index}",
        f"    pip install {name}=={version}",
        f"  Do not add the registry with --extra-index-url: then any index may answer for {name}.",
    ]


_STAGES_NEED = "stages and yanking need modelpack-registry, a plain index cannot store them"


def api_call(
    registry: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    needs: str = _STAGES_NEED,
    not_found: type[ModelpackError] = ModelNotFoundError,
) -> dict[str, Any]:
    """``METHOD /api/v1/<path>`` on modelpack-registry, its JSON answer.

    :raises RegistryError: the registry has no modelpack API (``needs`` says what needs
        it), or refused (400, 409, ...) with its message.
    :raises AuthenticationError: the registry wants (other) credentials.
    :raises ModelNotFoundError: 404 (or ``not_found``) with the registry's message.
    """
    client = _client(registry)
    resp = client.request(
        method, f"api/v1/{path}", json=body, headers={"Accept": "application/json"}
    )
    detail = error_detail(resp)
    if not _is_our_api(resp):
        raise RegistryError(
            f"the registry at {redact(client.registry)} has no modelpack API (HTTP "
            f"{resp.status_code}); {needs}"
        )
    if resp.status_code == 404:
        raise not_found(detail or f"{path}: not found in the registry")
    if resp.status_code >= 400:
        raise RegistryError(f"the registry refused: {detail or f'HTTP {resp.status_code}'}")
    return dict(resp.json())


def promote(spec: str, stage: str, registry: str | None = None) -> dict[str, Any]:
    """Point *stage* of the model at exactly the version in *spec* (``NAME==VERSION``).

    :raises ModelNotFoundError: no such model or version.
    :raises AuthenticationError: the registry wants (other) credentials.
    """
    name, version = parse_spec(spec)
    return api_call(registry, "PUT", f"models/{name}/stages/{stage}", {"version": version})


def yank(
    spec: str, reason: str | None, *, undo: bool = False, registry: str | None = None
) -> dict[str, Any]:
    """Yank (PEP 592) the version in *spec*, or un-yank it with *undo*.

    :raises UsageError: yanking without a reason.
    """
    name, version = parse_spec(spec)
    path = f"models/{name}/versions/{version}/yank"
    if undo:
        return api_call(registry, "DELETE", path)
    if not reason or not reason.strip():
        raise UsageError(
            "say why with --reason TEXT: pip and uv show it to everyone who installs it"
        )
    return api_call(registry, "PUT", path, {"reason": reason.strip()})
