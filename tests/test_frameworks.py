"""`modelpack new --framework F`: each framework's template, from `new` to a prediction
in a consumer's clean environment.

Everything is real: the template's hook trains with scikit-learn, skops, XGBoost,
skl2onnx and ONNX Runtime; `modelpack-registry serve` runs on a loopback port;
`publish --verify` installs the wheel into clean environments before and after the
upload; the consumer is a fresh venv with plain pip, which gets the model from the
registry and its public dependencies from the machine's configured index (the registry
has no upstream here, so it is an extra index, as `publish --verify` uses it).
One registry serves the whole module.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpack.errors import ProjectError
from modelpack.scaffold import FRAMEWORKS, new_project
from support import BIN, Registry, clean_env, modelpack, ok

# What each template writes and declares; the weights are never a pickle but for the
# pure-Python starter (and sklearn's joblib option, below).
EXPECTED = {
    "python": ("model.pkl", set()),
    "sklearn": ("model.skops", {"scikit-learn", "skops", "joblib", "numpy"}),
    "xgboost": ("model.ubj", {"xgboost-cpu", "numpy"}),
    "onnx": ("model.onnx", {"onnxruntime", "numpy"}),
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("frameworks") / "registry-data") as reg:
        yield reg


def requirement_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        lines = zf.read(meta).decode().splitlines()
    reqs = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")]
    return {r.split(">", 1)[0].split("<", 1)[0].split("=", 1)[0].strip() for r in reqs}


def same(got: object, want: object) -> bool:
    """Equal, numbers up to rounding (relative 1e-9): labels exactly, floats all but."""
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    if isinstance(want, int) and not isinstance(want, bool):
        return got == want
    if isinstance(got, float) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_framework_from_new_to_a_prediction_in_a_clean_install(
    framework: str, registry: Registry, tmp_path: Path
) -> None:
    name = f"model-{framework}"
    package = name.replace("-", "_")
    ok(modelpack("new", name, "--framework", framework, "--no-input", "-o", tmp_path))
    project = tmp_path / name
    assert not (project / "frameworks").exists()
    weights_file, deps = EXPECTED[framework]
    assert sorted(p.name for p in (project / "src" / package / "weights").iterdir()) == [
        weights_file
    ]
    pyproject = (project / "pyproject.toml").read_text()
    assert f'framework = "{framework}"' in pyproject

    # The user's loop: retrain, run the project's own tests, check, build, publish.
    trained = subprocess.run(
        [sys.executable, "train.py"], cwd=project, capture_output=True, text=True
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    metrics = json.loads((project / "metrics.json").read_text())
    assert metrics["metrics"] and metrics["dataset"]["name"]
    for metric in metrics["metrics"].values():
        assert isinstance(metric["value"], float) and metric["better"] in ("higher", "lower")
    recorded = json.loads((project / "tests" / "predictions.json").read_text())

    own = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    assert own.returncode == 0, own.stdout + own.stderr
    assert ok(modelpack("check", project)) == f"ok: {name} passes every check"
    wheel = Path(ok(modelpack("build", project)))
    assert requirement_names(wheel) == deps
    out = ok(modelpack("publish", project, "--registry", registry.url, "--verify"))
    assert f"verified {name} 0.1.0 before the upload in a clean environment" in out
    assert f"verified {name} 0.1.0 as served in a clean environment" in out
    assert f"published {name} 0.1.0" in out

    # A consumer: a fresh venv, plain pip, nothing of modelpack.
    venv = tmp_path / "consumer"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", f"{name}==0.1.0",
         "--extra-index-url", registry.index_url],
        capture_output=True, text=True, env=clean_env(),
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    probe = (
        "import importlib.util, json, sys\n"
        f"import {package} as m\n"
        "rows = json.loads(sys.argv[1])\n"
        "model = m.load()\n"
        "out = {'cls': type(model).__module__ + '.' + type(model).__name__,\n"
        "       'predictions': m.predict(rows)}\n"
        "if hasattr(model, 'predict_proba'):\n"
        "    p = model.predict_proba(rows)\n"
        "    out['probabilities'] = p.tolist() if hasattr(p, 'tolist') else p\n"
        "assert importlib.util.find_spec('modelpack') is None, 'modelpack leaked in'\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [str(py), "-c", probe, json.dumps(recorded["rows"])],
        capture_output=True, text=True, env=clean_env(), cwd=venv,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout)
    # Equal to what train.py predicted before saving: the weights survived the trip. Up to
    # float rounding only: the consumer may resolve a newer numpy (another BLAS kernel).
    assert same(seen["predictions"], recorded["predictions"])
    if "probabilities" in recorded:
        assert same(seen["probabilities"], recorded["probabilities"])
    if framework == "sklearn":
        assert seen["cls"] == "sklearn.pipeline.Pipeline"
    else:
        assert seen["cls"].startswith(f"{package}.model.")


@pytest.mark.slow
def test_sklearn_joblib_option_is_scanned_and_accepted_by_check(tmp_path: Path) -> None:
    project = new_project("model-jl", tmp_path, framework="sklearn")
    weights = project / "src" / "model_jl" / "weights"
    ok_train = subprocess.run(
        [sys.executable, "train.py", "--format", "joblib"], cwd=project,
        capture_output=True, text=True,
    )  # fmt: skip
    assert ok_train.returncode == 0, ok_train.stdout + ok_train.stderr
    assert sorted(p.name for p in weights.iterdir()) == ["model.joblib"]
    # a real pickle, naming the package's own transformer: the scanner judges it
    assert b"model_jl.model" in (weights / "model.joblib").read_bytes()
    assert b"ClipToTrainingRange" in (weights / "model.joblib").read_bytes()
    assert ok(modelpack("check", project)) == "ok: model-jl passes every check"
    own = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    assert own.returncode == 0, own.stdout + own.stderr


def test_skops_refuses_a_type_outside_the_trusted_list(tmp_path: Path) -> None:
    """The skops file is not a pickle: a type nobody trusted is refused, not run."""
    project = new_project("model-sk", tmp_path, framework="sklearn")
    code = (
        "import skops.io, model_sk, model_sk.model as mm\n"
        "from importlib.resources import files\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from collections import Counter\n"
        "import fractions\n"
        "pipe = model_sk.load()\n"
        "pipe.steps[0][1].note = fractions.Fraction(1, 3)  # a type nobody trusted\n"
        "w = files('model_sk') / 'weights' / 'model.skops'\n"
        "open(str(w), 'wb').write(skops.io.dumps(pipe))\n"
        "try:\n"
        "    model_sk.load()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "else:\n"
        "    raise SystemExit('an untrusted type was loaded')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True,
        env={**clean_env(), "PYTHONPATH": str(project / "src")},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "UntrustedTypesFoundException" in result.stdout
    assert "fractions.Fraction" in result.stdout


def test_a_missing_training_library_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    """Without skops, the sklearn template cannot train: the hook says what to install."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    # Hides skops from every interpreter started with this PYTHONPATH (cookiecutter runs
    # its hook in a new one), as if it were not installed.
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'skops' or name.startswith('skops.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    out = tmp_path / "out"
    result = modelpack(
        "new", "model-nosk", "--framework", "sklearn", "--no-input", "-o", out,
        env={**os.environ, "PYTHONPATH": str(blocker)},
    )  # fmt: skip
    assert result.returncode != 0
    assert "trains its starter model with skops, which is not installed" in result.stderr
    assert "-m pip install skops" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_an_unknown_framework_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    result = modelpack("new", "model-x", "--framework", "torch", "--no-input", "-o", tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'torch'" in result.stderr
    with pytest.raises(ProjectError, match="unknown framework 'torch'; choose one of python"):
        new_project("model-x", tmp_path, framework="torch")
    assert list(tmp_path.iterdir()) == []


def test_the_prompt_offers_the_frameworks_and_fits_the_defaults_to_the_choice(
    tmp_path: Path,
) -> None:
    code = (
        "import sys; from modelpack.scaffold import new_project\n"
        "print(new_project('model-ask', sys.argv[1], no_input=False))\n"
    )
    # "4" = onnx, then the defaults (empty answers) for everything else
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], input="4\n\n\n\n\n\n",
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for choice in ("1 - python", "2 - sklearn", "3 - xgboost", "4 - onnx"):
        assert choice in result.stdout
    pyproject = (tmp_path / "model-ask" / "pyproject.toml").read_text()
    assert 'framework = "onnx"' in pyproject
    assert 'task = "classification"' in pyproject  # the default follows the framework
    assert 'description = "An ONNX classifier packaged with modelpack."' in pyproject
    assert (tmp_path / "model-ask" / "src" / "model_ask" / "weights" / "model.onnx").is_file()


def test_plain_cookiecutter_takes_the_framework_as_a_variable(tmp_path: Path) -> None:
    template = Path(__file__).resolve().parent.parent / "cookiecutter-model"
    result = subprocess.run(
        [str(BIN / "cookiecutter"), "--no-input", str(template), "project_name=model-cc",
         "framework=xgboost", "-o", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    project = tmp_path / "model-cc"
    assert (project / "src" / "model_cc" / "weights" / "model.ubj").is_file()
    assert not (project / "frameworks").exists()
    assert "XGBoost" in (project / "README.md").read_text()
    shutil.rmtree(project)


def test_check_fix_ranges_follow_the_weights_format(tmp_path: Path) -> None:
    """XGBoost's UBJSON model loads in later releases: --fix declares the major release.
    A pickled booster only in its own minor release: --fix holds it there."""
    import xgboost  # the version installed here, as --fix uses it

    major, minor = (int(p) for p in xgboost.__version__.split(".")[:2])
    project = new_project("model-fx", tmp_path, framework="xgboost")
    pyproject = project / "pyproject.toml"
    undeclared = "\n".join(
        ln for ln in pyproject.read_text().splitlines() if "xgboost-cpu" not in ln
    )
    pyproject.write_text(undeclared + "\n")
    out = ok(modelpack("check", "--fix", project))
    assert f"added to [project] dependencies: xgboost-cpu>={major}.{minor},<{major + 1}" in out

    weights = project / "src" / "model_fx" / "weights"
    pickled = subprocess.run(
        [sys.executable, "-c",
         "import pickle, sys, xgboost; b = xgboost.Booster(); b.load_model(sys.argv[1]); "
         "open(sys.argv[2], 'wb').write(pickle.dumps(b))",
         str(weights / "model.ubj"), str(weights / "model.pkl")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert pickled.returncode == 0, pickled.stderr
    (weights / "model.ubj").unlink()
    pyproject.write_text(undeclared + "\n")
    out = ok(modelpack("check", "--fix", project))
    assert f"xgboost-cpu>={xgboost.__version__},<{major}.{minor + 1}" in out


def test_check_explains_a_range_too_wide_for_the_saved_state(tmp_path: Path) -> None:
    import sklearn

    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    project = new_project("model-wide", tmp_path, framework="sklearn")
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert f'"scikit-learn>={sklearn.__version__},<{major}.{minor + 1}"' in text
    result = modelpack("check", project)
    assert result.returncode == 0 and "admits" not in result.stderr
    pyproject.write_text(
        text.replace(f'"scikit-learn>={sklearn.__version__},<{major}.{minor + 1}"',
                     '"scikit-learn>=1.3"')
    )  # fmt: skip
    result = modelpack("check", project)
    assert result.returncode == 0, result.stderr  # a warning: the range may still work
    assert (
        f"scikit-learn>=1.3 admits scikit-learn {major}.{minor + 1}.0 and later, but the weights "
        f"hold state saved by {sklearn.__version__}, which another minor release may fail to "
        f"load; declare 'scikit-learn>={sklearn.__version__},<{major}.{minor + 1}'"
    ) in result.stderr
