"""The model card's round trip: build, upload, API, pages, `show`, `list --json`, `diff`,
and the catalog's filters and sort by a metric. A real registry process, real builds of
template projects in a real git repository, real twine uploads."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from modelpack.scaffold import new_project
from support import Registry, modelpack, ok

AUC = {"1.0.0": 0.81, "1.1.0": 0.86, "1.2.0": 0.84}


def git(cwd: Path, *args: str) -> str:
    cfg = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *cfg, *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def make_version(project: Path, version: str, auc: float, tags: str = "[]") -> Path:
    """Set the version and metrics.json (as train.py would), commit, build."""
    pyproject = project / "pyproject.toml"
    text = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text())
    pyproject.write_text(re.sub(r"(?m)^tags = .*$", f"tags = {tags}", text))
    card = {"metrics": {"auc": {"value": auc, "better": "higher"},
                        "log_loss": {"value": round(1 - auc, 4), "better": "lower"}},
            "dataset": {"name": "churn", "version": f"2026-{version}"}}  # fmt: skip
    (project / "metrics.json").write_text(json.dumps(card))
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", version)
    return Path(ok(modelpack("build", project)))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cards")
    project = new_project("model-met", root)
    (project / ".gitignore").write_text("dist/\n")
    git(project, "init", "-q")
    wheels, commits = {}, {}
    for version, auc in AUC.items():
        tags = "[]"
        if version == "1.2.0":  # a new weight file and a new tag
            (project / "src" / "model_met" / "weights" / "extra.bin").write_bytes(b"x" * 100)
            tags = '["churn"]'
        wheels[version] = make_version(project, version, auc, tags)
        commits[version] = git(project, "rev-parse", "HEAD")
    other = new_project("model-other", root)
    text = (
        (other / "pyproject.toml").read_text().replace('framework = "python"', 'framework = "onnx"')
    )
    (other / "pyproject.toml").write_text(text.replace("tags = []", 'tags = ["vision"]'))
    (other / "metrics.json").write_text(
        json.dumps({"metrics": {"auc": {"value": 0.9, "better": "higher"}}})
    )
    wheels["other"] = Path(ok(modelpack("build", other)))
    third = new_project("model-none", root)  # no metrics at all
    (third / "metrics.json").unlink()
    wheels["none"] = Path(ok(modelpack("build", third)))
    return {"wheels": wheels, "commits": commits}


@pytest.fixture(scope="module")
def reg(built: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("reg") / "data") as registry:
        for wheel in built["wheels"].values():
            ok(modelpack("publish", wheel, "--registry", registry.url))
        yield registry


def test_metadata_round_trip_api_show_list(reg: Registry, built: dict[str, Any]) -> None:
    detail = requests.get(f"{reg.url}/api/v1/models/model-met").json()
    assert [v["metrics"]["auc"]["value"] for v in detail["versions"]] == list(AUC.values())
    assert detail["metrics"]["log_loss"] == {"value": 0.16, "better": "lower"}
    assert detail["dataset"] == {"name": "churn", "version": "2026-1.2.0"}
    assert detail["lineage"]["commit"] == built["commits"]["1.2.0"]
    assert detail["lineage"]["dirty"] is False
    assert detail["framework"] == "python" and detail["tags"] == ["churn"]
    assert [v["lineage"]["commit"] for v in detail["versions"]] == list(built["commits"].values())
    # the wheel alone carries the same: the registry extracted it at upload
    assert detail["versions"][0]["manifest"]["metrics"]["auc"]["value"] == 0.81

    listed = json.loads(ok(modelpack("list", "--json", "--registry", reg.url)))["models"]
    met = next(m for m in listed if m["name"] == "model-met")
    assert met["metrics"] == detail["metrics"] and met["dataset"] == detail["dataset"]
    assert met["lineage"]["commit"] == built["commits"]["1.2.0"]
    shown = ok(modelpack("show", "model-met", "--registry", reg.url))
    assert "metrics: auc=0.84 (higher is better), log_loss=0.16 (lower is better)" in shown
    assert "dataset: churn 2026-1.2.0" in shown
    assert f"commit: {built['commits']['1.2.0'][:12]}  framework: python" in shown


def test_model_page_shows_metrics_side_by_side_and_a_chart(
    reg: Registry, built: dict[str, Any]
) -> None:
    page = requests.get(f"{reg.url}/models/model-met/")
    assert page.status_code == 200 and "script" not in page.headers["Content-Security-Policy"]
    html = page.text
    table = html.split('<table id="metrics">', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'<th scope="col">([^<]+)</th>', table) == ["1.2.0", "1.1.0", "1.0.0"]
    auc_row = table.split('data-metric="auc"', 1)[1].split("</tr>", 1)[0]
    assert re.findall(r"<td[^>]*>([0-9.]+)</td>", auc_row) == ["0.84", "0.86", "0.81"]
    assert "<td class=best>0.86</td>" in auc_row  # higher is better
    loss_row = table.split('data-metric="log_loss"', 1)[1].split("</tr>", 1)[0]
    assert "<td class=best>0.14</td>" in loss_row  # lower is better
    assert built["commits"]["1.0.0"][:12] in table and "churn 2026-1.1.0" in table
    assert html.count('<svg class="metric-chart"') == 2  # auc and log_loss, 3 versions each
    assert "auc over 3 versions (higher is better): 1.0.0 0.81, 1.1.0 0.86, 1.2.0 0.84" in html
    assert '<table id="lineage">' in html and built["commits"]["1.2.0"][:12] in html
    # fewer than three versions: a table, no chart; no metrics at all: no section
    assert "<svg" not in requests.get(f"{reg.url}/models/model-other/").text
    assert 'id="metrics"' not in requests.get(f"{reg.url}/models/model-none/").text


def names(doc: dict[str, Any]) -> list[str]:
    return [m["name"] for m in doc["models"]]


def test_catalog_filters_and_sorts_by_a_metric(reg: Registry) -> None:
    api = f"{reg.url}/api/v1/models"
    assert names(requests.get(api, params={"sort": "metric:auc"}).json()) == [
        "model-other", "model-met", "model-none"]  # 0.9, 0.84, then no auc  # fmt: skip
    # lower is better for log_loss: model-met has it, the others come after, by name
    assert names(requests.get(api, params={"sort": "metric:log_loss"}).json())[0] == "model-met"
    assert names(requests.get(api, params={"framework": "ONNX"}).json()) == ["model-other"]
    assert names(requests.get(api, params={"tag": "churn"}).json()) == ["model-met"]
    assert names(requests.get(api, params={"task": "regression", "tag": "vision"}).json()) == [
        "model-other"
    ]
    bad = requests.get(api, params={"sort": "auc"})
    assert bad.status_code == 400 and "sort=metric:<name>" in bad.json()["error"]

    page = requests.get(f"{reg.url}/", params={"sort": "metric:auc"}).text
    rows = re.findall(r'<tr class="model" data-name="([^"]+)"', page)
    assert rows == ["model-other", "model-met", "model-none"]
    assert "<th>auc</th>" in page and '<option value="metric:auc" selected>' in page
    page = requests.get(f"{reg.url}/", params={"framework": "onnx"}).text
    assert re.findall(r'data-name="([^"]+)"', page) == ["model-other"]
    assert "1 of 3 models match the filters" in page
    assert "is not understood" in requests.get(f"{reg.url}/", params={"sort": "x"}).text


def test_diff_between_versions(reg: Registry, built: dict[str, Any]) -> None:
    out = ok(modelpack("diff", "model-met==1.0.0", "model-met==1.2.0", "--registry", reg.url))
    assert out.startswith("--- model-met==1.0.0\n+++ model-met==1.2.0\nmetrics:\n")
    assert "  ~ auc 0.81 -> 0.84 (+0.03, better; higher is better)" in out
    assert "  ~ log_loss 0.19 -> 0.16 (-0.03, better; lower is better)" in out
    assert "weights:\n  + model_met/weights/extra.bin (100 bytes, sha256 " in out
    assert f"  ~ commit: {built['commits']['1.0.0']} -> {built['commits']['1.2.0']}" in out
    assert "  ~ dataset: churn 2026-1.0.0 -> churn 2026-1.2.0" in out
    assert '  ~ tags: [] -> ["churn"]' in out
    assert "dependencies:\n  (unchanged)" in out
    worse = ok(modelpack("diff", "model-met==1.1.0", "model-met==1.2.0", "--registry", reg.url))
    assert "  ~ auc 0.86 -> 0.84 (-0.02, worse; higher is better)" in worse
    # local wheels: the same facts, read from the files alone
    wheels = built["wheels"]
    local = ok(modelpack("diff", wheels["1.0.0"], wheels["1.2.0"]))
    assert local.split("\n", 2)[2] == out.split("\n", 2)[2]
    missing = modelpack("diff", "model-met==1.0.0", "model-met==9.0", "--registry", reg.url)
    assert missing.returncode == 1 and "has no version 9.0" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_diff_against_a_plain_index_reads_the_wheels(
    plain_index: str, built: dict[str, Any]
) -> None:
    for version in ("1.0.0", "1.1.0"):
        ok(modelpack("publish", built["wheels"][version], "--registry", plain_index))
    out = ok(modelpack("diff", "model-met==1.0.0", "model-met==1.1.0", "--registry", plain_index))
    assert "  ~ auc 0.81 -> 0.86 (+0.05, better; higher is better)" in out
    assert f"  ~ commit: {built['commits']['1.0.0']} -> {built['commits']['1.1.0']}" in out


def test_a_manifest_with_many_metrics_keeps_the_page_small(
    registry: Registry, tmp_path: Path
) -> None:
    from test_registry_catalog import model_wheel, upload

    for i, version in enumerate(("1.0", "1.1", "1.2")):
        metrics = {f"m{k:02d}": {"value": k + i, "better": "higher"} for k in range(60)}
        metrics["bad"] = {"value": "NaN", "better": "higher"}  # not a number: left out
        upload(registry, model_wheel(tmp_path, "model-wide", version, card={"metrics": metrics}))
    html = requests.get(f"{registry.url}/models/model-wide/").text
    table = html.split('<table id="metrics">', 1)[1].split("</table>", 1)[0]
    assert table.count('class="metric"') == 50 and 'data-metric="bad"' not in table
    assert "10 more metrics are in the manifest." in html
    assert html.count('<svg class="metric-chart"') == 6
    listed = requests.get(f"{registry.url}/api/v1/models").json()["models"][0]
    assert len(listed["metrics"]) == 60 and "bad" not in listed["metrics"]
