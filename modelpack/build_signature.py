"""The signature ``modelpack build`` stores in the wheel's ``modelpack.json``.

The project's package is imported from its source folder in a subprocess (this
interpreter, ``-I``: nothing from the working directory or ``PYTHONPATH``), its entry
point's ``load()`` called, and ``predict`` given the manifest's ``input_example``;
:func:`modelpack.serving.signature.infer` turns the example and the answer into names,
types and shapes. The subprocess starts before the build backend and runs beside it.

When the model cannot be imported here (its dependencies are not installed in the
environment that runs modelpack) or has no ``input_example``, the wheel has no signature
and the build says so in a warning: ``modelpack serve`` then serves it without checking
requests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from modelpack.checks import Problem
from modelpack.project import Project
from modelpack.serving.signature import infer

__all__ = ["SignatureProbe"]

_PROBE = r"""
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
module, _, attr = sys.argv[2].partition(":")
model = getattr(importlib.import_module(module), attr or "load")()
out = model.predict(json.loads(sys.argv[3]))
def plain(v):
    if hasattr(v, "to_dict") and hasattr(v, "columns"):
        return v.to_dict(orient="records")
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v
print("\n" + json.dumps(plain(out)))
"""


class SignatureProbe:
    """Infer *project*'s signature in a subprocess started now; :meth:`result` waits."""

    def __init__(self, project: Project) -> None:
        self.example = project.config.get("input_example")
        self.where = f"{project.name} signature"
        self.proc: subprocess.Popen[str] | None = None
        if self.example is None or project.package_dir is None:
            return
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _PROBE, str(project.package_dir.parent),
             project.entry_point, json.dumps(self.example)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=project.root,
        )  # fmt: skip

    def result(self, timeout: float = 300.0) -> tuple[dict[str, Any] | None, Problem | None]:
        """(signature, None), or (None, a warning that says why there is none)."""
        if self.proc is None:  # no input_example: `modelpack check` already warns
            return None, None
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return None, Problem(
                "warning",
                self.where,
                f"predict(input_example) took over {timeout:g} s; no signature",
            )
        lines = out.strip().splitlines()
        if self.proc.returncode != 0 or not lines:
            last = (err.strip().splitlines() or ["no output"])[-1]
            return None, Problem("warning", self.where, f"could not call predict(input_example) here ({last}); "
                                 "the wheel has no signature: install the model's dependencies "
                                 "where modelpack runs to get one")  # fmt: skip
        signature = infer(self.example, json.loads(lines[-1]))
        if signature is None:
            return None, Problem(
                "warning",
                self.where,
                "input_example is not rows of plain values or records; no signature",
            )
        return signature, None

    def cancel(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def manifest_fields(self, problems: list[Problem]) -> dict[str, Any]:
        """``{"signature": ...}`` for the manifest, or ``{}`` with a warning added to *problems*."""
        signature, warning = self.result()
        if warning is not None:
            problems.append(warning)
        return {"signature": signature} if signature is not None else {}
