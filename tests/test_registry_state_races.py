"""State changes racing each other through two servers and the CLI on one store.

The platform team's story: two replicas serve one registry and an admin scripts
`modelpack-registry owners add` at the same time as people use the API. No lock is held
(a bucket has none): every `state/` document changes by a conditional read-modify-write
that is retried when another writer got in between, so no change is lost, the
last-owner rule holds under a race, and of two creations or deletions of one document
exactly one wins. Real registry processes on one data folder or bucket (both backends,
conftest ``storage``), real CLI processes.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import requests

from support import Registry, Storage

API = "/api/v1/models"


def owners_url(reg: Registry, name: str, user: str) -> str:
    return f"{reg.url}{API}/{name}/owners/{user}"


def change(reg: Registry, name: str, user: str, role: str | None) -> requests.Response:
    """PUT a role (or DELETE, for None) through ``reg``'s API (anonymous registry)."""
    if role is None:
        return requests.delete(owners_url(reg, name, user), timeout=30)
    return requests.put(owners_url(reg, name, user), json={"role": role}, timeout=30)


def cli(data: Storage, *args: str) -> subprocess.Popen[str]:
    """Start ``modelpack-registry ARGS --data/--storage ...`` (it runs beside the servers)."""
    return data.cli_start(*args)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out + err


def owners_of(reg: Registry, name: str) -> dict[str, object]:
    answer = requests.get(f"{reg.url}{API}/{name}/owners", timeout=10)
    assert answer.status_code == 200, answer.text
    doc: dict[str, object] = answer.json()
    return doc


def test_parallel_owner_changes_through_two_servers_and_the_cli_lose_nothing(
    storage: Storage,
) -> None:
    data = storage
    users = [f"user-{i:02d}" for i in range(20)]
    by_cli = [f"cli-{i}" for i in range(3)]
    with Registry(data) as one, Registry(data) as two:
        servers = (one, two)
        # 20 users added at once, half through each server, while the CLI adds 3 more
        procs = [cli(data, "owners", "add", "model-foo", user) for user in by_cli]
        with ThreadPoolExecutor(len(users)) as pool:
            answers = list(pool.map(lambda i: change(servers[i % 2], "model-foo",
                                                     users[i], "owner"), range(len(users))))  # fmt: skip
        assert [a.status_code for a in answers] == [200] * len(users), [a.text for a in answers]
        for proc in procs:
            code, text = finish(proc)
            assert code == 0, text
        doc = owners_of(one, "model-foo")
        assert sorted(doc["owners"]) == sorted(users + by_cli)  # type: ignore[arg-type]
        history = doc["history"]
        assert isinstance(history, list) and len(history) == len(users) + len(by_cli)
        assert sorted(h["user"] for h in history) == sorted(users + by_cli)

        # Then at once: half of them removed, the other half made maintainers.
        with ThreadPoolExecutor(len(users)) as pool:
            answers = list(pool.map(
                lambda i: change(servers[i % 2], "model-foo", users[i],
                                 None if i < 10 else "maintainer"),
                range(len(users)),
            ))  # fmt: skip
        assert [a.status_code for a in answers] == [200] * len(users), [a.text for a in answers]
        doc = owners_of(two, "model-foo")
        assert sorted(doc["owners"]) == by_cli  # type: ignore[arg-type]
        assert doc["maintainers"] and sorted(doc["maintainers"]) == users[10:]  # type: ignore[arg-type]
        assert len(doc["history"]) == 2 * len(users) + len(by_cli)  # type: ignore[arg-type]

        # The last-owner rule under a race: of two owners removed at once through the two
        # servers, exactly one goes (a blind write would let both go: no owner left).
        names = [f"model-pair-{i}" for i in range(6)]
        for name in names:
            for user in ("alice", "bob"):
                assert change(one, name, user, "owner").status_code == 200
        with ThreadPoolExecutor(2 * len(names)) as pool:
            raced = list(pool.map(
                lambda job: change(servers[job[1]], job[0], ("alice", "bob")[job[1]], None),
                [(name, side) for name in names for side in (0, 1)],
            ))  # fmt: skip
        for i, name in enumerate(names):
            statuses = sorted(a.status_code for a in raced[2 * i : 2 * i + 2])
            assert statuses == [200, 409], [a.text for a in raced[2 * i : 2 * i + 2]]
            left = owners_of(one, name)["owners"]
            assert isinstance(left, list) and len(left) == 1
            refused = next(a for a in raced[2 * i : 2 * i + 2] if a.status_code == 409)
            assert f"is the last owner of {name}; add another owner first" in refused.text

    verify = data.cli("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_of_two_reservations_or_revocations_at_once_exactly_one_wins(storage: Storage) -> None:
    data = storage
    with Registry(data):  # makes the store, and runs beside the CLI
        procs = [cli(data, "reserve", "model-new") for _ in range(4)]
        said = sorted(finish(p)[1].strip() for p in procs)
        assert said == ["model-new was already reserved"] * 3 + ["reserved model-new"]

        procs = [cli(data, "reserve", "--release", "model-new") for _ in range(4)]
        said = sorted(finish(p)[1].strip() for p in procs)
        assert said == ["model-new was not reserved"] * 3 + ["released model-new"]

        made = data.cli("tokens", "create", "--model", "model-foo", "--user", "alice")
        assert made.returncode == 0, made.stderr
        token_id = made.stdout.split("_")[1]
        procs = [cli(data, "tokens", "revoke", token_id) for _ in range(4)]
        results = sorted(finish(p) for p in procs)
        assert [code for code, _ in results] == [0, 1, 1, 1], results
        assert results[0][1].startswith(f"revoked token {token_id} (alice on model-foo)")
        assert all(f"no token with id '{token_id}'" in text for _, text in results[1:])
        assert not data.exists(f"state/tokens/{token_id}.json")


def test_verify_names_the_store_in_its_fixes_once(storage: Storage) -> None:
    """The fixes `verify` prints for state/ documents are commands that run as printed."""
    data = storage
    if data.path is not None:  # a data folder (a bucket prefix needs nothing made first)
        (data.path / "packages").mkdir(parents=True)
    made = data.cli("tokens", "create", "--model", "model-foo", "--user", "alice")
    assert made.returncode == 0, made.stderr
    token_key = f"state/tokens/{made.stdout.split('_')[1]}.json"
    data.write_text(token_key, data.read_text(token_key)[:20])  # a truncated copy
    added = data.cli("owners", "add", "model-foo", "alice")
    assert added.returncode == 0, added.stderr
    owners = json.dumps({"owners": ["alice", "alice"], "maintainers": []})
    data.write_text("state/owners/model-foo.json", owners)

    result = data.cli("verify")
    assert result.returncode == 1
    (corrupt,) = [line for line in result.stdout.splitlines() if line.startswith("corrupt: ")]
    assert f"(`{data.delete_command(token_key)}`)" in corrupt
    assert f"--model MODEL --user USER {data.option}`" in corrupt
    (twice,) = [line for line in result.stdout.splitlines() if "listed more than once" in line]
    assert f"owners add model-foo USER [--maintainer] {data.option}` for any user" in twice
    flag = data.args[0]
    assert result.stdout.count(flag) == 2  # once per fix, never "--data --data"
