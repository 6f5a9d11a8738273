"""What `modelpack show` tells people: the install command a consumer can actually use.

Real registries on loopback; models are small real wheels uploaded with real twine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from registry_support import make_wheel, twine_upload

from support import Registry, modelpack, ok


def test_show_prints_one_index_install_for_a_model_without_dependencies(
    tmp_path: Path, registry: Registry
) -> None:
    assert twine_upload(registry.url, make_wheel(tmp_path, "model-solo", "1.0")).returncode == 0
    out = ok(modelpack("show", "model-solo", "--registry", registry.url))
    assert f"install: pip install model-solo==1.0 --index-url {registry.index_url}" in out
    assert "upstream" not in out


def test_show_without_an_upstream_says_so_and_its_recipe_installs(
    tmp_path: Path, registry: Registry, plain_index: str
) -> None:
    """A model with a public dependency on a registry without an upstream: `show` says the
    single-index command cannot work, never suggests --extra-index-url, and the commands
    it prints install the model and its dependency (pip.conf naming the public index)."""
    wheel = make_wheel(tmp_path / "w", "model-pub", "1.0", requires=("pubdep>=1,<2",))
    assert twine_upload(registry.url, wheel).returncode == 0
    make_wheel(tmp_path / "pkgs", "pubdep", "1.4")  # the plain_index fixture serves tmp_path/pkgs
    out = ok(modelpack("show", "model-pub", "--registry", registry.url))
    assert "no upstream index" in out and "(pubdep)" in out
    assert "modelpack-registry serve --upstream URL" in out
    assert "Do not add the registry with --extra-index-url" in out
    commands = [line.strip() for line in out.splitlines() if line.startswith("    pip install")]
    assert len(commands) == 2 and all("--extra-index-url" not in c for c in commands)

    # the consumer: a pip.conf whose index is the public one, nothing else
    (tmp_path / "pip.conf").write_text(f"[global]\nindex-url = {plain_index}/simple/\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL"))}
    env["PIP_CONFIG_FILE"] = str(tmp_path / "pip.conf")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    for command in commands:
        subprocess.run([python, "-m", *command.split()], check=True, env=env,
                       capture_output=True, text=True)  # fmt: skip
    got = subprocess.run([python, "-c", "import model_pub, pubdep; print(pubdep.VERSION)"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert got.stdout.strip() == "1.4"
