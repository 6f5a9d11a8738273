"""Self-service API tokens: the people who own a model make its CI tokens themselves.

alice publishes model-foo and makes a token for her CI over HTTP; bob, her maintainer,
makes his own and sees only his; dave, a stranger, is told who to ask; carol, an admin,
makes one for anyone; a token never makes another, but may retire itself. Then the
same story through `modelpack token`. Real registry processes, real twine and modelpack;
each story on both backends (conftest ``storage``: a data folder, a bucket).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pytest
import requests
from registry_support import make_big_wheel, make_wheel
from test_registry_access import auth, promote, server, twine

from support import Registry, Storage, modelpack, ok

API = "/api/v1/models"


def tokens_url(reg: Registry, name: str = "model-foo", token_id: str | None = None) -> str:
    return f"{reg.url}{API}/{name}/tokens" + (f"/{token_id}" if token_id else "")


def create(reg: Registry, who: tuple[str, str], name: str = "model-foo",
           **body: str) -> requests.Response:  # fmt: skip
    return requests.post(tokens_url(reg, name), json=body, auth=who, timeout=10)


def listed(reg: Registry, who: tuple[str, str], name: str = "model-foo") -> requests.Response:
    return requests.get(tokens_url(reg, name), auth=who, timeout=10)


def revoke(reg: Registry, who: tuple[str, str], token_id: str,
           name: str = "model-foo") -> requests.Response:  # fmt: skip
    return requests.delete(tokens_url(reg, name, token_id), auth=who, timeout=10)


def as_token(token: str) -> tuple[str, str]:
    return "__token__", token


def until(expires: str) -> dt.timedelta:
    return dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) - dt.datetime.now(
        dt.timezone.utc
    )


def test_owner_makes_a_ci_token_over_http_and_twine_uploads_with_it(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    dist = tmp_path / "dist"
    with server(tmp_path, htpasswd, data=storage) as reg:
        assert twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")[0] == 0
        made = create(reg, auth("alice"), "Model_Foo", expires="90d")
        assert made.status_code == 201, made.text
        doc = made.json()
        assert set(doc) == {"token", "id", "model", "user", "created", "expires"}
        assert (doc["model"], doc["user"]) == ("model-foo", "alice")
        assert doc["token"].startswith(f"mpk_{doc['id']}_")
        assert dt.timedelta(days=89) < until(doc["expires"]) <= dt.timedelta(days=90)
        stored = json.loads(reg.storage.read_text(f"state/tokens/{doc['id']}.json"))
        assert doc["token"].split("_", 2)[2] not in json.dumps(stored)  # only its hash

        code, out = twine(reg, make_wheel(dist, "model-foo", "2.0"), "__token__", doc["token"])
        assert code == 0, out
        version = requests.get(f"{reg.url}{API}/model-foo", timeout=10).json()["versions"][-1]
        assert (version["uploaded_by"], version["files"][0]["upload_token"]) == ("alice", doc["id"])
        assert f"API token {doc['id']} created for alice on model-foo by alice" in (
            reg.log.read_text()
        )

        # No body: a year, as the server CLI; "never" on purpose.
        default = create(reg, auth("alice")).json()
        assert dt.timedelta(days=364) < until(default["expires"]) <= dt.timedelta(days=365)
        assert create(reg, auth("alice"), expires="never").json()["expires"] is None


def test_maintainers_see_their_own_strangers_are_told_who_to_ask(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    dist = tmp_path / "dist"
    with server(tmp_path, htpasswd, data=storage) as reg:
        assert twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")[0] == 0
        assert reg.storage.cli("owners", "add", "model-foo", "bob", "--maintainer").returncode == 0
        alices = create(reg, auth("alice")).json()
        bobs = create(reg, auth("bob"), expires="12h").json()
        assert bobs["user"] == "bob"
        code, out = twine(reg, make_wheel(dist, "model-foo", "2.0"), "__token__", bobs["token"])
        assert code == 0, out

        # The owner sees every token of the model, the maintainer his own; no secrets.
        every = listed(reg, auth("alice"))
        assert every.status_code == 200
        assert [t["id"] for t in every.json()["tokens"]] == [alices["id"], bobs["id"]]
        mine = listed(reg, auth("bob")).json()["tokens"]
        assert [(t["id"], t["user"]) for t in mine] == [(bobs["id"], "bob")]
        assert set(mine[0]) == {"id", "user", "created", "expires", "last_used", "expired"}
        assert mine[0]["last_used"] is not None and mine[0]["expired"] is False
        assert every.json()["tokens"][0]["last_used"] is None  # never used
        admin_view = listed(reg, auth("carol")).json()["tokens"]
        assert len(admin_view) == 2
        for text in (every.text, listed(reg, auth("bob")).text):
            for made in (alices, bobs):
                sha = json.loads(reg.storage.read_text(f"state/tokens/{made['id']}.json"))
                assert made["token"].split("_", 2)[2] not in text
                assert sha["sha256"] not in text and "sha256" not in text

        # dave is nobody on model-foo: refused, told who owns it and how to ask.
        refused = create(reg, ("dave", "s3cret"))
        assert refused.status_code == 403
        message = refused.json()["error"]
        assert "model-foo is owned by alice; dave may not create API tokens for it" in message
        assert "owners add model-foo dave --maintainer" in message
        assert listed(reg, ("dave", "s3cret")).json() == {"tokens": []}
        # a model nobody published: 404 for anyone but an admin
        missing = create(reg, auth("bob"), "model-nope")
        assert missing.status_code == 404 and "publish it first" in missing.json()["error"]
        assert listed(reg, auth("bob"), "model-nope").status_code == 404

        # A maintainer revokes only his own; the owner revokes anyone's.
        spare = create(reg, auth("bob")).json()
        assert revoke(reg, auth("bob"), spare["id"]).status_code == 200
        other = revoke(reg, auth("bob"), alices["id"])
        assert other.status_code == 403
        assert "only alice, an owner of model-foo or an admin" in other.json()["error"]
        assert revoke(reg, auth("alice"), bobs["id"]).status_code == 200
        code, out = twine(reg, make_wheel(dist, "model-foo", "3.0"), "__token__", bobs["token"])
        assert code != 0 and "invalid or revoked" in out, out


def test_a_token_cannot_make_or_see_tokens_but_may_retire_itself(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    dist = tmp_path / "dist"
    with server(tmp_path, htpasswd, data=storage) as reg:
        assert twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")[0] == 0
        first = create(reg, auth("alice")).json()
        second = create(reg, auth("alice")).json()
        leaked = as_token(first["token"])
        for refused in (create(reg, leaked), listed(reg, leaked)):
            assert refused.status_code == 403
            assert "use your user name and password" in refused.json()["error"]
        assert len(reg.storage.listing("state/tokens")) == 2
        other = revoke(reg, leaked, second["id"])
        assert other.status_code == 403 and "only itself" in other.json()["error"]

        # A CI job (or whoever finds it leaked) retires the token with the token.
        retired = revoke(reg, leaked, first["id"])
        assert retired.status_code == 200, retired.text
        assert retired.json() == {"id": first["id"], "model": "model-foo", "user": "alice",
                                  "revoked": True}  # fmt: skip
        assert promote(reg, "model-foo", "1.0", leaked).status_code == 403
        assert promote(reg, "model-foo", "1.0", as_token(second["token"])).status_code == 200
        assert f"API token {first['id']} (alice on model-foo) revoked by alice" in (
            reg.log.read_text()
        )


def test_admins_make_tokens_for_anyone_and_ids_stay_in_their_model(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    dist = tmp_path / "dist"
    with server(tmp_path, htpasswd, data=storage) as reg:
        assert twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")[0] == 0
        assert twine(reg, make_wheel(dist, "model-bar", "1.0"), "bob")[0] == 0

        # carol (admin) makes a token acting as alice, and one for a name not yet published
        made = create(reg, auth("carol"), user="alice")
        assert made.status_code == 201 and made.json()["user"] == "alice"
        first = create(reg, auth("carol"), "model-new", user="bob")
        assert first.status_code == 201, first.text
        code, out = twine(reg, make_wheel(dist, "model-new", "1.0"), "__token__",
                          first.json()["token"])  # fmt: skip
        assert code == 0, out
        # only admins choose the user, and it must exist
        other = create(reg, auth("alice"), user="bob")
        assert other.status_code == 403 and "only an admin" in other.json()["error"]
        unknown = create(reg, auth("carol"), user="mallory")
        assert unknown.status_code == 400 and "no user 'mallory'" in unknown.json()["error"]

        # an id of model-bar's token is unknown under model-foo, for its owner and admins
        bars = create(reg, auth("bob"), "model-bar").json()
        for who in (auth("alice"), auth("carol"), auth("bob")):
            crossed = revoke(reg, who, bars["id"], "model-foo")
            assert crossed.status_code == 404, crossed.text
            assert "model-foo has no API token with id" in crossed.json()["error"]
        assert revoke(reg, auth("alice"), "0123456789abcdef").status_code == 404
        assert revoke(reg, auth("alice"), "not-an-id").status_code == 404
        assert reg.storage.exists(f"state/tokens/{bars['id']}.json")
        assert revoke(reg, auth("carol"), bars["id"], "model-bar").status_code == 200
        assert revoke(reg, auth("carol"), bars["id"], "model-bar").status_code == 404

        # the methods each path allows
        wrong = requests.put(tokens_url(reg), auth=auth("alice"), timeout=10)
        assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET, HEAD, POST"
        wrong = requests.get(tokens_url(reg, token_id=bars["id"]), auth=auth("alice"), timeout=10)
        assert wrong.status_code == 405 and wrong.headers["Allow"] == "DELETE"
        anonymous = requests.get(tokens_url(reg), timeout=10)
        assert anonymous.status_code == 401 and "MODELPACK_USERNAME" in anonymous.json()["error"]


@pytest.mark.parametrize(
    ("expires", "problem"),
    [
        ("soon", "invalid --expires 'soon': give a lifetime such as 90d or 12h"),
        ("2020-01-01", "--expires 2020-01-01: that day has begun already (UTC)"),
        ("4000d", "more than ten years; say --expires never"),
    ],
)
def test_a_bad_expiry_is_refused_with_the_clis_words(
    storage: Storage, tmp_path: Path, htpasswd: Path, expires: str, problem: str
) -> None:
    with server(tmp_path, htpasswd, data=storage) as reg:
        assert twine(reg, make_wheel(tmp_path / "dist", "model-foo", "1.0"), "alice")[0] == 0
        refused = create(reg, auth("alice"), expires=expires)
        assert refused.status_code == 400 and problem in refused.json()["error"]
        not_text = requests.post(tokens_url(reg), json={"expires": 90}, auth=auth("alice"),
                                 timeout=10)  # fmt: skip
        assert not_text.status_code == 400 and '"90d"' in not_text.json()["error"]
        assert reg.storage.listing("state/tokens") == []
    cli = storage.cli("tokens", "create", "--model", "model-foo", "--user", "alice",
                      "--expires", expires)  # fmt: skip
    assert problem in cli.stderr


def test_a_registry_without_credentials_has_no_tokens(storage: Storage, tmp_path: Path) -> None:
    with Registry(storage) as reg:
        assert twine(reg, make_wheel(tmp_path / "dist", "model-foo", "1.0"), "alice")[0] == 0
        for answer in (
            requests.post(tokens_url(reg), json={}, timeout=10),
            requests.get(tokens_url(reg), timeout=10),
            requests.delete(tokens_url(reg, token_id="0123456789abcdef"), timeout=10),
        ):
            assert answer.status_code == 409
            assert "API tokens need a registry with credentials" in answer.json()["error"]
            assert "--htpasswd" in answer.json()["error"]
        assert reg.storage.listing("state/tokens") == []


def test_openapi_describes_the_token_endpoints(tmp_path: Path) -> None:
    from openapi_spec_validator import validate

    with Registry(tmp_path / "data") as reg:
        doc = requests.get(f"{reg.url}/api/v1/openapi.json", timeout=10).json()
    validate(doc)
    assert set(doc["paths"]["/api/v1/models/{name}/tokens"]) == {"post", "get"}
    assert set(doc["paths"]["/api/v1/models/{name}/tokens/{id}"]) == {"delete"}
    created = doc["paths"]["/api/v1/models/{name}/tokens"]["post"]["responses"]["201"]
    assert "token" in created["content"]["application/json"]["schema"]["$ref"].lower()


def _env(**values: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_")}
    return {**base, **{f"MODELPACK_{k.upper()}": v for k, v in values.items()}}


def test_modelpack_token_create_publish_list_revoke(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    dist = tmp_path / "dist"
    alice = _env(username="alice", password="alice-pw")
    with server(tmp_path, htpasswd, data=storage) as reg:
        assert twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")[0] == 0
        at = ("--registry", reg.url)

        made = modelpack("token", "create", "model-foo", "--expires", "30d", *at, env=alice)
        token = ok(made)
        assert re.fullmatch(r"mpk_[0-9a-f]{16}_[A-Za-z0-9_-]+", token), made.stdout
        token_id = token.split("_")[1]
        assert f"token {token_id}: acts as alice on model-foo only, expires at " in made.stderr
        assert "MODELPACK_USERNAME=__token__" in made.stderr

        # CI publishes with it, as user __token__
        ci = _env(username="__token__", password=token)
        wheel = make_big_wheel(dist, "model-foo", "2.0", 1024)
        out = ok(modelpack("publish", wheel, *at, env=ci))
        assert "published model-foo 2.0" in out

        table = ok(modelpack("token", "list", "model-foo", *at, env=alice)).splitlines()
        assert table[0].split() == ["ID", "USER", "CREATED", "EXPIRES", "LAST", "USED"]
        assert table[1].startswith(f"{token_id}  alice  ")
        as_json = json.loads(ok(modelpack("token", "list", "model-foo", "--json", *at, env=alice)))
        assert [t["id"] for t in as_json["tokens"]] == [token_id]
        assert token.split("_", 2)[2] not in json.dumps(as_json)

        # a token cannot make a token: one clean line that says what to use instead
        refused = modelpack("token", "create", "model-foo", *at, env=ci)
        assert refused.returncode == 1 and refused.stdout == ""
        assert "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) == 1
        assert refused.stderr.startswith("modelpack token: error: ")
        assert "use your user name and password" in refused.stderr
        stranger = modelpack("token", "create", "model-foo", *at,
                             env=_env(username="bob", password="bob-pw"))  # fmt: skip
        assert stranger.returncode == 1 and "owned by alice" in stranger.stderr
        missing = modelpack("token", "list", "model-nope", *at, env=alice)
        assert missing.returncode == 1 and "no model named 'model-nope'" in missing.stderr
        bad = modelpack("token", "create", "model-foo", "--expires", "soon", *at, env=alice)
        assert bad.returncode == 1 and "invalid --expires 'soon'" in bad.stderr
        anonymous = modelpack("token", "list", "model-foo", *at, env=_env())
        assert anonymous.returncode == 1 and "no credentials for" in anonymous.stderr
        assert "MODELPACK_USERNAME and" in anonymous.stderr

        # usage errors exit 2; a whole token as ID is refused without echoing its secret
        assert modelpack("token", "create", *at, env=alice).returncode == 2
        assert modelpack("token", "revoke", "model-foo", "xyz", *at, env=alice).returncode == 2
        pasted = modelpack("token", "revoke", "model-foo", token, *at, env=alice)
        assert pasted.returncode == 2 and token_id in pasted.stderr
        assert token.split("_", 2)[2] not in pasted.stderr

        revoked = ok(modelpack("token", "revoke", "model-foo", token_id, *at, env=alice))
        assert revoked == f"revoked token {token_id} (alice on model-foo)"
        again = modelpack("publish", make_big_wheel(dist, "model-foo", "3.0", 1024), *at, env=ci)
        assert again.returncode == 1 and "Traceback" not in again.stderr
        unknown = modelpack("token", "revoke", "model-foo", token_id, *at, env=alice)
        assert unknown.returncode == 1 and "has no API token with id" in unknown.stderr
        assert "(no tokens" in modelpack("token", "list", "model-foo", *at, env=alice).stderr


def test_modelpack_token_says_when_the_registry_cannot_have_tokens(
    tmp_path: Path, plain_index: str
) -> None:
    with Registry(tmp_path / "data") as reg:
        open_registry = modelpack("token", "list", "model-foo", "--registry", reg.url, env=_env())
        assert open_registry.returncode == 1
        assert "API tokens need a registry with credentials" in open_registry.stderr

    # stock pypiserver: a plain index, with no JSON API at all
    for command in (("create", "model-foo"), ("list", "model-foo"),
                    ("revoke", "model-foo", "0123456789abcdef")):  # fmt: skip
        plain = modelpack("token", *command, "--registry", plain_index, env=_env())
        assert plain.returncode == 1 and "Traceback" not in plain.stderr, plain.stderr
        assert "has no modelpack API" in plain.stderr
        assert "API tokens need modelpack-registry" in plain.stderr
