"""Where the registry keeps its state: a folder (``--data``) or, later, a bucket.

:mod:`.base` declares the storage interface (blobs written once, small versioned
documents, conditional operations instead of locks); :mod:`.folder` implements it on a
data folder. :class:`DataDir` (:mod:`.datadir`) is the registry's view of its data: the
layout, the publication rules and the generation counter.
"""

from modelpack_registry.storage.base import Store, Upload
from modelpack_registry.storage.datadir import DataDir, PublishGuard, Record

__all__ = ["DataDir", "PublishGuard", "Record", "Store", "Upload"]
