"""Statically scan model weight files for pickles and judge what they would import.

Nothing is ever imported from or unpickled out of a weight file: :mod:`.files` finds
the pickles by content, :mod:`.machine` runs their opcodes on a symbolic stack, and
:mod:`.policy` judges each global against an allow-list. :mod:`.report` turns that
into the findings ``modelpack check``, ``build`` and ``publish`` print.
"""

from modelpack.scan.files import FileScan, scan_file, scan_stream
from modelpack.scan.policy import SAFE_STDLIB, Policy, Verdict

__all__ = ["SAFE_STDLIB", "FileScan", "Policy", "Verdict", "scan_file", "scan_stream"]
