"""`modelpack check`: each check against a real project that fails it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from modelpack.scaffold import new_project
from modelpack.scan import scan_file
from support import modelpack


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return new_project("model-chk", tmp_path)


def pkg(project: Path) -> Path:
    return project / "src" / "model_chk"


def failed(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


def test_template_project_passes(project: Path) -> None:
    result = modelpack("check", project)
    assert result.returncode == 0, result.stderr
    assert "passes every check" in result.stdout


def test_undeclared_import_is_an_error_and_fix_declares_a_range(project: Path) -> None:
    (pkg(project) / "extra.py").write_text("import json\nimport requests\n")
    err = failed(modelpack("check", project), "extra.py:2", "imports requests",
                 "add requests to [project] dependencies")  # fmt: skip
    assert "json" not in err  # the standard library needs no declaration
    # build refuses too, and leaves no wheel behind
    failed(modelpack("build", project), "imports requests")
    assert not list((project / "dist").glob("*.whl"))

    fixed = modelpack("check", project, "--fix")
    assert fixed.returncode == 0, fixed.stderr
    from importlib.metadata import version

    major = int(version("requests").split(".")[0])
    text = (project / "pyproject.toml").read_text()
    assert f'"requests>={".".join(version("requests").split(".")[:2])},<{major + 1}"' in text
    assert "==" not in text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "#   dependencies = [" in text  # the template's comments survive the edit


def test_import_of_a_module_installed_nowhere(project: Path) -> None:
    (pkg(project) / "extra.py").write_text("import surely_not_installed_xyz\n")
    failed(modelpack("check", project), "imports surely_not_installed_xyz", "not installed here")


def test_optional_imports_are_not_required(project: Path) -> None:
    (pkg(project) / "extra.py").write_text(
        "try:\n    import surely_not_installed_xyz\nexcept ImportError:\n    pass\n"
    )
    assert modelpack("check", project).returncode == 0


def test_declared_but_unused_dependency_is_a_warning(project: Path) -> None:
    text = (
        (project / "pyproject.toml")
        .read_text()
        .replace("\ndependencies = []", '\ndependencies = ["requests>=2"]', 1)
    )
    (project / "pyproject.toml").write_text(text)
    result = modelpack("check", project)
    assert result.returncode == 0
    assert (
        "warning: [project] dependencies: requests is declared but never imported" in result.stderr
    )


def write_pickle(project: Path, name: str, module: str, qualname: str) -> Path:
    # A pickle that names module.qualname and calls it (GLOBAL, EMPTY_TUPLE, NEWOBJ);
    # it is never loaded.
    path = pkg(project) / "weights" / name
    path.write_bytes(f"c{module}\n{qualname}\n".encode() + b")\x81.")
    return path


def test_pickle_of_a_class_no_dependency_provides(project: Path) -> None:
    write_pickle(project, "pipeline.pkl", "requests.models", "Response")
    failed(modelpack("check", project), "weights/pipeline.pkl", "requests.models.Response",
           "comes from requests, which no declared dependency provides",
           "add requests to [project] dependencies")  # fmt: skip


def test_pickle_of_a_class_from_nowhere(project: Path) -> None:
    write_pickle(project, "pipeline.pkl", "lost_training_module", "Pipeline")
    failed(modelpack("check", project), "lost_training_module.Pipeline",
           "install and declare the distribution that provides lost_training_module")  # fmt: skip


@pytest.mark.parametrize(("module", "name"), [("os", "system"), ("builtins", "eval"),
                                              ("subprocess", "Popen")])  # fmt: skip
def test_dangerous_pickle(project: Path, module: str, name: str) -> None:
    path = write_pickle(project, "evil.pkl", module, name)
    failed(modelpack("check", project), f"references {module}.{name} (offset 0)",
           "is not on the allow-list", "[tool.modelpack] trusted-pickles")  # fmt: skip
    assert [(r.module, r.name) for _, r in scan_file(path).refs] == [(module, name)]


def test_pickles_of_the_package_own_classes_pass(project: Path) -> None:
    # the template's weights: an instance of model_chk.model.LinearModel
    scan = scan_file(pkg(project) / "weights" / "model.pkl")
    assert not scan.errors and scan.kinds == ["pickle"]
    assert [f"{r.module}.{r.name}" for _, r in scan.refs] == ["model_chk.model.LinearModel"]


@pytest.mark.parametrize(
    ("line", "needle"),
    [('tags = "nlp"', "[tool.modelpack] tags: must be a list of strings"),
     ('taks = "regression"', "[tool.modelpack] taks: unknown key"),
     ("metrics = { rmse = \"low\" }", "[tool.modelpack] metrics.rmse: must be a number or a table"),
     ('registry = "ftp://x"', "[tool.modelpack] registry: must be the registry URL")],
)  # fmt: skip
def test_manifest_errors_name_the_key(project: Path, line: str, needle: str) -> None:
    text = (project / "pyproject.toml").read_text()
    key = line.split(" ", 1)[0]
    lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key} =")]
    text = "\n".join(lines).replace("[tool.modelpack]", f"[tool.modelpack]\n{line}", 1)
    (project / "pyproject.toml").write_text(text)
    failed(modelpack("check", project), needle)


def test_wheel_must_install_only_the_model_package(project: Path) -> None:
    (project / "src" / "helpers").mkdir()
    (project / "src" / "helpers" / "__init__.py").write_text("")
    text = (
        (project / "pyproject.toml")
        .read_text()
        .replace('packages = ["src/model_chk"]', 'packages = ["src/model_chk", "src/helpers"]')
    )
    (project / "pyproject.toml").write_text(text)
    failed(modelpack("build", project), "installs top-level helpers besides model_chk")
    assert not list((project / "dist").glob("*.whl"))


def test_manifest_is_embedded_and_summarized(project: Path) -> None:
    import json
    import zipfile

    wheel = Path(modelpack("build", project).stdout.strip())
    with zipfile.ZipFile(wheel) as zf:
        manifest = json.loads(zf.read("model_chk-0.1.0.dist-info/modelpack.json"))
        metadata = zf.read("model_chk-0.1.0.dist-info/METADATA").decode()
    assert manifest["name"] == "model-chk" and manifest["task"] == "regression"
    assert manifest["input_example"] == [[1.0, 2.0, 3.0]]
    assert [w["path"] for w in manifest["weights"]] == ["model_chk/weights/model.pkl"]
    keywords = next(ln for ln in metadata.splitlines() if ln.startswith("Keywords:"))
    assert "task:regression" in keywords and "modelpack-model" in keywords


def test_pickle_scan_reads_past_a_large_payload(tmp_path: Path) -> None:
    import collections
    import pickle

    # a class after a 64 MiB argument is still found; the payload is skipped, not read
    obj = [collections.OrderedDict(a=1), b"\0" * (64 << 20), collections.Counter("ab")]
    path = tmp_path / "big.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    scan = scan_file(path)
    assert not scan.errors
    names = [f"{r.module}.{r.name}" for _, r in scan.refs]
    assert names == ["collections.OrderedDict", "collections.Counter"]


@pytest.mark.parametrize(
    ("dist", "version", "expected"),
    [
        # estimators pickled by one scikit-learn minor release may not load in the next
        ("scikit-learn", "1.9.1", "scikit-learn>=1.9.1,<1.10"),
        ("xgboost", "3.1.2", "xgboost>=3.1.2,<3.2"),
        ("LightGBM", "4.7.0", "LightGBM>=4.7.0,<4.8"),
        ("scikit-learn", "1.10.0rc1", "scikit-learn>=1.10.0rc1,<1.11"),
        # anything else: the major release (0.x: the minor)
        ("numpy", "2.3.5", "numpy>=2.3,<3"),
        ("joblib", "1.6.0", "joblib>=1.6,<2"),
        ("threadpoolctl", "0.13.2", "threadpoolctl>=0.13,<0.14"),
    ],
)
def test_fix_ranges_can_read_the_pickle(dist: str, version: str, expected: str) -> None:
    from modelpack.fix import compatible_range

    assert compatible_range(dist, version) == expected


@pytest.mark.slow
def test_fix_pins_scikit_learn_to_its_minor_release(project: Path, tmp_path: Path) -> None:
    """A real scikit-learn (installed for this test): `--fix` declares the range that can
    read its pickles, from the version installed, and a major range for joblib."""
    import os
    import sys

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), "scikit-learn", "joblib"], check=True)  # fmt: skip
    sk = _version_in(site, "scikit-learn")
    jl = _version_in(site, "joblib")
    (pkg(project) / "extra.py").write_text("import joblib\nimport sklearn\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    fixed = subprocess.run([str(Path(sys.executable).parent / "modelpack"), "check", str(project),
                            "--fix"], capture_output=True, text=True, env=env)  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    major, minor = (int(x) for x in sk.split(".")[:2])
    text = (project / "pyproject.toml").read_text()
    assert f'"scikit-learn>={sk},<{major}.{minor + 1}"' in text
    jmajor, jminor = jl.split(".")[:2]
    assert f'"joblib>={jmajor}.{jminor},<{int(jmajor) + 1}"' in text
    # requires-python follows what the pinned scikit-learn needs (1.9 needs 3.11); the
    # template's own floor stays when it is already enough
    from modelpack.fix import python_floor

    needs = python_floor(_metadata_in(site, "scikit-learn")["Requires-Python"])
    declared = _requires_python(text)
    template_floor = Version("3.10")
    want = needs if needs and needs > template_floor else template_floor
    assert python_floor(declared) == want
    if want != template_floor:
        assert f"set requires-python = '>={want}'" in fixed.stdout


def test_the_template_requires_the_python_modelpack_supports(project: Path) -> None:
    """A new project pins nothing, so it needs what modelpack and its train.py need."""
    from importlib.metadata import metadata

    from modelpack.fix import python_floor

    text = (project / "pyproject.toml").read_text()
    assert "\ndependencies = []\n" in text
    ours = python_floor(metadata("modelpack")["Requires-Python"])
    assert python_floor(_requires_python(text)) == ours


def _requires_python(pyproject_text: str) -> str:
    found = re.search(r'(?m)^requires-python = "([^"]*)"', pyproject_text)
    assert found, pyproject_text
    return found.group(1)


def _metadata_in(site: Path, dist: str) -> Any:
    from importlib.metadata import distributions

    return next(d.metadata for d in distributions(path=[str(site)])
                if d.metadata["Name"].lower() == dist)  # fmt: skip


def _version_in(site: Path, dist: str) -> str:
    return str(_metadata_in(site, dist)["Version"])
