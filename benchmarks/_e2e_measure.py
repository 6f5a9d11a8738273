"""Measuring one step: wall seconds and peak RSS of the client and server process trees.

A step is a command run as a child process (the client). While it runs, a thread samples
``/proc`` every 20 ms and records, for the client's process tree and for the tree of the
server that the step talks to, the largest sum of resident set sizes seen at once. The
sampling can miss a peak shorter than 20 ms; it cannot double count.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PAGE", "StepFailed", "StepResult", "run_step", "tree_rss"]

PAGE = os.sysconf("SC_PAGE_SIZE")


class StepFailed(RuntimeError):
    """A benchmark step exited non-zero or ran past its time limit."""


@dataclass
class StepResult:
    seconds: float
    client_rss: int  # bytes, peak of the client's process tree
    server_rss: int  # bytes, peak of the server's process tree (0: no server)
    stdout: str = ""


def _parents() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: split after the last ')'
        fields = stat[stat.rindex(b")") + 2 :].split()
        out[int(entry.name)] = int(fields[1])
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int, parents: dict[int, int] | None = None) -> int:
    """Sum of RSS over *root* and all its descendants, in bytes."""
    parents = _parents() if parents is None else parents
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss(pid)
        todo += children.get(pid, [])
    return total


class _Sampler(threading.Thread):
    def __init__(self, client: int, server: int | None) -> None:
        super().__init__(daemon=True)
        self.client, self.server = client, server
        self.client_peak = self.server_peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(0.02)

    def sample(self) -> None:
        parents = _parents()
        self.client_peak = max(self.client_peak, tree_rss(self.client, parents))
        if self.server is not None:
            self.server_peak = max(self.server_peak, tree_rss(self.server, parents))


def run_step(
    cmd: Sequence[object],
    *,
    server_pid: int | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
    log: Path | None = None,
) -> StepResult:
    """Run *cmd*, timing it and sampling memory; raise :class:`StepFailed` on failure.

    :raises StepFailed: the command exited non-zero or ran longer than *timeout*.
    """
    shown = " ".join(shlex.quote(str(c)) for c in cmd)
    start = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    sampler = _Sampler(proc.pid, server_pid)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise StepFailed(f"timed out after {timeout:.0f} s: {shown}") from None
    finally:
        seconds = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {shown}\n# {seconds:.2f} s, exit {proc.returncode}\n{out}{err}\n")
    if proc.returncode != 0:
        tail = "\n".join((out + err).strip().splitlines()[-20:])
        raise StepFailed(f"exit {proc.returncode}: {shown}\n{tail}")
    return StepResult(seconds, sampler.client_peak, sampler.server_peak, out)
