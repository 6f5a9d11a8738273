"""``modelpack publish --verify``: prove a model works before it is published, and after.

Before the upload, the wheel just built is installed into a clean virtual environment
(:mod:`modelpack.cleanenv` says where its dependencies come from), imported through its
``modelpack.models`` entry point, ``load()``-ed, and given the manifest's
``input_example``. Only if that works is anything uploaded: a published version can never
be replaced, so a broken one would use up its version number. A failure names the party
at fault: :class:`~modelpack.errors.ModelFaultError` (the import, ``load()`` or
``predict`` fails) or :class:`~modelpack.errors.EnvironmentFaultError` (a dependency
cannot be resolved, an index does not answer).

After the upload the same check runs on what the registry serves (:func:`verify_published`):
``name==version`` through the registry when it has an upstream (the consumer's command),
else the registry's file by URL and sha256, with dependencies resolved as before.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpack.cleanenv import CleanEnv, Failure, Resolution
from modelpack.config import Credentials, redact
from modelpack.errors import EnvironmentFaultError, ModelFaultError, VerificationError
from modelpack.index import IndexClient

__all__ = ["Verified", "resolution_for", "verify_published", "verify_wheel"]


@dataclass(frozen=True)
class Verified:
    loaded: str
    """``module.Class`` of the object ``load()`` returned."""
    prediction: Any
    """What ``predict(input_example)`` returned, or ``None`` without an input example."""
    through: str
    """Where the dependencies came from, in words."""
    timings: dict[str, float]
    """Seconds per step: ``create``, ``install``, ``import and predict``."""

    def __str__(self) -> str:
        shown = "" if self.prediction is None else f", predict -> {self.prediction}"
        return f"load() -> {self.loaded}{shown}"


def resolution_for(registry: str, credentials: Credentials | None) -> Resolution:
    """How a clean environment resolves dependencies for models of *registry*.

    :raises RegistryUnreachableError: nothing answers at the registry URL.
    """
    client = IndexClient(registry, credentials)
    return Resolution(client.simple_url, client.upstream() is not None, credentials)


def input_example(wheel: Path) -> Any:
    """The ``input_example`` of the wheel's manifest, or ``None``."""
    with zipfile.ZipFile(wheel) as zf:
        name = next((n for n in zf.namelist() if n.endswith(".dist-info/modelpack.json")), None)
        return json.loads(zf.read(name)).get("input_example") if name else None


def verify_wheel(
    wheel: Path, name: str, version: str, resolution: Resolution, *, cache: bool = True
) -> Verified:
    """Install the *wheel* file into a clean environment, import, load and predict.

    :raises ModelFaultError: the import, ``load()`` or ``predict`` fails.
    :raises EnvironmentFaultError: the environment cannot be made, a dependency cannot
        be resolved or an index does not answer.
    """
    return _check(str(wheel.resolve()), name, version, input_example(wheel), resolution,
                  published=False, cache=cache)  # fmt: skip


def verify_published(
    wheel: Path, name: str, version: str, url: str, sha256: str, resolution: Resolution
) -> Verified:
    """Install ``name==version`` as the registry serves it into a clean environment,
    import, load and predict.

    :raises VerificationError: as :func:`verify_wheel`; the message says the version is
        published and how to yank it.
    """
    if resolution.upstream:
        requirement = f"{name}=={version}"  # what a consumer runs
    else:  # the registry's own file; dependencies as before the upload
        requirement = f"{name} @ {redact(url)}#sha256={sha256}"
    return _check(requirement, name, version, input_example(wheel), resolution,
                  published=True, cache=False)  # fmt: skip


def _check(
    requirement: str,
    name: str,
    version: str,
    example: Any,
    resolution: Resolution,
    *,
    published: bool,
    cache: bool,
) -> Verified:
    with tempfile.TemporaryDirectory(prefix="modelpack-verify-") as tmp:
        env = CleanEnv(Path(tmp), resolution, cache=cache)
        failure = env.create() or env.install(requirement)
        if failure is None:
            result = env.probe(name, example)
            if isinstance(result, Failure):
                failure = result
        if failure is not None:
            raise _error(failure, name, version, resolution, published=published)
        assert not isinstance(result, Failure)
        return Verified(result["loaded"], result.get("prediction"), resolution.describe(),
                        dict(env.timings))  # fmt: skip


def _error(
    failure: Failure, name: str, version: str, resolution: Resolution, *, published: bool
) -> VerificationError:
    if published:
        state = f"{name} {version} is published; as the registry serves it, it"
        fix = (
            f"fix it, publish a new version and yank this one with "
            f"`modelpack yank {name}=={version} --reason '...'`"
        )
    else:
        state = f"nothing was published: {name} {version}"
        fix = ""
    if failure.fault == "model":
        what = f"installs in a clean environment, but {failure.step} fails"
        if not published:
            fix = "fix the model, then build and publish again (`modelpack check` finds undeclared imports)"
        return ModelFaultError(f"{state} {what}; the model is at fault:\n{failure.output}\n{fix}")
    if failure.step == "create":
        what = "could not get a clean environment (creating it failed)"
    elif failure.missing:
        what = f"does not install: its dependency {failure.missing} cannot be resolved"
    elif failure.unreachable:
        what = "does not install: an index does not answer"
    else:
        what = "does not install in a clean environment"
    where = f"dependencies resolve through {resolution.describe()}"
    if not published:
        if resolution.upstream:
            fix = (
                "check the requirement in [project] dependencies, and that the registry's "
                "upstream is reachable (its /health says)"
            )
        else:
            fix = (
                "the registry has no upstream index, so public dependencies must come from "
                "your configured index: check the requirement in [project] dependencies and "
                "that your index has it, or ask the platform team to serve the registry with "
                "`modelpack-registry serve --upstream URL`"
            )
    return EnvironmentFaultError(
        f"{state} {what}; the environment is at fault, not the model ({where}):\n"
        f"{failure.output}\n{fix}"
    )
