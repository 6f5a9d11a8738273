"""``modelpack diff A B``: what changed between two versions of a model.

Each side is ``NAME==VERSION`` in the registry, or a local ``.whl`` file. From
modelpack-registry the facts come from its JSON API (extracted from the wheel at
upload); from a plain index, or a local file, from the wheel itself: its
``modelpack.json`` and ``METADATA`` (a remote wheel is downloaded to a temporary file).
Compared: metrics (with the change and whether it is better), dataset, dependencies
(``Requires-Dist``), weights (path, size, sha256), lineage (commit, dirty tree,
framework, Python, build time) and the descriptive keys (task, framework, license, tags).
"""

from __future__ import annotations

import email.parser
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from modelpack.errors import ModelNotFoundError, UsageError

__all__ = ["Side", "diff_lines", "load_side"]

_DESCRIPTIVE = ("task", "framework", "license", "tags")


@dataclass
class Side:
    label: str  # model-foo==1.1 or the file name
    manifest: dict[str, Any] = field(default_factory=dict)
    requires_dist: list[str] = field(default_factory=list)


def _from_wheel(path: Path, label: str) -> Side:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
            msg = email.parser.BytesParser().parsebytes(zf.read(meta), headersonly=True)
            found = next((n for n in names if n.endswith(".dist-info/modelpack.json")), None)
            manifest = json.loads(zf.read(found)) if found else {}
    except (OSError, zipfile.BadZipFile, StopIteration, ValueError) as exc:
        raise UsageError(
            f"{path} is not a readable wheel ({exc}); give NAME==VERSION or a .whl"
        ) from exc
    return Side(label, manifest if isinstance(manifest, dict) else {},
                [str(r) for r in msg.get_all("Requires-Dist") or []])  # fmt: skip


def load_side(spec: str, registry: str | None) -> Side:
    """One side of the diff: a local wheel, or ``NAME==VERSION`` from the registry.

    :raises UsageError: neither a wheel file nor ``NAME==VERSION``.
    :raises ModelNotFoundError: the registry has no such model or version.
    """
    if spec.endswith(".whl"):
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"{spec}: no such wheel file")
        return _from_wheel(path, path.name)
    from modelpack.registry import _client, parse_spec, show

    name, version = parse_spec(spec)
    label = f"{name}=={version}"
    model = show(name, registry)
    entry = next((v for v in model.get("versions", []) if v["version"] == version), None)
    if entry is None:
        known = ", ".join(v["version"] for v in model.get("versions", []))
        raise ModelNotFoundError(f"{name} has no version {version} in the registry; it has {known}")
    if "manifest" in entry:  # modelpack-registry: the facts it extracted at upload
        return Side(label, entry.get("manifest") or {}, list(entry.get("requires_dist") or []))
    wheel = next((f for f in entry["files"] if f["filename"].endswith(".whl")), None)
    if wheel is None:
        return Side(label)
    client = _client(registry)
    with tempfile.TemporaryDirectory(prefix="modelpack-diff-") as tmp:
        path = Path(tmp) / wheel["filename"]
        with client.session.get(wheel["url"], stream=True, timeout=client.timeout) as resp:
            resp.raise_for_status()
            with path.open("wb") as out:
                for chunk in resp.iter_content(1 << 20):
                    out.write(chunk)
        return _from_wheel(path, label)


def _metrics(manifest: dict[str, Any]) -> dict[str, tuple[float, str]]:
    raw = manifest.get("metrics")
    out: dict[str, tuple[float, str]] = {}
    for name, entry in raw.items() if isinstance(raw, dict) else ():
        value, better = (entry.get("value"), entry.get("better", "higher")) if isinstance(
            entry, dict) else (entry, "higher")  # fmt: skip
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(name)] = (float(value), str(better))
    return out


def _deps(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        try:
            out[canonicalize_name(Requirement(line).name)] = line
        except InvalidRequirement:
            out[line] = line
    return out


def _weights(manifest: dict[str, Any]) -> dict[str, tuple[int, str]]:
    raw = manifest.get("weights")
    return {
        str(w.get("path")): (int(w.get("size") or 0), str(w.get("sha256") or ""))
        for w in (raw if isinstance(raw, list) else [])
        if isinstance(w, dict)
    }


def _lineage(manifest: dict[str, Any]) -> dict[str, str]:
    raw = manifest.get("lineage")
    lin = raw if isinstance(raw, dict) else {}
    fw = lin.get("framework") if isinstance(lin.get("framework"), dict) else {}
    out = {
        "commit": str(lin.get("commit") or "-") + (" (dirty)" if lin.get("dirty") else ""),
        "framework": f"{fw.get('name', '-')} {fw.get('version', '')}".strip() if fw else "-",
        "python": str(lin.get("python") or "-"),
        "build_time": str(lin.get("build_time") or "-"),
    }
    dataset = manifest.get("dataset")
    if isinstance(dataset, dict):
        out["dataset"] = " ".join(
            str(dataset[k]) for k in ("name", "version", "url") if k in dataset
        )
    else:
        out["dataset"] = "-"
    return out


def _num(value: float) -> str:
    return f"{value:.6g}"


def diff_lines(old: Side, new: Side) -> list[str]:
    """What changed from *old* to *new*, one section per kind; unchanged kinds say so."""
    lines = [f"--- {old.label}", f"+++ {new.label}"]
    a_m, b_m = _metrics(old.manifest), _metrics(new.manifest)
    section: list[str] = []
    for name in sorted(set(a_m) | set(b_m)):
        if name not in b_m:
            section.append(f"  - {name} {_num(a_m[name][0])} (gone)")
        elif name not in a_m:
            section.append(f"  + {name} {_num(b_m[name][0])} (new)")
        elif a_m[name][0] != b_m[name][0]:
            (a, _), (b, better) = a_m[name], b_m[name]
            verdict = "better" if (b > a) == (better == "higher") else "worse"
            section.append(f"  ~ {name} {_num(a)} -> {_num(b)} ({b - a:+.4g}, {verdict}; "
                           f"{better} is better)")  # fmt: skip
    lines += ["metrics:", *(section or ["  (unchanged)"])]

    a_d, b_d = _deps(old.requires_dist), _deps(new.requires_dist)
    section = [f"  - {a_d[k]}" for k in sorted(set(a_d) - set(b_d))]
    section += [f"  + {b_d[k]}" for k in sorted(set(b_d) - set(a_d))]
    section += [
        f"  ~ {a_d[k]} -> {b_d[k]}" for k in sorted(set(a_d) & set(b_d)) if a_d[k] != b_d[k]
    ]
    lines += ["dependencies:", *(section or ["  (unchanged)"])]

    a_w, b_w = _weights(old.manifest), _weights(new.manifest)
    section = [f"  - {p}" for p in sorted(set(a_w) - set(b_w))]
    section += [
        f"  + {p} ({b_w[p][0]} bytes, sha256 {b_w[p][1][:12]})" for p in sorted(set(b_w) - set(a_w))
    ]
    section += [
        f"  ~ {p}: sha256 {a_w[p][1][:12]} -> {b_w[p][1][:12]}, {a_w[p][0]} -> {b_w[p][0]} bytes"
        for p in sorted(set(a_w) & set(b_w)) if a_w[p] != b_w[p]
    ]  # fmt: skip
    lines += ["weights:", *(section or ["  (unchanged)"])]

    a_l, b_l = _lineage(old.manifest), _lineage(new.manifest)
    for key in _DESCRIPTIVE:
        a_l[key], b_l[key] = (json.dumps(s.manifest.get(key)) for s in (old, new))
    section = [f"  ~ {k}: {a_l[k]} -> {b_l[k]}" for k in a_l if a_l[k] != b_l[k]]
    lines += ["lineage:", *(section or ["  (unchanged)"])]
    return lines
