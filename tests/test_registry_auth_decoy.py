"""An unknown user name costs what a wrong password costs: the decoy hash matches the file.

The answer-time ratio is measured in benchmarks/auth.py (never asserted); here the decoy
the server checks unknown names against is read from the real ``Htpasswd`` of a file
written as ``htpasswd -B`` writes it (bcrypt cost 5), and it follows the file's changes.
"""

from __future__ import annotations

import os
from pathlib import Path

import bcrypt
import requests
from registry_support import DAVE

from modelpack_registry.access.auth import Htpasswd
from support import Registry


def _bcrypt_line(user: str, password: str, cost: int) -> str:
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()}"


def _cost(hashed: str) -> int:
    assert hashed.startswith("$2"), hashed
    return int(hashed.split("$")[2])


def test_the_decoy_costs_what_the_files_entries_cost(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    lines = [_bcrypt_line("alice", "a", 5), _bcrypt_line("bob", "b", 5)]
    path.write_text("\n".join([*lines, _bcrypt_line("carol", "c", 7)]) + "\n")
    users = Htpasswd(path)
    assert _cost(users.decoy()) == 5  # htpasswd -B's cost, the one most entries use
    assert not users.verify("mallory", "a")  # checked against the decoy, refused
    assert users.verify("alice", "a") and not users.verify("alice", "wrong")

    path.write_text("\n".join(_bcrypt_line(u, "x", 6) for u in ("alice", "bob")) + "\n")
    os.utime(path, ns=(1, 1))  # a changed file is noticed (mtime, size or inode)
    assert _cost(users.decoy()) == 6

    path.write_text(DAVE + "\n")  # Apache MD5 only (htpasswd -m)
    os.utime(path, ns=(2, 2))
    assert users.decoy().startswith("$apr1$")
    assert not users.verify("mallory", "s3cret") and users.verify("dave", "s3cret")


def test_an_unknown_user_is_refused_like_a_wrong_password(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(_bcrypt_line("alice", "alice-pw", 5) + "\n")
    with Registry(tmp_path / "data", args=["--htpasswd", str(path), "--protect-reads"]) as reg:
        wrong = requests.get(f"{reg.url}/simple/", auth=("alice", "nope"), timeout=30)
        unknown = requests.get(f"{reg.url}/simple/", auth=("mallory", "nope"), timeout=30)
        assert wrong.status_code == unknown.status_code == 403
        assert wrong.text.replace("alice", "X") == unknown.text.replace("mallory", "X")
