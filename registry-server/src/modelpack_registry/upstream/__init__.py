"""``serve --upstream``: one index for consumers, private names never answered from outside.

- :mod:`.client`: bounded HTTP to the upstream (pages as PEP 691 JSON or PEP 503 HTML, files).
- :mod:`.cache`: ``DATA/mirror/``, a disposable copy of pages and checked files.
- :mod:`.sources`: :class:`Upstream`, the second source after the private one.
- :mod:`.render`: an upstream page re-served with file URLs through the registry.
- :mod:`.web`: the app's side: routing a name to its source, files, health and metrics.

Which names are private (and so never asked upstream) is :mod:`modelpack_registry.access.reserved`.
"""

from modelpack_registry.upstream.client import Limits, check_url
from modelpack_registry.upstream.sources import DEFAULT_TTL, Upstream

__all__ = ["DEFAULT_TTL", "Limits", "Upstream", "check_url"]
