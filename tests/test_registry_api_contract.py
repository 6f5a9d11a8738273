"""The JSON API and its openapi.json agree, both ways.

Every test's registry already checks each /api/v1 answer against the document
(support.Registry, api_contract.py); these tests check the checker, that the routes the
server dispatches are exactly the document's operations, and the answers that drifted.
"""

from __future__ import annotations

import json
from pathlib import Path

import api_contract
import pytest
import requests
from registry_support import PASSWORDS, make_wheel, post_upload

from support import Registry

API = "/api/v1/models"
ALICE = ("alice", PASSWORDS["alice"])


def test_the_routes_are_exactly_the_operations_of_the_served_document(
    registry: Registry,
) -> None:
    from modelpack_registry.api import ROUTES

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
    from modelpack_registry.openapi import openapi_document

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
