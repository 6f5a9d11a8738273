"""``modelpack publish`` of a freshly built model wheel against the wire: one run, best
and median of ``--runs`` rounds, every figure beside baselines measured in the same run.

Run it from the repository root::

    .venv/bin/python benchmarks/publish_speed.py                    # 1 GiB, 5 rounds
    .venv/bin/python benchmarks/publish_speed.py --size 6GiB --runs 3

A model project made by ``modelpack new`` gets ``--size`` bytes of random weights. Each
round, interleaved, every upload going to its own fresh server on a free loopback port
(start-up not timed; ``os.sync()`` before each timed step):

- ``build``: ``modelpack build`` (a rebuild after the first round: the weights' digests
  come from the cache);
- ``publish (fresh build)``: ``modelpack publish`` of that wheel; twine is handed the
  digests ``build`` recorded and does not read the wheel to hash it;
- ``publish (touched)``: the wheel touched (``os.utime``), so the record no longer
  matches and twine hashes it (1 MiB blocks, two threads: modelpack's fallback);
- ``twine upload``: stock twine, nothing of modelpack's;
- ``raw POST``: the twine-shaped multipart body streamed from disk in 1 MiB blocks, no
  client hashing: the wire and the registry alone;
- ``raw POST, wsgi.input``: the same, the registry reading the body through the public
  WSGI stream (``wsgi.input.read``) instead of gunicorn's socket (``receive._SocketBody``
  disabled by ``_registry_wsgi_input.py``);
- ``PUT + fsync``: the same bytes to a trivial server that writes and fsyncs them.

Then, with no disk and no server: reading the same number of bytes from a socket pair
with ``recv`` and through gunicorn's body reader, to show where the two POSTs differ.

It prints the load average (the machine may be shared) and the versions of twine and
gunicorn. Targets (issue 17): publish after a fresh build at most 1.3x the raw POST; the
raw POST within 1.1x of the PUT with fsync.

The fixed cost of a publish (starting Python, imports, the checks and requests around
the upload) is what a small wheel shows: ``--size 0`` publishes the template model as
``modelpack new`` makes it (a 6 KiB wheel), and ``--kinds raw,publish`` times only
those two. ``--baseline-src DIR`` adds ``publish (baseline)``: the same publish,
interleaved, run from DIR, for an A/B against another commit::

    git archive <commit> modelpack | tar -x -C /tmp/base
    .venv/bin/python benchmarks/publish_speed.py --size 0 --runs 10 \
        --kinds raw,publish --baseline-src /tmp/base

modelpack's modules (and the baseline's) are compiled to bytecode first, as an install
would, so that a ``PYTHONDONTWRITEBYTECODE`` environment does not have every publish
compile them from source.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import registry as bench  # noqa: E402  (benchmarks/registry.py: servers and clients)

PY = sys.executable
MiB = 1 << 20
KINDS = ("put-fsync", "raw", "raw-wsgi", "twine", "publish", "publish-base", "publish-touched")
LABELS = {
    "build": "modelpack build",
    "publish": "modelpack publish (fresh build)",
    "publish-base": "modelpack publish (fresh build, baseline)",
    "publish-touched": "modelpack publish (touched)",
    "twine": "stock twine upload",
    "raw": "raw POST (gunicorn socket)",
    "raw-wsgi": "raw POST (wsgi.input)",
    "put-fsync": "PUT + fsync",
}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def make_project(work: Path, size: int) -> Path:
    subprocess.run([PY, "-m", "modelpack", "new", "model-speed", "-o", str(work), "--no-input"],
                   check=True, capture_output=True, env=bench.clean_env())  # fmt: skip
    project = work / "model-speed"
    if not size:  # the template model as it is (a 6 KiB wheel): the fixed cost alone
        return project
    block = os.urandom(16 * MiB)
    with (project / "src" / "model_speed" / "weights" / "weights.bin").open("wb") as f:
        left = size
        while left:
            f.write(block[: min(left, len(block))])
            left -= min(left, len(block))
    return project


def build(project: Path) -> Path:
    done = subprocess.run([PY, "-m", "modelpack", "build", str(project)], check=True,
                          capture_output=True, text=True, env=bench.clean_env())  # fmt: skip
    return Path(done.stdout.strip().splitlines()[-1])


def wsgi_input_registry(data: Path, log: Path) -> bench.Server:
    port = bench.free_port()
    cmd = [PY, str(HERE / "_registry_wsgi_input.py"), "serve", "--data", str(data),
           "--port", str(port)]  # fmt: skip
    return bench.Server(cmd, port, log, "/health")


def baseline_publish(src: Path, url: str, wheel: Path) -> None:
    """``modelpack publish`` as :func:`bench.modelpack_publish` runs it, from *src*
    (which ``python -m`` puts first on the path as the working directory)."""
    env = {k: v for k, v in bench.clean_env().items() if not k.startswith("MODELPACK_")}
    env["PYTHONPATH"] = str(src)
    cmd = [PY, "-m", "modelpack", "publish", str(wheel.resolve()), "--registry", url]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=src)
    if done.returncode:
        raise RuntimeError(f"baseline publish failed:\n{done.stdout}\n{done.stderr}")


def cpu_seconds(who: int) -> float:
    """User + system CPU seconds so far of this process (``RUSAGE_SELF``) or of its
    waited-for children (``RUSAGE_CHILDREN``)."""
    used = resource.getrusage(who)
    return used.ru_utime + used.ru_stime


def upload(work: Path, kind: str, wheel: Path, i: int, base: Path | None = None,
           cpu: list[float] | None = None) -> float:  # fmt: skip
    """One timed upload of *wheel* to a fresh server of the *kind* wanted; *cpu* gets
    the client's CPU seconds: a process (twine, publish), or this one (the raw POSTs)."""
    data = work / f"data-{kind}-{i}"
    data.mkdir()
    log = work / "servers.log"
    if kind == "put-fsync":
        srv = bench.put_server(data, log, True)
        step: Callable[[], object] = partial(bench.stream_request, srv.url, "PUT", "/x",
                                             {"Content-Type": "application/octet-stream"},
                                             [wheel])  # fmt: skip
    else:
        srv = wsgi_input_registry(data, log) if kind == "raw-wsgi" else bench.registry(data, log)
        how = {"raw-wsgi": "raw", "publish-touched": "publish"}.get(kind, kind)
        step = partial(bench.upload_once, srv.url, wheel, how)
        if kind == "publish-base":
            assert base is not None
            step = partial(baseline_publish, base, srv.url, wheel)
    try:
        who = resource.RUSAGE_SELF if kind.startswith("raw") else resource.RUSAGE_CHILDREN
        before = cpu_seconds(who)  # the server is reaped after, by stop()
        took = bench.timed(step)
        if cpu is not None:
            cpu.append(cpu_seconds(who) - before)
        return took
    finally:
        srv.stop()
        shutil.rmtree(data, ignore_errors=True)


def body_reader_rates(size: int, rounds: int = 3) -> dict[str, float]:
    """Seconds (best of *rounds*) to read *size* bytes from a loopback socket pair in
    1 MiB blocks: with ``recv`` (what ``receive._SocketBody`` does), and through
    gunicorn's own body reader (``wsgi.input.read``: ``Body``, ``LengthReader``,
    ``SocketUnreader``). The sender is a thread; nothing is written to disk."""
    import socket
    import threading

    from gunicorn.http.body import Body, LengthReader
    from gunicorn.http.unreader import SocketUnreader

    def send(sock: socket.socket) -> None:
        block = memoryview(bytes(MiB))
        left = size
        while left:
            sock.sendall(block[: min(left, MiB)])
            left -= min(left, MiB)

    result: dict[str, float] = {}
    for how in ("recv", "wsgi.input"):
        best = float("inf")
        for _ in range(rounds):
            a, b = socket.socketpair()
            sender = threading.Thread(target=send, args=(a,), daemon=True)
            start = time.perf_counter()
            sender.start()
            got = 0
            if how == "recv":
                while got < size:
                    got += len(b.recv(min(MiB, size - got)))
            else:
                body = Body(LengthReader(SocketUnreader(b), size))
                while chunk := body.read(MiB):
                    got += len(chunk)
            best = min(best, time.perf_counter() - start)
            sender.join()
            a.close()
            b.close()
        result[how] = best
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=lambda text: 0 if text == "0" else bench.parse_size(text),
                        default=1 << 30, help="of the weights, default 1GiB; 0: the template's")  # fmt: skip
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temp folder")
    parser.add_argument("--kinds", default=",".join(k for k in KINDS if k != "publish-base"),
                        help="the uploads to time, from: " + ", ".join(KINDS))  # fmt: skip
    parser.add_argument("--baseline-src", type=Path, default=None, metavar="DIR",
                        help="also time publish with PYTHONPATH=DIR (an export of "
                        "another commit's modelpack/)")  # fmt: skip
    args = parser.parse_args(argv)
    wanted = args.kinds.split(",") + ["publish-base"] * bool(args.baseline_src)
    if "raw" not in wanted or not set(wanted) <= set(KINDS):
        parser.error(f"--kinds: a comma-separated list from {', '.join(KINDS)}, with raw")
    kinds = [k for k in KINDS if k in wanted]
    import gunicorn
    import twine

    for src in (HERE.parent / "modelpack", args.baseline_src):
        if src is not None:  # bytecode, as an install leaves it (see above)
            subprocess.run([PY, "-m", "compileall", "-q", str(src)], check=True,
                           capture_output=True)  # fmt: skip
    print(f"load average at start: {load()} (nproc {os.cpu_count()}); "
          f"twine {twine.__version__}, gunicorn {gunicorn.__version__}", flush=True)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="modelpack-publish-speed-", dir=args.tmp))
    times: dict[str, list[float]] = {k: [] for k in ("build", *kinds)}
    cpu: dict[str, list[float]] = {k: [] for k in kinds if k != "put-fsync"}
    started = time.perf_counter()
    try:
        project = make_project(work, args.size)
        wheel = build(project)  # untimed: the first build fills the weights' digest cache
        print(f"  {wheel.name}: {wheel.stat().st_size:,} bytes", flush=True)
        for i in range(args.runs):
            times["build"].append(bench.timed(partial(build, project)))
            for kind in kinds:
                if kind == "publish-touched":
                    os.utime(wheel)  # the record no longer matches: twine hashes
                times[kind].append(upload(work, kind, wheel, i, args.baseline_src,
                                          cpu.get(kind)))  # fmt: skip
            print(f"  round {i + 1} (load {load()}): "
                  + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()), flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\npublish speed, {args.size:,} bytes of weights, best / median of {args.runs} "
          f"({time.perf_counter() - started:.0f} s, load average at end {load()})\n")  # fmt: skip
    put = "put-fsync" in kinds
    print("| step | best s | median s | median vs raw POST |" + (" median vs PUT + fsync |" * put))
    print("|---|---|---|---|" + "---|" * put)
    for k in ("build", *kinds):
        vs_raw = f"{med[k] / med['raw']:.2f}x" if k != "build" else ""
        vs_put = (
            "" if not put else f" {med[k] / med['put-fsync']:.2f}x |" if k != "build" else "  |"
        )
        print(f"| {LABELS[k]} | {best[k]:.3f} | {med[k]:.3f} | {vs_raw} |{vs_put}")
    print()
    for k in ("publish", "publish-base"):
        if k in med:  # what a publish adds to the upload itself, whatever the size
            print(f"{LABELS[k]} minus raw POST (medians): {med[k] - med['raw']:.3f} s")
    for k, v in cpu.items():  # less sensitive to a busy machine than the wall clock
        print(f"{LABELS[k]}: CPU (user + system) of the client, median "
              f"{statistics.median(v):.3f} s, best {min(v):.3f} s")  # fmt: skip
    if "raw-wsgi" in kinds:
        rates = body_reader_rates(args.size)
        print(f"\nreading the body alone (socket pair, no disk, best of 3): recv "
              f"{rates['recv']:.2f} s, gunicorn wsgi.input.read {rates['wsgi.input']:.2f} s "
              f"({rates['wsgi.input'] / rates['recv']:.2f}x)")  # fmt: skip
    for k in ("publish", "publish-base"):
        if k in med:  # paired by round: steadier than a ratio of medians when load moves
            ratios = sorted(a / b for a, b in zip(times[k], times["raw"], strict=True))
            print(f"{LABELS[k]} / raw POST of the same round: median "
                  f"{statistics.median(ratios):.2f}x, {ratios[0]:.2f}x to {ratios[-1]:.2f}x")  # fmt: skip
    if "publish" in med:
        print(f"\ntarget: publish (fresh build) <= 1.3x raw POST: "
              f"{med['publish'] / med['raw']:.2f}x")  # fmt: skip
    if put and "raw-wsgi" in med:
        print(f"target: raw POST <= 1.1x PUT + fsync: {med['raw'] / med['put-fsync']:.2f}x "
              f"(socket), {med['raw-wsgi'] / med['put-fsync']:.2f}x (wsgi.input)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
