"""Weight files for tests/test_pickle_scan.py: a malicious corpus and a benign one.

Every malicious file, when loaded the way :data:`LOADER` loads it (the loader a model
could use for it: pickle, joblib, numpy, a torch-style zip or tar reader), creates its
marker file; the test runs :data:`LOADER` in a subprocess to prove it before asking
``modelpack check`` to refuse the file. Nothing here is loaded in the test process.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TORCH_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class Case:
    file: str
    """Path under the weights folder."""
    loader: str
    """How :data:`LOADER` loads it: ``pickle``, ``pickle:N`` (N in a row), ``joblib``,
    ``npy``, ``npz:KEY``, ``zip:MEMBER``, ``zipfirst:MEMBER``, ``tar:MEMBER``, ``gzip``."""
    covers: str


class Evil:
    """Pickles as ``os.system(cmd)`` (``posix.system`` on Linux)."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.cmd,))


def su(s: str) -> bytes:
    """SHORT_BINUNICODE."""
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def v(s: str) -> bytes:
    """Protocol 0 UNICODE line."""
    return b"V" + s.replace("\\", "\\u005c").replace("\n", "\\u000a").encode() + b"\n"


P4, STACK_GLOBAL, TUPLE1, TUPLE2, REDUCE, STOP = b"\x80\x04", b"\x93", b"\x85", b"\x86", b"R", b"."
MEMOIZE, POP = b"\x94", b"0"


def malicious(weights: Path, markers: Path, package: str) -> list[Case]:
    """Write the malicious corpus under *weights*; markers go in *markers*/<file>."""
    cases: list[Case] = []

    def add(file: str, data: bytes, loader: str, covers: str) -> tuple[str, str]:
        path = weights / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cases.append(Case(file, loader, covers))
        return cmd(file), code(file)

    def cmd(file: str) -> str:
        return f"touch {markers / file.replace('/', '_')}"

    def code(file: str) -> str:
        return f"open({str(markers / file.replace('/', '_'))!r}, 'w').close()"

    def evil(file: str, proto: int) -> bytes:
        return pickle.dumps(Evil(cmd(file)), protocol=proto)

    for proto, name in [(0, "evil_p0.pkl"), (1, "evil_p1.pickle"), (2, "evil_p2.sav"),
                        (3, "evil_p3.pck"), (4, "EVIL_P4.PKL"), (5, "model.bin"),
                        (2, "weights_without_suffix")]:  # fmt: skip
        add(name, evil(name, proto), "pickle", f"protocol {proto}, name {name}")

    f = "dotted_stdlib.pkl"
    add(f, P4 + su("posixpath") + su("os.system") + STACK_GLOBAL + su(cmd(f)) + TUPLE1 + REDUCE
        + STOP, "pickle", "dotted name through a stdlib module (posixpath + os.system)")  # fmt: skip
    f = "dotted_dependency.pkl"
    add(f, P4 + su("joblib.numpy_pickle") + su("os.system") + STACK_GLOBAL + su(cmd(f)) + TUPLE1
        + REDUCE + STOP, "pickle", "dotted name through a declared dependency")  # fmt: skip
    f = "numpy_runstring.pkl"
    add(f, P4 + su("numpy.testing._private.utils") + su("runstring") + STACK_GLOBAL
        + su(code(f)) + b"}" + TUPLE2 + REDUCE + STOP, "pickle",
        "exec gadget inside a declared dependency (numpy.testing)")  # fmt: skip
    f = "own_reexport.pkl"
    add(f, f"c{package}.helpers\nsystem\n(".encode() + v(cmd(f)) + b"tR.", "pickle",
        "os.system re-exported by the model's own module (from os import system)")  # fmt: skip
    f = "own_dotted.pkl"
    add(f, P4 + su(f"{package}.helpers") + su("subprocess.check_call") + STACK_GLOBAL
        + su("touch") + su(str(markers / f)) + TUPLE2 + TUPLE1 + REDUCE + STOP, "pickle",
        "dotted name through a module the model's own package imports")  # fmt: skip
    f = "operator_alias.pkl"
    add(f, b"c_operator\nmethodcaller\n(Vsystem\n" + v(cmd(f)) + b"tR(cposixpath\nos\ntR.",
        "pickle", "_operator.methodcaller applied to a module reached as an attribute")  # fmt: skip
    f = "builtin_alias.pkl"
    add(f, b"\x80\x02c__builtin__\neval\n(" + v(f"__import__('os').system({cmd(f)!r})")
        + b"tR.", "pickle", "__builtin__.eval through fix_imports")  # fmt: skip
    f = "copy_reg_popen.pkl"
    add(f, b"\x80\x02ccopy_reg\n_reconstructor\n(csubprocess\nPopen\ncsubprocess\nPopen\n(Vtouch\n"
        + v(str(markers / f)) + b"ltR.", "pickle", "copy_reg._reconstructor (fix_imports alias)")  # fmt: skip
    f = "reconstructor_dotted.pkl"
    add(f, P4 + su("copyreg") + su("_reconstructor") + STACK_GLOBAL + b"(" + su("asyncio.subprocess")
        + su("subprocess.Popen") + STACK_GLOBAL + MEMOIZE + b"h\x00" + b"(" + su("touch")
        + su(str(markers / f)) + b"l" + b"tR.", "pickle",
        "copyreg._reconstructor with a class reached by a dotted path")  # fmt: skip
    f = "timeit.pkl"
    add(f, b"ctimeit\ntimeit\n(Vpass\n" + v(code(f)) + b"ctime\nperf_counter\nI1\ntR.", "pickle",
        "timeit.timeit")  # fmt: skip
    f = "cprofile.pkl"
    add(f, b"ccProfile\nrun\n(" + v(code(f)) + b"tR.", "pickle", "cProfile.run")
    f = "pydoc.pkl"
    add(f, b"cpydoc\npipepager\n(Vx\n" + v(cmd(f)) + b"tR.", "pickle", "pydoc.pipepager")
    f = "functiontype.pkl"
    add(f, b"ctypes\nFunctionType\n(cbuiltins\ncompile\n(" + v(code(f)) + b"V<x>\nVexec\ntR(dtR)R.",
        "pickle", "types.FunctionType + compile")  # fmt: skip
    f = "nested_loads.pkl"
    inner = f"cos\nsystem\n(V{cmd(f)}\ntR.".encode()
    add(f, b"\x80\x03cpickle\n_loads\nC" + bytes([len(inner)]) + inner + TUPLE1 + REDUCE + STOP,
        "pickle", "pickle._loads of a nested pickle")  # fmt: skip
    f = "nested_codecs.pkl"
    inner = f"cos\nsystem\n(V{cmd(f)}\ntR.".encode()
    add(f, b"cpickle\nloads\n(c_codecs\nencode\n(" + v(inner.decode("latin-1")) + b"Vlatin1\ntRtR.",
        "pickle", "pickle.loads of bytes built with _codecs.encode")  # fmt: skip
    f = "stack_shuffle.pkl"
    add(f, P4 + su("os") + su("system") + su("builtins") + su("set") + POP + POP + STACK_GLOBAL
        + su(cmd(f)) + TUPLE1 + REDUCE + STOP, "pickle",
        "STACK_GLOBAL operands pushed under strings that are popped")  # fmt: skip
    f = "stack_memo.pkl"
    add(f, P4 + su("os") + MEMOIZE + POP + su("system") + MEMOIZE + POP + su("collections")
        + su("OrderedDict") + STACK_GLOBAL + POP + b"h\x00h\x01" + STACK_GLOBAL + su(cmd(f))
        + TUPLE1 + REDUCE + STOP, "pickle", "STACK_GLOBAL operands memoized around others")  # fmt: skip
    f = "getattr_chain.pkl"
    add(f, b"cbuiltins\ngetattr\n(cposixpath\nos\nVsystem\ntR(" + v(cmd(f)) + b"tR.", "pickle",
        "builtins.getattr, then a call of the computed value")  # fmt: skip
    f = "inst_opcode.txt"
    add(f, b"(" + v(cmd(f)) + b"ios\nsystem\n.", "pickle", "INST opcode in a .txt file")
    f = "obj_opcode.json"
    add(f, b"(cos\nsystem\n" + v(cmd(f)) + b"o.", "pickle", "OBJ opcode in a .json file")
    f = "truncated.pkl"
    add(f, f"cos\nsystem\n(V{cmd(f)}\ntR".encode(), "pickle", "runs, then fails: no STOP")
    f = "second_pickle.pkl"
    add(f, pickle.dumps({"weights": [1.0]}, protocol=4) + evil(f, 2), "pickle:2",
        "a second pickle after STOP")  # fmt: skip
    f = "gzipped.pkl.gz"
    add(f, _gzip(evil(f, 4)), "gzip", "gzip-compressed plain pickle")

    f = "legacy_torch.pt"
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}  # fmt: skip
    add(f, b"".join(pickle.dumps(x, protocol=2) for x in (TORCH_MAGIC, 1001, sys_info))
        + evil(f, 2) + pickle.dumps([], protocol=2) + struct.pack("<q", 2) + b"\0" * 8,
        "pickle:4", "legacy torch layout (several pickles in a row)")  # fmt: skip
    f = "torch_two_data_pkl.pt"
    add(f, _zip([("model/data.pkl", pickle.dumps({"w": 1}, 2)), ("model/version", b"3\n"),
                 ("model/extra/data.pkl", evil(f, 2))]), "zip:model/extra/data.pkl",
        "torch-style zip with more than one data.pkl")  # fmt: skip
    f = "torch_dup_name.pt"
    add(f, _zip([("archive/data.pkl", evil(f, 2)), ("archive/data.pkl", pickle.dumps({}, 2))]),
        "zipfirst:archive/data.pkl", "zip with data.pkl twice (zipfile opens the last)")  # fmt: skip
    f = "torch_constants.pt"
    add(f, _zip([("archive/data.pkl", pickle.dumps({}, 2)), ("archive/data/0", b"\x80\x02" * 8),
                 ("archive/constants.pkl", evil(f, 2))]), "zip:archive/constants.pkl",
        "a torch zip member other than data.pkl that is a pickle")  # fmt: skip
    f = "tar_polyglot.tar"  # a valid tar whose first member's name is a pickle
    name = f"cos\nsystem\n(Vtouch markers/{f}\ntR."
    add(f, _tar([(name, b"weights")]), "pickle", "a tar that pickle.load reads as a pickle")
    f = "bz2_polyglot.pkl"  # "BZh9" + 0 is BINBYTES of 3.7 MB to pickle.load, then a pickle
    filler = int.from_bytes(b"Zh9\x00", "little")
    add(f, b"BZh9\x00" + b"\x00" * filler + f"0cos\nsystem\n(V{cmd(f)}\ntR.".encode(),
        "pickle", "bz2 magic that does not decompress: BINBYTES, then a pickle")  # fmt: skip
    f = "legacy_torch.tar"
    add(f, _tar([("sys_info", pickle.dumps(sys_info, 2)), ("pickle", evil(f, 2))]),
        "tar:pickle", "the oldest torch.save layout (tar)")  # fmt: skip
    _numpy_and_joblib(add, cmd, evil)
    return cases


def _numpy_and_joblib(add: Any, cmd: Any, evil: Any) -> None:
    import joblib
    import numpy as np

    def save(file: str, fn: Any) -> bytes:
        buf = io.BytesIO()
        fn(buf)
        return buf.getvalue()

    def objects(file: str) -> Any:
        arr = np.empty(2, dtype=object)
        arr[0], arr[1] = "fine", Evil(cmd(file))
        return arr

    f = "object_array.npy"
    add(f, save(f, lambda b: np.save(b, objects(f), allow_pickle=True)), "npy", ".npy object array")
    f = "object_array.npz"
    add(f, save(f, lambda b: np.savez(b, ok=np.arange(3.0), bad=objects(f))), "npz:bad",
        ".npz with an object array")  # fmt: skip
    for comp in [0, "zlib", "gzip", "bz2", "lzma", "xz", "lz4"]:
        f = f"pipeline_{comp or 'raw'}.joblib"
        obj = [np.arange(50_000, dtype=np.float64), {"step": Evil(cmd(f))}]
        add(f, save(f, lambda b, o=obj, c=comp: joblib.dump(o, b, compress=(c, 3) if c else 0)),
            "joblib", f"joblib, compress={comp}: os.system after an array")  # fmt: skip
    f = "joblib_payload_opcodes.joblib"
    data = save(f, lambda b: joblib.dump([np.frombuffer(b"\xaa" * 64, np.uint8)], b))
    hidden = b"\x02cos\nsystem\n(" + v(cmd(f)) + b"tR."
    for p in range(1, 17):  # joblib's padding: its length, then that many 0xff
        if (old := bytes([p]) + b"\xff" * p + b"\xaa" * 64) in data:
            # padding length 0x80 (PROTO for pickle.load), then the hidden pickle
            data = data.replace(old, b"\x80" + hidden.ljust(0x80, b"\xff") + b"\xaa" * 64)
    add(f, data, "pickle", "joblib array bytes that plain pickle.load runs as opcodes")
    f = "joblib_object_array.joblib"
    add(f, save(f, lambda b: joblib.dump({"x": np.ones(7), "o": objects(f)}, b)), "joblib",
        "joblib object array (a nested pickle after the wrapper)")  # fmt: skip


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    import warnings

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a duplicated member name is the point of one case
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# Run as `python -c LOADER weights_dir case...`: loads each file, ignoring errors.
LOADER = r"""
import gzip, pickle, sys, tarfile, zipfile, warnings
from pathlib import Path
warnings.simplefilter("ignore")
root = Path(sys.argv[1])
for spec in sys.argv[2:]:
    file, loader = spec.split("=", 1)
    path = root / file
    try:
        if loader == "pickle":
            pickle.loads(path.read_bytes())
        elif loader.startswith("pickle:"):
            with path.open("rb") as f:
                for _ in range(int(loader.split(":")[1])):
                    pickle.load(f)
        elif loader == "gzip":
            pickle.loads(gzip.decompress(path.read_bytes()))
        elif loader == "joblib":
            import joblib
            joblib.load(path)
        elif loader == "npy":
            import numpy
            numpy.load(path, allow_pickle=True)
        elif loader.startswith("npz:"):
            import numpy
            numpy.load(path, allow_pickle=True)[loader.split(":")[1]]
        elif loader.startswith(("zip:", "zipfirst:")):
            name = loader.split(":", 1)[1]
            with zipfile.ZipFile(path) as zf:
                info = next(i for i in zf.infolist() if i.filename == name)
                pickle.loads(zf.read(info))
        elif loader.startswith("tar:"):
            with tarfile.open(path) as tf:
                pickle.load(tf.extractfile(loader.split(":")[1]))
    except Exception as exc:
        print(f"{file}: {type(exc).__name__}: {exc}", file=sys.stderr)
"""


TRANSFORMER = '''"""A custom scikit-learn step: pickles of the pipeline name this class."""

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Center(TransformerMixin, BaseEstimator):
    def __init__(self, factor=1.0):
        self.factor = factor

    def fit(self, X, y=None):
        self.mean_ = np.asarray(X, dtype=float).mean(axis=0)
        return self

    def transform(self, X):
        return (np.asarray(X, dtype=float) - self.mean_) * self.factor
'''

COMPRESSIONS: list[Any] = [0, 3, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3),
                           ("lz4", 3)]  # fmt: skip


def benign(weights: Path, package: str) -> list[str]:
    """Write the benign corpus (run with the model's src/ on sys.path); load each back."""
    import importlib
    import pickle

    import joblib
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    center = importlib.import_module(f"{package}.transformers").Center
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = (x[:, 0] > 0).astype(int)
    pipe = Pipeline([("center", center(2.0)), ("clf", LogisticRegression())]).fit(x, y)
    forest = Pipeline([("center", center()), ("rf", RandomForestClassifier(3, random_state=0))])
    forest.fit(x, y)
    files: dict[str, Any] = {}
    for comp in COMPRESSIONS:
        label = comp[0] if isinstance(comp, tuple) else f"level{comp}"
        files[f"pipeline_{label}.joblib"] = ("joblib", pipe, comp)
    files["forest.joblib"] = ("joblib", forest, 0)
    files["forest_xz.joblib"] = ("joblib", forest, ("xz", 1))
    files["pipeline_p2.pkl"] = ("pickle", pipe, 2)
    files["pipeline_p5.pkl"] = ("pickle", pipe, 5)
    files["plain_dict.pkl"] = ("pickle", {"a": [1, 2.5, "x"], "b": (None, True), "c": {1, 2},
                                          "d": b"bytes", "e": bytearray(b"x")}, 2)  # fmt: skip
    files["plain_dict_p0.pkl"] = ("pickle", {"a": [1, 2.5, "x"], "b": b"\x00\x80"}, 0)
    for name, (kind, obj, arg) in files.items():
        if kind == "joblib":
            joblib.dump(obj, weights / name, compress=arg)
        else:
            (weights / name).write_bytes(pickle.dumps(obj, protocol=arg))
    np.save(weights / "floats.npy", rng.normal(size=(100, 3)))
    np.save(weights / "ints.npy", np.arange(1000, dtype=np.int32))
    np.save(weights / "structured.npy", np.zeros(5, dtype=[("a", "<f4"), ("b", "<i8")]))
    np.savez(weights / "arrays.npz", a=np.arange(4.0), b=np.eye(3))
    np.savez_compressed(weights / "arrays_compressed.npz", a=np.arange(4.0))
    (weights / "vocab.txt").write_text("the\nof\nand\n")
    (weights / "classes.txt").write_text("cat\ndog\nbird\n")  # reads as GLOBAL cat.dog, then fails
    (weights / "config.json").write_text('{"layers": 3}')
    (weights / "raw.bin").write_bytes(rng.bytes(4096))
    torch_like(weights)
    for name, (kind, obj, _) in files.items():  # everything loads back
        back = joblib.load(weights / name) if kind == "joblib" else pickle.loads(
            (weights / name).read_bytes())  # fmt: skip
        if hasattr(back, "predict"):
            assert (back.predict(x) == obj.predict(x)).all(), name
    return sorted(p.name for p in weights.iterdir())


def torch_like(weights: Path) -> list[str]:
    """A ``torch.save`` zip and a legacy torch file of a state dict, written the way torch
    writes them (persistent ids for storages, ``torch._utils._rebuild_tensor_v2``), with
    stand-in ``torch`` modules so that torch need not be installed."""
    import collections
    import sys
    import types

    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args: Any) -> None:
        return None

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2  # type: ignore[attr-defined]
    sys.modules.update({"torch": torch, "torch._utils": utils})

    class Storage:
        pass

    class Tensor:
        def __reduce__(self) -> tuple[Any, ...]:
            return (
                _rebuild_tensor_v2,
                (Storage(), 0, (4,), (1,), False, collections.OrderedDict()),
            )

    class TorchPickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return ("storage", FloatStorage, "0", "cpu", 4) if isinstance(obj, Storage) else None

    def dumps(obj: Any) -> bytes:
        buf = io.BytesIO()
        TorchPickler(buf, protocol=2).dump(obj)
        return buf.getvalue()

    state = collections.OrderedDict(weight=Tensor(), bias=Tensor())
    (weights / "torch_state.pt").write_bytes(_zip([
        ("archive/data.pkl", dumps(state)), ("archive/byteorder", b"little"),
        ("archive/data/0", b"\x80\x02" + b"\x00" * 14), ("archive/version", b"3\n"),
        ("archive/.data/serialization_id", b"1234"),
    ]))  # fmt: skip
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}  # fmt: skip
    (weights / "torch_legacy.pt").write_bytes(
        b"".join(pickle.dumps(x, protocol=2) for x in (TORCH_MAGIC, 1001, sys_info))
        + dumps(state)
        + pickle.dumps(["0"], protocol=2)
        + struct.pack("<q", 4)
        + b"\x80\x02" * 8
    )
    return ["torch_state.pt", "torch_legacy.pt"]
