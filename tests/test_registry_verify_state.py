"""`modelpack-registry verify` on stages and yanks (`state/stages/`, `state/yanked/`).

The platform team's story: `state/` cannot be rebuilt from `packages/`, so after a
restore (or a hand edit) `verify` must say which stage now points at nothing, which
stages file the server drops, and which yank marker lost its reason, with the fix.
Stages and yanks are made by a real registry through its API, then damaged through the
store (on both backends: a data folder and a bucket, conftest ``storage``); where a line
says what consumers now see, a real server on the same state is asked too.
"""

from __future__ import annotations

import json
from pathlib import Path

import requests
from registry_support import make_wheel, post_upload

from support import Registry, Storage

API = "/api/v1/models"


def published(data: Storage, tmp_path: Path) -> Storage:
    """model-foo 1.0 and 2.0 and model-bar 1.0, model-foo 2.0 in production."""
    with Registry(data) as reg:
        for name, version in (("model-foo", "1.0"), ("model-foo", "2.0"), ("model-bar", "1.0")):
            wheel = make_wheel(tmp_path / "dist", name, version)
            assert post_upload(reg.url, wheel.name, wheel.read_bytes()).status_code == 200
        promoted = requests.put(
            f"{reg.url}{API}/model-foo/stages/production", json={"version": "2.0"}, timeout=10
        )
        assert promoted.status_code == 200, promoted.text
    return data


def verify(data: Storage) -> tuple[int, list[str], str]:
    result = data.cli("verify")
    return result.returncode, result.stdout.splitlines(), result.stderr


def stage_index(reg: Registry, name: str) -> int:
    return requests.get(f"{reg.url}/stages/production/simple/{name}/", timeout=10).status_code


def test_a_stage_that_points_at_a_lost_version_is_an_error(
    storage: Storage, tmp_path: Path
) -> None:
    data = published(storage, tmp_path)
    assert verify(data)[:2] == (0, [f"{data.location}: OK"])

    # a restore that brought back state/ but not the newest file, then `reindex`
    data.delete("packages/model_foo-2.0-py3-none-any.whl")
    assert data.cli("reindex").returncode == 0
    code, out, err = verify(data)
    assert code == 1 and err.strip() == f"1 problem(s) in {data.location}"
    assert out == [
        "missing: state/stages/model-foo.json: stage production of model-foo points at 2.0, "
        "which has no file in packages/, so /stages/production/simple/model-foo/ lists "
        "nothing: restore the files from a backup, or promote another version "
        "(`modelpack promote model-foo==VERSION --stage production`)"
    ]
    with Registry(data) as reg:  # what the line says consumers see
        assert stage_index(reg, "model-foo") == 404
        fixed = requests.put(
            f"{reg.url}{API}/model-foo/stages/production", json={"version": "1.0"}, timeout=10
        )
        assert fixed.status_code == 200 and stage_index(reg, "model-foo") == 200
    assert verify(data)[:2] == (0, [f"{data.location}: OK"])


def test_a_damaged_or_misnamed_stages_file_is_an_error(storage: Storage, tmp_path: Path) -> None:
    data = published(storage, tmp_path)
    stages = "state/stages/model-foo.json"
    good = data.read_text(stages)
    doc = json.loads(good)

    data.write_text(stages, good[: len(good) // 2])  # a copy cut short
    code, out, _ = verify(data)
    assert code == 1
    (line,) = out
    assert line.startswith("corrupt: state/stages/model-foo.json: is truncated")
    assert "/stages/<stage>/simple/model-foo/ may list nothing" in line
    assert "`modelpack promote model-foo==VERSION --stage STAGE`" in line
    with Registry(data) as reg:  # the server drops the file: no production model-foo
        assert stage_index(reg, "model-foo") == 404

    data.write_text(stages, json.dumps({**doc, "stages": {"production": {"ver": "2.0"}}}))
    (line,) = verify(data)[1]
    assert "stage 'production' has no \"version\"" in line
    data.write_text(stages, json.dumps({**doc, "stages": {"Prod!": {"version": "2.0"}}}))
    (line,) = verify(data)[1]
    assert "stage name 'Prod!' is not one a URL can name" in line
    data.write_text(stages, json.dumps({**doc, "history": {}}))
    (line,) = verify(data)[1]
    assert '"history" is not a list (the promotion history is lost)' in line

    data.delete(stages)  # a hand copy, by its display name
    data.write_text("state/stages/Model_Foo.json", good)
    code, out, _ = verify(data)
    assert code == 1
    assert out == [
        "misnamed: state/stages/Model_Foo.json: the registry reads the stages of a model "
        "only from state/stages/<canonical name>.json, so these are never served: rename "
        "it to state/stages/model-foo.json"
    ]
    data.delete("state/stages/Model_Foo.json")
    data.write_text(stages, good)
    assert verify(data)[:2] == (0, [f"{data.location}: OK"])
    if data.path is not None:  # folder only: a killed write's temp file (a bucket has none)
        (data.path / "state/stages/.model-foo.json.1234-abcd.tmp").write_text("{")
        code, out, _ = verify(data)
        assert code == 0 and out[0].startswith("warning: state/stages/.model-foo.json.1234")
        assert out[-1] == f"{data.location}: OK, 1 warning(s)"


def test_yank_markers_and_a_yanked_stage(storage: Storage, tmp_path: Path) -> None:
    data = published(storage, tmp_path)
    with Registry(data) as reg:
        yanked = requests.put(f"{reg.url}{API}/model-foo/versions/2.0/yank",
                              json={"reason": "wrong weights"}, timeout=10)  # fmt: skip
        assert yanked.status_code == 200, yanked.text
    code, out, _ = verify(data)
    assert code == 0
    assert out == [
        "warning: state/stages/model-foo.json: stage production of model-foo points at 2.0, "
        "which is yanked, so pip and uv skip it unless pinned to ==2.0: promote another "
        "version, or un-yank it (`modelpack yank model-foo==2.0 --undo`)",
        f"{data.location}: OK, 1 warning(s)",
    ]

    marker = "state/yanked/model_foo-2.0-py3-none-any.whl.json"
    data.write_text(marker, "")  # emptied by a bad copy
    code, out, _ = verify(data)
    assert code == 1
    (line,) = (x for x in out if x.startswith("corrupt: "))
    assert line == (
        "corrupt: state/yanked/model_foo-2.0-py3-none-any.whl.json: is empty. "
        "model_foo-2.0-py3-none-any.whl stays yanked, but installers see no reason: yank it "
        "again with one (`modelpack yank model-foo==2.0 --reason TEXT`), or restore the "
        "file from a backup"
    )
    data.write_text(marker, json.dumps({"reason": "  ", "by": None, "at": "2026-11-28T00:00:00Z"}))
    (line,) = (x for x in verify(data)[1] if x.startswith("corrupt: "))
    assert 'has no "reason"' in line

    # a marker for a file that is not there: the yank waits for the file
    data.delete(marker)
    data.write_text(
        "state/yanked/model_bar-9.0-py3-none-any.whl.json",
        json.dumps({"reason": "never built", "by": None, "at": "2026-11-28T00:00:00Z"}),
    )
    code, out, _ = verify(data)
    assert code == 0
    assert out == [
        "warning: state/yanked/model_bar-9.0-py3-none-any.whl.json: yanks "
        "model_bar-9.0-py3-none-any.whl, which is not in packages/ (harmless: the file is "
        "yanked again if it comes back). If files were lost in a restore, restore them; "
        "else delete the marker",
        f"{data.location}: OK, 1 warning(s)",
    ]
