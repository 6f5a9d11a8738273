from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from registry_support import DAVE, PASSWORDS

from support import Registry


@pytest.fixture(autouse=True, scope="session")
def _digest_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Builds in tests keep their weight-digest cache out of the user's ~/.cache."""
    old = os.environ.get("MODELPACK_CACHE_DIR")
    os.environ["MODELPACK_CACHE_DIR"] = str(tmp_path_factory.mktemp("modelpack-cache"))
    yield
    if old is None:
        del os.environ["MODELPACK_CACHE_DIR"]
    else:
        os.environ["MODELPACK_CACHE_DIR"] = old


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A fresh registry (anonymous uploads, loopback) on a free port, stopped afterwards."""
    with Registry(tmp_path / "registry-data") as reg:
        yield reg


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    """alice, bob and carol (bcrypt; PASSWORDS) and dave (apr1), as an htpasswd file."""
    path = tmp_path / "htpasswd"
    lines = [
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for user, pw in PASSWORDS.items()
    ]
    path.write_text("\n".join([*lines, DAVE]) + "\n")
    return path
