"""``modelpack publish``: upload model wheels with twine, refusing to touch a version
that exists, and confirming afterwards that the registry lists the exact bytes sent.

twine 6.2+ refuses ``--skip-existing`` for any index but PyPI, so the existence check
is ours: the simple index is asked for the project's files before anything is sent.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from modelpack.config import (
    Credentials,
    keyring_credentials,
    missing_credentials,
    redact,
    resolve_credentials,
    resolve_registry,
)
from modelpack.errors import (
    AuthenticationError,
    CheckError,
    ProjectError,
    RegistryUnreachableError,
    UploadError,
    UsageError,
    VersionExistsError,
)
from modelpack.index import IndexClient
from modelpack.project import load_project
from modelpack.twine_speed import (
    Hashed,
    big_block_settings,
    fast_hashes,
    twine_upload,
    upload_warnings,
)
from modelpack.wheel import WheelInfo, inspect_wheel, weights_subdir
from modelpack.wheel_digests import WheelDigests, drop_record, read_record

if TYPE_CHECKING:
    from modelpack.verify import Verified

__all__ = ["Published", "find_distributions", "name_version", "publish"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    path: Path
    name: str
    version: str
    sha256: str
    url: str
    registry: str
    verified: Verified | None = None
    """With ``verify``: the check of the built wheel, before the upload."""
    checked: Verified | None = None
    """With ``verify``: the same check of what the registry serves, after the upload."""
    warnings: tuple[str, ...] = ()
    """What the registry said about the upload (``X-Modelpack-Warning``)."""
    from_record: bool = False
    """The digests twine sent are those ``build`` recorded: the wheel was not read to hash it."""


def _changed_since_built(path: Path) -> UploadError:
    """The registry refused *path* with the digests recorded at build time, and they are
    not the file's: it was changed in a way its identity does not show (see
    :mod:`modelpack.wheel_digests`)."""
    drop_record(path)
    return UploadError(
        f"the wheel changed since it was built: rebuild it with `modelpack build`, then "
        f"publish again ({path.name} no longer matches the digests recorded beside it when "
        "it was built, so the registry refused it and stored nothing)"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def name_version(path: Path) -> tuple[str, str]:
    try:
        if path.name.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(path.name)
        else:
            name, version = parse_sdist_filename(path.name)
    except ValueError as exc:
        raise UsageError(
            f"{path} is not a wheel or sdist file name ({exc}); pass files from dist/"
        ) from exc
    return str(name), str(version)


def find_distributions(targets: Sequence[Path | str]) -> tuple[list[Path], dict[str, object]]:
    """Resolve ``publish`` arguments to wheel files, plus the project's config if any.

    No argument means the project in the current directory; a directory is a project
    whose ``dist/`` holds the wheel of its current version; files are taken as given.

    :raises ProjectError: a project has no wheel for its current version.
    :raises UsageError: a file does not exist or is not a distribution.
    """
    paths = [Path(t) for t in targets] or [Path(".")]
    files: list[Path] = []
    config: dict[str, object] = {}
    for path in paths:
        if path.is_dir():
            project = load_project(path)
            config = project.config
            wheels = sorted(project.dist_dir.glob("*.whl"))
            mine = [w for w in wheels if name_version(w)[0] == project.canonical_name]
            if project.version is not None:
                mine = [
                    w for w in mine if name_version(w)[1] == str(_norm_version(project.version))
                ]
            else:
                mine = mine[-1:] if mine else []
            if not mine:
                raise ProjectError(
                    f"no wheel of {project.name} {project.version or ''} in "
                    f"{project.dist_dir}; run `modelpack build` first".replace("  ", " ")
                )
            files += mine
        elif path.is_file():
            name_version(path)
            files.append(path)
        else:
            raise UsageError(
                f"{path} does not exist; pass a model project directory or wheel files"
            )
    return files, config


def _norm_version(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion as exc:
        raise ProjectError(f"[project] version {version!r} is not a valid version ({exc})") from exc


def publish(
    targets: Sequence[Path | str] = (),
    *,
    registry: str | None = None,
    credentials: Credentials | None = None,
    verify: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[Published]:
    """Upload the model wheels named by *targets* to the registry.

    With *verify*, each wheel is first installed into a clean environment, loaded and
    given its input example (:mod:`modelpack.verify`), and nothing is uploaded unless
    every wheel passes; after the upload the check runs again on what the registry
    serves. *progress* is told what is happening, for a person waiting.

    :raises CheckError: a wheel's weights fail the pickle check of ``modelpack check``.
    :raises VersionExistsError: a file of that version is already in the registry.
    :raises ModelFaultError: with *verify*, a model's import, load() or predict fails.
    :raises EnvironmentFaultError: with *verify*, a dependency cannot be resolved or an
        index does not answer.
    :raises RegistryUnreachableError: nothing answers at the registry URL.
    :raises AuthenticationError: the registry refused the credentials.
    :raises UploadError: the upload failed, or the registry lists different bytes.
    """
    if registry:
        resolve_registry(registry)  # a bad --registry is a usage error, whatever the files
    files, config = find_distributions(targets)
    registry = resolve_registry(registry, config)
    # The keyring is asked only when the registry wants credentials that were not found
    # in the environment or ~/.pypirc (finding its backend costs about 50 ms), except for
    # `verify`, whose installs may need them from the start.
    credentials = credentials or resolve_credentials(registry, keyring=verify)

    for path in files:
        if path.name.endswith(".whl"):
            subdir = weights_subdir(path)
            _refuse_unsafe_weights(inspect_wheel(path, subdir), subdir)
    index = _checked_index(registry, credentials, files)
    credentials = index.credentials

    say = progress or (lambda message: None)
    verified: dict[Path, Verified] = {}
    if verify:
        from modelpack.verify import resolution_for, verify_wheel

        resolution = resolution_for(registry, credentials)
        for path in files:
            if path.name.endswith(".whl"):
                name, version = name_version(path)
                say(f"verifying {name} {version} in a clean environment before the upload "
                    f"(dependencies through {resolution.describe()})")  # fmt: skip
                verified[path] = verify_wheel(path, name, version, resolution)

    published = []
    for path in files:
        # The digests `build` recorded while writing the wheel, if it is still that file:
        # then twine does not read it to hash it (see modelpack.wheel_digests).
        record = read_record(path)
        try:
            hashed, warned = _upload(registry, credentials, path, record)
        except AuthenticationError:
            found = None if credentials else keyring_credentials(registry)
            if found is None:
                raise
            # The registry reads anonymously but wants credentials for an upload (only
            # the first file can get here): check every file again with the keyring's,
            # which may see files an anonymous listing does not, then upload.
            index = _checked_index(registry, found, files)
            credentials = found
            hashed, warned = _upload(registry, credentials, path, record)
        # The sha256 to confirm against the registry's listing: the one twine sent (no
        # further read of the file), else our own.
        digest = hashed.sha256.get(str(path)) or _sha256(path)
        name, version = name_version(path)
        listed = {f.filename: f for f in index.project_files(name)}
        got = listed.get(path.name)
        if got is None:
            raise UploadError(
                f"the registry accepted {path.name} but does not list it; check the "
                f"registry's log, then publish again"
            )
        if got.sha256 is not None and got.sha256 != digest and record is not None:
            # A registry that does not check the announced sha256 took the file as it is
            # now; the record was wrong, not the upload, if the file is what it lists.
            drop_record(path)
            digest = _sha256(path)
        if got.sha256 is not None and got.sha256 != digest:
            raise UploadError(
                f"the registry lists {path.name} with sha256 {got.sha256}, but the file sent "
                f"has {digest}; do not use this version: yank it with "
                f"`modelpack yank {name}=={version} --reason 'corrupt upload'`"
            )
        published.append(Published(path, name, version, digest, got.url, registry,
                                   verified.get(path), warnings=tuple(warned),
                                   from_record=str(path) in hashed.recorded))  # fmt: skip
    if verify:
        from modelpack.verify import verify_published

        for i, item in enumerate(published):
            if item.path.name.endswith(".whl"):
                say(f"checking {item.name} {item.version} as the registry serves it")
                checked = verify_published(item.path, item.name, item.version, item.url,
                                           item.sha256, resolution)  # fmt: skip
                published[i] = replace(item, checked=checked)
    return published


def _checked_index(
    registry: str, credentials: Credentials | None, files: Sequence[Path]
) -> IndexClient:
    """A client of *registry*'s index, once it has shown that no file's version is
    published there; checked for every file before any upload, so that a refused
    version uploads nothing. Without *credentials*, a registry that wants them is asked
    again with the keyring's, if it has some.

    :raises VersionExistsError: a version is already in the registry.
    :raises AuthenticationError: the registry wants credentials and none work.
    """
    index = IndexClient(registry, credentials)
    try:
        _refuse_published(index, files)
    except AuthenticationError:
        found = None if credentials else keyring_credentials(registry)
        if found is None:
            raise
        index = IndexClient(registry, found)
        _refuse_published(index, files)
    return index


def _refuse_published(index: IndexClient, files: Sequence[Path]) -> None:
    for path in files:
        name, version = name_version(path)
        existing = index.project_files(name)
        same_version = [
            f.filename for f in existing if name_version(Path(f.filename))[1] == version
        ]
        if same_version:
            raise VersionExistsError(
                f"{name} {version} is already published in {redact(index.registry)} "
                f"({', '.join(same_version)}); published versions are immutable: "
                "bump [project] version in pyproject.toml, build and publish again"
            )


def _upload(
    registry: str, credentials: Credentials | None, path: Path, record: WheelDigests | None
) -> tuple[Hashed, list[str]]:
    """Upload *path* with twine, handing it the digests *record*ed at build time if any;
    return what twine sent (:class:`Hashed`) and the registry's warnings.

    :raises UploadError: the upload failed; "rebuild" when the record is wrong.
    """
    known = {str(path): record} if record is not None else {}
    with fast_hashes(known) as hashed, upload_warnings() as warned:
        try:
            _twine_upload(registry, credentials, path)
        except UploadError:
            if record is not None and _sha256(path) != record.sha256:
                raise _changed_since_built(path) from None
            raise
    return hashed, warned


def _refuse_unsafe_weights(info: WheelInfo, subdir: str) -> None:
    """:raises CheckError: the pickle check of ``modelpack check`` fails on the wheel's weights."""
    from modelpack.checks import check_wheel_weights

    errors = [p for p in check_wheel_weights(info, subdir) if p.severity == "error"]
    if errors:
        lines = "\n".join(f"  {p.where}: {p.message}" for p in errors)
        raise CheckError(
            f"{info.filename} fails {len(errors)} check(s); nothing was uploaded:\n{lines}"
        )


def _twine_upload(registry: str, credentials: Credentials | None, path: Path) -> None:
    upload = twine_upload()  # first: without keyring, which twine is never left to ask
    import requests
    from twine import exceptions as twine_exceptions

    _Settings = big_block_settings()

    # twine insists on a username and password; an anonymous (loopback) registry
    # ignores them, a protected one answers 401/403, which we report below.
    username, password = (
        (credentials.username, credentials.password) if credentials else ("anonymous", "anonymous")
    )
    settings = _Settings(
        repository_url=registry + "/",
        username=username,
        password=password,
        non_interactive=True,
        disable_progress_bar=not sys.stderr.isatty(),  # a bar for people, none in logs
    )
    # twine's own "Retry with the --verbose option" names a flag modelpack does not have;
    # the error below says what the registry answered.
    logging.getLogger("twine.utils").setLevel(logging.ERROR)
    try:
        upload(settings, [str(path)])
    except requests.HTTPError as exc:
        resp = exc.response
        status = resp.status_code if resp is not None else 0
        detail = _server_message(resp)
        if status in (401, 403) and not credentials:
            raise AuthenticationError(
                f"the registry at {redact(registry)} needs credentials to upload {path.name}: "
                f"{missing_credentials(registry)}"
            ) from exc
        if status in (401, 403):
            hint = (
                "check MODELPACK_USERNAME and MODELPACK_PASSWORD"
                if status == 401
                else "check MODELPACK_USERNAME and MODELPACK_PASSWORD, or ask an owner of "
                "the model for access"
            )
            raise AuthenticationError(
                f"the registry at {redact(registry)} refused the upload of {path.name} "
                f"(HTTP {status}{': ' + detail if detail else ''}); {hint}"
            ) from exc
        if status == 409:
            raise VersionExistsError(
                f"{path.name} is already in the registry; published versions are immutable: "
                "bump the version and publish again"
            ) from exc
        raise UploadError(
            f"the registry refused {path.name} (HTTP {status}{': ' + detail if detail else ''})"
        ) from exc
    except requests.ConnectionError as exc:
        raise RegistryUnreachableError(
            f"lost the connection to {redact(registry)} while uploading {path.name}; "
            "nothing was published, run `modelpack publish` again"
        ) from exc
    except twine_exceptions.TwineException as exc:
        raise UploadError(f"twine could not upload {path.name}: {exc}") from exc


def _server_message(resp: object) -> str:
    text = getattr(resp, "text", "") or ""
    reason = getattr(resp, "reason", "") or ""
    first = text.strip().splitlines()[0] if text.strip() else ""
    if first.startswith("<"):  # an HTML error page: the reason line says more
        first = ""
    msg = first or reason
    return msg[:300]
