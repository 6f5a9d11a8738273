"""Publication without a lock: two registry servers on one folder or bucket (issue 16 §2).

Each server is its own process (as two replicas on a bucket are); nothing holds the
folder's lock while publishing, so these rules hold only through the conditional writes
of the storage interface: the version's claims document (a compare-and-swap), the
owners document (created only if absent) and the file (created only if absent).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import requests
from registry_support import PASSWORDS, make_wheel, post_upload

from support import Registry, Storage


def race(uploads: list[tuple[Registry, str, bytes, tuple[str, str] | None]]) -> list[int]:
    """Send every upload at the same moment; their statuses, in the order given."""
    barrier = threading.Barrier(len(uploads))
    statuses = [0] * len(uploads)

    def send(i: int) -> None:
        reg, filename, content, auth = uploads[i]
        barrier.wait()
        statuses[i] = post_upload(reg.url, filename, content, auth=auth).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(uploads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored_sha256(data: Storage, filename: str) -> str:
    return hashlib.sha256(data.store.read_bytes(f"packages/{filename}")).hexdigest()


def record(data: Storage, filename: str) -> dict[str, str]:
    return json.loads(data.read_text(f"meta/{filename}.json"))  # type: ignore[no-any-return]


def test_four_spellings_of_a_version_through_two_servers_exactly_one_wins(
    storage: Storage, tmp_path: Path
) -> None:
    data = storage
    with Registry(data) as a, Registry(data) as b:
        for major in ("1", "2", "3"):  # the race, run three times
            spellings = (major, f"{major}.0", f"{major}.0.0", f"{major}.00")
            uploads = []
            for i, version in enumerate(spellings):
                wheel = make_wheel(tmp_path / version, "model-race", version,
                                   payload=version.encode() * 500_000)  # fmt: skip
                uploads.append(((a, b)[i % 2], wheel.name, wheel.read_bytes(), None))
            statuses = race(uploads)
            assert sorted(statuses) == [200, 409, 409, 409], (major, statuses)
            winner = uploads[statuses.index(200)][1]
            ours = [f for f in data.listing("packages") if f.startswith(f"model_race-{major}")]
            assert ours == [winner]
        assert len(data.listing("packages")) == 3 and data.pending() == []
        claims = sorted(data.listing("claims"))
        assert claims == ["model-race==1.json", "model-race==2.json", "model-race==3.json"]
        for filename in data.listing("packages"):  # each record describes its file
            assert record(data, filename)["sha256"] == stored_sha256(data, filename)
        # Both servers see the three files (each checks the generation every 0.25 s).
        for reg in (a, b):
            deadline = time.monotonic() + 5
            while True:
                page = requests.get(f"{reg.index_url}model-race/", timeout=10)
                if page.text.count(".whl#sha256=") == 3 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert page.status_code == 200 and page.text.count(".whl#sha256=") == 3

    # The claims are derived: reindex rebuilds them from packages/.
    for name in claims:
        data.store.delete_doc(f"claims/{name}")
    assert data.listing("claims") == []
    reindex = data.cli("reindex")
    assert reindex.returncode == 0, reindex.stderr
    assert sorted(data.listing("claims")) == claims
    with Registry(data) as a:  # and the rules still hold against the rebuilt claims
        wheel = make_wheel(tmp_path / "again", "model-race", "2.0.0.0")
        answer = post_upload(a.url, wheel.name, wheel.read_bytes())
        assert answer.status_code == 409 and "spelled another way" in answer.text, answer.text


def test_one_file_name_through_two_servers(storage: Storage, tmp_path: Path) -> None:
    data = storage
    with Registry(data) as a, Registry(data) as b:
        for attempt in range(3):
            name = f"model-same{attempt}"
            ours = make_wheel(tmp_path / "ours" / name, name, "1.0", payload=b"o" * 2_000_000)
            theirs = make_wheel(tmp_path / "theirs" / name, name, "1.0", payload=b"t" * 2_000_000)
            assert ours.name == theirs.name and sha256(ours) != sha256(theirs)
            # Other bytes under one name: one is published, the other refused (409).
            statuses = race([(a, ours.name, ours.read_bytes(), None),
                             (b, theirs.name, theirs.read_bytes(), None)])  # fmt: skip
            assert sorted(statuses) == [200, 409], statuses
            won = (ours, theirs)[statuses.index(200)]
            assert stored_sha256(data, ours.name) == sha256(won)
            assert record(data, ours.name)["sha256"] == sha256(won)
            # The same bytes again through both at once: both succeed, nothing changes.
            statuses = race([(a, won.name, won.read_bytes(), None),
                             (b, won.name, won.read_bytes(), None)])  # fmt: skip
            assert statuses == [200, 200]
            assert stored_sha256(data, ours.name) == sha256(won)
        assert len(data.listing("packages")) == 3 and data.pending() == []


def test_first_uploader_of_a_name_through_two_servers_owns_it(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    data = storage
    args = ["--htpasswd", str(htpasswd)]
    alice, bob = ("alice", PASSWORDS["alice"]), ("bob", PASSWORDS["bob"])
    with Registry(data, args=args) as a, Registry(data, args=args) as b:
        for attempt in range(3):
            name = f"model-claimed{attempt}"
            first = make_wheel(tmp_path / name / "a", name, "1.0", payload=b"a" * 1_000_000)
            second = make_wheel(tmp_path / name / "b", name, "2.0", payload=b"b" * 1_000_000)
            statuses = race([(a, first.name, first.read_bytes(), alice),
                             (b, second.name, second.read_bytes(), bob)])  # fmt: skip
            assert sorted(statuses) == [200, 403], statuses
            owner, published, refused = (
                ("alice", first, second) if statuses[0] == 200 else ("bob", second, first)
            )
            doc = json.loads(data.read_text(f"state/owners/{name}.json"))
            assert doc["owners"] == [owner] and doc["maintainers"] == []
            assert published.name in data.listing("packages")
            assert refused.name not in data.listing("packages")
            assert f"{refused.name}.json" not in data.listing("meta")
        assert data.pending() == []
