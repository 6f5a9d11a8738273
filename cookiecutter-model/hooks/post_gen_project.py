"""Finish the project for the chosen framework, then train the starter model.

1. ``frameworks/<framework>/`` holds the only files that differ between frameworks:
   ``train.py`` and the package's ``model.py``. The chosen ones are moved into place and
   the ``frameworks/`` folder is removed.
2. ``[project] dependencies`` get a range for each library that ``load()`` imports,
   computed from the version installed here (the one that writes the weights), and
   ``requires-python`` is raised to what those versions need.
3. ``train.py`` runs with the interpreter that runs cookiecutter, so a freshly generated
   project has weights and builds.

If anything fails the hook exits non-zero, and cookiecutter (and ``modelpack new``)
remove the project.
"""

import importlib
import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

FRAMEWORK = "{{ cookiecutter.framework }}"
PACKAGE = "{{ cookiecutter.package_name }}"

# What train.py imports (module -> distribution to install), and which distributions
# load() needs at run time, with how far their range may reach:
#   "minor": the format holds the library's internal state (scikit-learn objects,
#            also inside a skops file): another minor release may not read it;
#   "major": the library promises to read older files (XGBoost's UBJSON model format,
#            ONNX Runtime for every older opset); the upper bound guards the API only.
# A 0.x library is held to its minor release either way (0.x minor releases may break).
TRAIN = {
    "python": {},
    "sklearn": {"sklearn": "scikit-learn", "skops": "skops", "numpy": "numpy"},
    "xgboost": {"xgboost": "xgboost-cpu", "sklearn": "scikit-learn", "numpy": "numpy"},
    "onnx": {"sklearn": "scikit-learn", "skl2onnx": "skl2onnx", "onnx": "onnx",
             "onnxruntime": "onnxruntime", "numpy": "numpy"},
}
RUNTIME = {
    "python": {},
    "sklearn": {"scikit-learn": "minor", "skops": "minor", "joblib": "major", "numpy": "major"},
    "xgboost": {"xgboost": "major", "numpy": "major"},
    "onnx": {"onnxruntime": "major", "numpy": "major"},
}


def fail(message: str) -> None:
    print(f"ERROR: {message}; the project was not created", file=sys.stderr)
    sys.exit(1)


def move_framework_files() -> None:
    chosen = Path("frameworks") / FRAMEWORK
    if not chosen.is_dir():
        fail(f"unknown framework {FRAMEWORK!r}: no frameworks/{FRAMEWORK}/ in the template")
    shutil.move(str(chosen / "train.py"), "train.py")
    shutil.move(str(chosen / "model.py"), str(Path("src") / PACKAGE / "model.py"))
    shutil.rmtree("frameworks")


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def check_training_libraries() -> None:
    missing = sorted({d for m, d in TRAIN[FRAMEWORK].items() if not importable(m)})
    if missing:
        fail(
            f"the {FRAMEWORK} template trains its starter model with {', '.join(missing)}, "
            f"which {'is' if len(missing) == 1 else 'are'} not installed for {sys.executable}; "
            f"run `{sys.executable} -m pip install {' '.join(missing)}` and try again"
        )


def installed_dist(name: str) -> str:
    """The distribution installed here for *name*: xgboost may come as xgboost-cpu."""
    if name == "xgboost":
        for dist in ("xgboost-cpu", "xgboost"):
            try:
                metadata.version(dist)
                return dist
            except metadata.PackageNotFoundError:
                continue
    return name


def version_range(dist: str, reach: str) -> str:
    parts = [int(p) for p in re.findall(r"\d+", metadata.version(dist))[:3]] + [0, 0]
    major, minor, micro = parts[:3]
    if reach == "minor":
        return f"{dist}>={major}.{minor}.{micro},<{major}.{minor + 1}"
    upper = f"{major + 1}" if major > 0 else f"0.{minor + 1}"
    return f"{dist}>={major}.{minor},<{upper}"


def python_floor(dist: str) -> tuple[int, int]:
    spec = metadata.metadata(dist).get("Requires-Python") or ""
    found = re.search(r">=?\s*(\d+)\.(\d+)", spec)
    return (int(found.group(1)), int(found.group(2))) if found else (3, 10)


def declare_dependencies() -> None:
    runtime = {installed_dist(d): reach for d, reach in RUNTIME[FRAMEWORK].items()}
    if not runtime:
        return
    requirements = [version_range(d, reach) for d, reach in sorted(runtime.items())]
    floor = max([(3, 10), *(python_floor(d) for d in runtime)])
    pyproject = Path("pyproject.toml")
    text = pyproject.read_text(encoding="utf-8")
    items = "".join(f"\n    {json.dumps(r)}," for r in requirements)
    text = text.replace("\ndependencies = []\n", f"\ndependencies = [{items}\n]\n", 1)
    text = text.replace(
        'requires-python = ">=3.10"', f'requires-python = ">={floor[0]}.{floor[1]}"', 1
    )
    pyproject.write_text(text, encoding="utf-8")


move_framework_files()
check_training_libraries()
declare_dependencies()
result = subprocess.run([sys.executable, "train.py"], check=False)
if result.returncode != 0:
    fail(f"train.py failed with exit status {result.returncode}")
weights = Path("src") / PACKAGE / "weights"
if not weights.is_dir() or not any(weights.iterdir()):
    fail(f"train.py wrote nothing to {weights}")
if not Path("metrics.json").is_file():
    fail("train.py did not write metrics.json")
