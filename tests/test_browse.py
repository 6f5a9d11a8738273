"""`modelpack list / show / promote / yank`: against modelpack-registry, and against a
plain index (stock pypiserver) to prove the client is not tied to our server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modelpack.scaffold import new_project
from support import Registry, Venv, modelpack, ok


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """model-cat 0.1.0 and 0.2.0, built once."""
    root = tmp_path_factory.mktemp("cat")
    project = new_project("model-cat", root)
    out = []
    for version in ("0.1.0", "0.2.0"):
        text = (project / "pyproject.toml").read_text()
        text = text.replace('version = "0.1.0"', f'version = "{version}"')
        (project / "pyproject.toml").write_text(text)
        out.append(Path(ok(modelpack("build", project)).strip()))
    return out


def test_plain_index_publish_list_show_install(
    plain_index: str, wheels: list[Path], tmp_path: Path
) -> None:
    for wheel in wheels:
        ok(modelpack("publish", wheel, "--registry", plain_index))
    again = modelpack("publish", wheels[0], "--registry", plain_index)
    assert again.returncode == 1 and "already published" in again.stderr

    table = ok(modelpack("list", "--registry", plain_index))
    assert "model-cat" in table and "0.2.0" in table
    listed = json.loads(ok(modelpack("list", "--json", "--registry", plain_index)))
    assert listed["models"][0]["versions"] == ["0.1.0", "0.2.0"]

    shown = json.loads(ok(modelpack("show", "model_cat", "--json", "--registry", plain_index)))
    assert shown["latest"] == "0.2.0"
    assert [v["version"] for v in shown["versions"]] == ["0.1.0", "0.2.0"]
    text = ok(modelpack("show", "model-cat", "--registry", plain_index))
    assert f"pip install model-cat==0.2.0 --index-url {plain_index}/simple/" in text

    # stages and yank need modelpack-registry: said plainly, nothing changed
    refused = modelpack(
        "promote", "model-cat==0.1.0", "--stage", "production", "--registry", plain_index
    )
    assert refused.returncode == 1 and "has no modelpack API" in refused.stderr

    venv = Venv(tmp_path / "venv", tool="uv")
    venv.install("model-cat", index_url=f"{plain_index}/simple/")
    assert (
        "0.2.0" in venv.run("import importlib.metadata as m; print(m.version('model-cat'))").stdout
    )


def test_unknown_model_and_bad_spec(registry: Registry) -> None:
    missing = modelpack("show", "no-such-model", "--registry", registry.url)
    assert missing.returncode == 1 and "no-such-model" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = modelpack("promote", "model-cat", "--stage", "production", "--registry", registry.url)
    assert bad.returncode == 2 and "NAME==VERSION" in bad.stderr
    noreason = modelpack("yank", "model-cat==0.1.0", "--registry", registry.url)
    assert noreason.returncode == 2 and "--reason" in noreason.stderr


def installed_version(tmp_path: Path, name: str, index_url: str, spec: str = "model-cat") -> str:
    venv = Venv(tmp_path / name, tool="uv")
    venv.install(spec, index_url=index_url)
    return venv.run("import importlib.metadata as m; print(m.version('model-cat'))").stdout.strip()


def test_stages_and_yank_through_the_cli(
    registry: Registry, wheels: list[Path], tmp_path: Path
) -> None:
    reg = ["--registry", registry.url]
    for wheel in wheels:
        ok(modelpack("publish", wheel, *reg))
    listed = json.loads(ok(modelpack("list", "--json", *reg)))["models"]
    assert [(m["name"], m["version"]) for m in listed] == [("model-cat", "0.2.0")]
    assert listed[0]["task"] == "regression"

    assert "production -> model-cat 0.1.0" in ok(
        modelpack("promote", "model-cat==0.1.0", "--stage", "production", *reg)
    )
    stage_index = f"{registry.url}/stages/production/simple/"
    assert installed_version(tmp_path, "v1", stage_index) == "0.1.0"

    assert "(was 0.1.0)" in ok(
        modelpack("promote", "model-cat==0.2.0", "--stage", "production", *reg)
    )
    assert installed_version(tmp_path, "v2", stage_index) == "0.2.0"
    ok(modelpack("promote", "model-cat==0.1.0", "--stage", "production", *reg))  # roll back
    shown = json.loads(ok(modelpack("show", "model-cat", "--json", *reg)))
    assert shown["stages"]["production"]["version"] == "0.1.0"
    assert [(h["from"], h["to"]) for h in shown["history"]] == [
        (None, "0.1.0"),
        ("0.1.0", "0.2.0"),
        ("0.2.0", "0.1.0"),
    ]

    missing = modelpack("promote", "model-cat==9.9.9", "--stage", "production", *reg)
    assert missing.returncode == 1 and "9.9.9" in missing.stderr

    ok(modelpack("yank", "model-cat==0.2.0", "--reason", "trained on the wrong labels", *reg))
    text = ok(modelpack("show", "model-cat", *reg))
    assert "YANKED: trained on the wrong labels" in text
    assert "stages: production=0.1.0" in text
    assert installed_version(tmp_path, "y1", registry.index_url) == "0.1.0"  # unpinned skips it
    assert installed_version(tmp_path, "y2", registry.index_url, "model-cat==0.2.0") == "0.2.0"
    ok(modelpack("yank", "model-cat==0.2.0", "--undo", *reg))
    assert installed_version(tmp_path, "y3", registry.index_url) == "0.2.0"


def test_writes_need_credentials_when_the_registry_has_them(
    tmp_path: Path, wheels: list[Path]
) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"alice:{hashed}\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_")}
    alice = {**base, "MODELPACK_USERNAME": "alice", "MODELPACK_PASSWORD": "s3cret"}
    with Registry(tmp_path / "data", args=["--htpasswd", str(tmp_path / "htpasswd")]) as reg:
        ok(modelpack("publish", wheels[0], "--registry", reg.url, env=alice))
        anon = modelpack(
            "promote", "model-cat==0.1.0", "--stage", "production", "--registry", reg.url, env=base
        )
        assert anon.returncode == 1 and "MODELPACK_USERNAME" in anon.stderr
        ok(
            modelpack(
                "promote",
                "model-cat==0.1.0",
                "--stage",
                "production",
                "--registry",
                reg.url,
                env=alice,
            )
        )
        shown = json.loads(
            ok(modelpack("show", "model-cat", "--json", "--registry", reg.url, env=base))
        )
        assert shown["stages"]["production"]["promoted_by"] == "alice"


def test_only_owners_publish_and_promote_their_model(tmp_path: Path, wheels: list[Path]) -> None:
    import bcrypt

    lines = [
        f"{u}:{bcrypt.hashpw(b'pw-' + u.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for u in ("alice", "bob")
    ]
    (tmp_path / "htpasswd").write_text("\n".join(lines) + "\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_")}
    alice = {**base, "MODELPACK_USERNAME": "alice", "MODELPACK_PASSWORD": "pw-alice"}
    bob = {**base, "MODELPACK_USERNAME": "bob", "MODELPACK_PASSWORD": "pw-bob"}
    with Registry(tmp_path / "data", args=["--htpasswd", str(tmp_path / "htpasswd")]) as reg:
        ok(modelpack("publish", wheels[0], "--registry", reg.url, env=alice))
        refused = modelpack("publish", wheels[1], "--registry", reg.url, env=bob)
        assert refused.returncode == 1
        assert "owned by alice" in refused.stderr and "ask an owner" in refused.stderr
        assert not (reg.data / "packages" / wheels[1].name).exists()
        denied = modelpack(
            "promote", "model-cat==0.1.0", "--stage", "production", "--registry", reg.url, env=bob
        )
        assert denied.returncode == 1 and "owned by alice" in denied.stderr
