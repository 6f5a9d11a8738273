"""`modelpack-registry verify` on the access files: owners, API tokens and htpasswd.

The platform team's story around a restore: the data folder comes back from a backup
(or a hand edit went wrong), and `verify --htpasswd` must say which owners or token file
is corrupt, misnamed or stale, and which holds hashes others can read, with the command
that fixes it, before any server starts. Errors exit 1; warnings (a reserved name, a
token for a model still to come) keep exit 0. No line shows a token's secret or hash.

Each registry is real, on both backends (conftest ``storage``: a data folder, a bucket):
wheels copied into `packages/` and indexed with `reindex`, owners and tokens made by the
real CLI, then damaged through the store the way a bad copy or a hand edit does. File
modes are checked on the folder only (a bucket has none).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import bcrypt
import pytest
from registry_support import PASSWORDS, make_wheel
from test_registry_access import server, twine

from modelpack_registry.verify.common import readable_by
from support import Storage, ok


def restore(data: Storage, tmp_path: Path, name: str, version: str = "1.0") -> None:
    """Copy a wheel of ``name`` into ``packages/`` by hand (as a restore does)."""
    wheel = make_wheel(tmp_path / "restored" / name / version, name, version)
    data.put(f"packages/{wheel.name}", wheel)


def registry_folder(data: Storage, tmp_path: Path, *models: str,
                    owner: str | None = "alice") -> Storage:  # fmt: skip
    """``data`` with version 1.0 of each model (owned by ``owner``), indexed."""
    for name in models:
        restore(data, tmp_path, name)
    ok(data.cli("reindex"))
    for name in models if owner else ():
        cli(data, "owners", "add", name, owner)
    return data


def cli(data: Storage, *args: str) -> str:
    return ok(data.cli(*args))


class Doc:
    """A document of the store by key, read and written through it (``stem``, ``name``:
    as of a file)."""

    def __init__(self, data: Storage, key: str) -> None:
        self.data, self.key = data, key
        self.name = key.rsplit("/", 1)[-1]
        self.stem = self.name.removesuffix(".json")

    def read_text(self) -> str:
        return self.data.read_text(self.key)

    def write_text(self, text: str) -> None:
        self.data.write_text(self.key, text)

    def unlink(self) -> None:
        self.data.delete(self.key)

    def rename(self, key: str) -> None:
        """Copy to ``key`` and delete this one (a bucket has no rename)."""
        self.data.write_text(key, self.read_text())
        self.unlink()


def new_token(data: Storage, model: str, user: str) -> tuple[str, Doc]:
    """The token text and its document."""
    token = cli(data, "tokens", "create", "--model", model, "--user", user)
    return token, Doc(data, f"state/tokens/{token.split('_')[1]}.json")


def verify(data: Storage, htpasswd: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--htpasswd", str(htpasswd)] if htpasswd else []
    return data.cli("verify", *extra)


def lines(result: subprocess.CompletedProcess[str], start: str | tuple[str, ...]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(start)]


def assert_no_secrets(result: subprocess.CompletedProcess[str], data: Storage,
                      *tokens: str) -> None:  # fmt: skip
    """Neither a token's text or secret nor any stored sha256 is in the output."""
    out = result.stdout + result.stderr
    for token in tokens:
        assert token not in out and token.split("_", 2)[2] not in out
    for name in data.listing("state/tokens"):
        try:
            digest = json.loads(data.read_text(f"state/tokens/{name}"))["sha256"]
        except (ValueError, KeyError, TypeError):
            continue
        assert digest not in out


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    """The users of test_registry_access (alice, bob, carol), owner-only as it should be."""
    path = tmp_path / "htpasswd"
    path.write_text("".join(
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
        for user, pw in PASSWORDS.items()
    ))  # fmt: skip
    path.chmod(0o600)
    return path


def test_a_registry_used_as_documented_verifies_clean(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    dist = tmp_path / "dist"
    data = storage
    with server(tmp_path, htpasswd, data=data) as reg:
        assert twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")[0] == 0
    cli(data, "owners", "add", "model-foo", "bob", "--maintainer")
    token, token_file = new_token(data, "model-foo", "alice")
    if data.path is not None:  # folder only: file modes (a bucket has none)
        mode = (data.path / token_file.key).stat().st_mode
        assert mode & 0o777 == 0o600  # the registry writes it owner-only

    result = verify(data, htpasswd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{data.location}: OK"
    assert_no_secrets(result, data, token)


def test_corrupt_owners_files_are_errors_that_say_how_to_fix_them(
    storage: Storage, tmp_path: Path
) -> None:
    data = registry_folder(storage, tmp_path, "model-foo", "model-bar", "model-baz")
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    data.write_text("state/owners/model-foo.json", '{"owners": ["ali')  # a truncated copy
    data.write_text("state/owners/model-bar.json", json.dumps(  # a hand edit gone wrong
        {"owner": ["alice"], "maintainers": [f"bob:{hashed}", 3]}
    ))  # fmt: skip
    data.write_text("state/owners/Model_Baz.json", '{"owners": ["bob"], "maintainers": []}')

    result = verify(data)
    assert result.returncode == 1
    assert result.stderr.strip() == f"3 problem(s) in {data.location}"
    bar, foo = lines(result, "corrupt: state/owners/")
    assert bar.startswith("corrupt: state/owners/model-bar.json: ")
    assert "unknown key 'owner'" in bar and 'entries 1, 2 of "maintainers" are not' in bar
    assert hashed not in result.stdout  # a bad entry is named by position, never quoted
    assert foo.startswith("corrupt: state/owners/model-foo.json: is truncated")
    assert "delete it and run `modelpack-registry owners add model-foo USER" in foo
    assert "restore it from a backup" in foo
    (misnamed,) = lines(result, "misnamed: ")
    assert misnamed.startswith("misnamed: state/owners/Model_Baz.json: ")
    assert "rename it to state/owners/model-baz.json" in misnamed

    # The fixes it names: delete, then the owners CLI writes the file again.
    for name in ("model-foo.json", "model-bar.json", "Model_Baz.json"):
        data.delete(f"state/owners/{name}")
    cli(data, "owners", "add", "model-foo", "alice")
    cli(data, "owners", "add", "model-bar", "alice")
    fixed = verify(data)
    assert fixed.returncode == 0 and fixed.stdout.strip() == f"{data.location}: OK", fixed.stdout


def test_owners_of_a_name_with_no_file_is_only_a_warning(storage: Storage, tmp_path: Path) -> None:
    data = registry_folder(storage, tmp_path, "model-foo")
    cli(data, "owners", "add", "model-next", "alice")  # reserved before its first upload

    result = verify(data)
    assert result.returncode == 0, result.stdout + result.stderr
    (warning,) = lines(result, "warning: ")
    assert warning.startswith("warning: state/owners/model-next.json: model-next has no file")
    assert "reserved" in warning and "restore packages/ from a backup" in warning
    assert result.stdout.splitlines()[-1] == f"{data.location}: OK, 1 warning(s)"

    restore(data, tmp_path, "model-next")  # its first version is restored
    ok(data.cli("reindex"))
    assert verify(data).stdout.strip() == f"{data.location}: OK"


def test_owners_and_tokens_are_checked_against_the_htpasswd_users(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    data = registry_folder(storage, tmp_path, "model-foo", "model-old", owner=None)
    cli(data, "owners", "add", "model-foo", "alice")  # model-old: no owners (admins only)
    cli(data, "owners", "add", "model-foo", "dora", "--maintainer")
    owners_file = Doc(data, "state/owners/model-foo.json")
    owners_file.write_text('{"owners": ["alice"], "maintainers": ["alice", "dora"]}')
    token, _ = new_token(data, "model-foo", "erin")

    result = verify(data, htpasswd)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = lines(result, "warning: ")
    assert len(warnings) == 4, warnings
    assert any("state/owners/model-foo.json: alice is listed more than once" in w
               for w in warnings)  # fmt: skip
    assert any("model-foo.json: dora is not in the htpasswd file" in w for w in warnings)
    assert any("acts as erin, who is not in the htpasswd file" in w and "tokens revoke" in w
               for w in warnings)  # fmt: skip
    assert any("1 model(s) have files but no owners file" in w and "model-old" in w
               for w in warnings)  # fmt: skip
    assert_no_secrets(result, data, token)
    without = verify(data)  # alice listed twice is found without the htpasswd file too
    assert without.stdout.splitlines()[-1] == f"{data.location}: OK, 1 warning(s)"

    owners_file.write_text('{"owners": ["alice"], "maintainers": ["bob"]}')
    cli(data, "owners", "add", "model-old", "carol")
    cli(data, "tokens", "revoke", token.split("_")[1])
    assert verify(data, htpasswd).stdout.strip() == f"{data.location}: OK"


def test_malformed_and_duplicated_tokens_are_errors_without_secrets(
    storage: Storage, tmp_path: Path
) -> None:
    data = registry_folder(storage, tmp_path, "model-foo")
    tokens = [new_token(data, "model-foo", "alice") for _ in range(6)]
    texts = [t for t, _ in tokens]
    truncated, not_an_object, bad_fields, copied, renamed, kept = (p for _, p in tokens)
    truncated.write_text(truncated.read_text()[:40])
    not_an_object.write_text("[]")
    doc = json.loads(bad_fields.read_text())
    bad_fields.write_text(json.dumps({**doc, "model": "Model_Foo", "sha256": "AB" * 32}))
    # A copy under a new id (its id field edited to match): two tokens, one secret.
    copy_doc = {**json.loads(kept.read_text()), "id": "0123456789abcdef"}
    data.write_text("state/tokens/0123456789abcdef.json", json.dumps(copy_doc))
    # A copy that kept the original's id, and a file renamed to something not an id.
    data.write_text("state/tokens/fedcba9876543210.json", copied.read_text())
    renamed.rename("state/tokens/my-ci-token.json")

    result = verify(data)
    assert result.returncode == 1
    assert_no_secrets(result, data, *texts)
    report = {line.split(": ")[1]: line for line in lines(result, ("corrupt", "misnamed"))}
    name = {p: f"state/tokens/{p.name}" for _, p in tokens}
    assert "is truncated" in report[name[truncated]]
    assert (
        "rm " in report[name[truncated]]
        and "tokens create --model MODEL" in report[name[truncated]]
    )
    assert "is not a JSON object" in report[name[not_an_object]]
    assert "not a canonical model name" in report[name[bad_fields]]
    assert "not 64 lowercase hex digits" in report[name[bad_fields]]
    dup_id = report["state/tokens/fedcba9876543210.json"]
    assert f"duplicate id: its id field says {copied.stem}" in dup_id
    (dup_secret,) = lines(result, "duplicate: ")  # one line, naming both copies
    assert "has the same secret as token" in dup_secret
    assert "0123456789abcdef" in dup_secret and kept.stem in dup_secret
    assert report["state/tokens/my-ci-token.json"].startswith("misnamed: ")
    assert result.stderr.strip() == f"6 problem(s) in {data.location}"

    # The fixes it names: delete what cannot be read, revoke both copies of a secret.
    for doc_ in (truncated, not_an_object, bad_fields, Doc(data, "state/tokens/my-ci-token.json"),
                 Doc(data, "state/tokens/fedcba9876543210.json")):  # fmt: skip
        doc_.unlink()
    cli(data, "tokens", "revoke", "0123456789abcdef")
    cli(data, "tokens", "revoke", kept.stem)
    fixed = verify(data)
    assert fixed.returncode == 0 and fixed.stdout.strip() == f"{data.location}: OK", fixed.stdout


def test_a_token_for_a_model_with_no_file_is_only_a_warning(
    storage: Storage, tmp_path: Path
) -> None:
    data = registry_folder(storage, tmp_path, "model-foo")
    token, _ = new_token(data, "model-soon", "alice")
    result = verify(data)
    assert result.returncode == 0, result.stdout + result.stderr
    (warning,) = lines(result, "warning: ")
    assert "is for model-soon, which has no file in packages/ and no owners file" in warning
    assert_no_secrets(result, data, token)

    cli(data, "owners", "add", "model-soon", "alice")  # reserving the name covers the token
    (reserved,) = lines(verify(data), "warning: ")
    assert reserved.startswith("warning: state/owners/model-soon.json: ")


def test_tokens_expired_or_about_to_expire_are_warnings_a_bad_expiry_an_error(
    storage: Storage,
    tmp_path: Path,
) -> None:
    data = registry_folder(storage, tmp_path, "model-foo")
    _, soon = new_token(data, "model-foo", "alice")
    soon_doc = json.loads(soon.read_text())
    in_three_days = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3, hours=1)
    soon.write_text(json.dumps({**soon_doc, "expires": in_three_days.isoformat()}))
    _, old = new_token(data, "model-foo", "alice")
    old_doc = json.loads(old.read_text())
    old.write_text(json.dumps({**old_doc, "expires": "2020-01-01T00:00:00Z"}))
    cli(data, "tokens", "create", "--model", "model-foo", "--user", "bob", "--expires", "20d")
    cli(data, "tokens", "create", "--model", "model-foo", "--user", "bob", "--expires", "never")

    result = verify(data)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = lines(result, "warning: ")
    assert len(warnings) == 2, warnings  # 20 days and never are fine
    (expired,) = (w for w in warnings if old.stem in w)
    assert "(alice on model-foo) expired at 2020-01-01T00:00:00Z, so it is refused" in expired
    assert f"tokens revoke {old.stem}" in expired
    (expiring,) = (w for w in warnings if soon.stem in w)
    assert "in 3 days: create its successor with `modelpack-registry tokens create --model " in (
        expiring
    )
    assert "--model model-foo --user alice" in expiring and f"tokens revoke {soon.stem}" in expiring

    old.write_text(json.dumps({**old_doc, "expires": "1 January 2020"}))
    broken = verify(data)
    assert broken.returncode == 1
    (line,) = lines(broken, "corrupt: ")
    assert line.startswith(f'corrupt: state/tokens/{old.name}: its "expires" is not an ISO')


def test_hashes_that_group_or_others_can_read_are_warned_about(
    tmp_path: Path, htpasswd: Path
) -> None:
    # folder only: file modes (a bucket has none; its policy decides who reads it)
    data = registry_folder(Storage.folder(tmp_path / "data"), tmp_path, "model-foo")
    _, token_doc = new_token(data, "model-foo", "alice")
    assert data.path is not None
    token_file = data.path / token_doc.key
    assert verify(data, htpasswd).stdout.strip() == f"{data.location}: OK"

    token_file.chmod(0o644)  # as tokens made before 0600, or copied with a loose umask
    htpasswd.chmod(0o640)
    (data.path / "state/owners/model-foo.json").chmod(0o644)  # public over the API: not warned
    result = verify(data, htpasswd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(lines(result, "warning: ")) == [
        f"warning: htpasswd {htpasswd} is readable by its group (mode 0640) and holds "
        f"password hashes: give it to the user the server runs as and `chmod 600 {htpasswd}` "
        "(a Kubernetes secret: defaultMode 0440 with the pod's fsGroup)",
        f"warning: state/tokens/: 1 token file(s) readable by group or others "
        f"({token_file.stem}); they hold token hashes and who may publish what: "
        f"`chmod 600 {data.path}/state/tokens/*.json`",
    ]
    htpasswd.chmod(0o604)
    assert "is readable by others (mode 0604)" in verify(data, htpasswd).stdout

    htpasswd.chmod(0o600)
    token_file.chmod(0o600)
    assert verify(data, htpasswd).stdout.strip() == f"{data.location}: OK"


def test_group_read_is_fine_when_it_is_how_the_server_reads_the_secret() -> None:
    # A Kubernetes secret: owned by root, defaultMode 0440, group = the pod's fsGroup, and
    # the server (uid 1000, in group 2000) reads it only through that group. Giving a real
    # file to another user needs root, so the rule is checked on its own here; the tests
    # above run it on real files for the owner's own modes.
    server, fs_group = 1000, 2000
    assert readable_by(0o100440, 0, fs_group, server, [1000, fs_group]) is None
    assert readable_by(0o100444, 0, fs_group, server, [1000, fs_group]) == "others"
    # the same mode on the server's own file, or a group the server is not in, is a leak
    assert readable_by(0o100440, server, fs_group, server, [1000, fs_group]) == "its group"
    assert readable_by(0o100440, 0, 3000, server, [1000, fs_group]) == "its group"
    assert readable_by(0o100600, server, fs_group, server, [1000]) is None
    assert readable_by(0o100400, 0, fs_group, server, [1000]) is None


def test_a_broken_htpasswd_file_is_an_error(
    storage: Storage, tmp_path: Path, htpasswd: Path
) -> None:
    data = registry_folder(storage, tmp_path, "model-foo")
    missing = verify(data, tmp_path / "nowhere")
    assert missing.returncode == 1
    assert missing.stdout.startswith(f"missing: htpasswd {tmp_path / 'nowhere'} does not exist")

    good = htpasswd.read_text()
    htpasswd.write_text(good + "dora\n")  # a line cut short
    broken = verify(data, htpasswd)
    assert broken.returncode == 1
    (line,) = lines(broken, "invalid htpasswd: ")
    assert f"{htpasswd}:4: expected 'user:hash'" in line and "htpasswd -B" in line
    for hashed in (entry.split(":", 1)[1] for entry in good.splitlines()):
        assert hashed not in broken.stdout + broken.stderr

    htpasswd.write_text("# no users yet\n")
    empty = verify(data, htpasswd)
    assert empty.returncode == 0 and "has no users, so nobody can upload" in empty.stdout
    htpasswd.write_text(good)
    assert verify(data, htpasswd).stdout.strip() == f"{data.location}: OK"


def test_errors_and_warnings_together_exit_1_and_count_both(
    storage: Storage, tmp_path: Path
) -> None:
    data = registry_folder(storage, tmp_path, "model-foo")
    cli(data, "owners", "add", "model-next", "alice")  # a warning
    data.write_text("state/owners/model-foo.json", "")  # an error
    warnings = 1
    if data.path is not None:  # folder only: a crashed write's temp file (a bucket has none)
        (data.path / "state/owners/.model-foo.json.123-abcd.tmp").write_text("{")
        warnings = 2
    result = verify(data)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith(
        "corrupt: state/owners/model-foo.json: is empty"
    )
    if warnings == 2:
        assert any("leftover temp file" in w for w in lines(result, "warning: "))
    assert result.stderr.strip() == f"1 problem(s) and {warnings} warning(s) in {data.location}"


def test_an_unreadable_owners_history_is_a_warning_not_a_lockout(
    storage: Storage, tmp_path: Path
) -> None:
    data = registry_folder(storage, tmp_path, "model-foo")
    path = Doc(data, "state/owners/model-foo.json")
    doc = json.loads(path.read_text())
    assert [c["to"] for c in doc["history"]] == ["owner"]  # `owners add` wrote it
    path.write_text(json.dumps({**doc, "history": "edited by hand"}))
    result = verify(data)
    assert result.returncode == 0, result.stdout
    (warning,) = lines(result, "warning: ")
    assert warning.startswith('warning: state/owners/model-foo.json: "history" is not a list')
    assert "access is not affected" in warning
    # and the owners still hold: the next change starts a new history
    cli(data, "owners", "add", "model-foo", "bob", "--maintainer")
    after = json.loads(path.read_text())
    assert after["owners"] == ["alice"] and [c["user"] for c in after["history"]] == ["bob"]
    assert verify(data).stdout.strip() == f"{data.location}: OK"


def test_tokens_nobody_uses_are_pointed_at(storage: Storage, tmp_path: Path) -> None:
    data = registry_folder(storage, tmp_path, "model-foo")
    long_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=120)).isoformat()
    recent = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)).isoformat()

    def token_with(**fields: object) -> Doc:
        _, doc = new_token(data, "model-foo", "alice")
        doc.write_text(json.dumps({**json.loads(doc.read_text()), **fields}))
        return doc

    never = token_with(created=long_ago)  # made 120 days ago, never used
    stale = token_with(created=long_ago, last_used=long_ago)
    token_with(created=long_ago, last_used=recent)  # in use: fine
    token_with(created=recent)  # new and not used yet: fine
    old_file = token_with(created=long_ago)
    doc = json.loads(old_file.read_text())
    del doc["last_used"]  # a file from before uses were recorded: unknown, fine
    old_file.write_text(json.dumps(doc))
    damaged = token_with(last_used="tuesday")

    result = verify(data)
    assert result.returncode == 0, result.stdout
    warnings = lines(result, "warning: ")
    assert len(warnings) == 3, warnings
    (w_never,) = (w for w in warnings if never.stem in w)
    assert "has never been used since it was made 120 days ago" in w_never
    assert f"tokens revoke {never.stem}" in w_never
    (w_stale,) = (w for w in warnings if stale.stem in w)
    assert "was last used at " in w_stale and "120 days ago" in w_stale
    (w_damaged,) = (w for w in warnings if damaged.stem in w)
    assert '"last_used" is not a time' in w_damaged and "the token still works" in w_damaged
