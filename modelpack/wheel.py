"""Inspect a built wheel: is it a model wheel, and what does it carry?

Read-only and streaming: a multi-GB wheel is never read into memory (only the zip
central directory and the small ``.dist-info`` files are).
"""

from __future__ import annotations

import configparser
import email.parser
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from modelpack.errors import BuildError, MissingWeightsError
from modelpack.models import ENTRY_POINT_GROUP

__all__ = ["WheelInfo", "inspect_wheel", "weights_subdir"]


@dataclass(frozen=True)
class WheelInfo:
    path: Path
    name: str
    """Core metadata ``Name``."""
    version: str
    requires_dist: tuple[str, ...]
    entry_points: dict[str, str]
    """The ``modelpack.models`` entry points: name -> ``module:function``."""
    weights: tuple[str, ...]
    """Archive paths of the weight files."""
    top_level: tuple[str, ...]
    """Top-level import names in the wheel (packages and modules)."""

    @property
    def filename(self) -> str:
        return self.path.name


def weights_subdir(path: Path) -> str:
    """The weights folder (relative to the package) that a wheel built by modelpack
    records in its ``modelpack.json``; ``weights`` for any other wheel."""
    import json

    try:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith(".dist-info/modelpack.json")), None)
            manifest = json.loads(zf.read(name)) if name else {}
    except (OSError, zipfile.BadZipFile, ValueError):
        return "weights"
    folder = manifest.get("weights_dir") if isinstance(manifest, dict) else None
    return folder if isinstance(folder, str) and folder else "weights"


def inspect_wheel(path: Path | str, weights_subdir: str = "weights") -> WheelInfo:
    """Check that *path* is a model wheel and describe it.

    :raises BuildError: not a valid wheel, metadata disagreeing with the filename, or
        no ``modelpack.models`` entry point.
    :raises MissingWeightsError: the wheel carries no file under ``<package>/weights/``.
    """
    path = Path(path)
    try:
        fname_name, fname_version, _, _ = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise BuildError(f"{path.name} is not a wheel file name ({exc})") from exc
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BuildError(f"{path} is not a readable wheel ({exc}); rebuild it") from exc
    with zf:
        names = zf.namelist()
        dist_infos = {
            n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")
        }
        if len(dist_infos) != 1:
            raise BuildError(f"{path.name} has {len(dist_infos)} .dist-info folders, expected 1")
        info = dist_infos.pop()
        meta = email.parser.BytesParser().parsebytes(zf.read(f"{info}/METADATA"), headersonly=True)
        ep_text = (
            zf.read(f"{info}/entry_points.txt").decode()
            if f"{info}/entry_points.txt" in names
            else ""
        )
        top_level = sorted(
            {
                n.split("/", 1)[0].removesuffix(".py")
                for n in names
                if not n.split("/", 1)[0].endswith((".dist-info", ".data"))
            }
        )

    name, version = str(meta["Name"] or ""), str(meta["Version"] or "")
    if canonicalize_name(name) != fname_name or str(fname_version) != version:
        raise BuildError(
            f"{path.name}: METADATA says {name} {version}, which does not match the file name"
        )
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(ep_text)
    eps = dict(parser.items(ENTRY_POINT_GROUP)) if parser.has_section(ENTRY_POINT_GROUP) else {}
    if not eps:
        raise BuildError(
            f"{path.name} declares no [{ENTRY_POINT_GROUP}] entry point, so it cannot be "
            f'loaded by name; add [project.entry-points."{ENTRY_POINT_GROUP}"] '
            f'{canonicalize_name(name)} = "<package>:load" to pyproject.toml'
        )
    packages = {v.split(":", 1)[0].strip().split(".", 1)[0] for v in eps.values()}
    prefixes = tuple(f"{pkg}/{weights_subdir.strip('/')}/" for pkg in packages)
    weights = tuple(
        n for n in names
        if n.startswith(prefixes) and not n.endswith("/")
        and n.rsplit("/", 1)[-1] not in ("__init__.py", ".gitkeep")
    )  # fmt: skip
    if not weights:
        raise MissingWeightsError(
            f"{path.name} carries no weights (nothing under {', '.join(prefixes)}); "
            "check that the weights folder is not excluded by .gitignore or the build config"
        )
    return WheelInfo(
        path=path,
        name=name,
        version=version,
        requires_dist=tuple(meta.get_all("Requires-Dist") or ()),
        entry_points=eps,
        weights=weights,
        top_level=tuple(top_level),
    )
