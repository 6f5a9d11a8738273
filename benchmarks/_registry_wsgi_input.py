"""``modelpack-registry`` with the direct socket reader off: every upload body is read
through the public WSGI stream, ``wsgi.input.read`` (for ``publish_speed.py``).

gunicorn forks its workers from this process, so they inherit the change.
"""

import sys

from modelpack_registry.cli import main
from modelpack_registry.web import receive


def _never(cls: type, stream: object, sock: object) -> None:
    return None


receive._SocketBody.attach = classmethod(_never)  # type: ignore[method-assign,assignment,attr-defined,unused-ignore]

if __name__ == "__main__":
    sys.exit(main())
