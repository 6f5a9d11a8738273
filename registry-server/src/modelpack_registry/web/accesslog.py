"""The access log of ``serve --access-log``: gunicorn's, with the bytes sendfile sent.

gunicorn's ``%(B)s`` counts what went through ``Response.write``; a distribution sent
with ``sendfile`` (every ``/packages/`` download) logged 0. :mod:`~modelpack_registry.web.files`
notes those bytes in the request's environ, and this logger adds them.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from modelpack_registry.web.files import SENT_BY_SENDFILE

__all__ = ["AccessLogger"]


class AccessLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, counting the body bytes sent with sendfile in ``b`` and ``B``."""

    def atoms(
        self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any
    ) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        by_sendfile = environ.get(SENT_BY_SENDFILE)
        if by_sendfile:
            sent = (getattr(resp, "sent", None) or 0) + by_sendfile
            atoms["B"], atoms["b"] = sent, str(sent)
        return atoms
