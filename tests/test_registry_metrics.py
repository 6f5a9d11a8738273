"""`GET /metrics`: what the registry holds, for the platform team's Prometheus.

Real registries: models published with real uploads, a version yanked and one promoted
through the API, an upload held open halfway, API tokens made with the server CLI. The
answer is parsed line by line against the text exposition format, and every process
(two workers here) must answer the same, since the figures come from the data folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests
from registry_support import make_wheel, post_upload, send_half_upload
from test_registry_access import make_token, server

from support import Registry

API = "/api/v1/models"
SAMPLE = re.compile(r'^(modelpack_registry_[a-z_]+)(\{[a-z]+="(?:[^"\\]|\\.)*"\})? (\S+)$')


def scrape(url: str, auth: tuple[str, str] | None = None) -> dict[str, float]:
    """``name{labels}`` -> value; every line must be a HELP, a TYPE or a sample."""
    resp = requests.get(f"{url}/metrics", auth=auth, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    found: dict[str, float] = {}
    typed: set[str] = set()
    for line in resp.text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:]
            assert kind == "gauge"
            typed.add(name)
        elif not line.startswith("# HELP "):
            match = SAMPLE.match(line)
            assert match, line
            assert match.group(1) in typed, line  # TYPE comes before the samples
            found[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return found


def test_metrics_count_what_the_data_folder_holds(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    wheels = [make_wheel(dist, "model-foo", v) for v in ("1.0", "2.0")]
    wheels.append(make_wheel(dist, "model-bar", "1.0"))
    with Registry(tmp_path / "data", args=["--workers", "2"]) as reg:
        empty = scrape(reg.url)
        assert empty["modelpack_registry_models"] == empty["modelpack_registry_files"] == 0
        for wheel in wheels:
            assert post_upload(reg.url, wheel.name, wheel.read_bytes()).status_code == 200
        assert requests.put(f"{reg.url}{API}/model-foo/versions/1.0/yank",
                            json={"reason": "bad"}, timeout=10).status_code == 200  # fmt: skip
        assert requests.put(f"{reg.url}{API}/model-foo/stages/production",
                            json={"version": "2.0"}, timeout=10).status_code == 200  # fmt: skip
        # 256 KiB: a body of at most 16 KiB is read whole before the upload starts (worker.py)
        baz = make_wheel(dist, "model-baz", "1.0", payload=bytes(256 * 1024))
        held = send_half_upload(reg.host, reg.port, baz.name, baz.read_bytes())
        try:
            for _ in range(50):  # until the server has opened the temp file
                got = scrape(reg.url)
                if got["modelpack_registry_uploads_in_progress"] == 1:
                    break
            assert got["modelpack_registry_uploads_in_progress"] == 1
            assert got["modelpack_registry_models"] == 2
            assert got["modelpack_registry_files"] == 3
            assert got["modelpack_registry_bytes"] == sum(w.stat().st_size for w in wheels)
            assert got["modelpack_registry_yanked_files"] == 1
            assert got['modelpack_registry_staged_models{stage="production"}'] == 1
            assert got["modelpack_registry_api_tokens"] == 0
            assert got['modelpack_registry_info{version="0.1.0"}'] == 1
            generation = (reg.data / "generation").stat().st_mtime
            assert got["modelpack_registry_last_change_timestamp_seconds"] == generation
            # both worker processes answer the same: nothing is counted in memory
            assert all(scrape(reg.url) == got for _ in range(6))
        finally:
            held.close()


def test_metrics_are_a_read_and_count_expired_tokens(tmp_path: Path, htpasswd: Path) -> None:
    data = tmp_path / "data"
    with server(tmp_path, htpasswd, "--protect-reads", data=data) as reg:
        assert requests.get(f"{reg.url}/metrics", timeout=10).status_code == 401
        make_token(data)
        old = make_token(data)
        path = data / f"state/tokens/{old.split('_')[1]}.json"
        path.write_text(
            json.dumps({**json.loads(path.read_text()), "expires": "2020-01-01T00:00:00Z"})
        )
        got = scrape(reg.url, auth=("alice", "alice-pw"))
        assert got["modelpack_registry_api_tokens"] == 2
        assert got["modelpack_registry_api_tokens_expired"] == 1
