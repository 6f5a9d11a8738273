"""Train the starter model so a freshly generated project has weights and builds.

Runs `train.py` with the interpreter that runs cookiecutter. If training fails the
hook exits non-zero, and cookiecutter (and `modelpack new`) remove the project.
"""

import subprocess
import sys
from pathlib import Path

weights = Path("src") / "{{ cookiecutter.package_name }}" / "weights" / "model.pkl"

result = subprocess.run([sys.executable, "train.py"], check=False)
if result.returncode != 0:
    print(
        f"ERROR: train.py failed with exit status {result.returncode}; "
        "the project was not created",
        file=sys.stderr,
    )
    sys.exit(1)
if not weights.is_file():
    print(f"ERROR: train.py did not write {weights}", file=sys.stderr)
    sys.exit(1)
