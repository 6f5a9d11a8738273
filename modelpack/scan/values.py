"""The values the symbolic unpickler of :mod:`.machine` keeps, and what it reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["OPAQUE", "Call", "Global", "Ref", "Unparseable"]


class Unparseable(Exception):
    """The stream is not a pickle the unpickler would read to its end."""

    def __init__(self, message: str, offset: int, effects: bool) -> None:
        super().__init__(message)
        self.offset = offset
        self.effects = effects
        """Whether opcodes that call something had already been run."""


@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass
class Call:
    """An object the unpickler made by calling *func* (or the unknown result of one)."""

    func: Any
    args: Any = None
    state: Any = None


OPAQUE = object()


@dataclass(frozen=True)
class Ref:
    """One global the stream makes the unpickler import, or a call it cannot vouch for."""

    module: str
    name: str
    offset: int
    problem: str = ""
    """Non-empty when the call itself is refused (whatever the global is)."""
