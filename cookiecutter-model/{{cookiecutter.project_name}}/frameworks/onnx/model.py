"""The classifier around an ONNX Runtime session, and how its weights are saved and loaded.

The weights are ``weights/model.onnx``: an ONNX graph (a protobuf file), not a pickle.
Loading it runs no Python code, and ONNX Runtime reads models of every older opset, so
the range in ``dependencies`` only sets the oldest release that knows the model's
opset. Any framework that exports ONNX can produce this file: scikit-learn through
skl2onnx (as ``train.py`` does), PyTorch through ``torch.onnx.export``, TensorFlow
through tf2onnx. The graph here takes a float32 matrix and returns the labels and the
class probabilities; adjust :class:`OnnxClassifier` to your graph's inputs and outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import onnxruntime

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

WEIGHTS_FILE = "model.onnx"


class OnnxClassifier:
    """``predict`` gives one class index per row, ``predict_proba`` the probabilities."""

    def __init__(self, model: bytes) -> None:
        self.model = model
        self.session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        (self.input,) = self.session.get_inputs()
        self.n_features = int(self.input.shape[1])

    def _run(self, rows: Sequence[Sequence[Any]]) -> list[Any]:
        X = np.asarray(rows, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            width = X.shape[-1] if X.ndim else 0
            raise ValueError(f"a row has {width} features; this model expects {self.n_features}")
        if not np.isfinite(X).all():
            raise ValueError("the input contains a value that is not a finite number")
        return list(self.session.run(None, {self.input.name: X}))

    def predict(self, rows: Sequence[Sequence[Any]]) -> list[int]:
        """One class index per row."""
        labels = self._run(rows)[0]
        return [int(v) for v in labels]

    def predict_proba(self, rows: Sequence[Sequence[Any]]) -> list[list[float]]:
        """The probability of each class, for each row.

        :raises ValueError: a row has the wrong number of features, or a value is not
            a finite number.
        """
        probabilities = self._run(rows)[1]
        return [[float(p) for p in row] for row in probabilities]


Model = OnnxClassifier
"""What `load()` returns."""


def save_weights(model: bytes, folder: Path) -> Path:
    """Write the serialized ONNX *model* to ``folder/model.onnx`` (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / WEIGHTS_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(model)
    tmp.replace(target)
    return target


def load_weights(folder: Traversable) -> OnnxClassifier:
    """Read the model that :func:`save_weights` wrote into *folder*."""
    return OnnxClassifier(folder.joinpath(WEIGHTS_FILE).read_bytes())
