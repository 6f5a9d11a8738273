"""``modelpack build``: a PEP 517 build of the model project, weights added stored,
then a check of the wheel.

The wheel is built by ``python -m build`` (pypa/build, isolated by default) into a
scratch folder inside ``dist/``; only a wheel that passes :func:`inspect_wheel` is moved
into ``dist/``, so a failed build never leaves a wheel that looks publishable.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from packaging.utils import canonicalize_name

from modelpack.assemble import HashAhead, add_stored_files, stage_project
from modelpack.build_signature import SignatureProbe
from modelpack.checks import Problem, check_project, check_wheel
from modelpack.digests import DigestCache
from modelpack.errors import BuildError, CheckError
from modelpack.project import Project, load_project, weight_files
from modelpack.wheel import WheelInfo, inspect_wheel
from modelpack.wheel_digests import drop_record, write_record

__all__ = ["BuildResult", "build_project", "raise_for_errors", "uv_bin"]


def uv_bin() -> Path | None:
    """The uv executable (from the ``uv`` package, else PATH), or None."""
    try:
        from uv import find_uv_bin

        return Path(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        return Path(found) if found else None


class BuildResult(NamedTuple):
    project: Project
    wheel: WheelInfo
    warnings: list[Problem]


def build_project(
    path: Path | str = ".", *, isolation: bool = True, cache: bool = True
) -> BuildResult:
    """Check the model project at *path*, build it into ``dist/``, and check the wheel.

    The backend builds from a staged copy without the weights; the weights are then
    added uncompressed with the manifest (see :mod:`modelpack.assemble`); they are hashed
    while the backend runs. The wheel's own digests, computed as it is written, are
    recorded beside it for ``publish`` (see :mod:`modelpack.wheel_digests`). With *cache*, weight files unchanged since an earlier build
    are not hashed again (see :mod:`modelpack.digests`).

    :raises ProjectError: *path* is not a model project.
    :raises CheckError: ``modelpack check`` finds errors (all are in the message).
    :raises BuildError: the build backend failed, or the wheel is not a valid model.
    """
    project = load_project(path)
    problems = check_project(project)
    raise_for_errors(project, problems)
    weights = weight_files(project)
    assert project.weights_dir is not None  # weight_files found it
    project.dist_dir.mkdir(exist_ok=True)
    digests = DigestCache(persist=cache)
    hashed = HashAhead(weights, digests)  # beside the backend, which runs in a subprocess
    signature = SignatureProbe(project)  # predict(input_example), also beside the backend
    try:
        return _build(project, weights, problems, digests, hashed, isolation, signature)
    finally:
        hashed.cancel()  # a no-op once done; a failed build does not wait for it
        signature.cancel()


def _build(
    project: Project, weights: list[Path], problems: list[Problem], digests: DigestCache,
    hashed: HashAhead, isolation: bool, signature: SignatureProbe,
) -> BuildResult:  # fmt: skip
    assert project.weights_dir is not None
    with tempfile.TemporaryDirectory(prefix=".build-", dir=project.dist_dir) as tmp:
        scratch = Path(tmp)
        stage_project(project.root, project.weights_dir, scratch / "src")
        built = _run_backend(project, scratch / "src", scratch / "backend", isolation)
        prefix = f"{project.package}/{project.weights_subdir}/"
        arcnames = [(f, prefix + f.relative_to(project.weights_dir).as_posix()) for f in weights]
        assembled = scratch / built.name
        version = built.name.split("-")[1]
        wheel_digests = add_stored_files(
            built, arcnames, assembled,
            manifest=_manifest(project, version) | signature.manifest_fields(problems),
            keywords=_keywords(project.config), cache=digests, ahead=hashed, hash_wheel=True,
        )  # fmt: skip
        digests.save()
        info = inspect_wheel(assembled, project.weights_subdir)
        if canonicalize_name(info.name) != project.canonical_name:
            raise BuildError(
                f"the build produced {info.filename}, not a wheel of {project.name}; "
                "check [project] name in pyproject.toml"
            )
        raise_for_errors(project, check_wheel(info, project.package))
        final = project.dist_dir / built.name
        _move_into_dist(assembled, final, scratch / "previous.whl")
        if wheel_digests is not None:  # for publish, which then need not read the wheel
            write_record(final, wheel_digests)
        else:
            drop_record(final)
    warnings = [p for p in problems if p.severity != "error"]
    return BuildResult(project, dataclasses.replace(info, path=final), warnings)


def _move_into_dist(wheel: Path, final: Path, aside: Path) -> None:
    """Move the checked *wheel* to *final*, replacing an earlier build of the same version.

    The earlier wheel is moved *aside* (into the scratch folder, deleted with it) instead
    of being renamed over: on ext4, renaming over an existing file makes the rename start
    the write-back of every block of the new one (``auto_da_alloc``), 0.12 s per 512 MiB
    that a build need not wait for.
    """
    try:
        os.rename(final, aside)
    except FileNotFoundError:
        os.rename(wheel, final)
        return
    try:
        os.rename(wheel, final)
    except OSError:
        os.rename(aside, final)
        raise


def raise_for_errors(project: Project, problems: list[Problem]) -> None:
    """:raises CheckError: when *problems* holds an error; the message lists them all."""
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        lines = "\n".join(f"  {p.where}: {p.message}" for p in errors)
        raise CheckError(f"{project.name} fails {len(errors)} check(s):\n{lines}")


def _manifest(project: Project, version: str) -> dict[str, Any]:
    from modelpack.card import card_fields
    from modelpack.lineage import lineage

    skip = {"registry", "weights", "metrics", "dataset"}
    fields = {k: v for k, v in project.config.items() if k not in skip}
    return {
        "name": project.canonical_name, "version": version, "package": project.package,
        "entry_point": project.entry_point, "manifest_version": 1,
        "weights_dir": project.weights_subdir, **fields,
        **card_fields(project.root, project.config),  # metrics.json merged in (modelpack.card)
        "lineage": lineage(project.root, project.config),
    }  # fmt: skip


def _keywords(config: dict[str, Any]) -> list[str]:
    words = ["modelpack-model"]
    for key in ("task", "framework"):
        if isinstance(config.get(key), str):
            words.append(f"{key}:{config[key]}")
    words += [str(t) for t in config.get("tags", []) if isinstance(t, str)]
    return words


def _run_backend(project: Project, source: Path, outdir: Path, isolation: bool) -> Path:
    cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir)]
    env = dict(os.environ)
    uv = uv_bin() if isolation else None
    if not isolation:
        cmd.append("--no-isolation")
    elif uv is not None:  # uv makes the isolated build environment in a second, not ten
        cmd += ["--installer", "uv"]
        env["PATH"] = f"{uv.parent}{os.pathsep}{env.get('PATH', '')}"
    cmd.append(str(source))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=source)
    wheels = sorted(outdir.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BuildError(
            f"building {project.name} failed (python -m build exited {proc.returncode}); "
            f"fix the error below and build again:\n{tail}"
        )
    return wheels[0]
