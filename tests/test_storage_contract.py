"""The storage interface's contract, run on both backends: a data folder and a bucket.

The bucket is served by moto's standalone S3 server, a separate process on loopback
(``support.S3Server``); every S3Store talks to it over HTTP with boto3, as in production.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modelpack_registry.errors import StorageError
from modelpack_registry.storage.base import (
    ANY,
    NEW,
    AlreadyExists,
    NotFound,
    Stale,
    Store,
    update_doc,
)
from modelpack_registry.storage.folder import FolderStore
from modelpack_registry.storage.s3 import S3Store, parse_s3_url
from modelpack_registry.storage.s3_upload import S3Reader
from support import S3Server

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(log=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        old = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)
        try:
            yield server
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def new_bucket(s3: S3Server) -> str:
    return s3.bucket(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "folder":
        for sub in ("packages", "meta", "tmp"):
            (tmp_path / sub).mkdir()
        return FolderStore(tmp_path)
    s3: S3Server = request.getfixturevalue("s3")
    return S3Store(new_bucket(s3), "reg/x", endpoint_url=s3.url, part_size=5 * MiB)


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) in n threads released at once; return each result or exception."""
    barrier = threading.Barrier(n)

    def one(i: int) -> Any:
        barrier.wait()
        try:
            return fn(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_put_new_creates_once(store: Store) -> None:
    store.put_new("meta/a.metadata", b"one")
    with pytest.raises(AlreadyExists):
        store.put_new("meta/a.metadata", b"two")
    assert store.read_bytes("meta/a.metadata") == b"one"


def test_put_new_race_has_one_winner(store: Store) -> None:
    results = race(10, lambda i: store.put_new("meta/race.metadata", f"{i}".encode()))
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1, results
    assert all(isinstance(r, AlreadyExists) for r in results if r is not None), results
    assert store.read_bytes("meta/race.metadata") == str(winners[0]).encode()


def test_write_doc_versions(store: Store) -> None:
    key = "state/owners/m.json"
    v1 = store.write_doc(key, b"1", NEW)
    assert store.read_doc(key) == (b"1", v1)
    with pytest.raises(AlreadyExists):
        store.write_doc(key, b"x", NEW)
    v2 = store.write_doc(key, b"2", v1)
    assert v2 != v1
    with pytest.raises(Stale):  # v1 moved on to v2
        store.write_doc(key, b"3", v1)
    assert store.read_doc(key) == (b"2", v2)
    v3 = store.write_doc(key, b"3", ANY)
    assert store.read_doc(key) == (b"3", v3)
    with pytest.raises(Stale):  # a version of a document that does not exist
        store.write_doc("state/owners/none.json", b"x", v3)
    assert store.read_doc("state/owners/none.json") is None


def test_delete_doc_versions(store: Store) -> None:
    key = "state/yanked/f.whl.json"
    v1 = store.write_doc(key, b"1", NEW)
    store.write_doc(key, b"2", v1)
    with pytest.raises(Stale):
        store.delete_doc(key, v1)
    with pytest.raises(AlreadyExists):
        store.delete_doc(key, NEW)
    current = store.read_doc(key)
    assert current is not None and current[0] == b"2"
    store.delete_doc(key, current[1])
    assert store.read_doc(key) is None
    with pytest.raises(Stale):  # gone meanwhile
        store.delete_doc(key, current[1])
    store.delete_doc(key, ANY)  # absent: no error
    store.delete_doc(key, NEW)  # absent, as expected


def test_update_doc_loses_no_increment(store: Store) -> None:
    def increment(content: bytes | None) -> bytes:
        count = json.loads(content)["n"] if content else 0
        return json.dumps({"n": count + 1}).encode()

    results = race(20, lambda i: update_doc(store, "generation", increment, attempts=200))
    assert not [r for r in results if isinstance(r, Exception)], results
    current = store.read_doc("generation")
    assert current is not None and json.loads(current[0]) == {"n": 20}


def test_iter_keys_lists_immediate_children(store: Store) -> None:
    for key in ("state/a.json", "state/b.json", "state/owners/c.json", "statement"):
        store.write_doc(key, b"{}", ANY)
    assert sorted(store.iter_keys("state/")) == ["state/a.json", "state/b.json"]
    assert sorted(store.iter_keys("state/owners/")) == ["state/owners/c.json"]
    assert list(store.iter_keys("state/tokens/")) == []
    assert "statement" in set(store.iter_keys(""))


def test_iter_keys_pages_past_1000(store: Store) -> None:
    keys = {f"state/tokens/{i:05d}.json" for i in range(1003)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.write_doc(k, b"{}", ANY), keys))
    assert set(store.iter_keys("state/tokens/")) == keys


def test_blob_reads_stat_and_delete(store: Store) -> None:
    data = bytes(range(256)) * 40
    store.put_new("packages/f.whl", data)
    assert store.read_range("packages/f.whl", 10, 20) == data[10:20]
    assert store.read_range("packages/f.whl", 10_000, 20_000) == data[10_000:]
    assert store.read_range("packages/f.whl", 20_000, 30_000) == b""
    with store.open("packages/f.whl") as f:
        f.seek(100)
        assert f.read(5) == data[100:105]
        f.seek(0)
        assert f.read() == data
    info = store.stat("packages/f.whl")
    assert info is not None and info.size == len(data) and info.key == "packages/f.whl"
    assert store.stat("packages/none.whl") is None
    for read in (lambda k: store.read_bytes(k), lambda k: store.open(k),
                 lambda k: store.read_range(k, 0, 1)):  # fmt: skip
        with pytest.raises(NotFound):
            read("packages/none.whl")
    store.delete("packages/f.whl")
    store.delete("packages/f.whl")
    assert store.stat("packages/f.whl") is None
    assert list(store.iter_keys("packages/")) == []


def test_open_reads_a_large_blob_sequentially_and_after_seeks(store: Store) -> None:
    data = os.urandom(40 * MiB + 123)
    stream(store, data).commit("packages/big.whl")
    with store.open("packages/big.whl") as f:
        got = b"".join(iter(lambda: f.read(MiB), b""))
        assert got == data
        if isinstance(f, S3Reader):  # growing ranges, then one streamed GET
            assert f.requests <= 8, f.requests
        f.seek(5 * MiB + 7)
        assert f.read(3 * MiB) == data[5 * MiB + 7 : 8 * MiB + 7]
        f.seek(-100, os.SEEK_END)
        assert f.read() == data[-100:]
        f.seek(MiB)
        assert f.read(10) == data[MiB : MiB + 10]


@pytest.mark.parametrize("bad", ["../x", "/x", "a//b", "a/./b", "", "a/../../b"])
def test_unsafe_keys_are_refused(store: Store, bad: str) -> None:
    for call in (lambda: store.read_doc(bad), lambda: store.write_doc(bad, b"x", ANY),
                 lambda: store.put_new(bad, b"x"), lambda: store.stat(bad),
                 lambda: store.delete(bad), lambda: store.read_bytes(bad)):  # fmt: skip
        with pytest.raises(ValueError, match="unsafe storage key"):
            call()


def a_wheel(payload: int) -> bytes:
    """A zip laid out like a wheel: a large member first, the .dist-info last."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("m/weights.bin", os.urandom(payload))
        z.writestr("m-1.dist-info/METADATA", "Metadata-Version: 2.1\nName: m\nVersion: 1\n")
        z.writestr("m-1.dist-info/RECORD", "")
    return out.getvalue()


def stream(store: Store, data: bytes, chunk: int = 1_000_003) -> Any:
    upload = store.new_upload()
    for start in range(0, len(data), chunk):
        upload.write(memoryview(data)[start : start + chunk])
    assert upload.size == len(data)
    upload.finish()
    return upload


def test_upload_reader_commit_and_exists(store: Store) -> None:
    data = a_wheel(12 * MiB)  # three parts of 5 MiB (the last shorter) on S3
    upload = stream(store, data)
    assert list(store.iter_keys("packages/")) == []
    with upload.reader() as f, zipfile.ZipFile(f) as z:
        assert z.read("m-1.dist-info/METADATA").startswith(b"Metadata-Version")
    if isinstance(f, S3Reader):
        assert f.requests <= 2, f.requests  # the directory and METADATA: the last MiB
    upload.commit("packages/m-1-py3-none-any.whl")
    upload.abort()  # idempotent after commit; the file stays
    assert store.read_bytes("packages/m-1-py3-none-any.whl") == data
    assert store.pending_uploads() == []

    second = stream(store, b"other bytes")
    with pytest.raises(AlreadyExists):
        second.commit("packages/m-1-py3-none-any.whl")
    second.abort()
    assert store.read_bytes("packages/m-1-py3-none-any.whl") == data
    assert store.pending_uploads() == []
    assert list(store.iter_keys("packages/")) == ["packages/m-1-py3-none-any.whl"]


def test_upload_of_nothing_and_of_one_part(store: Store) -> None:
    for key, data in (("packages/empty.zip", b""), ("packages/small.zip", b"x" * 5000)):
        upload = stream(store, data)
        upload.commit(key)
        upload.abort()
        assert store.read_bytes(key) == data
    assert store.pending_uploads() == []


def test_aborted_upload_leaves_nothing(store: Store) -> None:
    cut = store.new_upload()  # cut off mid-stream: parts were sent, no finish
    cut.write(os.urandom(11 * MiB))
    if isinstance(store, S3Store):
        assert len(store.pending_uploads()) == 1  # an open multipart upload
    cut.abort()
    done = stream(store, os.urandom(6 * MiB))  # finished but never committed
    done.abort()
    assert store.pending_uploads() == []
    assert list(store.iter_keys("packages/")) == []
    assert list(store.iter_keys("tmp/")) == []
    if isinstance(store, S3Store):
        assert store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []


def test_sweep_removes_only_abandoned_multipart_uploads(s3: S3Server) -> None:
    store = S3Store(new_bucket(s3), "p", endpoint_url=s3.url, part_size=5 * MiB)
    abandoned = store.new_upload()
    abandoned.write(os.urandom(5 * MiB))  # one part sent: a multipart upload is open
    staged = stream(store, b"finished, never committed")
    assert len(store.pending_uploads()) == 2
    assert store.sweep_uploads() == []  # younger than a day: a live upload
    removed = store.sweep_uploads(older_than=timedelta(0))
    assert sorted(removed) == sorted([abandoned.key, staged.key])
    assert store.pending_uploads() == []
    assert store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []


def test_download_url(store: Store) -> None:
    store.put_new("packages/f.whl", b"wheel bytes")
    url = store.download_url("packages/f.whl", 120)
    if isinstance(store, FolderStore):
        assert url is None
        return
    assert url is not None
    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    assert query["X-Amz-Expires"] == ["120"] and "X-Amz-Signature" in query
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == b"wheel bytes"
    # moto's server checks neither signatures nor expiry; tests/moto_s3.py refuses an
    # expired URL as S3 does (403), so that a client's refusal can be shown at all
    short = store.download_url("packages/f.whl", 1)
    assert short is not None
    with urllib.request.urlopen(short, timeout=10) as answer:
        assert answer.read() == b"wheel bytes"
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(short, timeout=10)
    assert refused.value.code == 403 and b"Request has expired" in refused.value.read()
    with urllib.request.urlopen(url, timeout=10) as answer:  # the 2-minute one still works
        assert answer.read() == b"wheel bytes"


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    for bad in ("s3://ab/x", "s3://b_c d/x", "s3://bucket/a/../b", "https://bucket/x"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)


def test_missing_bucket_and_unreachable_endpoint(s3: S3Server) -> None:
    with pytest.raises(StorageError, match=r"no bucket 'nosuchbucket'.*create it"):
        S3Store("nosuchbucket", "", endpoint_url=s3.url).check()
    with pytest.raises(StorageError, match=r"NoSuchBucket.*create the bucket"):
        S3Store("nosuchbucket", "", endpoint_url=s3.url).read_doc("generation")
    from support import free_port

    dead = S3Store("bucket", "", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint.*--s3-endpoint"):
        dead.check()
