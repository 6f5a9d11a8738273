"""`modelpack new`: a data scientist creates a model project, and it works end to end.

Nothing is mocked: real cookiecutter runs the real template (hooks included), the
generated project's own tests run in a subprocess, the wheel is built with `build`,
and a fresh uv venv installs it and unpickles the model through a plain import.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from modelpack.errors import InvalidNameError, ProjectError
from modelpack.scaffold import new_project, template_path
from support import REPO, Venv, clean_env, uv_bin

TEMPLATE = REPO / "cookiecutter-model"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`modelpack new model-foo`, once for the module."""
    return new_project("model-foo", tmp_path_factory.mktemp("new"))


@pytest.fixture(scope="module")
def wheel(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated project built with plain `python -m build --wheel` (isolated)."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(project)],
        check=True,
        capture_output=True,
        text=True,
    )
    (whl,) = dist.glob("*.whl")
    return whl


def run_project_tests(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
    )


def test_new_creates_a_trained_project_whose_own_tests_pass(project: Path) -> None:
    assert project.name == "model-foo"
    for rel in [
        "pyproject.toml",
        "README.md",
        "train.py",
        ".gitignore",
        "tests/test_model.py",
        "src/model_foo/__init__.py",
        "src/model_foo/model.py",
        "src/model_foo/weights/model.pkl",  # written by the post-gen hook running train.py
    ]:
        assert (project / rel).is_file(), rel
    assert not (project / "src/model_foo/weights/__init__.py").exists()
    ignored = [ln for ln in (project / ".gitignore").read_text().splitlines() if ln[:1] != "#"]
    assert not any("weights" in ln or "pkl" in ln for ln in ignored)  # hatchling honours it

    result = run_project_tests(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_plain_cookiecutter_generates_the_same_kind_of_project(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(BIN / "cookiecutter"),
            "--no-input",
            str(TEMPLATE),
            "project_name=model-bar",
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    project = tmp_path / "model-bar"
    assert (project / "src/model_bar/weights/model.pkl").is_file()
    assert '"model-bar" = "model_bar:load"' in (project / "pyproject.toml").read_text()
    assert run_project_tests(project).returncode == 0


def test_plain_cookiecutter_refuses_an_invalid_name(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(BIN / "cookiecutter"),
            "--no-input",
            str(TEMPLATE),
            "project_name=9lives",
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "invalid project_name '9lives'" in result.stderr
    assert "must start with a letter; try 'model-9lives'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_wheel_carries_code_weights_and_entry_point_but_not_modelpack(wheel: Path) -> None:
    assert wheel.name == "model_foo-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert {"model_foo/__init__.py", "model_foo/model.py", "model_foo/weights/model.pkl"} <= (
            names
        )
        entry_points = zf.read("model_foo-0.1.0.dist-info/entry_points.txt").decode()
        metadata = email.message_from_bytes(zf.read("model_foo-0.1.0.dist-info/METADATA"))
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert "[modelpack.models]" in entry_points
    assert "model-foo = model_foo:load" in entry_points
    assert metadata["Name"] == "model-foo"
    assert metadata.get_all("Requires-Dist") is None  # no modelpack, nothing at all
    assert "# model-foo" in str(metadata.get_payload())  # the model card is the README


def test_the_wheel_works_in_a_fresh_env_with_nothing_else(wheel: Path, tmp_path: Path) -> None:
    venv = Venv(tmp_path / "consumer", tool="uv")
    subprocess.run(
        [
            uv_bin(),
            "pip",
            "install",
            "-q",
            "--python",
            str(venv.python),
            "--no-index",
            "--no-cache",
            str(wheel),
        ],
        check=True,
        env=clean_env(),
    )
    code = (
        "import importlib.util, model_foo\n"
        "assert importlib.util.find_spec('modelpack') is None\n"
        "m = model_foo.load()\n"
        "print(type(m).__module__, type(m).__name__, m.predict([[1.0, 2.0, 3.0]]))\n"
    )
    out = venv.run(code).stdout.split()
    assert out[:2] == ["model_foo.model", "LinearModel"]
    # y = 0.5 + 1*1 - 2*2 + 0.25*3 = -1.75, up to the noise of the synthetic data
    assert abs(float(out[2].strip("[],")) - (-1.75)) < 0.1


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("9lives", "must start with a letter; try 'model-9lives'"),
        ("model foo", "only ASCII letters, digits"),
        ("-x", "must start and end with a letter or digit"),
        ("class", "is a Python keyword; try 'model-class'"),
        ("", "the name is empty"),
        ("json", "would shadow"),
    ],
)
def test_an_invalid_name_is_refused_before_anything_is_created(
    name: str, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidNameError, match=f"invalid model name {name!r}") as exc:
        new_project(name, tmp_path / "out")
    assert problem in str(exc.value)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_the_name_is_lowercased(tmp_path: Path) -> None:
    path = new_project("Model-Qux", tmp_path)
    assert path == tmp_path.resolve() / "model-qux"
    assert 'name = "model-qux"' in (path / "pyproject.toml").read_text()
    assert (path / "src/model_qux/weights/model.pkl").is_file()


def test_an_existing_folder_is_left_untouched(tmp_path: Path) -> None:
    existing = tmp_path / "model-foo"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(ProjectError, match="already exists; choose another name or pass -o"):
        new_project("model-foo", tmp_path)
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]
    assert (existing / "notes.txt").read_text() == "mine"


def test_a_failing_hook_leaves_nothing_half_written(tmp_path: Path) -> None:
    broken = tmp_path / "template"
    shutil.copytree(TEMPLATE, broken)
    train = broken / "{{cookiecutter.project_name}}" / "frameworks" / "python" / "train.py"
    train.write_text('raise SystemExit("no training data today")\n')
    out = tmp_path / "out"
    with pytest.raises(ProjectError, match=r"could not create 'model-foo'.*nothing was left"):
        new_project("model-foo", out, template=broken)
    assert not out.exists()


def test_interactive_mode_asks_for_everything_but_the_name(tmp_path: Path) -> None:
    # the framework comes first (the default descriptions and task depend on it)
    answers = "1\nPredicts churn\nAda\n0.2.0\nclassification\nMIT\n"
    code = (
        "import sys; from modelpack.scaffold import new_project\n"
        "print(new_project('model-baz', sys.argv[1], no_input=False))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], input=answers, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "project_name" not in result.stdout
    assert "1 - python" in result.stdout and "4 - onnx" in result.stdout
    pyproject = (tmp_path / "model-baz" / "pyproject.toml").read_text()
    for line in ['name = "model-baz"', 'version = "0.2.0"', 'description = "Predicts churn"',
                 'license = "MIT"', 'task = "classification"', '{ name = "Ada" }',
                 'framework = "python"']:  # fmt: skip
        assert line in pyproject


def test_interactive_mode_without_answers_fails_cleanly(tmp_path: Path) -> None:
    code = (
        "import sys; from modelpack.scaffold import new_project\n"
        "from modelpack.errors import ProjectError\n"
        "try: new_project('model-baz', sys.argv[1], no_input=False)\n"
        "except ProjectError as e: sys.exit(str(e))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out")],
        input="",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "no answer for 'framework'" in result.stderr
    assert "pass --no-input" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_template_is_found_in_the_source_tree_or_the_wheel() -> None:
    path = template_path()
    assert (path / "cookiecutter.json").is_file()
    assert (path / "hooks" / "post_gen_project.py").is_file()


def test_new_works_from_the_template_bundled_in_the_modelpack_wheel(tmp_path: Path) -> None:
    """After `pip install modelpack` there is no source tree: the wheel's copy is used."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(REPO)],
        check=True,
        capture_output=True,
    )
    (whl,) = (tmp_path / "dist").glob("modelpack-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(whl) as zf:
        zf.extractall(site)
    code = (
        "import sys; from modelpack.scaffold import new_project, template_path\n"
        "print(template_path()); print(new_project('model-zip', sys.argv[1]))\n"
    )
    env = {**clean_env(), "PYTHONPATH": str(site)}  # shadows the editable source tree
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the repo: `python -c` puts the working directory first
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(site / "modelpack" / "_template") in result.stdout
    assert (tmp_path / "out/model-zip/src/model_zip/weights/model.pkl").is_file()
    assert (tmp_path / "out/model-zip/.gitignore").is_file()
