"""The registry on a bucket, end to end: replicas with no shared folder, a replica killed
mid-upload, pip and uv through the redirect, protected reads, an upstream, maintenance.

Every registry here is a real ``modelpack-registry serve --storage s3://...`` process and
the bucket is moto's S3 server (``support.S3Server``: conditional writes serialized,
presigned URLs expire). Two registries on one bucket prefix share nothing else: they are
the stateless replicas of a Deployment. Files stay small (moto reads a whole object for
every ranged GET).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests
from registry_support import (
    PASSWORDS,
    make_big_wheel,
    make_wheel,
    multipart_body,
    post_upload,
    twine_upload,
)

from support import (
    REPO,
    Registry,
    S3Server,
    Storage,
    clean_env,
    confined_env,
    make_venv,
    uv_bin,
)

JSON = "application/vnd.pypi.simple.v1+json"
#: a replica must see another's upload within this (it checks every second on a bucket;
#: generous for a busy 2-core machine: never seeing it is the failure looked for)
VISIBLE_WITHIN = 15.0
#: what each test measured: printed at the end of the module (pytest -s)
FIGURES: dict[str, list[float]] = {}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(log=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server
    for name, values in FIGURES.items():
        print(f"{name}: n={len(values)} min {min(values):.2f} s, max {max(values):.2f} s")


class OnBucket(Registry):
    """A registry serving ``s3://BUCKET/PREFIX`` on the test's S3 server (no data folder)."""

    def __init__(
        self,
        s3: S3Server,
        storage: str,
        folder: Path,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        **kw: Any,
    ) -> None:
        bucket, _, prefix = storage.removeprefix("s3://").partition("/")
        state = Storage.bucket(s3, bucket, prefix, workdir=folder)
        super().__init__(state, args=args, env=env, **kw)
        self.endpoint = s3.url


def cli(s3: S3Server, *args: str) -> subprocess.CompletedProcess[str]:
    """``modelpack-registry ARGS`` with the S3 server's credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPACK_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "modelpack_registry", *args],
        capture_output=True,
        text=True,
        env={**env, **s3.env},
        timeout=120,
    )


def listed(reg: Registry, project: str, auth: tuple[str, str] | None = None) -> list[str]:
    answer = requests.get(
        f"{reg.url}/simple/{project}/", headers={"Accept": JSON}, auth=auth, timeout=10
    )
    return [f["filename"] for f in answer.json()["files"]] if answer.status_code == 200 else []


def seen_after(reg: Registry, project: str, filename: str, since: float) -> float:
    """Seconds from ``since`` until ``reg`` lists ``filename`` (fails after VISIBLE_WITHIN)."""
    while filename not in listed(reg, project):
        assert time.monotonic() - since < VISIBLE_WITHIN, f"{reg.url} never listed {filename}"
        time.sleep(0.02)
    return time.monotonic() - since


def race(*calls: Callable[[], requests.Response]) -> list[requests.Response]:
    """Run ``calls`` at once (released together by a barrier); their answers."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], requests.Response]) -> requests.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def objects(s3: S3Server, bucket: str, prefix: str) -> list[str]:
    answer = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix)  # type: ignore[attr-defined]
    return sorted(o["Key"] for o in answer.get("Contents", []))


def multipart_uploads(s3: S3Server, bucket: str) -> list[dict[str, Any]]:
    answer = s3.client().list_multipart_uploads(Bucket=bucket)  # type: ignore[attr-defined]
    return list(answer.get("Uploads", []))


def install(tool: str, venv: Path, index_url: str, *reqs: str) -> None:
    python = str(venv / "bin" / "python")
    if tool == "pip":
        cmd = [python, "-m", "pip", "install", "--no-cache-dir", "--index-url", index_url, *reqs]
    else:
        cmd = [
            uv_bin(),
            "pip",
            "install",
            "--no-config",
            "--no-cache",
            "--python",
            python,
            "--index-url",
            index_url,
            *reqs,
        ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=confined_env(), timeout=300)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"


def installed(venv: Path, code: str) -> str:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=venv,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# -- replicas --------------------------------------------------------------------------------
def test_replicas_race_for_one_file_and_see_each_other(s3: S3Server, tmp_path: Path) -> None:
    """Two replicas, one bucket prefix, no shared folder: the same file name uploaded with
    other bytes through each at the same instant. Exactly one upload wins (200), the other
    is refused (409), both replicas then list and serve the winner's bytes, and pip gets
    them; the other replica lists a new file within VISIBLE_WITHIN. verify and reindex
    then find the bucket clean."""
    bucket = s3.bucket("race-bucket")
    storage = f"s3://{bucket}/reg"
    with OnBucket(s3, storage, tmp_path / "a") as a, OnBucket(s3, storage, tmp_path / "b") as b:
        winners: dict[str, bytes] = {}
        for n in range(4):
            version = f"1.{n}"
            ours = {
                reg.url: make_wheel(
                    tmp_path / f"{n}-{reg.port}",
                    "model-race",
                    version,
                    summary=f"uploaded through {reg.port}",
                )
                for reg in (a, b)
            }
            name = next(iter(ours.values())).name
            answers = race(
                *[
                    (lambda reg=reg: post_upload(reg.url, name, ours[reg.url].read_bytes()))
                    for reg in (a, b)
                ]
            )
            assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
            won = next(i for i, r in enumerate(answers) if r.status_code == 200)
            winner, other = (a, b)[won], (b, a)[won]
            winners[name] = ours[winner.url].read_bytes()
            assert "immutable" in answers[1 - won].text
            FIGURES.setdefault("replica visibility", []).append(
                seen_after(other, "model-race", name, time.monotonic())
            )
            for reg in (a, b):
                got = requests.get(f"{reg.url}/packages/{name}", timeout=10)
                assert got.content == winners[name], (
                    f"{reg.url} serves other bytes than the winner's"
                )
        assert objects(s3, bucket, "reg/packages/") == sorted(f"reg/packages/{n}" for n in winners)

        venv = make_venv(tmp_path / "venv")
        install("pip", venv, b.index_url, "model-race==1.3")
        summary = installed(
            venv, "import importlib.metadata as m; print(m.metadata('model-race')['Summary'])"
        )
        expected = re.search(rb"Summary: (.*)\n", winners["model_race-1.3-py3-none-any.whl"])
        assert expected is not None and summary == expected.group(1).decode()

    assert multipart_uploads(s3, bucket) == []
    verify = cli(s3, "verify", "--storage", storage, "--s3-endpoint", s3.url)
    assert verify.returncode == 0 and f"{storage}: OK" in verify.stdout, verify
    reindex = cli(s3, "reindex", "--storage", storage, "--s3-endpoint", s3.url)
    assert reindex.returncode == 0 and "indexed 4 distribution(s)" in reindex.stdout, reindex
    again = cli(s3, "verify", "--storage", storage, "--s3-endpoint", s3.url)
    assert again.returncode == 0 and f"{storage}: OK" in again.stdout, again


def test_two_first_uploaders_through_two_replicas_one_owner(
    s3: S3Server, tmp_path: Path, htpasswd: Path
) -> None:
    """alice and bob each publish the first version of one new name at the same instant,
    through different replicas: exactly one becomes its owner, the other is refused (403)."""
    bucket = s3.bucket("owners-bucket")
    storage = f"s3://{bucket}/reg"
    args = ["--htpasswd", str(htpasswd)]
    with (
        OnBucket(s3, storage, tmp_path / "a", args) as a,
        OnBucket(s3, storage, tmp_path / "b", args) as b,
    ):
        for n in range(4):
            project = f"model-first-{n}"
            uploads = [(a, "alice", "1.0"), (b, "bob", "2.0")]
            wheels = {
                user: make_wheel(tmp_path / user, project, version) for _, user, version in uploads
            }
            answers = race(
                *[
                    (
                        lambda reg=reg, user=user: post_upload(
                            reg.url,
                            wheels[user].name,
                            wheels[user].read_bytes(),
                            auth=(user, PASSWORDS[user]),
                        )
                    )
                    for reg, user, _ in uploads
                ]
            )
            assert sorted(r.status_code for r in answers) == [200, 403], [r.text for r in answers]
            owner = ("alice", "bob")[[r.status_code for r in answers].index(200)]
            doc = s3.client().get_object(Bucket=bucket, Key=f"reg/state/owners/{project}.json")  # type: ignore[attr-defined]
            assert json.loads(doc["Body"].read())["owners"] == [owner]
            for reg in (a, b):
                since = time.monotonic()
                seen_after(reg, project, wheels[owner].name, since)
                assert listed(reg, project) == [wheels[owner].name]


# -- a replica killed mid-upload -------------------------------------------------------------
def test_replica_killed_mid_upload(s3: S3Server, tmp_path: Path) -> None:
    """SIGKILL while a 36 MiB upload is half sent (one 16 MiB part already in the bucket,
    at the wheel's final key ``packages/<file>``): nothing is listed by either replica,
    ``verify`` names the multipart upload, a replica that starts leaves it alone (it could
    be a live peer's: its part is seconds old), and the same upload sent
    again through the other replica succeeds. A multipart upload that the same start-up
    sweep finds older than a day is aborted."""
    bucket = s3.bucket("kill-bucket")
    storage = f"s3://{bucket}/reg"
    wheel = make_big_wheel(tmp_path / "big", "model-cut", "1.0", 36 * 1024 * 1024)
    body, ctype = multipart_body(wheel.name, wheel.read_bytes())
    with ExitStack() as stack:
        a = OnBucket(s3, storage, tmp_path / "a").start()
        stack.callback(a.stop)
        b = stack.enter_context(OnBucket(s3, storage, tmp_path / "b"))
        sock = socket.create_connection((a.host, a.port), timeout=10)
        stack.callback(sock.close)
        head = (
            f"POST / HTTP/1.1\r\nHost: {a.host}:{a.port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head)
        half = len(body) // 2
        for start in range(0, half, 1 << 20):  # slowly: 1 MiB at a time
            sock.sendall(body[start : min(start + (1 << 20), half)])
            time.sleep(0.02)
        deadline = time.monotonic() + 30
        while not (started := multipart_uploads(s3, bucket)) or not s3.client().list_parts(  # type: ignore[attr-defined]
            Bucket=bucket, Key=started[0]["Key"], UploadId=started[0]["UploadId"]
        ).get("Parts"):
            assert time.monotonic() < deadline, "no part of the upload reached the bucket"
            time.sleep(0.1)
        a.kill()

        [cut] = multipart_uploads(s3, bucket)
        # a wheel streams to its final key; an incomplete multipart upload is no object
        assert cut["Key"] == f"reg/packages/{wheel.name}", cut["Key"]
        assert listed(b, "model-cut") == []
        assert requests.get(f"{b.url}/packages/{wheel.name}", timeout=10).status_code == 404
        assert objects(s3, bucket, "reg/packages/") == []
        assert objects(s3, bucket, "reg/meta/") == []
        assert objects(s3, bucket, "reg/claims/") == []

        verify = cli(s3, "verify", "--storage", storage, "--s3-endpoint", s3.url)
        assert verify.returncode == 1, verify
        leftover = f"leftover temp file: {cut['Key'].removeprefix('reg/')}"
        assert verify.stdout.splitlines() == [leftover], verify

        # one abandoned two days ago, as the sweep finds it (the start time is in its name)
        old = f"reg/tmp/upload-{int(time.time()) - 2 * 86400}-1-00000000deadbeef.part"
        client = s3.client()
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=old)["UploadId"]  # type: ignore[attr-defined]
        client.upload_part(Bucket=bucket, Key=old, UploadId=upload_id, PartNumber=1, Body=b"x")  # type: ignore[attr-defined]

        restarted = stack.enter_context(OnBucket(s3, storage, tmp_path / "a2"))
        assert [u["Key"] for u in multipart_uploads(s3, bucket)] == [cut["Key"]]
        assert "removed an abandoned upload: tmp/" in restarted.log.read_text()

        again = requests.post(f"{b.url}/", data=body, headers={"Content-Type": ctype}, timeout=120)
        assert again.status_code == 200, again.text
        seen_after(restarted, "model-cut", wheel.name, time.monotonic())
        assert objects(s3, bucket, "reg/packages/") == [f"reg/packages/{wheel.name}"]
        assert [u["Key"] for u in multipart_uploads(s3, bucket)] == [cut["Key"]]


def test_documented_lifecycle_rule_is_accepted(s3: S3Server) -> None:
    """The lifecycle rule of docs/storage.md (what removes a killed upload's parts and
    staged objects after a day) is a configuration S3 takes as it stands."""
    page = (REPO / "docs" / "storage.md").read_text()
    anchor = "`lifecycle.json` (replace `registry/` with your prefix"
    assert anchor in page
    block = re.search(r"```json\n(.*?)```", page[page.index(anchor) :], re.S)
    assert block is not None
    rules = json.loads(block.group(1))
    assert {"AbortIncompleteMultipartUpload", "Expiration"} <= {
        key for rule in rules["Rules"] for key in rule
    }
    bucket = s3.bucket("lifecycle-bucket")
    client = s3.client()
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=rules)  # type: ignore[attr-defined]
    stored = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]  # type: ignore[attr-defined]
    assert sorted(r["ID"] for r in stored) == sorted(r["ID"] for r in rules["Rules"])


# -- installs --------------------------------------------------------------------------------
def test_pip_and_uv_install_through_the_redirect_and_proxied(s3: S3Server, tmp_path: Path) -> None:
    """pip and uv install a model from a replica that redirects to presigned URLs (the
    bucket sends the bytes: the registry answers 302) and from one that streams it
    (``--no-s3-redirect``: 200 with the bytes), in throwaway venvs confined to that index."""
    bucket = s3.bucket("install-bucket")
    storage = f"s3://{bucket}/reg"
    wheel = make_wheel(tmp_path / "dist", "model-pipuv", "1.0", payload=os.urandom(256 * 1024))
    with (
        OnBucket(s3, storage, tmp_path / "r", ["--access-log"]) as redirect,
        OnBucket(s3, storage, tmp_path / "p", ["--access-log", "--no-s3-redirect"]) as proxied,
    ):
        assert twine_upload(redirect.url, wheel).returncode == 0
        seen_after(proxied, "model-pipuv", wheel.name, time.monotonic())
        for reg, status in ((redirect, "302"), (proxied, "200")):
            for tool in ("pip", "uv"):
                venv = make_venv(tmp_path / f"{tool}-{reg.port}", tool)
                install(tool, venv, reg.index_url, "model-pipuv")
                assert installed(venv, "import model_pipuv; print(model_pipuv.VERSION)") == "1.0"
            log = reg.log.read_text()
            gets = re.findall(rf'"GET /packages/{re.escape(wheel.name)} HTTP/1.1" (\d+) (\d+)', log)
            assert len(gets) == 2 and {s for s, _ in gets} == {status}, gets
            if status == "200":
                assert {int(size) for _, size in gets} == {wheel.stat().st_size}
    # the bucket sent the redirected ones: a presigned GET each (no HEAD, which a URL
    # signed for GET would not allow on S3)
    assert s3.log is not None
    signed = re.findall(
        rf'"(\w+) /{bucket}/reg/packages/{re.escape(wheel.name)}\?X-Amz-Algorithm=[^"]*" (\d+)',
        s3.log.read_text(errors="replace"),
    )
    assert signed == [("GET", "200"), ("GET", "200")], signed


# -- protected reads: presigned URLs after authentication, short-lived -----------------------
def test_protect_reads_issues_short_lived_urls_only_after_authentication(
    s3: S3Server, tmp_path: Path, htpasswd: Path
) -> None:
    bucket = s3.bucket("protected-bucket")
    storage = f"s3://{bucket}/reg"
    args = ["--htpasswd", str(htpasswd), "--protect-reads", "--s3-url-ttl", "2", "--access-log"]
    wheel = make_wheel(tmp_path / "dist", "model-private", "1.0")
    alice = ("alice", PASSWORDS["alice"])
    with OnBucket(s3, storage, tmp_path / "r", args) as reg:
        assert twine_upload(reg.url, wheel, user="alice", password=alice[1]).returncode == 0
        url = f"{reg.url}/packages/{wheel.name}"
        anonymous = requests.get(url, allow_redirects=False, timeout=10)
        assert anonymous.status_code == 401, anonymous
        assert "Location" not in anonymous.headers
        assert "X-Amz" not in anonymous.text and s3.url not in anonymous.text

        answer = requests.get(url, auth=alice, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer
        location = answer.headers["Location"]
        assert location.startswith(f"{s3.url}/{bucket}/reg/packages/{wheel.name}?")
        assert "X-Amz-Expires=2&" in location or location.endswith("X-Amz-Expires=2")
        assert answer.headers["Cache-Control"] == "no-store"
        assert requests.get(location, timeout=10).content == wheel.read_bytes()

        time.sleep(3)  # past the URL's two seconds
        expired = requests.get(location, timeout=10)
        assert expired.status_code == 403 and "Request has expired" in expired.text

        fresh = requests.get(url, auth=alice, timeout=10)  # a new URL for a new request
        assert fresh.status_code == 200 and fresh.content == wheel.read_bytes()
        index = reg.index_url.replace("://", f"://alice:{alice[1]}@")
        for tool in ("pip", "uv"):
            venv = make_venv(tmp_path / f"venv-{tool}", tool)
            install(tool, venv, index, "model-private")
            assert installed(venv, "import model_private; print(model_private.VERSION)") == "1.0"
        log = reg.log.read_text()
        answers = re.findall(
            rf'(\S+) \[[^]]*\] "GET /packages/{re.escape(wheel.name)} HTTP/1.1" (\d+)', log
        )
        # the anonymous try, then two requests here, pip and uv: each authenticated one a URL
        assert answers == [("-", "401")] + [("alice", "302")] * 4, answers


def test_url_ttl_is_checked_and_documented(s3: S3Server) -> None:
    bucket = s3.bucket("ttl-bucket")
    bad = cli(
        s3, "serve", "--storage", f"s3://{bucket}/reg", "--s3-endpoint", s3.url, "--s3-url-ttl", "0"
    )
    assert bad.returncode == 2 and "--s3-url-ttl" in bad.stderr and "604800" in bad.stderr
    helped = cli(s3, "serve", "--help").stdout
    for flag in ("--s3-url-ttl", "MODELPACK_S3_URL_TTL", "--mirror-dir", "--refresh-interval"):
        assert flag in helped, flag


# -- an upstream index, cached on local disk -------------------------------------------------
@pytest.mark.parametrize("home", ["xdg", "none"], ids=["xdg-cache-home", "no-home"])
def test_upstream_on_a_bucket_caches_on_local_disk(s3: S3Server, tmp_path: Path,
                                                   home: str) -> None:  # fmt: skip
    """``--upstream`` with ``--storage s3://``: a bucket has no ``mirror/`` folder, so the
    cache goes to ``$XDG_CACHE_HOME/modelpack-registry/mirror-<hash>``, or, for a user
    without a home (the image's), under the temp folder; pip installs a public package
    through it."""
    bucket = s3.bucket(f"upstream-{home}-bucket")
    cache = tmp_path / "cache"
    cache.mkdir()
    if home == "xdg":
        env, root = {"XDG_CACHE_HOME": str(cache)}, cache / "modelpack-registry"
    else:
        nohome = tmp_path / "home"  # a file: no folder can be made in it, even by root
        nohome.write_text("")
        env = {"XDG_CACHE_HOME": "", "HOME": str(nohome), "TMPDIR": str(cache)}
        root = cache / f"modelpack-registry-{os.getuid()}"
    with Registry(tmp_path / "up-data", log=tmp_path / "upstream.log") as upstream:
        public = make_wheel(tmp_path / "public", "tinydep", "2.0")
        assert twine_upload(upstream.url, public).returncode == 0
        args = ["--upstream", upstream.index_url]
        with OnBucket(s3, f"s3://{bucket}/reg", tmp_path / "p", args, env=env) as proxy:
            venv = make_venv(tmp_path / "venv")
            install("pip", venv, proxy.index_url, "tinydep")
            assert installed(venv, "import tinydep; print(tinydep.VERSION)") == "2.0"
        [mirror] = root.iterdir()
        assert mirror.name.startswith("mirror-")
        assert [p.name for p in (mirror / "files").rglob("*.whl")] == [public.name]
    assert objects(s3, bucket, "reg/packages/") == []  # a cache, never the registry's state


def test_mirror_dir_option(s3: S3Server, tmp_path: Path) -> None:
    """``--mirror-dir DIR`` puts the cache there; an unwritable one is one clear line."""
    bucket = s3.bucket("mirror-bucket")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    bad = cli(
        s3,
        "serve",
        "--storage",
        f"s3://{bucket}/reg",
        "--s3-endpoint",
        s3.url,
        "--port",
        "0",
        "--upstream",
        "http://127.0.0.1:9/simple/",
        "--mirror-dir",
        str(blocked / "mirror"),
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad
    assert "--mirror-dir" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
