"""Refuse a project name that cannot be a distribution name and an import package.

Runs before cookiecutter writes anything; a non-zero exit aborts the generation.
This mirrors the checks `modelpack new` makes itself, so plain `cookiecutter` users
get the same clear message.
"""

import keyword
import re
import sys

PROJECT_NAME = {{ cookiecutter.project_name|jsonify }}
PACKAGE_NAME = {{ cookiecutter.package_name|jsonify }}

DIST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


def fail(problem: str) -> None:
    print(f"ERROR: invalid project_name {PROJECT_NAME!r}: {problem}", file=sys.stderr)
    sys.exit(1)


if not DIST_RE.fullmatch(PROJECT_NAME):
    fail(
        "a distribution name may contain only ASCII letters, digits, '-', '_' and '.', "
        "and must start and end with a letter or digit (e.g. 'model-foo')"
    )
if PACKAGE_NAME[0].isdigit():
    fail(f"the import package {PACKAGE_NAME!r} must start with a letter; try 'model-{PROJECT_NAME}'")
if not PACKAGE_NAME.isidentifier() or not PACKAGE_NAME.isascii():
    fail(f"the import package {PACKAGE_NAME!r} is not a valid Python identifier")
if keyword.iskeyword(PACKAGE_NAME):
    fail(f"the import package {PACKAGE_NAME!r} is a Python keyword; try 'model-{PROJECT_NAME}'")
