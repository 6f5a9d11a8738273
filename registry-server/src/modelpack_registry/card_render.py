"""The model card renderer's child process: Markdown in, HTML out, each text on a budget.

:class:`modelpack_registry.cards.Renderer` runs ``python -m
modelpack_registry.card_render`` and talks to it over its standard streams. This module
imports only the standard library and markdown-it, so that the child is ready soon
after it starts (importing the rest of the registry took it 40 ms more).
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["CPU_BUDGET", "CPU_PER_MIB", "MEMORY_CAP", "budget", "main"]

CPU_BUDGET = 1.0
"""CPU seconds a card may take to render, plus :data:`CPU_PER_MIB` for each MiB of it."""
CPU_PER_MIB = 3.0
"""Markup-dense Markdown (a table, a list, links and emphasis every few lines) takes
about 2.3 s per MiB, prose far less; ``"![" * 250_000`` takes 16 s per MiB."""
MEMORY_CAP = 512 << 20
"""Bytes of address space for the child (1 MiB of dense Markdown needs about 250 MiB)."""


def budget(size: int) -> float:
    """The CPU seconds a text of ``size`` bytes may take to render."""
    return CPU_BUDGET + CPU_PER_MIB * size / (1024 * 1024)


def main() -> None:
    """The renderer process: length-prefixed texts in, status + length-prefixed HTML out."""
    import resource
    import signal

    from markdown_it import MarkdownIt

    with contextlib.suppress(OSError):
        os.nice(10)  # the registry's request threads come first
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    class OverBudget(Exception):
        pass

    def expired(signum: int, frame: object) -> None:
        raise OverBudget

    signal.signal(signal.SIGPROF, expired)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while len(head := stdin.read(8)) == 8:
        text = stdin.read(int.from_bytes(head, "big")).decode("utf-8", "replace")
        status, out = 0, b""
        try:
            signal.setitimer(signal.ITIMER_PROF, budget(len(text.encode())))
            out = md.render(text).encode()
        except (OverBudget, RecursionError, MemoryError):
            status = 1
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        stdout.write(bytes([status]) + len(out).to_bytes(8, "big") + out)
        stdout.flush()


if __name__ == "__main__":
    main()
