"""The user's story: scaffold, build, publish, install in a clean environment, predict.

Everything is real: `modelpack-registry serve` on a free loopback port, twine uploads,
pip and uv install into fresh virtual environments that never saw modelpack.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from support import Registry, Venv, clean_env, modelpack, ok


@pytest.mark.slow
def test_template_model_from_new_to_prediction_with_plain_pip(
    tmp_path: Path, registry: Registry
) -> None:
    ok(modelpack("new", "model-foo", "-o", tmp_path, "--no-input"))
    project = tmp_path / "model-foo"
    wheel = Path(ok(modelpack("build", project)))
    assert wheel == project / "dist" / "model_foo-0.1.0-py3-none-any.whl"
    assert wheel.is_file()

    out = ok(modelpack("publish", project, "--registry", registry.url))
    assert "published model-foo 0.1.0" in out
    assert (registry.data / "packages" / wheel.name).read_bytes() == wheel.read_bytes()

    consumer = Venv(tmp_path / "consumer", tool="pip")
    consumer.install("model-foo==0.1.0", index_url=registry.index_url)
    # The weights are a pickle of model_foo.model's class: a plain import finds it.
    result = consumer.run(
        "import json, model_foo\n"
        "m = model_foo.load()\n"
        "print(json.dumps({'cls': type(m).__module__, 'y': m.predict([[1.0, 2.0, 3.0]])}))\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('modelpack') is None, 'modelpack leaked into a model'\n"
    )
    seen = json.loads(result.stdout)
    assert seen["cls"] == "model_foo.model"
    assert len(seen["y"]) == 1 and isinstance(seen["y"][0], float)


HAND_WRITTEN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "churn-scorer"
        version = "2.3.0"
        description = "A model package written by hand, long before modelpack existed."

        [project.entry-points."modelpack.models"]
        churn-scorer = "churn_scorer:load"

        [tool.setuptools.packages.find]
        include = ["churn_scorer*"]

        [tool.setuptools.package-data]
        churn_scorer = ["weights/*.pkl"]
        """,
    "churn_scorer/__init__.py": """
        import pickle
        from importlib.resources import files

        def load(threshold=0.5):
            blob = files(__name__).joinpath("weights", "scorer.pkl").read_bytes()
            scorer = pickle.loads(blob)
            scorer.threshold = threshold
            return scorer
        """,
    "churn_scorer/scoring.py": """
        class ThresholdScorer:
            def __init__(self, weights):
                self.weights = weights
                self.threshold = 0.5

            def predict(self, rows):
                return [int(sum(w * x for w, x in zip(self.weights, row)) > self.threshold)
                        for row in rows]
        """,
}


def write_hand_written(root: Path) -> Path:
    for rel, text in HAND_WRITTEN.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    (root / "churn_scorer" / "weights").mkdir()
    # Pickle an instance of the package's own class, as a data scientist would.
    subprocess.run(
        [sys.executable, "-c",
         "import pickle; from churn_scorer.scoring import ThresholdScorer; "
         "open('churn_scorer/weights/scorer.pkl','wb').write(pickle.dumps(ThresholdScorer([0.2, 0.4])))"],
        cwd=root, check=True,
    )  # fmt: skip
    return root


@pytest.mark.slow
def test_hand_written_setuptools_project_with_uv_and_modelpack_load(
    tmp_path: Path, registry: Registry
) -> None:
    project = write_hand_written(tmp_path / "churn")
    wheel = Path(ok(modelpack("build", project)))
    assert wheel.name == "churn_scorer-2.3.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        assert "churn_scorer/weights/scorer.pkl" in zf.namelist()
    ok(modelpack("publish", wheel, "--registry", registry.url))

    consumer = Venv(tmp_path / "consumer", tool="uv")
    consumer.install("churn-scorer==2.3.0", index_url=registry.index_url)
    out = consumer.run(
        "import churn_scorer; print(churn_scorer.load(0.5).predict([[1, 1], [0, 0]]))"
    )
    assert out.stdout.strip() == "[1, 0]"

    # modelpack.load finds it by name through the entry point, however it is spelled.
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True, env=clean_env(),
    )  # fmt: skip
    code = (
        "import sys, modelpack; sys.path.insert(0, sys.argv[1])\n"
        "print([m.name for m in modelpack.list_models()])\n"
        "print('churn_scorer' in sys.modules)\n"
        "print(modelpack.load('Churn_Scorer', threshold=0.1).predict([[1, 0]]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    names, imported_before_load, prediction = res.stdout.strip().splitlines()
    assert "churn-scorer" in names
    assert imported_before_load == "False"  # listing imports no model
    assert prediction == "[1]"


def test_publish_sends_a_wheel_of_many_blocks_intact(tmp_path: Path, registry: Registry) -> None:
    """`publish` has twine send the body in 1 MiB blocks (not urllib3's 16 KiB): a wheel
    of several blocks and an odd size arrives byte for byte."""
    from modelpack.twine_speed import UPLOAD_BLOCK, big_block_settings

    settings = big_block_settings()(repository_url=registry.url + "/", username="u",
                                    password="p", non_interactive=True)  # fmt: skip
    adapter = settings.create_repository().session.get_adapter(registry.url)
    assert adapter.poolmanager.connection_pool_kw["blocksize"] == UPLOAD_BLOCK

    ok(modelpack("new", "model-blocks", "-o", tmp_path, "--no-input"))
    project = tmp_path / "model-blocks"
    weights = project / "src" / "model_blocks" / "weights" / "blocks.bin"
    weights.write_bytes(os.urandom(5 * UPLOAD_BLOCK + 12345))
    wheel = Path(ok(modelpack("build", project)))
    ok(modelpack("publish", wheel, "--registry", registry.url))
    assert (registry.data / "packages" / wheel.name).read_bytes() == wheel.read_bytes()


def test_twine_hashes_a_wheel_in_big_blocks_to_the_same_digests(tmp_path: Path) -> None:
    """`publish` has twine hash 1 MiB blocks on two threads: the digests twine puts in
    the upload form are exactly hashlib's, and twine is itself again afterwards."""
    import twine.package

    from modelpack.twine_speed import HASH_BLOCK, fast_hashes

    wheel = tmp_path / "model_odd-1.0-py3-none-any.whl"
    content = os.urandom(3 * HASH_BLOCK + 4321)
    with zipfile.ZipFile(wheel, "w") as zf:  # what twine reads: a wheel with METADATA
        zf.writestr("model_odd-1.0.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: model-odd\nVersion: 1.0\n")  # fmt: skip
        zf.writestr("model_odd/weights.bin", content, zipfile.ZIP_STORED)
    data = wheel.read_bytes()
    original = twine.package.HashManager
    with fast_hashes() as hashed:
        assert twine.package.HashManager is not original
        package = twine.package.PackageFile.from_filename(str(wheel), None)
    assert twine.package.HashManager is original
    sent = package.metadata_dictionary()
    assert sent["sha256_digest"] == hashlib.sha256(data).hexdigest() == hashed.sha256[str(wheel)]
    assert sent["blake2_256_digest"] == hashlib.blake2b(data, digest_size=32).hexdigest()
