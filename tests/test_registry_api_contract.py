"""The JSON API and its openapi.json agree, both ways.

Every test's registry already checks each /api/v1 answer against the document
(support.Registry, api_contract.py); these tests check the checker, that the routes the
server dispatches are exactly the document's operations, and the answers that drifted.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import api_contract
import pytest
import requests
from registry_support import PASSWORDS, make_wheel, post_upload
from test_registry_disk_full import fill_inodes

from modelpack_registry.web.openapi import openapi_document
from support import Registry

API = "/api/v1/models"
ALICE = ("alice", PASSWORDS["alice"])


def test_the_routes_are_exactly_the_operations_of_the_served_document(
    registry: Registry,
) -> None:
    from modelpack_registry.web.api import ROUTES

    doc = requests.get(f"{registry.url}/api/v1/openapi.json", timeout=10).json()
    assert {(template, method) for method, template, _ in ROUTES} == api_contract.operations(doc)


def test_owners_put_and_delete_answer_the_document_get_answers(
    tmp_path: Path, htpasswd: Path
) -> None:
    wheel = make_wheel(tmp_path / "dist", "model-foo", "1.0")
    args = ["--htpasswd", str(htpasswd)]
    with Registry(tmp_path / "data", args=args) as reg:
        assert post_upload(reg.url, wheel.name, wheel.read_bytes(), auth=ALICE).status_code == 200
        url = f"{reg.url}{API}/model-foo/owners"
        added = requests.put(f"{url}/bob", json={"role": "maintainer"}, auth=ALICE, timeout=10)
        assert added.status_code == 200, added.text
        assert added.json() == requests.get(url, timeout=10).json()
        assert [h["to"] for h in added.json()["history"]] == ["owner", "maintainer"]
        removed = requests.delete(f"{url}/bob", auth=ALICE, timeout=10)
        assert removed.status_code == 200, removed.text
        assert removed.json() == requests.get(url, timeout=10).json()
        assert removed.json()["history"][-1] == {**removed.json()["history"][-1], "user": "bob",
                                                 "from": "maintainer", "to": None, "by": "alice"}  # fmt: skip


def _entry(method: str, path: str, status: str, body: object, **headers: str) -> dict[str, object]:
    return {"method": method, "path": path, "query": "", "status": status,
            "headers": [["Content-Type", "application/json"], *headers.items()],
            "body": json.dumps(body)}  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (_entry("PUT", f"{API}/m/owners/bob", "200 OK",
                {"name": "m", "owners": ["alice"], "maintainers": ["bob"]}),
         "'history' is a required property"),
        (_entry("GET", API, "500 Internal Server Error", {"error": "boom"}),
         "status 500 is not documented for GET /api/v1/models"),
        (_entry("POST", API, "405 Method Not Allowed", {"error": "no"}, Allow="GET"),
         "Allow is ['GET'], openapi.json has ['GET', 'HEAD']"),
        (_entry("GET", "/api/v1/nothing", "200 OK", {}),
         "not an operation of openapi.json, so it must answer 404"),
        (_entry("GET", f"{API}/m", "404 Not Found", {"message": "gone"}),
         "'error' is a required property"),
    ],
)  # fmt: skip
def test_the_checker_refuses_answers_that_drift(entry: dict[str, object], problem: str) -> None:
    found = api_contract.check_answer(json.dumps(openapi_document()), entry)
    assert found is not None and problem in found, found


def test_a_registry_reports_an_answer_that_breaks_the_document(tmp_path: Path) -> None:
    """The whole path: recorded in the server, checked when the registry stops."""
    reg = Registry(tmp_path / "data").start()
    try:
        assert requests.get(f"{reg.url}{API}", timeout=10).status_code == 200
        assert requests.get(f"{reg.url}{API}/nope", timeout=10).status_code == 404
    finally:
        reg.stop()
    reg.assert_contract()  # both answers are in the document
    document = reg.recorded / "openapi.json"
    doc = json.loads(document.read_text())
    del doc["paths"]["/api/v1/models/{name}"]["get"]["responses"]["404"]
    reg.start()
    try:
        document.write_text(json.dumps(doc))  # as if the server documented no 404 there
        assert requests.get(f"{reg.url}{API}/nope", timeout=10).status_code == 404
    finally:
        reg.stop()
    with pytest.raises(AssertionError, match=r"GET /api/v1/models/nope -> 404: status 404 is not"):
        reg.assert_contract()


BOB = ("bob", PASSWORDS["bob"])
WRONG = ("alice", "not-her-password")
BIG = b'{"pad": "' + b" " * (65 * 1024) + b'"}'  # over the API's 64 KiB body limit
M = f"{API}/model-foo"


def ask(documented: dict[str, Any], server: Registry, method: str, path: str, auth: object,
        body: object, status: int) -> tuple[str, str, str]:  # fmt: skip
    """Send one request, check its status; the (template, method, status) it produced."""
    send = {"data": body} if isinstance(body, bytes) else {"json": body}
    answer = requests.request(method, server.url + path, auth=auth, timeout=10,  # type: ignore[arg-type]
                              headers={"Content-Type": "application/json"}, **send)  # fmt: skip
    assert answer.status_code == status, (method, path, auth, answer.text)
    return api_contract.template_of(documented, path) or path, method.lower(), str(status)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 16 MiB and 1024 inodes (the tests run as root), unmounted afterwards."""
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,nr_inodes=1024,mode=0755", "tmpfs",
                    str(mount)], check=True)  # fmt: skip
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_every_documented_answer_is_produced_and_valid(tmp_path: Path, htpasswd: Path,
                                                       small_fs: Path) -> None:  # fmt: skip
    """One request for each (path, method, status) of openapi.json, in an order that makes
    each happen (507: with the data folder's file system full); the registries check every
    answer's body when they stop."""
    dist = tmp_path / "dist"
    wheels = [make_wheel(dist, "model-foo", v) for v in ("1.0", "2.0")]
    produced: set[tuple[str, str, str]] = set()
    documented = openapi_document()
    args = ["--htpasswd", str(htpasswd), "--protect-reads"]
    log = tmp_path / "registry.log"  # the log and the recorded answers stay off small_fs
    with Registry(small_fs / "data", args=args, log=log) as reg, \
            Registry(tmp_path / "anonymous") as anonymous:  # fmt: skip
        for wheel in wheels:
            assert (
                post_upload(reg.url, wheel.name, wheel.read_bytes(), auth=ALICE).status_code == 200
            )
        token = requests.post(f"{reg.url}{M}/tokens", json={}, auth=ALICE, timeout=10).json()
        as_token = ("__token__", token["token"])
        tid = token["id"]
        role = {"role": "maintainer"}
        rows: list[tuple[Registry, str, str, object, object, int]] = [
            (reg, "GET", API, ALICE, None, 200), (reg, "GET", API, None, None, 401),
            (reg, "GET", API, WRONG, None, 403),
            (reg, "GET", M, ALICE, None, 200), (reg, "GET", M, None, None, 401),
            (reg, "GET", f"{API}?sort=auc", ALICE, None, 400),  # not sort=metric:auc
            (reg, "GET", M, WRONG, None, 403), (reg, "GET", f"{API}/nope", ALICE, None, 404),
            (reg, "GET", f"{M}/owners", ALICE, None, 200),
            (reg, "GET", f"{API}/a$b/owners", ALICE, None, 400),
            (reg, "GET", f"{M}/owners", None, None, 401),
            (reg, "GET", f"{M}/owners", WRONG, None, 403),
            (reg, "GET", f"{API}/nope/owners", ALICE, None, 404),
            (reg, "GET", "/api/v1/openapi.json", ALICE, None, 200),
            (reg, "GET", "/api/v1/openapi.json", None, None, 401),
            (reg, "GET", "/api/v1/openapi.json", WRONG, None, 403),
            (reg, "PUT", f"{M}/owners/bob", ALICE, role, 200),
            (reg, "PUT", f"{M}/owners/bob", ALICE, {"role": "boss"}, 400),
            (reg, "PUT", f"{M}/owners/bob", None, role, 401),
            (reg, "PUT", f"{M}/owners/carol", BOB, role, 403),  # a maintainer
            (reg, "PUT", f"{API}/nope/owners/bob", ALICE, role, 404),
            (reg, "PUT", f"{M}/owners/alice", ALICE, role, 409),  # the last owner
            (reg, "PUT", f"{M}/owners/bob", ALICE, BIG, 413),
            (reg, "DELETE", f"{M}/owners/bob", ALICE, None, 200),
            (reg, "DELETE", f"{M}/owners/bad:user", ALICE, None, 400),
            (reg, "DELETE", f"{M}/owners/bob", None, None, 401),
            (reg, "DELETE", f"{M}/owners/alice", BOB, None, 403),
            (reg, "DELETE", f"{M}/owners/bob", ALICE, None, 404),  # no longer listed
            (reg, "DELETE", f"{M}/owners/alice", ALICE, None, 409),
            (reg, "PUT", f"{M}/versions/2.0/yank", ALICE, {"reason": "bad"}, 200),
            (reg, "PUT", f"{M}/versions/2.0/yank", ALICE, {}, 400),
            (reg, "PUT", f"{M}/versions/2.0/yank", None, {"reason": "x"}, 401),
            (reg, "PUT", f"{M}/versions/2.0/yank", BOB, {"reason": "x"}, 403),
            (reg, "PUT", f"{M}/versions/9.9/yank", ALICE, {"reason": "x"}, 404),
            (reg, "PUT", f"{M}/versions/2.0/yank", ALICE, BIG, 413),
            (reg, "PUT", f"{M}/stages/production", ALICE, {"version": "1.0"}, 200),
            (reg, "PUT", f"{M}/stages/BAD", ALICE, {"version": "1.0"}, 400),
            (reg, "PUT", f"{M}/stages/production", None, {"version": "1.0"}, 401),
            (reg, "PUT", f"{M}/stages/production", BOB, {"version": "1.0"}, 403),
            (reg, "PUT", f"{M}/stages/production", ALICE, {"version": "9.9"}, 404),
            (reg, "PUT", f"{M}/stages/production", ALICE, {"version": "2.0"}, 409),  # yanked
            (reg, "PUT", f"{M}/stages/production", ALICE, BIG, 413),
            (reg, "DELETE", f"{M}/stages/BAD", ALICE, None, 400),
            (reg, "DELETE", f"{M}/stages/production", None, None, 401),
            (reg, "DELETE", f"{M}/stages/production", BOB, None, 403),
            (reg, "DELETE", f"{M}/stages/staging", ALICE, None, 404),
            (reg, "DELETE", f"{M}/stages/production", ALICE, None, 200),
            (reg, "DELETE", f"{M}/versions/2.0/yank", None, None, 401),
            (reg, "DELETE", f"{M}/versions/2.0/yank", BOB, None, 403),
            (reg, "DELETE", f"{M}/versions/9.9/yank", ALICE, None, 404),
            (reg, "DELETE", f"{M}/versions/2.0/yank", ALICE, None, 200),
            (reg, "POST", f"{M}/tokens", ALICE, {"expires": "90d"}, 201),
            (reg, "POST", f"{M}/tokens", ALICE, {"expires": "soon"}, 400),
            (reg, "POST", f"{M}/tokens", None, {}, 401),
            (reg, "POST", f"{M}/tokens", BOB, {}, 403),
            (reg, "POST", f"{API}/nope/tokens", ALICE, {}, 404),
            (reg, "POST", f"{M}/tokens", ALICE, BIG, 413),
            (reg, "GET", f"{M}/tokens", ALICE, None, 200),
            (reg, "GET", f"{API}/a$b/tokens", ALICE, None, 400),
            (reg, "GET", f"{M}/tokens", None, None, 401),
            (reg, "GET", f"{M}/tokens", as_token, None, 403),
            (reg, "GET", f"{API}/nope/tokens", ALICE, None, 404),
            (reg, "DELETE", f"{API}/a$b/tokens/{tid}", ALICE, None, 400),
            (reg, "DELETE", f"{M}/tokens/{tid}", None, None, 401),
            (reg, "DELETE", f"{M}/tokens/{tid}", BOB, None, 403),  # alice's token
            (reg, "DELETE", f"{M}/tokens/0123456789abcdef", ALICE, None, 404),
            (reg, "DELETE", f"{M}/tokens/{tid}", ALICE, None, 200),
            (anonymous, "GET", f"{M}/tokens", None, None, 409),
            (anonymous, "POST", f"{M}/tokens", None, {}, 409),
            (anonymous, "DELETE", f"{M}/tokens/{tid}", None, None, 409),
        ]  # fmt: skip
        # With the disk full, every write answers 507 (but a revoke: it only deletes).
        # Things to change first:
        rows += [
            (reg, "PUT", f"{M}/stages/production", ALICE, {"version": "1.0"}, 200),
            (reg, "PUT", f"{M}/owners/bob", ALICE, role, 200),
        ]  # fmt: skip
        full = [
            (reg, "PUT", f"{M}/stages/staging", ALICE, {"version": "1.0"}, 507),
            (reg, "DELETE", f"{M}/stages/production", ALICE, None, 507),
            (reg, "PUT", f"{M}/versions/1.0/yank", ALICE, {"reason": "x"}, 507),
            (reg, "DELETE", f"{M}/versions/1.0/yank", ALICE, None, 507),
            (reg, "PUT", f"{M}/owners/carol", ALICE, role, 507),
            (reg, "DELETE", f"{M}/owners/bob", ALICE, None, 507),
            (reg, "POST", f"{M}/tokens", ALICE, {}, 507),
        ]  # fmt: skip
        for row in rows:
            produced.add(ask(documented, *row))
        fill_inodes(small_fs / "filler", leave=0)
        for row in full:
            produced.add(ask(documented, *row))
    assert api_contract.documented(documented) == produced
