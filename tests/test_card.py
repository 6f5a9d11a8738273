"""Model card metadata: metrics, dataset and lineage, from the project into the wheel.

Real projects (the template), real builds, a real git repository; the manifest is read
back from the wheel with nothing but ``zipfile``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from modelpack.scaffold import new_project
from support import modelpack, ok


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return new_project("model-card", tmp_path)


def manifest_of(wheel: Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/modelpack.json"))
        data: dict[str, Any] = json.loads(zf.read(name))
        return data


def set_modelpack(project: Path, *lines: str) -> None:
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(
        text.replace("[tool.modelpack]", "[tool.modelpack]\n" + "\n".join(lines), 1)
    )


def git(project: Path, *args: str) -> str:
    env_args = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *env_args, *args], cwd=project, check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip


def test_template_writes_metrics_json_and_build_carries_card_and_lineage(project: Path) -> None:
    card = json.loads((project / "metrics.json").read_text())  # written by train.py (hook)
    assert set(card["metrics"]) == {"rmse", "rmse_held_out"}
    assert card["metrics"]["rmse"]["better"] == "lower" and card["metrics"]["rmse"]["value"] < 0.2
    git(project, "init", "-q")
    git(project, "add", "pyproject.toml", "src", "train.py")
    git(project, "commit", "-q", "-m", "first")
    commit = git(project, "rev-parse", "HEAD")

    wheel = Path(ok(modelpack("build", project)))
    manifest = manifest_of(wheel)
    assert manifest["metrics"] == card["metrics"]
    assert manifest["dataset"] == {"name": "synthetic-linear", "version": "seed-0-n200"}
    lineage = manifest["lineage"]
    assert (lineage["vcs"], lineage["commit"], lineage["dirty"]) == ("git", commit, False)
    assert lineage["framework"] == {"name": "python", "version": platform.python_version()}
    assert lineage["build_time"].endswith("Z") and len(lineage["build_time"]) == 20
    # the weights' sha256 are those of the files (computed once, while copied)
    weights = project / "src" / "model_card" / "weights" / "model.pkl"
    assert manifest["weights"] == [{"path": "model_card/weights/model.pkl", "size": weights.stat().st_size,
                                    "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}]  # fmt: skip

    # a change to a tracked file makes the tree dirty; untracked files (metrics.json) do not
    (project / "train.py").write_text((project / "train.py").read_text() + "\n# tweak\n")
    assert manifest_of(Path(ok(modelpack("build", project))))["lineage"]["dirty"] is True


def test_outside_git_there_is_no_commit_and_source_date_epoch_fixes_the_time(
    project: Path,
) -> None:
    import os

    env = {
        **os.environ,
        "SOURCE_DATE_EPOCH": "1700000000",
        "GIT_CEILING_DIRECTORIES": str(project.parent),
    }
    lineage = manifest_of(Path(ok(modelpack("build", project, env=env))))["lineage"]
    assert "commit" not in lineage and "vcs" not in lineage and "dirty" not in lineage
    assert lineage["build_time"] == "2023-11-14T22:13:20Z"


def test_metrics_json_overrides_pyproject_per_metric(project: Path) -> None:
    set_modelpack(project, 'metrics = { rmse = { value = 9.0, better = "lower" }, latency_ms = 3 }',
                  'dataset = { name = "hand-written", url = "https://example.com/d.csv" }')  # fmt: skip
    checked = modelpack("check", project)
    assert checked.returncode == 0, checked.stderr
    assert "[tool.modelpack] metrics.rmse: metrics.json overrides it (9.0 -> " in checked.stderr
    manifest = manifest_of(Path(ok(modelpack("build", project))))
    assert manifest["metrics"]["latency_ms"] == {"value": 3.0, "better": "higher"}  # kept
    assert manifest["metrics"]["rmse"]["value"] < 1  # from metrics.json
    assert manifest["dataset"]["name"] == "synthetic-linear"  # metrics.json's wins
    (project / "metrics.json").unlink()
    manifest = manifest_of(Path(ok(modelpack("build", project))))
    assert manifest["metrics"]["rmse"] == {"value": 9.0, "better": "lower"}
    assert manifest["dataset"] == {"name": "hand-written", "url": "https://example.com/d.csv"}


@pytest.mark.parametrize(
    ("line", "needle"),
    [('metrics = { auc = "0.9" }', '[tool.modelpack] metrics.auc: must be a number or a table'),
     ('metrics = { auc = { value = "high" } }', "[tool.modelpack] metrics.auc.value: must be a finite number"),
     ('metrics = { auc = { value = 0.9, better = "more" } }',
      '[tool.modelpack] metrics.auc.better: must be "higher" or "lower", got "more"'),
     ('metrics = [0.9]', "[tool.modelpack] metrics: must be a table of metrics"),
     ('dataset = "iris"', "[tool.modelpack] dataset: must be a table"),
     ('dataset = { version = "1" }', "[tool.modelpack] dataset.name: is required"),
     ('dataset = { name = "iris", url = "ftp://x" }', "[tool.modelpack] dataset.url: must be an http(s)://"),
     ('dataset = { name = "iris", rows = 3 }', "[tool.modelpack] dataset.rows: unknown key")],
)  # fmt: skip
def test_bad_metrics_or_dataset_fail_check_naming_the_key(
    project: Path, line: str, needle: str
) -> None:
    (project / "metrics.json").unlink()
    set_modelpack(project, line)
    for command in ("check", "build"):
        result = modelpack(command, project)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert needle in result.stderr, result.stderr
    assert not list((project / "dist").glob("*.whl"))


@pytest.mark.parametrize(
    ("content", "needle"),
    [('{"metrics": {"auc": {"value": null, "better": "higher"}}}', "metrics.json metrics.auc.value: must be a finite number, got null"),
     ('{"metrics": {"auc": {"value": 0.9, "better": "up"}}}', 'metrics.json metrics.auc.better: must be "higher" or "lower"'),
     ('{"dataset": {"name": 3}}', "metrics.json dataset.name: is required"),
     ('{"metrics": {}, "extra": 1}', "metrics.json extra: unknown key"),
     ("{not json", "metrics.json: is not valid JSON")],
)  # fmt: skip
def test_bad_metrics_json_fails_check_naming_the_key(
    project: Path, content: str, needle: str
) -> None:
    (project / "metrics.json").write_text(content)
    result = modelpack("check", project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert needle in result.stderr, result.stderr


def test_metrics_older_than_the_weights_are_a_warning(project: Path) -> None:
    import os

    weights = project / "src" / "model_card" / "weights" / "model.pkl"
    old = weights.stat().st_mtime - 3600
    os.utime(project / "metrics.json", (old, old))
    checked = modelpack("check", project)
    assert checked.returncode == 0, checked.stderr
    assert "warning: metrics.json: is older than src/model_card/weights/model.pkl" in checked.stderr
    ok(modelpack("build", project))  # a warning, not an error
    os.utime(project / "metrics.json")
    assert "is older than" not in modelpack("check", project).stderr


def test_publish_refuses_a_wheel_whose_manifest_has_bad_metrics(project: Path) -> None:
    """A wheel not made by `modelpack build` (here: its manifest edited) is checked too."""
    wheel = Path(ok(modelpack("build", project)))
    edited = wheel.with_name("edited") / wheel.name
    edited.parent.mkdir()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(edited, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".dist-info/modelpack.json"):
                manifest = json.loads(data)
                manifest["metrics"]["rmse"]["better"] = "smaller"
                manifest["dataset"] = {"title": "x"}
                data = json.dumps(manifest).encode()
            dst.writestr(info, data)
    # nothing listens on this port: the check must refuse before any upload is tried
    result = modelpack("publish", edited, "--registry", "http://127.0.0.1:9")
    assert result.returncode == 1 and "nothing was uploaded" in result.stderr, result.stderr
    assert (
        f'{wheel.name}: modelpack.json metrics.rmse.better: must be "higher" or "lower"'
        in result.stderr
    )
    assert f"{wheel.name}: modelpack.json dataset.name: is required" in result.stderr
    assert "Traceback" not in result.stderr
