"""`modelpack-registry migrate` into a bucket and back, on a real S3 API server.

A folder registry (models, owners, a stage, a yank, a reserved name, an API token, the
version claims) goes into a bucket prefix on moto's standalone S3 server and from there
into a second folder, byte-identical; a re-run copies nothing; a bucket holding other
bytes under a name is refused and left untouched; and a registry served from the bucket
installs the model with pip through the redirect and keeps owners, stage, yank and token.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests
from registry_support import make_wheel
from test_registry_access import auth, twine
from test_registry_migrate import API, populate, snapshot
from test_storage_cli import serving

from support import Registry, S3Server, Venv


def migrate(s3: S3Server, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "modelpack_registry", "migrate", "--s3-endpoint", s3.url, *args]
    env = {**os.environ, **s3.env}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_a_folder_registry_goes_into_a_bucket_and_back(tmp_path: Path, htpasswd: Path) -> None:
    src, back = tmp_path / "src", tmp_path / "back"
    token = populate(tmp_path, htpasswd, src)
    with S3Server(log=tmp_path / "moto.log") as s3:
        bucket = s3.bucket("models")
        bucket_url = f"s3://{bucket}/registry"
        into = migrate(s3, "--from", str(src), "--to", bucket_url)
        assert into.returncode == 0, into.stdout + into.stderr
        assert f"verified: {src} -> {bucket_url}/" in into.stdout and "claims 3" in into.stdout
        client = s3.client()
        listed = client.list_objects_v2(Bucket=bucket, Prefix="registry/")  # type: ignore[attr-defined]
        names = {o["Key"] for o in listed["Contents"]}
        assert "registry/packages/model_foo-1.0-py3-none-any.whl" in names
        assert "registry/state/owners/model-foo.json" in names and "registry/generation" in names

        again = migrate(s3, "--from", str(src), "--to", bucket_url)
        assert again.returncode == 0 and "copied 0 object(s)" in again.stdout, again.stdout

        out = migrate(s3, "--from", bucket_url, "--to", str(back))
        assert out.returncode == 0, out.stdout + out.stderr
        before, after = snapshot(src), snapshot(back)
        kept = [k for k in before if k.split("/")[0] in ("packages", "meta", "state", "claims")]
        assert kept and all(after[k][0] == before[k][0] for k in kept), "byte-identical"

        # Another registry's model_foo-1.0 (other bytes) is refused; the bucket keeps its own.
        other = tmp_path / "other"
        with Registry(other) as reg:
            code, text = twine(reg, make_wheel(tmp_path / "o", "model-foo", "1.0"), "x", "x")
            assert code == 0, text
        key = "registry/packages/model_foo-1.0-py3-none-any.whl"
        etag = client.head_object(Bucket=bucket, Key=key)["ETag"]  # type: ignore[attr-defined]
        refused = migrate(s3, "--from", str(other), "--to", bucket_url)
        assert refused.returncode == 1 and "nothing was written" in refused.stdout
        assert "packages/model_foo-1.0-py3-none-any.whl: the destination already has" in (
            refused.stdout
        )
        assert client.head_object(Bucket=bucket, Key=key)["ETag"] == etag  # type: ignore[attr-defined]

        where = ["--storage", bucket_url, "--s3-endpoint", s3.url]
        with serving(*where, "--htpasswd", str(htpasswd), "--admin", "carol") as url:
            venv = Venv(tmp_path / "pip-env", tool="pip")
            venv.install("model-foo", index_url=f"{url}/simple/")  # 2.0 is yanked
            assert venv.run("import model_foo; print(model_foo.VERSION)").stdout.strip() == "1.0"
            doc = requests.get(f"{url}{API}/model-foo", timeout=10).json()
            assert doc["stages"]["production"]["version"] == "1.0"
            assert [v["yanked"] for v in doc["versions"] if v["version"] == "2.0"] == [True]
            owners = requests.get(f"{url}{API}/model-foo/owners", timeout=10).json()
            assert (owners["owners"], owners["maintainers"]) == (["alice"], ["bob"])

            def post(version: str, who: tuple[str, str]) -> requests.Response:
                wheel = make_wheel(tmp_path / version, "model-foo", version)
                return requests.post(f"{url}/", files={"content": (wheel.name, wheel.read_bytes())},
                                     data={":action": "file_upload"}, auth=who, timeout=60)  # fmt: skip

            assert post("3.0", ("__token__", token)).status_code == 200  # the token works
            assert post("4.0", auth("bob")).status_code == 200  # a maintainer
            refused_upload = post("5.0", ("dave", "s3cret"))
            assert refused_upload.status_code == 403 and "owned by alice" in refused_upload.text
