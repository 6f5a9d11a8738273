"""Every error modelpack reports on purpose.

Each exception says what happened and how to fix it, in one line, so the CLI can
print ``str(exc)`` and exit 1 without a traceback. Anything else that escapes is a
bug and is shown with its traceback.

Exception tree::

    ModelpackError
    ├── UsageError                 bad arguments to a command (exit status 2)
    ├── ModelNotFoundError         `modelpack.load` of a name that is not installed
    ├── ProjectError               not a model project, or its pyproject.toml is wrong
    │   └── InvalidNameError       `modelpack new` got a name that is not a distribution name
    ├── BuildError                 the build backend failed, or the wheel is not a model
    │   ├── MissingWeightsError    the project (or its wheel) has no weights
    │   └── CheckError             `modelpack check` found errors (each on its own line)
    └── RegistryError              talking to the registry failed
        ├── RegistryUnreachableError   nothing answers at the registry URL
        ├── AuthenticationError        the registry refused the credentials
        ├── VersionExistsError         that version is already published (immutable)
        ├── UploadError                the upload failed or did not arrive intact
        └── VerificationError          a model does not install or predict in a clean environment
            ├── ModelFaultError            ... because its import, load() or predict fails
            └── EnvironmentFaultError      ... because a dependency or an index is out of reach
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BuildError",
    "CheckError",
    "EnvironmentFaultError",
    "InvalidNameError",
    "MissingWeightsError",
    "ModelFaultError",
    "ModelNotFoundError",
    "ModelpackError",
    "ProjectError",
    "RegistryError",
    "RegistryUnreachableError",
    "UploadError",
    "UsageError",
    "VerificationError",
    "VersionExistsError",
]


class ModelpackError(Exception):
    """Base of every error modelpack reports; ``str()`` is the message for the user."""

    exit_code = 1


class UsageError(ModelpackError):
    """The command line itself is wrong."""

    exit_code = 2


class ModelNotFoundError(ModelpackError, LookupError):
    """No installed model has that name."""


class ProjectError(ModelpackError):
    """A directory is not a model project, or its configuration is invalid."""


class InvalidNameError(ProjectError, ValueError):
    """A model name is not a valid distribution name."""


class BuildError(ModelpackError):
    """Building the wheel failed, or the wheel built is not a valid model."""


class MissingWeightsError(BuildError):
    """The project or wheel carries no weight files."""


class CheckError(BuildError):
    """``modelpack check`` found errors; the message lists each with its fix."""


class RegistryError(ModelpackError):
    """Talking to the registry failed."""


class RegistryUnreachableError(RegistryError):
    """Nothing answers at the registry URL."""


class AuthenticationError(RegistryError):
    """The registry refused the request's credentials."""


class VersionExistsError(RegistryError):
    """The version is already in the registry; published versions never change."""


class UploadError(RegistryError):
    """The upload failed, or the registry does not list the file it received."""


class VerificationError(RegistryError):
    """A model fails to install, load or predict in a clean environment."""


class ModelFaultError(VerificationError):
    """The model is at fault: it installs, but its import, ``load()`` or ``predict`` fails."""


class EnvironmentFaultError(VerificationError):
    """The environment is at fault: a dependency cannot be resolved, or an index is down."""
