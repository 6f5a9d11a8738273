"""`modelpack serve` and `modelpack predict` against a real registry, in real processes.

The template model (and a slow variant without an input example, so without a
signature) is built, published to a registry process and served by `modelpack serve`,
which installs it into an environment cached per name and version; every endpoint is
called with requests, predictions are compared with `model.predict` run in that
environment, bad payloads must get 400/413 naming the problem, and SIGTERM must let a
request in flight finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from support import BIN, Registry, free_port, modelpack, ok

ROWS = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-4.5, 2, 7.25]]


@dataclass
class Setup:
    registry: Registry
    root: Path
    env: dict[str, str]

    def cache(self, name: str, version: str = "0.1.0") -> Path:
        py = f"py{sys.version_info[0]}.{sys.version_info[1]}"
        return Path(self.env["MODELPACK_CACHE_DIR"]) / "serve" / f"{name}-{version}-{py}"


def _template(root: Path, name: str) -> Path:
    ok(modelpack("new", name, "-o", root, "--no-input"))
    return root / name


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("serving")
    env = {**os.environ, "MODELPACK_CACHE_DIR": str(root / "cache")}
    with Registry(root / "registry-data") as registry:
        fast = _template(root, "model-srv")
        slow = _template(root, "model-slow")
        # load() waits for the file MODEL_SLOW_GATE names, when set (readiness must wait
        # for it, however fast the machine); a row starting with 99 takes 3 s
        init = slow / "src" / "model_slow" / "__init__.py"
        gate = (
            "    import os\n    import time\n\n"
            '    gate, waited = os.environ.get("MODEL_SLOW_GATE"), 0\n'
            "    while gate and not os.path.exists(gate) and waited < 1200:\n"
            "        time.sleep(0.05)\n        waited += 1\n"
            "    return load_weights("
        )
        text = init.read_text()
        assert "    return load_weights(" in text, "the template's load() changed: update the gate"
        init.write_text(text.replace("    return load_weights(", gate, 1))
        model = slow / "src" / "model_slow" / "model.py"
        assert "        out = []\n" in model.read_text(), "the template's predict() changed"
        model.write_text(model.read_text().replace(
            "        out = []\n", "        out = []\n        if rows and rows[0][0] == 99:\n"
            "            import time\n\n            time.sleep(3)\n"))  # fmt: skip
        pyproject = slow / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace("input_example = [[1.0, 2.0, 3.0]]", ""))
        for project in (fast, slow):
            built = modelpack("build", project, env=env)
            ok(built)
            ok(modelpack("publish", project, "--registry", registry.url, env=env))
        assert "infer the signature" in built.stderr  # the slow one: no signature, and said so
        ok(
            modelpack(
                "promote", "model-srv==0.1.0", "--stage", "production", "--registry", registry.url
            )
        )
        yield Setup(registry, root, env)


class Served:
    def __init__(
        self, setup: Setup, spec: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = setup.root / f"serve-{self.port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "modelpack"), "serve", spec, "--registry", setup.registry.url,
                 "--port", str(self.port), *args],
                stdout=log, stderr=subprocess.STDOUT, env={**setup.env, **(env or {})},
            )  # fmt: skip

    def wait_live(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if requests.get(self.url + "/v2/health/live", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise AssertionError(f"not live after {timeout} s:\n{self.output()}")

    def wait_ready(self, timeout: float = 30) -> None:
        self.wait_live()
        deadline = time.monotonic() + timeout
        while requests.get(self.url + "/v2/health/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def served(setup: Setup) -> Iterator[Served]:
    server = Served(setup, "model-srv@production")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _in_process(setup: Setup, name: str, rows: object) -> object:
    """model.predict(rows), run in the environment the server uses."""
    python = setup.cache(name) / "venv" / "bin" / "python"
    code = (f"import json, sys, {name.replace('-', '_')} as m\n"
            "out = m.load().predict(json.loads(sys.argv[1]))\n"
            "print(json.dumps(out.tolist() if hasattr(out, 'tolist') else out))")  # fmt: skip
    return json.loads(
        ok(
            subprocess.run(
                [str(python), "-c", code, json.dumps(rows)], capture_output=True, text=True
            )
        )
    )


@pytest.mark.slow
def test_every_endpoint_answers_and_predictions_equal_model_predict(
    setup: Setup, served: Served
) -> None:
    url, expected = served.url, _in_process(setup, "model-srv", ROWS)
    assert "installing model-srv==0.1.0 into" in served.output() or "reusing" in served.output()
    assert "requests are checked against its signature" in served.output()
    assert requests.get(url + "/ping", timeout=5).status_code == 200
    assert requests.get(url + "/v2/health/live", timeout=5).json() == {"live": True}
    assert requests.get(url + "/v2/health/ready", timeout=5).json() == {"ready": True}
    meta = requests.get(url + "/v2/models/model-srv", timeout=5).json()
    assert meta["versions"] == ["0.1.0"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 3]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP64", "shape": [-1]}]
    records = [dict(zip("abc", row, strict=True)) for row in ROWS]
    mlflow_bodies = [
        {"inputs": ROWS}, {"instances": ROWS},
        {"dataframe_split": {"columns": ["a", "b", "c"], "data": ROWS}},
        {"dataframe_records": records},
    ]  # fmt: skip
    for body in mlflow_bodies:
        resp = requests.post(url + "/invocations", json=body, timeout=10)
        assert resp.status_code == 200, (body, resp.text)
        assert resp.json() == {"predictions": expected}
    csv_body = "a,b,c\n" + "\n".join(",".join(map(str, r)) for r in ROWS) + "\n"
    resp = requests.post(
        url + "/invocations", data=csv_body, headers={"Content-Type": "text/csv"}, timeout=10
    )
    assert resp.json() == {"predictions": expected}
    # an Open Inference Protocol client's payload: flat row-major data with a shape, and an id
    v2 = {"id": "req-1", "inputs": [{"name": "input", "shape": [3, 3], "datatype": "FP64",
                                     "data": [v for row in ROWS for v in row]}]}  # fmt: skip
    answer = requests.post(url + "/v2/models/model-srv/infer", json=v2, timeout=10).json()
    assert answer == {"model_name": "model-srv", "model_version": "0.1.0", "id": "req-1",
                      "outputs": [{"name": "output", "shape": [3], "datatype": "FP64", "data": expected}]}  # fmt: skip
    metrics = requests.get(url + "/metrics", timeout=5).text
    assert 'modelpack_serve_requests_total{endpoint="/invocations",status="200"} 5' in metrics
    assert 'modelpack_serve_request_seconds_count{endpoint="/v2/models/{name}/infer"} 1' in metrics
    assert "modelpack_serve_ready 1" in metrics
    lines = [json.loads(line) for line in served.output().splitlines() if line.startswith("{")]
    assert {
        "method": "POST",
        "path": "/v2/models/model-srv/infer",
        "status": 200,
        "rows": 3,
    }.items() <= lines[-2].items()


@pytest.mark.slow
def test_bad_payloads_get_400_or_413_naming_the_problem(served: Served) -> None:
    url = served.url
    cases = [
        (
            {"inputs": [[1.0, 2.0]]},
            "row 0: expected 3 values, got 2 (input 'input' is float64 [-1, 3])",
        ),
        ({"inputs": [[1.0, "x", 3.0]]}, "row 0, column 1: expected float64, got str 'x'"),
        ({"rows": [[1, 2, 3]]}, 'exactly one of "inputs", "instances"'),
    ]
    for body, message in cases:
        resp = requests.post(url + "/invocations", json=body, timeout=10)
        assert resp.status_code == 400 and message in resp.json()["error"], resp.text
    resp = requests.post(
        url + "/invocations",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 400 and "the body is not JSON" in resp.json()["error"]
    v2 = {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
    resp = requests.post(url + "/v2/models/model-srv/infer", json=v2, timeout=10)
    assert resp.status_code == 400 and "shape [2, 3] needs 6 values, got 3" in resp.json()["error"]
    resp = requests.post(url + "/invocations", data=b"[" + b"1," * (25 * 1024 * 1024) + b"1]",
                         headers={"Content-Type": "application/json"}, timeout=60)  # fmt: skip
    assert (
        resp.status_code == 413
        and "larger than the limit of 20971520 bytes" in resp.json()["error"]
    )
    assert requests.get(url + "/v2/models/other", timeout=5).status_code == 404
    assert "Traceback" not in served.output()
    assert requests.post(url + "/invocations", json={"inputs": ROWS}, timeout=10).status_code == 200


@pytest.mark.slow
def test_a_second_serve_of_the_same_version_reuses_the_cached_environment(setup: Setup) -> None:
    for _ in range(2):  # the first may have made it (or an earlier test did)
        server = Served(setup, "model-srv==0.1.0")
        try:
            server.wait_ready()
        finally:
            assert server.stop() == 0
    assert "reusing the environment of model-srv 0.1.0" in server.output()
    assert "installing" not in server.output()
    assert (setup.cache("model-srv") / "ready").is_file()


@pytest.mark.slow
def test_ready_waits_for_load_and_sigterm_lets_a_slow_request_finish(setup: Setup) -> None:
    gate = setup.root / f"gate-{time.monotonic_ns()}"
    server = Served(setup, "model-slow", "--timeout", "10", env={"MODEL_SLOW_GATE": str(gate)})
    try:
        server.wait_live()
        # load() waits for the gate: live, but not ready
        assert requests.get(server.url + "/v2/health/ready", timeout=5).status_code == 503
        assert requests.get(server.url + "/ping", timeout=5).status_code == 503
        gate.touch()
        server.wait_ready()
        assert "it has no signature: requests are NOT validated" in server.output()
        answers: list[requests.Response] = []
        slow = threading.Thread(target=lambda: answers.append(requests.post(
            server.url + "/invocations", json={"inputs": [[99, 0, 0]]}, timeout=30)))  # fmt: skip
        slow.start()
        time.sleep(1.0)  # the request is in predict() now (it takes 3 s)
        server.proc.send_signal(signal.SIGTERM)
        slow.join(30)
        assert answers and answers[0].status_code == 200, server.output()
        assert answers[0].json()["predictions"] == _in_process(setup, "model-slow", [[99, 0, 0]])
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()


@pytest.mark.slow
def test_a_prediction_over_the_timeout_gets_504(setup: Setup) -> None:
    server = Served(setup, "model-slow", "--timeout", "0.5")
    try:
        server.wait_ready()
        resp = requests.post(server.url + "/invocations", json={"inputs": [[99, 0, 0]]}, timeout=30)
        assert resp.status_code == 504 and "longer than 0.5 s" in resp.json()["error"]
        # no signature: the model's own refusal is a 400 with its message, not a traceback
        resp = requests.post(server.url + "/invocations", json={"inputs": [[1, 2]]}, timeout=30)
        assert (
            resp.status_code == 400
            and "row 0 has 2 features; this model expects 3" in resp.json()["error"]
        )
    finally:
        server.stop()


@pytest.mark.slow
def test_predict_scores_jsonl_and_csv_and_names_the_line_of_a_bad_row(setup: Setup) -> None:
    root, env, reg = setup.root, setup.env, setup.registry.url
    expected = (
        _in_process(setup, "model-srv", ROWS * 500) if setup.cache("model-srv").exists() else None
    )
    source = root / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 500))
    out = root / "scored.jsonl"
    result = modelpack("predict", "model-srv@production", "--input", source, "--output", out,
                       "--batch-size", "64", "--registry", reg, env=env)  # fmt: skip
    assert "scored 1500 rows" in result.stderr, result.stderr
    expected = expected or _in_process(setup, "model-srv", ROWS * 500)
    assert [json.loads(line) for line in out.read_text().splitlines()] == expected
    csv_in = root / "rows.csv"
    csv_in.write_text("a,b,c\n" + "".join(",".join(map(str, r)) + "\n" for r in ROWS))
    result = modelpack("predict", "model-srv==0.1.0", "--input", csv_in, "--registry", reg, env=env)
    assert [json.loads(line) for line in ok(result).splitlines()] == expected[:3]
    for bad, message in (
        ("[1, 2, 3]\n[1, 2]\n", "rows.bad.jsonl line 2: row 0: expected 3 values, got 2"),
        ("[1, 2, 3]\n\n{oops\n", "rows.bad.jsonl line 3: not JSON"),
    ):
        (root / "rows.bad.jsonl").write_text(bad)
        target = root / "never.jsonl"
        result = modelpack("predict", "model-srv", "--input", root / "rows.bad.jsonl", "--output", target,
                           "--registry", reg, env=env)  # fmt: skip
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert not target.exists() and not list(root.glob(".never.jsonl.*"))
    (root / "rows.bad.csv").write_text("a,b,c\n1,2,3\n1,x,3\n")
    result = modelpack(
        "predict", "model-srv", "--input", root / "rows.bad.csv", "--registry", reg, env=env
    )
    assert (
        result.returncode == 1
        and "rows.bad.csv line 3: row 0, column 1: expected float64, got str 'x'" in result.stderr
    )


SKLEARN_INIT = """from importlib.resources import files
import pickle


def load():
    return pickle.loads(files(__name__).joinpath("weights/model.pkl").read_bytes())
"""


@pytest.mark.slow
def test_a_scikit_learn_model_is_served_and_its_numpy_answers_are_json(setup: Setup) -> None:
    import pickle

    import numpy
    import sklearn
    from sklearn.linear_model import LogisticRegression

    project = _template(setup.root, "model-skl")
    package = project / "src" / "model_skl"
    clf = LogisticRegression().fit([[0.0, 0.0], [1.0, 1.0], [4.0, 4.0], [5.0, 5.0]], [0, 0, 1, 1])
    (package / "weights" / "model.pkl").write_bytes(pickle.dumps(clf))
    (package / "__init__.py").write_text(SKLEARN_INIT)
    (package / "model.py").unlink()
    major, minor = sklearn.__version__.split(".")[:2]
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text()
        .replace("dependencies = []", f'dependencies = ["scikit-learn>={sklearn.__version__},<{major}.{int(minor) + 1}", '
                 f'"numpy>={numpy.__version__.rsplit(".", 1)[0]}"]')
        .replace('requires-python = ">=3.10"', 'requires-python = ">=3.11"')
        .replace("input_example = [[1.0, 2.0, 3.0]]", "input_example = [[1.0, 2.0], [4.5, 4.0]]"))  # fmt: skip
    ok(modelpack("build", project, env=setup.env))
    ok(modelpack("publish", project, "--registry", setup.registry.url, env=setup.env))
    server = Served(setup, "model-skl==0.1.0")
    try:
        server.wait_ready(timeout=300)
        rows = [[0.5, 0.5], [4.0, 5.0], [9.0, 9.0]]
        expected = _in_process(setup, "model-skl", rows)
        assert expected == [0, 1, 1]
        resp = requests.post(
            server.url + "/invocations",
            json={"dataframe_split": {"columns": ["a", "b"], "data": rows}},
            timeout=10,
        )
        assert resp.json() == {"predictions": expected}
        v2 = {
            "inputs": [
                {
                    "name": "input",
                    "shape": [3, 2],
                    "datatype": "FP64",
                    "data": [v for r in rows for v in r],
                }
            ]
        }
        out = requests.post(server.url + "/v2/models/model-skl/infer", json=v2, timeout=10).json()[
            "outputs"
        ]
        assert out == [{"name": "output", "shape": [3], "datatype": "INT64", "data": expected}]
        meta = requests.get(server.url + "/v2/models/model-skl", timeout=10).json()
        assert meta["outputs"] == [{"name": "output", "datatype": "INT64", "shape": [-1]}]
        resp = requests.post(
            server.url + "/invocations", json={"inputs": [[1.0, 2.0, 3.0]]}, timeout=10
        )
        assert resp.status_code == 400 and "row 0: expected 2 values, got 3" in resp.json()["error"]
    finally:
        server.stop()


def test_the_registry_shows_the_signature_in_its_api_and_on_the_model_page(setup: Setup) -> None:
    url = setup.registry.url
    manifest = requests.get(f"{url}/api/v1/models/model-srv", timeout=10).json()["manifest"]
    assert manifest["signature"] == {
        "layout": "tensor",
        "inputs": [{"name": "input", "type": "float64", "shape": [-1, 3]}],
        "outputs": [{"name": "output", "type": "float64", "shape": [-1]}],
    }
    page = requests.get(f"{url}/models/model-srv/", timeout=10).text
    assert "<h2>Signature</h2>" in page and "<td>input</td><td>input</td><td>float64</td>" in page
    slow = requests.get(f"{url}/models/model-slow/", timeout=10).text
    assert "No signature: <code>modelpack serve</code> will not check requests." in slow


def test_a_bad_target_is_a_usage_error(setup: Setup) -> None:
    result = modelpack("serve", "model-srv@", "--registry", setup.registry.url, env=setup.env)
    assert result.returncode == 2 and "expected NAME@STAGE" in result.stderr
    result = modelpack(
        "serve", "model-srv@staging", "--registry", setup.registry.url, env=setup.env
    )
    assert (
        result.returncode == 1
        and "has no stage 'staging' (its stages: production)" in result.stderr
    )
