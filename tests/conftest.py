from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import Registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A fresh registry (anonymous uploads, loopback) on a free port, stopped afterwards."""
    with Registry(tmp_path / "registry-data") as reg:
        yield reg
