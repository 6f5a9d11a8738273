"""What `modelpack` tells people: commands they can run rather than raw HTTP, the install
command a consumer can actually use, and the registry's warnings.

Real registries on loopback; models are small real wheels uploaded with real twine.
"""

from __future__ import annotations

import os
from pathlib import Path

from registry_support import make_wheel, twine_upload

from support import Registry, modelpack, ok


def test_errors_name_the_modelpack_command_not_the_http_request(
    tmp_path: Path, registry: Registry
) -> None:
    assert twine_upload(registry.url, make_wheel(tmp_path, "model-hint", "1.0")).returncode == 0

    missing = modelpack("show", "model-nope", "--registry", registry.url)
    assert missing.returncode == 1
    assert "`modelpack list`" in missing.stderr
    assert "/api/v1" not in missing.stderr

    ok(modelpack("yank", "model-hint==1.0", "--reason", "wrong labels", "--registry", registry.url))
    refused = modelpack("promote", "model-hint==1.0", "--stage", "production",
                        "--registry", registry.url)  # fmt: skip
    assert refused.returncode == 1
    assert "`modelpack yank model-hint==1.0 --undo`" in refused.stderr
    assert "DELETE" not in refused.stderr and "/api/v1" not in refused.stderr
    # and the command it names works
    ok(modelpack("yank", "model-hint==1.0", "--undo", "--registry", registry.url))
    ok(modelpack("promote", "model-hint==1.0", "--stage", "production", "--registry", registry.url))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_")}
