"""Bad input: one line naming the problem and the fix, exit 1, no traceback, nothing half-written."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from support import Registry, free_port, modelpack, ok


def assert_reported(result: subprocess.CompletedProcess[str], *needles: str, code: int = 1) -> str:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    err = result.stderr.strip()
    assert "Traceback" not in err
    assert "Retry with the --verbose" not in err  # twine's hint names a flag we lack
    assert len(err.splitlines()) >= 1
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A template project and its wheel, built once for this module."""
    root = tmp_path_factory.mktemp("proj")
    ok(modelpack("new", "model-err", "-o", root, "--no-input"))
    project = root / "model-err"
    return project, Path(ok(modelpack("build", project)))


def test_not_a_model_project(tmp_path: Path) -> None:
    err = assert_reported(modelpack("build", tmp_path), "is not a model project", "modelpack new")
    assert len(err.splitlines()) == 1


def test_project_without_model_entry_point(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "plain-lib"\nversion = "1.0"\n')
    assert_reported(
        modelpack("build", tmp_path), 'entry-points."modelpack.models"', "plain_lib:load"
    )


def test_missing_weights_fails_before_building(tmp_path: Path, built: tuple[Path, Path]) -> None:
    project = tmp_path / "p"
    shutil.copytree(built[0], project, ignore=shutil.ignore_patterns("dist"))
    for f in (project / "src" / "model_err" / "weights").iterdir():
        f.unlink()
    assert_reported(modelpack("build", project), "has no weights", "python train.py")
    assert not list((project / "dist").glob("*.whl")) if (project / "dist").exists() else True
    assert_reported(modelpack("check", project), "has no weights")


def test_registry_unreachable(built: tuple[Path, Path]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_reported(modelpack("publish", built[1], "--registry", url), "cannot reach the registry",
                    "modelpack-registry serve")  # fmt: skip


def test_version_already_published_is_refused_and_registry_untouched(
    registry: Registry, built: tuple[Path, Path]
) -> None:
    project, wheel = built
    assert modelpack("publish", project, "--registry", registry.url).returncode == 0
    stored = registry.data / "packages" / wheel.name
    before = stored.read_bytes(), stored.stat().st_mtime_ns
    err = assert_reported(modelpack("publish", project, "--registry", registry.url),
                          "already published", "bump")  # fmt: skip
    assert len(err.splitlines()) == 1
    assert (stored.read_bytes(), stored.stat().st_mtime_ns) == before


def test_wrong_credentials(tmp_path: Path, built: tuple[Path, Path]) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"alice:{hashed}\n")
    env_base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MODELPACK_")}
    # no credentials anywhere: no ~/.pypirc, no keyring
    env_base.update(PYPIRC=str(tmp_path / "none"), PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")  # fmt: skip
    with Registry(tmp_path / "data", args=["--htpasswd", str(tmp_path / "htpasswd")]) as reg:
        env = {**env_base, "MODELPACK_USERNAME": "alice", "MODELPACK_PASSWORD": "wrong"}
        assert_reported(modelpack("publish", built[1], "--registry", reg.url, env=env),
                        "refused", "MODELPACK_PASSWORD")  # fmt: skip
        # no credentials is not a wrong password for "anonymous": say what is missing, and how
        anon = assert_reported(modelpack("publish", built[1], "--registry", reg.url, env=env_base),
                               "needs credentials", "no credentials for", "MODELPACK_USERNAME",
                               "MODELPACK_PASSWORD", "keyring set", "~/.pypirc")  # fmt: skip
        assert "anonymous" not in anon and "wrong" not in anon
        assert not list((reg.data / "packages").glob("*"))
        env["MODELPACK_PASSWORD"] = "s3cret"
        assert modelpack("publish", built[1], "--registry", reg.url, env=env).returncode == 0
        assert (reg.data / "packages" / built[1].name).is_file()


def test_no_credentials_for_a_registry_with_protected_reads(tmp_path: Path, htpasswd: Path) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MODELPACK_")}
    env.update(PYPIRC=str(tmp_path / "none"), PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")  # fmt: skip
    args = ["--htpasswd", str(htpasswd), "--protect-reads"]
    with Registry(tmp_path / "data", args=args) as reg:
        err = assert_reported(modelpack("list", "--registry", reg.url, env=env),
                              "needs credentials", "MODELPACK_USERNAME", "keyring", "~/.pypirc")  # fmt: skip
    assert "anonymous" not in err


@pytest.mark.parametrize("name", ["9lives", "model foo", "class", "-x"])
def test_invalid_name_for_new(tmp_path: Path, name: str) -> None:
    assert_reported(
        modelpack("new", "-o", tmp_path, "--no-input", "--", name), "invalid model name"
    )
    assert list(tmp_path.iterdir()) == []


def test_existing_project_dir_is_not_touched(tmp_path: Path) -> None:
    (tmp_path / "model-x").mkdir()
    (tmp_path / "model-x" / "keep.txt").write_text("mine")
    assert_reported(modelpack("new", "model-x", "-o", tmp_path, "--no-input"), "already exists")
    assert [p.name for p in (tmp_path / "model-x").iterdir()] == ["keep.txt"]


def test_publish_nothing_built(tmp_path: Path, built: tuple[Path, Path]) -> None:
    project = tmp_path / "p"
    shutil.copytree(built[0], project, ignore=shutil.ignore_patterns("dist"))
    assert_reported(modelpack("publish", project, "--registry", "http://127.0.0.1:9"),
                    "no wheel of model-err", "modelpack build")  # fmt: skip


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    result = modelpack("build", tmp_path, "-v")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "is not a model project" in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert modelpack("frobnicate").returncode == 2
    bad = modelpack("publish", "--registry", "not a url")
    assert_reported(bad, "invalid registry URL", code=2)


def test_help_lists_every_command() -> None:
    out = modelpack("--help").stdout
    for cmd in ("new", "check", "build", "publish", "list", "show", "promote", "yank"):
        assert cmd in out
