"""Who may publish what: owners, maintainers, admins, API tokens and protected reads.

The platform team's story: alice publishes model-foo first and owns it; bob cannot
replace, yank or promote it until alice (or the CLI on the server) makes him a
maintainer; carol is an admin; CI uploads with a token scoped to one model. Real registry
processes, real twine and pip, htpasswd files made with bcrypt. The tests that keep state
run on both backends (conftest ``storage``: a data folder, a bucket) and read it through
the store.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from registry_support import PASSWORDS, make_wheel, post_upload, twine_upload

from support import Registry, Storage, Venv, as_storage, modelpack, ok

API = "/api/v1/models"


def auth(user: str) -> tuple[str, str]:
    return user, PASSWORDS[user]


def server(tmp_path: Path, htpasswd: Path, *extra: str,
           data: Path | Storage | None = None) -> Registry:  # fmt: skip
    """Passwords (carol an admin) on ``data`` (default: the folder ``tmp_path/data``)."""
    args = ["--htpasswd", str(htpasswd), "--admin", "carol", *extra]
    return Registry(data or tmp_path / "data", args=args)


def twine(reg: Registry, wheel: Path, user: str, password: str | None = None) -> tuple[int, str]:
    result = twine_upload(reg.url, wheel, user=user, password=password or PASSWORDS[user])
    return result.returncode, result.stdout + result.stderr


def make_token(data: Path | Storage, model: str = "model-foo", user: str = "alice") -> str:
    """A new API token (its full text), made with the server CLI."""
    return ok(as_storage(data).cli("tokens", "create", "--model", model, "--user", user))


def promote(reg: Registry, name: str, version: str, who: tuple[str, str]) -> requests.Response:
    url = f"{reg.url}{API}/{name}/stages/production"
    return requests.put(url, json={"version": version}, auth=who, timeout=10)


def yank(reg: Registry, name: str, version: str, who: tuple[str, str]) -> requests.Response:
    url = f"{reg.url}{API}/{name}/versions/{version}/yank"
    return requests.put(url, json={"reason": "bad weights"}, auth=who, timeout=10)


def set_owner(reg: Registry, name: str, user: str, role: str | None, who: tuple[str, str]
              ) -> requests.Response:  # fmt: skip
    url = f"{reg.url}{API}/{name}/owners/{user}"
    if role is None:
        return requests.delete(url, auth=who, timeout=10)
    return requests.put(url, json={"role": role}, auth=who, timeout=10)


def owners_file(data: Storage, name: str) -> dict[str, list[str]]:
    """The owners and maintainers in the document (its history aside)."""
    doc = json.loads(data.read_text(f"state/owners/{name}.json"))
    return {key: doc[key] for key in ("owners", "maintainers")}


def history(data: Storage, name: str) -> list[tuple[str, str | None, str | None, str | None]]:
    """``(user, from, to, by)`` of each role change in the owners document, oldest first."""
    doc = json.loads(data.read_text(f"state/owners/{name}.json"))
    for change in doc["history"]:
        assert dt.datetime.fromisoformat(change["at"].replace("Z", "+00:00")).tzinfo
    return [(c["user"], c["from"], c["to"], c["by"]) for c in doc["history"]]


def test_first_uploader_owns_others_ask_and_admins_do_anything(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    dist = tmp_path / "dist"
    with server(tmp_path, htpasswd, data=storage) as reg:
        code, out = twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")
        assert code == 0, out
        assert owners_file(reg.storage, "model-foo") == {"owners": ["alice"], "maintainers": []}

        # bob is refused everything on alice's model, told who to ask, and nothing is written.
        before = reg.storage.listing("packages"), reg.storage.listing("meta")
        code, out = twine(reg, make_wheel(dist, "model-foo", "2.0"), "bob")
        assert code != 0 and "403" in out and "owned by alice" in out, out
        assert (reg.storage.listing("packages"), reg.storage.listing("meta")) == before
        assert reg.storage.pending() == []
        for refused in (promote(reg, "model-foo", "1.0", auth("bob")),
                        yank(reg, "model-foo", "1.0", auth("bob"))):  # fmt: skip
            assert refused.status_code == 403
            message = refused.json()["error"]
            assert "model-foo is owned by alice" in message
            assert "owners add model-foo bob --maintainer" in message
        assert reg.storage.listing("state/stages") == reg.storage.listing("state/yanked") == []

        # The owner's CLI on the server makes bob a maintainer: he may upload and promote.
        cli = reg.storage.cli("owners", "add", "model-foo", "bob", "--maintainer")
        assert cli.returncode == 0, cli.stderr
        code, out = twine(reg, make_wheel(dist, "model-foo", "2.0"), "bob")
        assert code == 0, out
        assert promote(reg, "model-foo", "2.0", auth("bob")).status_code == 200
        owners_url = f"{reg.url}{API}/model-foo/owners"
        got = requests.get(owners_url, timeout=10).json()
        assert {k: v for k, v in got.items() if k != "history"} == {
            "name": "model-foo", "owners": ["alice"], "maintainers": ["bob"]
        }  # fmt: skip
        assert [(c["user"], c["to"]) for c in got["history"]] == [
            ("alice", "owner"), ("bob", "maintainer")
        ]  # fmt: skip
        # A maintainer cannot change owners; the owner removes him and he is refused again.
        assert set_owner(reg, "model-foo", "bob", "owner", auth("bob")).status_code == 403
        removed = set_owner(reg, "model-foo", "bob", None, auth("alice"))
        assert removed.status_code == 200 and removed.json()["maintainers"] == []
        code, out = twine(reg, make_wheel(dist, "model-foo", "3.0"), "bob")
        assert code != 0 and "403" in out, out
        assert not reg.storage.exists("packages/model_foo-3.0-py3-none-any.whl")
        last = set_owner(reg, "model-foo", "alice", None, auth("alice"))
        assert last.status_code == 409 and "last owner" in last.json()["error"]
        unknown = set_owner(reg, "model-foo", "mallory", "owner", auth("alice"))
        assert unknown.status_code == 400

        # carol is an admin: upload, yank and change owners of a model she does not own.
        code, out = twine(reg, make_wheel(dist, "model-foo", "3.0"), "carol")
        assert code == 0, out
        assert yank(reg, "model-foo", "3.0", auth("carol")).status_code == 200
        assert set_owner(reg, "model-foo", "bob", "owner", auth("carol")).status_code == 200
        assert owners_file(reg.storage, "model-foo")["owners"] == ["alice", "bob"]

        # An apr1 ($apr1$, htpasswd -m) entry authenticates too; dave owns what he creates.
        code, out = twine(reg, make_wheel(dist, "model-dave", "1.0"), "dave", "s3cret")
        assert code == 0, out
        assert owners_file(reg.storage, "model-dave")["owners"] == ["dave"]

        listed = reg.storage.cli("owners", "list", "model-foo")
        assert listed.returncode == 0
        assert "owner       alice" in listed.stdout and "owner       bob" in listed.stdout
        assert "history" not in listed.stdout

        # Who changed whose role, and when: the first upload, the CLI, the API.
        system_user = "cli:" + getpass.getuser()
        assert history(reg.storage, "model-foo") == [
            ("alice", None, "owner", "alice"),  # her first upload
            ("bob", None, "maintainer", system_user),  # `owners add` on the server
            ("bob", "maintainer", None, "alice"),  # DELETE .../owners/bob
            ("bob", None, "owner", "carol"),  # PUT by an admin
        ]
        assert history(reg.storage, "model-dave") == [("dave", None, "owner", "dave")]
        told = reg.storage.cli("owners", "list", "model-foo", "--history")
        lines = told.stdout.splitlines()
        assert lines[lines.index("history") + 2].endswith(
            f"bob: none -> maintainer  by {system_user}"
        ), told.stdout
        assert lines[-1].endswith("bob: none -> owner  by carol")
        cli_last = reg.storage.cli("owners", "remove", "model-dave", "dave")
        assert cli_last.returncode == 1 and "last owner" in cli_last.stderr


def test_ownerless_models_are_not_taken_over(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    data = storage
    dist = tmp_path / "dist"
    with Registry(data) as anonymous:  # before ownership: nobody is recorded
        code, out = twine(anonymous, make_wheel(dist, "model-old", "1.0"), "alice")
        assert code == 0, out
    assert data.listing("state/owners") == []
    with server(tmp_path, htpasswd, data=data) as reg:
        code, out = twine(reg, make_wheel(dist, "model-old", "2.0"), "bob")
        assert code != 0 and "has no owners" in out, out
        assert promote(reg, "model-old", "1.0", auth("bob")).status_code == 403
        assert set_owner(reg, "model-old", "bob", "owner", auth("bob")).status_code == 403
        listed = data.cli("owners", "list", "model-old")
        assert "has no owners" in listed.stdout
        # An admin may publish; that does not make the admin its owner either.
        code, out = twine(reg, make_wheel(dist, "model-old", "2.0"), "carol")
        assert code == 0, out
        assert data.listing("state/owners") == []
        # Handing it over is explicit: the CLI on the server, or an admin through the API.
        assert data.cli("owners", "add", "model-old", "bob").returncode == 0
        code, out = twine(reg, make_wheel(dist, "model-old", "3.0"), "bob")
        assert code == 0, out
        assert set_owner(reg, "model-old", "alice", "maintainer", auth("carol")).status_code == 200
        assert owners_file(data, "model-old") == {"owners": ["bob"], "maintainers": ["alice"]}


def test_protect_reads_needs_credentials_and_pip_sends_them(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    with server(tmp_path, htpasswd, "--protect-reads", data=storage) as reg:
        code, out = twine(reg, make_wheel(tmp_path / "dist", "model-foo", "1.0"), "alice")
        assert code == 0, out
        assert requests.get(f"{reg.url}/health", timeout=10).status_code == 200
        for path in ("/simple/", "/simple/model-foo/", "/", API, "/api/v1/openapi.json",
                     "/packages/model_foo-1.0-py3-none-any.whl", "/favicon.ico"):  # fmt: skip
            anonymous = requests.get(reg.url + path, timeout=10)
            assert anonymous.status_code == 401, path
            assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="modelpack"'
        assert requests.get(reg.index_url, auth=("bob", "wrong"), timeout=10).status_code == 403
        assert requests.get(reg.index_url, auth=auth("bob"), timeout=10).status_code == 200
        venv = Venv(tmp_path / "venv")
        assert venv.install("model-foo", index_url=reg.index_url, check=False).returncode != 0
        url = reg.index_url.replace("http://", "http://bob:bob-pw@")
        venv.install("model-foo==1.0", index_url=url)
        assert venv.run("import model_foo; print(model_foo.VERSION)").stdout.strip() == "1.0"


def test_api_token_is_scoped_to_one_model_hashed_and_revocable(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    dist = tmp_path / "dist"
    data = storage
    with server(tmp_path, htpasswd, data=data) as reg:
        assert twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")[0] == 0
        assert twine(reg, make_wheel(dist, "model-bar", "1.0"), "alice")[0] == 0
        created = data.cli("tokens", "create", "--model", "Model_Foo", "--user", "alice")
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        assert token.startswith("mpk_") and len(token) > 50
        token_id = token.split("_")[1]

        code, out = twine(reg, make_wheel(dist, "model-foo", "2.0"), "__token__", token)
        assert code == 0, out
        assert promote(reg, "model-foo", "2.0", ("__token__", token)).status_code == 200
        code, out = twine(reg, make_wheel(dist, "model-bar", "2.0"), "__token__", token)
        assert code != 0 and "403" in out and "model-foo only" in out, out
        assert yank(reg, "model-bar", "1.0", ("__token__", token)).status_code == 403
        assert set_owner(reg, "model-foo", "bob", "owner", ("__token__", token)).status_code == 403
        # A token acts as its user: one for bob on alice's model is refused like bob.
        bobs = ok(data.cli("tokens", "create", "--model", "model-foo", "--user", "bob"))
        assert promote(reg, "model-foo", "1.0", ("__token__", bobs)).status_code == 403

        listed = data.cli("tokens", "list")
        assert listed.returncode == 0 and token_id in listed.stdout
        secret = token.split("_", 2)[2]
        assert secret not in listed.stdout + listed.stderr
        for name in data.listing("state/tokens"):  # only hashes are stored
            stored = data.store.read_bytes(f"state/tokens/{name}")
            assert secret.encode() not in stored and token.encode() not in stored
        assert json.loads(data.read_text(f"state/tokens/{token_id}.json"))["model"] == "model-foo"

        revoked = data.cli("tokens", "revoke", token_id)
        assert revoked.returncode == 0, revoked.stderr
        code, out = twine(reg, make_wheel(dist, "model-foo", "3.0"), "__token__", token)
        assert code != 0 and ("403" in out or "401" in out), out
        response = post_upload(reg.url, "model_foo-3.0-py3-none-any.whl",
                               (dist / "model_foo-3.0-py3-none-any.whl").read_bytes(),
                               auth=("__token__", token))  # fmt: skip
        assert response.status_code == 403 and "revoked" in response.text
        assert data.cli("tokens", "revoke", token_id).returncode == 1


def test_each_file_records_who_uploaded_it_and_reindex_keeps_it(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    dist = tmp_path / "dist"
    data = storage

    def uploads(reg: Registry) -> dict[str, tuple[str | None, str | None, str | None]]:
        """version -> (version's uploaded_by, file's uploaded_by, file's upload_token)."""
        doc = requests.get(f"{reg.url}{API}/model-foo", timeout=10).json()
        return {
            v["version"]: (v["uploaded_by"], v["files"][0]["uploaded_by"],
                           v["files"][0]["upload_token"])
            for v in doc["versions"]
        }  # fmt: skip

    with server(tmp_path, htpasswd, data=data) as reg:
        assert twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")[0] == 0
        token = make_token(data)
        assert twine(reg, make_wheel(dist, "model-foo", "2.0"), "__token__", token)[0] == 0
        assert twine(reg, make_wheel(dist, "model-foo", "3.0"), "carol")[0] == 0  # an admin
        token_id = token.split("_")[1]
        expected = {
            "1.0": ("alice", "alice", None),
            "2.0": ("alice", "alice", token_id),
            "3.0": ("carol", "carol", None),
        }
        assert uploads(reg) == expected
        assert "published model_foo-2.0-py3-none-any.whl" in reg.log.read_text()
        assert f"by alice (token {token_id})" in reg.log.read_text()
        page = requests.get(f"{reg.url}/models/model-foo", timeout=10).text
        assert "<td>carol</td>" in page and "<th>By</th>" in page
        shown = modelpack("show", "model-foo", "--registry", reg.url)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"^  2\.0 .* by alice$", shown.stdout, re.M), shown.stdout

    # meta/ is derived, but who uploaded a file is not in the file: reindex keeps it
    assert ok(data.cli("reindex"))
    with server(tmp_path, htpasswd, data=data) as reg:
        assert uploads(reg) == expected


def test_api_tokens_expire_and_say_so(storage: Storage, tmp_path: Path, htpasswd: Path) -> None:
    dist = tmp_path / "dist"
    data = storage

    def create(*expires: str) -> subprocess.CompletedProcess[str]:
        return data.cli("tokens", "create", "--model", "model-foo", "--user", "alice", *expires)

    def expiry(token: str) -> str | None:
        value: str | None = json.loads(data.read_text(f"state/tokens/{token.split('_')[1]}.json"))[
            "expires"
        ]
        return value

    with server(tmp_path, htpasswd, data=data) as reg:
        assert twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")[0] == 0
        made = create()  # a year by default
        assert made.returncode == 0, made.stderr
        default = dt.datetime.fromisoformat(expiry(made.stdout.strip()).replace("Z", "+00:00"))
        left = default - dt.datetime.now(dt.timezone.utc)
        assert dt.timedelta(days=364) < left <= dt.timedelta(days=365)
        assert "expires at " in made.stderr
        forever = create("--expires", "never").stdout.strip()
        assert expiry(forever) is None
        assert create("--expires", "2999-01-01").returncode == 1  # beyond ten years: say never

        hour = create("--expires", "12h").stdout.strip()
        code, out = twine(reg, make_wheel(dist, "model-foo", "2.0"), "__token__", hour)
        assert code == 0, out

        # twelve hours later, as far as the file says
        path = f"state/tokens/{hour.split('_')[1]}.json"
        doc = json.loads(data.read_text(path))
        doc["expires"] = "2020-01-01T00:00:00Z"
        data.write_text(path, json.dumps(doc))
        wheel = make_wheel(dist, "model-foo", "3.0")
        response = post_upload(reg.url, wheel.name, wheel.read_bytes(), auth=("__token__", hour))
        assert response.status_code == 403
        assert f"API token {doc['id']} (alice on model-foo) expired at 2020-01-01T00:00:00Z" in (
            response.text
        )
        assert "tokens create --model model-foo --user alice" in response.text
        assert "`modelpack token create model-foo`" in response.text
        assert promote(reg, "model-foo", "2.0", ("__token__", hour)).status_code == 403
        # only the secret's holder learns that it expired; a wrong secret is just invalid
        wrong = hour[: -len("x")] + ("x" if not hour.endswith("x") else "y")
        response = post_upload(reg.url, wheel.name, wheel.read_bytes(), auth=("__token__", wrong))
        assert response.status_code == 403 and "expired" not in response.text
        # a token that never expires still works
        code, out = twine(reg, wheel, "__token__", forever)
        assert code == 0, out

        # an expiry that does not parse refuses the token instead of letting it live on
        doc["expires"] = "next tuesday"
        data.write_text(path, json.dumps(doc))
        response = post_upload(reg.url, wheel.name, wheel.read_bytes(), auth=("__token__", hour))
        assert response.status_code == 403 and "invalid or revoked" in response.text

        doc["expires"] = "2020-01-01T00:00:00Z"
        data.write_text(path, json.dumps(doc))
        listed = ok(data.cli("tokens", "list"))
        row = next(line for line in listed.splitlines() if line.startswith(doc["id"]))
        assert "expires 2020-01-01T00:00:00Z  last used 20" in row, row
        assert row.endswith("  (expired)"), row
        never = next(line for line in listed.splitlines() if line.startswith(forever[4:20]))
        assert "expires never  last used 20" in never and "expired" not in never, never


def test_a_token_records_when_it_was_last_used_at_most_hourly(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    dist = tmp_path / "dist"
    data = storage

    def read() -> dict[str, str]:
        return json.loads(data.read_text(key))  # type: ignore[no-any-return]

    with server(tmp_path, htpasswd, data=data) as reg:
        assert twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")[0] == 0
        token = make_token(data)
        key = f"state/tokens/{token.split('_')[1]}.json"
        assert read()["last_used"] is None  # made, never used
        assert "last used never" in ok(data.cli("tokens", "list"))

        before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        assert promote(reg, "model-foo", "1.0", ("__token__", token)).status_code == 200
        used = dt.datetime.fromisoformat(read()["last_used"][:-1] + "+00:00")
        assert before <= used <= dt.datetime.now(dt.timezone.utc)
        if data.path is not None:  # folder only: file modes (a bucket has its policy)
            assert (data.path / key).stat().st_mode & 0o777 == 0o600  # owner-only, as on create
        written = data.store.stat(key)

        # within the hour, a use writes nothing (a busy CI token: one write an hour); a
        # second later, so that a rewrite would change the time in it (and its version)
        time.sleep(1.1)
        assert promote(reg, "model-foo", "1.0", ("__token__", token)).status_code == 200
        assert data.store.stat(key) == written

        # an hour later, as far as the document says, the next use writes the new time
        doc = read()
        data.write_text(key, json.dumps({**doc, "last_used": "2020-01-01T00:00:00Z"}))
        assert promote(reg, "model-foo", "1.0", ("__token__", token)).status_code == 200
        assert read()["last_used"] > "2026"
        listed = ok(data.cli("tokens", "list"))
        assert f"last used {read()['last_used']}" in listed

        # a damaged date never refuses the token; the next use repairs it
        data.write_text(key, json.dumps({**doc, "last_used": "yesterday"}))
        assert promote(reg, "model-foo", "1.0", ("__token__", token)).status_code == 200
        assert read()["last_used"] > "2026"

        # a wrong secret is not a use
        doc = read()
        wrong = token[:-1] + ("x" if not token.endswith("x") else "y")
        assert promote(reg, "model-foo", "1.0", ("__token__", wrong)).status_code == 403
        assert read() == doc


def test_a_token_use_that_cannot_be_recorded_still_serves_and_warns_once(
    tmp_path: Path, htpasswd: Path
) -> None:
    # folder only: the failure is made by replacing the folder's lock file with a
    # directory (a read-only volume); a bucket has no lock to break.
    data = tmp_path / "data"
    with server(tmp_path, htpasswd, "--protect-reads", data=data) as reg:
        assert twine(reg, make_wheel(tmp_path / "dist", "model-foo", "1.0"), "alice")[0] == 0
        token = make_token(data)
        # the folder lock cannot be taken (as on a read-only volume): no state write works
        (data / ".lock").unlink()
        (data / ".lock").mkdir()
        for _ in range(3):
            page = requests.get(f"{reg.index_url}model-foo/", auth=("__token__", token),
                                timeout=10)  # fmt: skip
            assert page.status_code == 200
    warnings = [line for line in reg.log.read_text().splitlines()
                if "cannot record the use of API token" in line]  # fmt: skip
    assert len(warnings) == 1, warnings
    assert token.split("_")[1] in warnings[0] and "the request is served" in warnings[0]
    assert (
        json.loads((data / f"state/tokens/{token.split('_')[1]}.json").read_text())["last_used"]
        is None
    )


@pytest.mark.parametrize(
    ("expires", "problem"),
    [
        ("0d", "invalid --expires '0d': give a lifetime such as 90d or 12h"),
        ("soon", "invalid --expires 'soon'"),
        ("2020-01-01", "--expires 2020-01-01: that day has begun already (UTC)"),
        ("4000d", "more than ten years; say --expires never"),
    ],
)
def test_a_bad_expiry_is_refused_and_makes_no_token(
    storage: Storage, expires: str, problem: str
) -> None:
    data = storage
    if data.path is not None:  # a data folder (a bucket prefix needs nothing made first)
        (data.path / "packages").mkdir(parents=True)
    made = data.cli("tokens", "create", "--model", "model-foo", "--user", "alice",
                    "--expires", expires)  # fmt: skip
    assert made.returncode == 1 and made.stdout == ""
    assert problem in made.stderr and "Traceback" not in made.stderr, made.stderr
    assert data.listing("state/tokens") == []


def test_the_access_log_names_users_never_secrets(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    data = storage
    with server(tmp_path, htpasswd, "--protect-reads", "--access-log", data=data) as reg:
        assert twine(reg, make_wheel(tmp_path / "dist", "model-foo", "1.0"), "alice")[0] == 0
        token = make_token(data)
        page = requests.get(f"{reg.index_url}model-foo/", auth=("__token__", token), timeout=10)
        assert page.status_code == 200
        assert requests.get(reg.index_url, auth=auth("bob"), timeout=10).status_code == 200
        assert requests.get(reg.index_url, timeout=10).status_code == 401
    log = reg.log.read_text()
    lines = [line for line in log.splitlines() if '"GET /simple/' in line or '"POST / ' in line]
    assert re.search(r'^127\.0\.0\.1 alice \[.*\] "POST / HTTP/1\.1" 200 \d+ \d+ms "twine/', log,
                     re.M), lines  # fmt: skip
    assert re.search(r'^127\.0\.0\.1 __token__ \[.*\] "GET /simple/model-foo/ HTTP/1\.1" 200 ',
                     log, re.M), lines  # fmt: skip
    assert re.search(r'^127\.0\.0\.1 bob \[.*\] "GET /simple/ HTTP/1\.1" 200 ', log, re.M), lines
    assert re.search(r'^127\.0\.0\.1 - \[.*\] "GET /simple/ HTTP/1\.1" 401 ', log, re.M), lines
    for secret in (*PASSWORDS.values(), token, token.split("_", 2)[2]):
        assert secret not in log


def test_owners_survive_two_servers_publishing_at_once(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    data = storage
    dist = tmp_path / "dist"
    with server(tmp_path, htpasswd, data=data) as one, server(tmp_path, htpasswd, data=data) as two:
        results: dict[str, int] = {}

        def publish(reg: Registry, user: str, name: str, version: str = "1.0") -> None:
            wheel = make_wheel(dist / f"{user}-{name}", name, version)
            response = post_upload(reg.url, wheel.name, wheel.read_bytes(), auth=auth(user))
            results[f"{user}:{name}"] = response.status_code

        jobs = [(one, "alice", f"model-a{i}", "1.0") for i in range(6)]
        jobs += [(two, "bob", f"model-b{i}", "1.0") for i in range(6)]
        # The same new name through both servers at once: exactly one becomes its owner.
        jobs += [(one, "alice", "model-race", "1.0"), (two, "bob", "model-race", "2.0")]
        threads = [threading.Thread(target=publish, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(6):
            assert results[f"alice:model-a{i}"] == results[f"bob:model-b{i}"] == 200
            assert owners_file(data, f"model-a{i}") == {"owners": ["alice"], "maintainers": []}
            assert owners_file(data, f"model-b{i}") == {"owners": ["bob"], "maintainers": []}
        race = sorted((results["alice:model-race"], results["bob:model-race"]))
        assert race == [200, 403], results
        winner = "alice" if results["alice:model-race"] == 200 else "bob"
        assert owners_file(data, "model-race") == {"owners": [winner], "maintainers": []}
        assert len([f for f in data.listing("packages") if f.startswith("model_race")]) == 1
    verify = data.cli("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_openapi_describes_the_owners_endpoints(tmp_path: Path) -> None:
    from openapi_spec_validator import validate

    with Registry(tmp_path / "data") as reg:
        doc = requests.get(f"{reg.url}/api/v1/openapi.json", timeout=10).json()
    validate(doc)
    assert set(doc["paths"]["/api/v1/models/{name}/owners/{user}"]) == {"put", "delete"}
    assert "get" in doc["paths"]["/api/v1/models/{name}/owners"]
