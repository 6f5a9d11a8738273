"""The pickle check against files that really run code when loaded, and real model files.

Each malicious file of tests/pickle_corpus.py is first loaded in a subprocess the way a
model could load it and must create its marker (proof that it runs); then the real
``modelpack check`` CLI, on a project made by ``modelpack new``, must refuse every one
of them, and ``build`` and ``publish`` must refuse what ``check`` refuses. The benign
corpus (scikit-learn pipelines with a custom step at every joblib compression, numpy
arrays, plain pickles, the template model) must pass.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from modelpack.scan import scan_file
from pickle_corpus import LOADER, TRANSFORMER, Case, malicious
from support import BIN, Registry, modelpack, ok

HERE = Path(__file__).parent
DEPS = '"numpy>=1.24", "scikit-learn>=1.3", "joblib>=1.3", "torch>=2"'


def scaffold(tmp: Path, name: str) -> tuple[Path, Path]:
    ok(modelpack("new", name, "--output-dir", tmp, "--no-input"))
    project = tmp / name
    package = project / "src" / name.replace("-", "_")
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        text.replace("\ndependencies = []", f"\ndependencies = [{DEPS}]", 1)
    )
    (package / "transformers.py").write_text(TRANSFORMER)
    (package / "helpers.py").write_text("import subprocess\nfrom os import system\n")
    return project, package


def errors_by_file(stderr: str, weights: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in stderr.splitlines():
        m = re.match(rf"\s+{re.escape(weights)}/(\S+?): (.*)", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


@pytest.fixture(scope="module")
def evil_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case]]:
    tmp = tmp_path_factory.mktemp("evil")
    project, package = scaffold(tmp, "model-evil")
    markers = tmp / "markers"
    markers.mkdir()
    cases = malicious(package / "weights", markers, package.name)
    return project, cases


def test_every_malicious_file_runs_code_when_loaded(evil_project: tuple[Path, list[Case]]) -> None:
    project, cases = evil_project
    weights = project / "src" / "model_evil" / "weights"
    markers = project.parent / "markers"
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    subprocess.run([sys.executable, "-c", LOADER, str(weights), *(f"{c.file}={c.loader}" for c in cases)],
                   capture_output=True, text=True, env=env, cwd=project.parent, timeout=300)  # fmt: skip
    deadline = time.monotonic() + 20  # Popen payloads finish after the loader exits
    while True:
        ran = {p.name for p in markers.iterdir()}
        missing = [c.file for c in cases if c.file.replace("/", "_") not in ran]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not missing, f"these files did not run their payload when loaded: {missing}"
    assert len(cases) >= 30


def test_check_refuses_every_malicious_file(evil_project: tuple[Path, list[Case]]) -> None:
    project, cases = evil_project
    result = modelpack("check", project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    found = errors_by_file(result.stderr, "src/model_evil/weights")
    passed = [f"{c.file} ({c.covers})" for c in cases if c.file not in found]
    assert not passed, "check let these through:\n" + "\n".join(passed)
    assert "model.pkl" not in found  # the template's own weights stay fine
    # each message names the global (or what could not be read) and what to do
    for file, messages in found.items():
        for msg in messages:
            assert "rebuild the file" in msg or "re-save it" in msg or "declare" in msg, (file, msg)
    assert any("os.system" in m for m in found["dotted_stdlib.pkl"])
    assert any("subprocess.check_call" in m for m in found["own_dotted.pkl"])
    assert any("os.system" in m for m in found["own_reexport.pkl"])  # followed to its origin
    assert any("__builtin__.eval (as builtins.eval)" in m for m in found["builtin_alias.pkl"])
    assert any("pipeline_lz4.joblib" in f for f in found)


def test_build_refuses_what_check_refuses(evil_project: tuple[Path, list[Case]]) -> None:
    project, _ = evil_project
    result = modelpack("build", project)
    assert result.returncode == 1 and "dotted_stdlib.pkl" in result.stderr, result.stderr
    assert not list((project / "dist").glob("*.whl"))


@pytest.fixture(scope="module")
def good_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("good")
    project, package = scaffold(tmp, "model-good")
    (package / "helpers.py").unlink()
    env = {**os.environ, "PYTHONPATH": f"{project / 'src'}{os.pathsep}{HERE}"}
    code = ("import sys, pickle_corpus; from pathlib import Path; "
            "print(pickle_corpus.benign(Path(sys.argv[1]), sys.argv[2]))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(package / "weights"), package.name],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return project, sorted(p.name for p in (package / "weights").iterdir())


def test_check_accepts_real_model_files(good_project: tuple[Path, list[str]]) -> None:
    project, files = good_project
    assert {"pipeline_lz4.joblib", "forest.joblib", "floats.npy", "model.pkl"} <= set(files)
    result = modelpack("check", project)
    assert result.returncode == 0, result.stderr
    assert "passes every check" in result.stdout
    weights = project / "src" / "model_good" / "weights"
    kinds = {f: scan_file(weights / f).kinds for f in files}
    # every compression joblib writes was opened and read as a pickle to its end
    for comp in ("zlib", "gzip", "bz2", "lzma", "xz", "lz4"):
        assert kinds[f"pipeline_{comp}.joblib"] == [comp, "pickle"], kinds
    assert kinds["pipeline_level0.joblib"] == ["pickle"]
    assert kinds["arrays.npz"] == ["zip", "npy", "npy"]
    assert kinds["torch_state.pt"] == ["zip", "pickle"]  # raw storages are not pickles
    assert kinds["torch_legacy.pt"] == ["pickle"] * 5
    refs = {f"{r.module}.{r.name}" for _, r in scan_file(weights / "forest.joblib").refs}
    assert {"model_good.transformers.Center", "sklearn.tree._tree.Tree"} <= refs


def test_a_class_from_the_training_script_is_refused(tmp_path: Path) -> None:
    project, package = scaffold(tmp_path, "model-main")
    (package / "weights" / "step.pkl").write_bytes(
        b"\x80\x04\x8c\x08__main__\x8c\x04Step\x93)\x81."
    )
    result = modelpack("check", project)
    assert result.returncode == 1
    assert (
        "__main__.Step" in result.stderr and "move it into the model_main package" in result.stderr
    )


def test_an_unparseable_pickle_is_an_error(tmp_path: Path) -> None:
    project, package = scaffold(tmp_path, "model-bad")
    (package / "weights" / "cut.pkl").write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}")
    result = modelpack("check", project)
    assert result.returncode == 1
    assert "cut.pkl: cannot be read as a loader would read it" in result.stderr


def test_trusted_pickles_override_needs_the_exact_sha256(tmp_path: Path) -> None:
    project, package = scaffold(tmp_path, "model-trust")
    evil = package / "weights" / "legacy.pkl"
    evil.write_bytes(b"cos\nsystem\n(Vtrue\ntR.")
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    toml = project / "pyproject.toml"
    base = toml.read_text()
    toml.write_text(base.replace("[tool.modelpack]",
                                 f'[tool.modelpack]\ntrusted-pickles = {{ "legacy.pkl" = "{"0" * 64}" }}'))  # fmt: skip
    failed = modelpack("check", project)
    assert (
        failed.returncode == 1 and "legacy.pkl: has changed since it was reviewed" in failed.stderr
    )
    toml.write_text(base.replace("[tool.modelpack]",
                                 f'[tool.modelpack]\ntrusted-pickles = {{ "legacy.pkl" = "{digest}" }}'))  # fmt: skip
    passed = modelpack("check", project)
    assert passed.returncode == 0, passed.stderr
    assert "legacy.pkl: not scanned: listed in [tool.modelpack] trusted-pickles" in passed.stderr


def test_publish_refuses_a_wheel_whose_weights_check_refuses(
    tmp_path: Path, registry: Registry
) -> None:
    project, package = scaffold(tmp_path, "model-pub")
    (package / "helpers.py").unlink()
    (project / "pyproject.toml").write_text(
        (project / "pyproject.toml")
        .read_text()
        .replace(f"dependencies = [{DEPS}]", "dependencies = []")
    )
    (package / "transformers.py").unlink()
    wheel = Path(ok(modelpack("build", project)).splitlines()[-1])
    with zipfile.ZipFile(wheel, "a") as zf:  # weights changed after the build
        zf.writestr("model_pub/weights/extra.pkl", b"\x80\x02cposix\nsystem\n(Vtrue\ntR.")
    result = modelpack("publish", wheel, "--registry", registry.url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "model_pub/weights/extra.pkl: references posix.system" in result.stderr
    assert "nothing was uploaded" in result.stderr
    assert not list((registry.data / "packages").rglob("*.whl"))
    assert BIN.exists()


def test_hostile_bytes_never_crash_the_scan(
    evil_project: tuple[Path, list[Case]], good_project: tuple[Path, list[str]]
) -> None:
    # Mutated corpus files (bytes flipped, cut, inserted): every one is scanned to a
    # verdict, an error or data, and judged, never an exception (a traceback for users).
    import io
    import random

    from modelpack.scan import Policy, scan_stream

    sources = [p for project in (evil_project[0], good_project[0])
               for p in (project / "src").rglob("weights/*") if p.is_file()]  # fmt: skip
    policy = Policy("model_evil", lambda module: None, {"numpy": "numpy"}, {})
    rng = random.Random(13)
    outcomes = {"errors": 0, "refs": 0, "clean": 0}
    for _ in range(1500):
        data = bytearray(rng.choice(sources).read_bytes()[:100_000])
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data) or 1)
            roll = rng.random()
            if roll < 0.5 and data:
                data[pos] = rng.randrange(256)
            elif roll < 0.75:
                del data[pos : pos + rng.randint(1, 64)]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        scan = scan_stream(io.BufferedReader(io.BytesIO(bytes(data))), Path("mutated"))
        for _, ref in scan.refs:
            policy.judge(ref.module, ref.name)
        outcomes["errors" if scan.errors else "refs" if scan.refs else "clean"] += 1
    assert all(outcomes.values()), outcomes  # the mutations reached every outcome


PACKAGE_SOURCE = {
    "pkg": ("from .model import Model\nfrom . import helpers\n", True),
    "pkg.model": (
        "try:\n    import torch\nexcept ImportError:\n    torch = None\n"
        "if True:\n    class Model:\n        class Inner:\n            pass\n"
        "    def make():\n        pass\n"
        "import os\nfrom os import system as run_it\nfrom .helpers import *\nAlias = Model\n",
        False,
    ),
    "pkg.helpers": ("import subprocess\ndef helper():\n    pass\n", False),
}


@pytest.mark.parametrize(
    ("module", "name", "judged_as"),
    [("pkg.model", "Model", None), ("pkg.model", "Model.Inner", None), ("pkg.model", "make", None),
     ("pkg", "Model", None), ("pkg", "helpers.helper", None), ("pkg.model", "helper", None),
     ("pkg.model", "os.system", "os.system"), ("pkg.model", "run_it", "os.system"),
     ("pkg.model", "subprocess.call", "subprocess.call"),
     ("pkg", "helpers.subprocess.call", "subprocess.call"),
     ("pkg.model", "Alias", "pkg.model.Alias"),
     ("pkg.model", "Model.__init__.__globals__", "pkg.model.Model.__init__.__globals__"),
     ("pkg.nowhere", "X", "pkg.nowhere.X"),
     ("numpy", "ndarray", None), ("numpy._core.multiarray", "_reconstruct", None),
     ("numpy", "load", "numpy.load"), ("numpy.testing._private.utils", "runstring", "numpy.testing._private.utils.runstring"),
     ("numpy", "lib.npyio.os.system", "numpy.lib.npyio.os.system"),
     ("__builtin__", "set", None), ("copy_reg", "_reconstructor", None),
     ("exceptions", "ValueError", "builtins.ValueError"), ("itertools", "izip", "builtins.zip"),
     ("__main__", "Step", "__main__.Step"), ("requests", "get", "requests.get")],
)  # fmt: skip
def test_policy_resolves_names_as_the_unpickler_would(
    module: str, name: str, judged_as: str | None
) -> None:
    # The package's own source is read with ast; a name it imports is judged where it
    # comes from. Python 2 names go through fix_imports. None means allowed.
    from modelpack.scan import Policy

    policy = Policy("pkg", PACKAGE_SOURCE.get, {"numpy": "numpy"}, {"requests": ["requests"]})
    verdict = policy.judge(module, name)
    assert (verdict.name if verdict else None) == judged_as, verdict
