"""`publish` asks the keyring only when the registry wants credentials it was not given.

Finding the keyring's backend and asking it costs time on every publish (and on a
desktop it can bring up an unlock prompt), so it is left alone when the registry is
anonymous or the credentials come from the environment, and twine, which is always
given a user and a password, is imported without it. When the registry does want
credentials, the keyring's are used as before: refused for want of them, the listing
or the upload runs once more with them.

The keyring here is real: `keyring` loads a backend module of this test
(``PYTHON_KEYRING_BACKEND``) that serves credentials from a JSON file and logs every
time it is loaded or asked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from registry_support import PASSWORDS

from support import Registry, modelpack, ok

BACKEND = '''
"""A keyring backend for tests: credentials from a JSON file; every use is logged."""
import json
import os

from keyring.backend import KeyringBackend
from keyring.credentials import SimpleCredential


def _log(line):
    with open(os.environ["TEST_KEYRING_LOG"], "a") as f:
        f.write(line + "\\n")


class Keyring(KeyringBackend):
    priority = 1

    def __init__(self):
        super().__init__()
        _log("loaded")

    def get_credential(self, service, username):
        _log(f"asked for {service}")
        with open(os.environ["TEST_KEYRING_STORE"]) as f:
            found = json.load(f).get(service)
        if found is None or (username and username != found[0]):
            return None
        return SimpleCredential(*found)

    def get_password(self, service, username):
        found = self.get_credential(service, username)
        return found.password if found else None

    def set_password(self, service, username, password):
        raise NotImplementedError

    def delete_password(self, service, username):
        raise NotImplementedError
'''

# publish through the command's own entry point, then say whether keyring was imported
RUN = (
    "import sys; from modelpack.cli import main; rc = main(sys.argv[1:]); "
    "print('keyring imported:', 'keyring' in sys.modules); sys.exit(rc)"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("keyring-model")
    ok(modelpack("new", "model-key", "-o", work, "--no-input"))
    return Path(ok(modelpack("build", work / "model-key")))


class Keyring:
    """The test backend's files, and the environment that makes `keyring` load it."""

    def __init__(self, folder: Path, store: dict[str, tuple[str, str]]) -> None:
        folder.mkdir()
        (folder / "test_keyring_backend.py").write_text(BACKEND)
        self.log = folder / "keyring.log"
        (folder / "store.json").write_text(json.dumps(store))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_")}
        self.env.update(
            PYTHONPATH=str(folder),
            PYTHON_KEYRING_BACKEND="test_keyring_backend.Keyring",
            TEST_KEYRING_LOG=str(self.log),
            TEST_KEYRING_STORE=str(folder / "store.json"),
            PYPIRC=str(folder / "no-pypirc"),
        )

    def uses(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def publish(self, wheel: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", RUN, "publish", str(wheel), "--registry", url],
            capture_output=True, text=True, env={**self.env, **env}, timeout=300,
        )  # fmt: skip


def _uploader(reg: Registry, auth: tuple[str, str] | None = None) -> str | None:
    doc = requests.get(f"{reg.url}/api/v1/models/model-key", auth=auth, timeout=30).json()
    return str(doc["versions"][0]["uploaded_by"]) if doc["versions"][0]["uploaded_by"] else None


def test_an_anonymous_registry_never_touches_the_keyring(
    tmp_path: Path, wheel: Path, registry: Registry
) -> None:
    keyring = Keyring(tmp_path / "kr", {registry.url: ("alice", PASSWORDS["alice"])})
    done = keyring.publish(wheel, registry.url)
    assert ok(done).endswith("keyring imported: False")
    assert keyring.uses() == []
    assert (registry.data / "packages" / wheel.name).read_bytes() == wheel.read_bytes()


def test_credentials_from_the_environment_never_touch_the_keyring(
    tmp_path: Path, wheel: Path, htpasswd: Path
) -> None:
    with Registry(tmp_path / "data", args=["--htpasswd", str(htpasswd)]) as reg:
        keyring = Keyring(tmp_path / "kr", {reg.url: ("bob", PASSWORDS["bob"])})
        done = keyring.publish(wheel, reg.url, MODELPACK_USERNAME="alice",
                               MODELPACK_PASSWORD=PASSWORDS["alice"])  # fmt: skip
        assert ok(done).endswith("keyring imported: False")
        assert keyring.uses() == []
        assert _uploader(reg) == "alice"


@pytest.mark.parametrize("reads", ["anonymous reads", "protected reads"])
def test_the_keyrings_credentials_are_used_once_the_registry_wants_them(
    tmp_path: Path, wheel: Path, htpasswd: Path, reads: str
) -> None:
    """Anonymous reads: the listing passes and the upload is refused, then runs again
    with the keyring's credentials. Protected reads: the listing is refused first."""
    args = ["--htpasswd", str(htpasswd)] + ["--protect-reads"] * (reads == "protected reads")
    with Registry(tmp_path / "data", args=args) as reg:
        keyring = Keyring(tmp_path / "kr", {reg.url: ("alice", PASSWORDS["alice"])})
        ok(keyring.publish(wheel, reg.url))
        assert keyring.uses() == ["loaded", f"asked for {reg.url}"]
        assert (reg.data / "packages" / wheel.name).read_bytes() == wheel.read_bytes()
        assert _uploader(reg, ("alice", PASSWORDS["alice"])) == "alice"


def test_wrong_or_missing_keyring_credentials_upload_nothing(
    tmp_path: Path, wheel: Path, htpasswd: Path
) -> None:
    with Registry(tmp_path / "data", args=["--htpasswd", str(htpasswd)]) as reg:
        wrong = Keyring(tmp_path / "wrong", {reg.url: ("alice", "not-her-password")})
        refused = wrong.publish(wheel, reg.url)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert f"the registry at {reg.url} refused the upload of {wheel.name}" in refused.stderr
        none = Keyring(tmp_path / "none", {})
        missing = none.publish(wheel, reg.url)
        assert missing.returncode == 1 and "Traceback" not in missing.stderr
        assert "needs credentials" in missing.stderr and "keyring set" in missing.stderr
        assert none.uses() == ["loaded", f"asked for {reg.url}"]
        assert not list((reg.data / "packages").glob("*"))
