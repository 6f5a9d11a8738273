"""Which globals a weights pickle may name: an allow-list, never a deny-list.

A global is resolved as the unpickler resolves it: ``fix_imports`` maps Python 2 names
(``__builtin__``, ``copy_reg``, ``exceptions``...) through :mod:`_compat_pickle`, and a
dotted name (``find_class`` with protocol 4) walks attributes from the module, so
``posixpath`` + ``os.system`` is ``os.system``. Then, in order:

1. a short list of harmless standard-library constructors (:data:`SAFE_STDLIB`);
2. the model's own package: the name must be a class or function *defined* in the
   module's source (read with :mod:`ast`); a name the module imports is followed to
   where it comes from and judged there (``from os import system`` is ``os.system``);
3. a module of a declared dependency (or of what it requires): allowed, except a
   short list of known gadgets (``*.load``, ``numpy.testing``...) and any path through
   a lower-case or dunder attribute (``sklearn.base`` + ``os.system``);
4. anything else (the rest of the standard library, ``__main__``, undeclared
   modules) is refused.
"""

from __future__ import annotations

import _compat_pickle
import ast
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["SAFE_STDLIB", "Policy", "Verdict"]

SAFE_STDLIB = frozenset({
    "builtins.set", "builtins.frozenset", "builtins.complex", "builtins.slice",
    "builtins.bytearray", "builtins.bytes", "builtins.range", "builtins.object",
    "builtins.int", "builtins.float", "builtins.str", "builtins.list", "builtins.dict",
    "builtins.tuple", "builtins.bool",
    "collections.OrderedDict", "collections.defaultdict", "collections.deque",
    "collections.Counter",
    "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta",
    "datetime.timezone", "decimal.Decimal", "fractions.Fraction", "uuid.UUID",
    "array.array", "array._array_reconstructor",
    # how protocols 2 and 3 write bytes
    "_codecs.encode", "codecs.encode",
    # only with a named class (and base) as argument, each judged here too (see machine.py)
    "copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
})  # fmt: skip

# Inside an allowed dependency: callables that load, run or import, and test helpers.
GADGET_NAMES = frozenset({
    "load", "loads", "_load", "_loads", "load_module", "import_module", "eval", "exec",
    "compile", "system", "popen", "spawn", "run", "runstring", "call", "read_pickle",
    "open", "getattr", "setattr", "__import__", "execfile", "check_output",
})  # fmt: skip
GADGET_MODULES = frozenset({"testing", "_testing", "tests", "f2py", "distutils", "hub",
                            "conftest", "_pytest", "subprocess", "pickle", "os", "sys"})  # fmt: skip

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PY2_ONLY = set(_compat_pickle.IMPORT_MAPPING) - set(sys.stdlib_module_names)


@dataclass(frozen=True)
class Verdict:
    name: str
    """The global as resolved (``os.system`` for ``posixpath`` + ``os.system``)."""
    reason: str
    fix: str
    missing_dist: str | None = None


def candidates(module: str, name: str) -> list[tuple[str, str]]:
    """What (module, name) can resolve to: as written, and through ``fix_imports``."""
    out: list[tuple[str, str]] = []
    if (module, name) in _compat_pickle.NAME_MAPPING:
        out.append(_compat_pickle.NAME_MAPPING[(module, name)])
    elif module in _compat_pickle.IMPORT_MAPPING:
        out.append((_compat_pickle.IMPORT_MAPPING[module], name))
    if module.split(".", 1)[0] not in _PY2_ONLY:
        out.append((module, name))
    return out


class Policy:
    def __init__(self, package: str, source: Callable[[str], tuple[str, bool] | None],
                 dependencies: Mapping[str, str], providers: Mapping[str, list[str]]) -> None:  # fmt: skip
        """*source* gives the source of one of the package's modules and whether it is a
        package's ``__init__`` (or ``None``);
        *dependencies* maps the top-level modules of the declared dependencies (and of
        what they require) to their distribution; *providers* maps every installed
        top-level module to the distributions that provide it."""
        self.package = package
        self._source = source
        self.dependencies = dependencies
        self._providers = providers
        self._trees: dict[str, tuple[ast.Module, bool] | None] = {}
        self.used: set[str] = set()
        """Distributions whose modules an allowed global came from."""

    def judge(self, module: str, name: str) -> Verdict | None:
        """``None`` when allowed, else why not and what to do."""
        for mod, qual in candidates(module, name):
            verdict = self._one(mod, qual, 0)
            if verdict is not None:
                return verdict
        return None

    def _one(self, module: str, qual: str, depth: int) -> Verdict | None:
        full = f"{module}.{qual}"
        if not _IDENT.fullmatch(module) or not _IDENT.fullmatch(qual) or depth > 8:
            return Verdict(full, "is not a name a module could define", _REBUILD)
        if full in SAFE_STDLIB:
            return None
        top = module.split(".", 1)[0]
        if top == self.package:
            return self._own(module, qual.split("."), depth)
        if top == "__main__":
            return Verdict(full, "was defined in the script that saved the file, so no "
                           "consumer can import it", f"move it into the {self.package} package "
                           "(its own module), import it from there, and save the file again")  # fmt: skip
        if top in sys.stdlib_module_names or top in _PY2_ONLY:
            return Verdict(full, "is not on the allow-list of harmless standard-library "
                           "constructors, and loading the file would import and call it", _REBUILD)  # fmt: skip
        dist = self.dependencies.get(top)
        if dist is not None:
            parts = module.split(".") + qual.split(".")
            through = qual.split(".")[:-1]
            if parts[-1] in GADGET_NAMES or any(p in GADGET_MODULES for p in parts[1:]):
                return Verdict(full, f"is a {dist} function that loads, runs or imports "
                               "other code", _REBUILD)  # fmt: skip
            if any(_dunder(p) for p in qual.split(".")) or any(not p[:1].isupper()
                                                                  for p in through):  # fmt: skip
                return Verdict(full, "reaches past a class of its module (a dotted name "
                               "through an attribute that is not a class)", _REBUILD)  # fmt: skip
            self.used.add(dist)
            return None
        dists = self._providers.get(top, [])
        if dists:
            return Verdict(full, f"comes from {top}, which no declared dependency provides",
                           f"add {dists[0]} to [project] dependencies", dists[0])  # fmt: skip
        return Verdict(full, f"comes from {top}, which is not installed here",
                       f"install and declare the distribution that provides {top}")  # fmt: skip

    def _tree(self, module: str) -> tuple[ast.Module, bool] | None:
        if module not in self._trees:
            found = self._source(module)
            try:
                self._trees[module] = (ast.parse(found[0]), found[1]) if found else None
            except SyntaxError:
                self._trees[module] = None
        return self._trees[module]

    def _own(self, module: str, parts: list[str], depth: int) -> Verdict | None:
        full = ".".join([module, *parts])
        tree = self._tree(module)
        if tree is None:
            return Verdict(full, f"names a module of {self.package} that is not in the "
                           "package's source", _REBUILD)  # fmt: skip
        body: list[ast.stmt] = tree[0].body
        for i, part in enumerate(parts):
            found = _binding(body, part)
            rest = parts[i + 1 :]
            if isinstance(found, ast.ClassDef) and not _dunder(part):
                body = found.body
                continue
            if isinstance(found, (ast.FunctionDef, ast.AsyncFunctionDef)) and not rest:
                return None
            if isinstance(found, tuple) and (found[1] or rest):  # imported: judge its origin
                target = _absolute(found[0], module, tree[1])
                if found[1] and self._tree(f"{target}.{found[1]}"):  # `from . import sub`
                    if not rest:
                        break
                    return self._own(f"{target}.{found[1]}", rest, depth + 1)
                names = ([found[1]] if found[1] else []) + rest
                return self._one(target, ".".join(names), depth + 1)
            if found is None and i == 0 and rest and self._tree(f"{module}.{part}"):
                return self._own(f"{module}.{part}", rest, depth + 1)  # a submodule
            break
        else:
            return None  # a class, or a class nested in classes
        return Verdict(full, f"is not a class or function defined in {module}", _REBUILD)


_REBUILD = ("rebuild the file without it (or, if you reviewed the file and trust it, list it "
            "with its sha256 in [tool.modelpack] trusted-pickles)")  # fmt: skip


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _absolute(target: str, module: str, is_package: bool) -> str:
    """``..x`` imported in module ``pkg.a.b`` -> ``pkg.x``; absolute names as they are."""
    level = len(target) - len(target.lstrip("."))
    if not level:
        return target
    parts = module.split(".")
    keep = len(parts) - level + (1 if is_package else 0)
    rest = target[level:]
    return ".".join(parts[: max(keep, 0)] + ([rest] if rest else []))


def _flat(body: list[ast.stmt]) -> list[ast.stmt]:
    """*body* with the statements of top-level ``if``/``try``/``with`` blocks inlined."""
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If):
            out += _flat(node.body) + _flat(node.orelse)
        elif isinstance(node, ast.Try):
            out += _flat(node.body)
            for handler in node.handlers:
                out += _flat(handler.body)
            out += _flat(node.orelse) + _flat(node.finalbody)
        elif isinstance(node, ast.With):
            out += _flat(node.body)
        else:
            out.append(node)
    return out


def _binding(body: list[ast.stmt], name: str) -> ast.AST | tuple[str, str | None] | None:
    """The last top-level statement of *body* that binds *name*: a def or class, an
    import as ``(module, attribute or None)``, or an assignment (returned as-is)."""
    found: ast.AST | tuple[str, str | None] | None = None
    star: tuple[str, str | None] | None = None  # `from x import *`: only if nothing else binds it
    for node in _flat(body):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == name:
                found = node
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if (alias.asname or alias.name.split(".", 1)[0]) == name:
                    found = (alias.name if alias.asname else name, None)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                origin = "." * node.level + (node.module or "")
                if alias.name == "*":
                    star = star or (origin, name)
                elif (alias.asname or alias.name) == name:
                    found = (origin, alias.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found = node
    return found if found is not None else star
