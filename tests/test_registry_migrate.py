"""`modelpack-registry migrate`: a registry moves to another store and keeps everything.

A real registry gets models, owners, a stage, a yank, a reserved name and an API token;
`migrate` copies it to a second folder; a registry served from there installs the model
with pip and keeps who owns what, the stage, the yank and the token. A re-run does
nothing; a destination holding other bytes under a name is refused with nothing
written. Real registry processes, real pip and twine, the real CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

import requests
from registry_support import make_wheel
from test_registry_access import auth, make_token, promote, server, set_owner, twine, yank
from test_registry_catalog import model_wheel, upload
from test_registry_ops import run_cli

from support import Registry, Venv, ok

API = "/api/v1/models"


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` (tmp/ and the lock aside): its bytes and mtime."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith("tmp/") and rel != ".lock":
            found[rel] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


def populate(tmp_path: Path, htpasswd: Path, data: Path) -> str:
    """Two versions of model-foo by alice, bob as maintainer, 1.0 in production, 2.0
    yanked, model-bar reserved and an API token for alice; returns the token."""
    dist = tmp_path / "dist"
    with server(tmp_path, htpasswd, data=data) as reg:
        for version in ("1.0", "2.0"):
            upload(reg, model_wheel(dist, "model-foo", version), auth=auth("alice"))
        code, out = twine(reg, make_wheel(dist, "plain-lib", "0.1"), "carol")
        assert code == 0, out
        assert set_owner(reg, "model-foo", "bob", "maintainer", auth("alice")).status_code == 200
        assert promote(reg, "model-foo", "1.0", auth("bob")).status_code == 200
        assert yank(reg, "model-foo", "2.0", auth("alice")).status_code == 200
    ok(run_cli("reserve", "model-bar", "--data", str(data)))
    return make_token(data)


def test_a_registry_moves_to_another_folder_and_keeps_everything(
    tmp_path: Path, htpasswd: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    token = populate(tmp_path, htpasswd, src)
    (src / "tmp" / "upload-1-dead.part").write_bytes(b"an upload in flight")
    (src / "state" / "future").mkdir()
    (src / "notes.txt").write_text("an operator's file")
    (src / "mirror" / "files").mkdir(parents=True)
    (src / "mirror" / "files" / "cached.whl").write_bytes(b"upstream cache")

    preview = ok(run_cli("migrate", "--from", str(src), "--to", str(dst), "--dry-run"))
    assert "would copy packages/model_foo-1.0-py3-none-any.whl" in preview
    assert "would copy state/tokens/" in preview and "mirror" not in preview.replace(
        "tmp/ and mirror/ are never copied", ""
    )
    assert not dst.exists(), "a dry run writes nothing"
    left_out = [line for line in preview.splitlines() if line.startswith("not copied")]
    assert left_out == ["not copied (unknown to this version): notes.txt",
                        "not copied (unknown to this version): state/future/"]  # fmt: skip

    out = ok(run_cli("migrate", "--from", str(src), "--to", str(dst)))
    assert "copied packages/model_foo-2.0-py3-none-any.whl" in out
    assert f"verified: {src} -> {dst}" in out
    assert "packages 3" in out and "state/owners 2" in out and "state/tokens 1" in out
    assert "claims 3" in out  # one per version, 1.0 sealed by its promotion
    before, after = snapshot(src), snapshot(dst)
    copied = {k for k in before if k.split("/")[0] in ("packages", "meta", "state", "claims")}
    assert copied and all(after[k][0] == before[k][0] for k in copied), "byte-identical"
    assert not any(k.startswith(("mirror", "tmp")) for k in after), "no cache, no uploads"
    assert int(after["generation"][0]) > int(before["generation"][0])
    for key in (k for k in after if k.startswith("state/tokens/")):
        assert os.stat(dst / key).st_mode & 0o077 == 0, "tokens stay private"

    again = ok(run_cli("migrate", "--from", str(src), "--to", str(dst)))
    assert "copied 0 object(s)" in again and "verified" in again
    assert snapshot(dst) == after, "a re-run changes nothing, not even the generation"

    assert ok(run_cli("reserve", "--list", "--data", str(dst))) == "model-bar"
    with server(tmp_path, htpasswd, data=dst) as reg:
        venv = Venv(tmp_path / "pip-env", tool="pip")
        venv.install("model-foo", index_url=reg.index_url)  # 2.0 is yanked
        assert venv.run("import model_foo; print(model_foo.VERSION)").stdout.strip() == "1.0"
        doc = requests.get(f"{reg.url}{API}/model-foo", timeout=10).json()
        assert doc["stages"]["production"]["version"] == "1.0"
        owners = requests.get(f"{reg.url}{API}/model-foo/owners", timeout=10).json()
        assert (owners["owners"], owners["maintainers"]) == (["alice"], ["bob"])
        assert [v["yanked"] for v in doc["versions"] if v["version"] == "2.0"] == [True]
        code, out = twine(reg, make_wheel(tmp_path / "d3", "model-foo", "3.0"), "__token__", token)
        assert code == 0, out  # the API token still works
        code, out = twine(reg, make_wheel(tmp_path / "d4", "model-foo", "4.0"), "dave", "s3cret")
        assert code != 0 and "owned by alice" in out


def test_a_destination_with_other_bytes_is_refused_and_left_untouched(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for data, summary in ((src, "the source's"), (dst, "another registry's")):
        with Registry(data) as reg:
            code, out = twine(reg, make_wheel(tmp_path / summary, "model-foo", "1.0",
                                              summary=summary), "alice", "x")  # fmt: skip
            assert code == 0, out
    with Registry(src) as reg:
        code, out = twine(reg, make_wheel(tmp_path / "d", "model-foo", "1.1"), "alice", "x")
        assert code == 0, out
    untouched = snapshot(dst)

    for extra in ((), ("--dry-run",)):
        refused = run_cli("migrate", "--from", str(src), "--to", str(dst), *extra)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "packages/model_foo-1.0-py3-none-any.whl: the destination already has other " \
               "bytes" in refused.stdout  # fmt: skip
        assert "nothing was written" in refused.stdout and "Traceback" not in refused.stderr
        assert snapshot(dst) == untouched

    # A corrupt source file is not copied, and the run says so and fails.
    fresh = tmp_path / "fresh"
    corrupt = src / "packages" / "model_foo-1.1-py3-none-any.whl"
    corrupt.write_bytes(corrupt.read_bytes()[:-1] + b"!")
    broken = run_cli("migrate", "--from", str(src), "--to", str(fresh))
    assert broken.returncode == 1
    assert "model_foo-1.1-py3-none-any.whl: the source's bytes do not match" in broken.stdout
    assert not (fresh / "packages" / corrupt.name).exists()
    assert (fresh / "packages" / "model_foo-1.0-py3-none-any.whl").exists()
    assert "MISMATCH" in broken.stdout


def test_bad_locations_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cases = {
        (str(tmp_path / "empty"), str(tmp_path / "d")): "is not a registry data folder",
        (str(tmp_path / "empty"), str(tmp_path / "empty")): "the same place",
        ("http://example/x", str(tmp_path / "d")): "give a data folder path or s3://",
        ("s3://", str(tmp_path / "d")): "--from: 's3://': '' is not a bucket name",
    }
    for (src, dst), message in cases.items():
        result = run_cli("migrate", "--from", src, "--to", dst)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "d").exists()
    endpoint = run_cli("migrate", "--from", str(tmp_path / "empty"), "--to",
                       str(tmp_path / "d"), "--s3-endpoint", "http://127.0.0.1:9")  # fmt: skip
    assert endpoint.returncode == 1 and "apply to an s3:// side" in endpoint.stderr


def test_a_live_migration_catches_up_with_sync_state(tmp_path: Path, htpasswd: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    token = populate(tmp_path, htpasswd, src)
    token_id = token.split("_")[1]
    ok(run_cli("migrate", "--from", str(src), "--to", str(dst)))
    # Meanwhile the source lives on: a new version, a stage moved, the token revoked.
    with server(tmp_path, htpasswd, data=src) as reg:
        upload(reg, model_wheel(tmp_path / "dist", "model-foo", "3.0"), auth=auth("alice"))
        assert promote(reg, "model-foo", "3.0", auth("alice")).status_code == 200
    ok(run_cli("tokens", "revoke", token_id, "--data", str(src)))
    untouched = snapshot(dst)

    plain = run_cli("migrate", "--from", str(src), "--to", str(dst))
    assert plain.returncode == 1 and "state/stages/model-foo.json: the destination already " \
        "has other bytes" in plain.stdout and "--sync-state" in plain.stdout  # fmt: skip
    preview = ok(run_cli("migrate", "--from", str(src), "--to", str(dst), "--sync-state",
                         "--dry-run"))  # fmt: skip
    assert "would replace state/stages/model-foo.json" in preview
    assert f"would remove state/tokens/{token_id}.json" in preview
    assert "would copy packages/model_foo-3.0-py3-none-any.whl" in preview
    assert snapshot(dst) == untouched, "neither the refusal nor the dry run wrote anything"

    out = ok(run_cli("migrate", "--from", str(src), "--to", str(dst), "--sync-state"))
    assert f"removed state/tokens/{token_id}.json (the source has none)" in out
    assert "replaced state/stages/model-foo.json" in out and "verified" in out
    assert not (dst / "state" / "tokens" / f"{token_id}.json").exists()
    with server(tmp_path, htpasswd, data=dst) as reg:
        doc = requests.get(f"{reg.url}{API}/model-foo", timeout=10).json()
        assert doc["stages"]["production"]["version"] == "3.0"
        code, text = twine(reg, make_wheel(tmp_path / "d5", "model-foo", "5.0"), "__token__", token)
        assert code != 0 and ("403" in text or "401" in text), text  # revoked there too
