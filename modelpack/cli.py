"""The ``modelpack`` command: a thin layer over the library.

Every command is a library call; :func:`main` is the one place that turns a
:class:`~modelpack.errors.ModelpackError` into a one-line message and an exit status
(0 success, 1 a reported error, 2 a usage error). ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Sequence

from modelpack import __version__
from modelpack.errors import ModelpackError

__all__ = ["main"]

DESCRIPTION = """\
Ship ML models as Python wheels through a private package index (the registry).

  modelpack new model-foo          scaffold a model project (--framework sklearn...)
  modelpack build model-foo        build dist/model_foo-<version>-py3-none-any.whl
  modelpack publish model-foo      upload it to the registry
  modelpack list / show model-foo  browse the registry
  modelpack diff model-foo==0.1.0 model-foo==0.2.0   metrics, dependencies, weights, lineage
  modelpack promote model-foo==0.2.0 --stage production
  modelpack yank model-foo==0.1.0 --reason "wrong labels"
  modelpack token create model-foo  a CI token, sent as user __token__
  modelpack serve model-foo@production   serve it over HTTP (MLflow and v2 protocols)

Registry: --registry URL, else $MODELPACK_REGISTRY, else [tool.modelpack] registry in
pyproject.toml, else http://127.0.0.1:8080. Credentials: $MODELPACK_USERNAME and
$MODELPACK_PASSWORD, else ~/.pypirc or the keyring (never on the command line).
"""


def _cmd_new(args: argparse.Namespace) -> int:
    from modelpack.registry import name_clash
    from modelpack.scaffold import new_project

    path = new_project(args.name, args.output_dir, no_input=args.no_input, framework=args.framework)
    print(path)
    if clash := name_clash(args.name, args.registry):
        print(f"modelpack new: warning: {clash}", file=sys.stderr)
    _info(f"created {path}; next: cd {path} && python train.py && modelpack build")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from modelpack.building import raise_for_errors
    from modelpack.checks import check_project
    from modelpack.project import load_project

    project = load_project(args.project)
    problems = check_project(project)
    if args.fix:
        from modelpack.fix import fix_missing

        fixed = fix_missing(project, problems)
        if fixed.requirements:
            print(f"added to [project] dependencies: {', '.join(fixed.requirements)}")
            if fixed.requires_python:
                print(f"set requires-python = {fixed.requires_python!r}: what they need")
            project = load_project(args.project)
            problems = check_project(project)
    for problem in problems:
        if problem.severity != "error":
            print(problem, file=sys.stderr)
    raise_for_errors(project, problems)
    print(f"ok: {project.name} passes every check")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from modelpack.building import build_project

    result = build_project(args.project, isolation=not args.no_isolation, cache=not args.no_cache)
    for problem in result.warnings:
        print(problem, file=sys.stderr)
    _info(
        f"built {result.wheel.name} {result.wheel.version} with {len(result.wheel.weights)} weight file(s)"
    )
    print(result.wheel.path)
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from modelpack.config import redact
    from modelpack.publishing import publish

    published = publish(args.targets, registry=args.registry, verify=args.verify,
                        progress=lambda message: print(message, file=sys.stderr))  # fmt: skip
    for item in published:
        for check, when in ((item.verified, "before the upload"), (item.checked, "as served")):
            if check is not None:
                print(f"verified {item.name} {item.version} {when} in a clean environment: {check}")
        print(f"published {item.name} {item.version}: {redact(item.url)} sha256={item.sha256}")
        for warning in item.warnings:
            print(f"modelpack publish: warning: {warning}", file=sys.stderr)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from modelpack.registry import list_registry

    models = list_registry(args.registry)
    if args.json:
        print(json.dumps({"models": models}, indent=2))
        return 0
    rows: list[tuple[str, ...]] = [("NAME", "LATEST", "STAGES", "TASK", "SUMMARY")]
    for m in models:
        stages = ",".join(f"{k}={v}" for k, v in sorted((m.get("stages") or {}).items()))
        rows.append((m["name"], m.get("version") or "-", stages or "-", m.get("task") or "-",
                     (m.get("summary") or "")[:60]))  # fmt: skip
    _table(rows)
    if not models:
        print("(no models yet: publish one with `modelpack publish`)", file=sys.stderr)
    return 0


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cmd_show(args: argparse.Namespace) -> int:
    from modelpack.registry import install_advice, show

    model = show(args.name, args.registry)
    if args.json:
        print(json.dumps(model, indent=2))
        return 0
    latest = model.get("latest")
    print(
        f"{model['name']} {latest or ''}"
        + (f": {model['summary']}" if model.get("summary") else "")
    )
    manifest = model.get("manifest") or {}
    facts = [f"{k}: {manifest[k]}" for k in ("task", "framework", "license") if manifest.get(k)]
    if manifest.get("tags"):
        facts.append("tags: " + ", ".join(manifest["tags"]))
    if facts:
        print("  ".join(facts))
    from modelpack.card import card_lines

    for line in card_lines(model):
        print(line)
    stages = model.get("stages") or {}
    if stages:
        print("stages: " + ", ".join(
            f"{k}={v['version'] if isinstance(v, dict) else v}" for k, v in sorted(stages.items())))  # fmt: skip
    print("versions:")
    for v in model.get("versions", []):
        when = (v.get("upload_time") or "")[:19]
        by = f"  by {v['uploaded_by']}" if v.get("uploaded_by") else ""
        mark = f"  YANKED: {v.get('yanked_reason') or 'no reason given'}" if v.get("yanked") else ""
        print(f"  {v['version']:<12} {when}{by}{mark}")
    if latest:
        advice = install_advice(model["name"], latest, model.get("requires_dist"), args.registry)
        print("\n".join(advice))
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from modelpack.diff import diff_lines, load_side

    old, new = (load_side(spec, args.registry) for spec in (args.old, args.new))
    print("\n".join(diff_lines(old, new)))
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from modelpack.registry import promote

    result = promote(args.spec, args.stage, args.registry)
    previous = f" (was {result['previous']})" if result.get("previous") else ""
    print(f"{args.stage} -> {args.spec.split('==')[0]} {result['version']}{previous}")
    return 0


def _cmd_yank(args: argparse.Namespace) -> int:
    from modelpack.registry import yank

    result = yank(args.spec, args.reason, undo=args.undo, registry=args.registry)
    state = "yanked" if result.get("yanked") else "un-yanked"
    print(f"{state} {args.spec}" + (f": {result['reason']}" if result.get("reason") else ""))
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    from modelpack import tokens

    if args.action == "create":
        made = tokens.create_token(args.name, expires=args.expires, user=args.user,
                                   registry=args.registry)  # fmt: skip
        print(made["token"])
        expires = made.get("expires")
        print(
            f"token {made['id']}: acts as {made['user']} on {made['model']} only, "
            f"{'never expires' if expires is None else 'expires at ' + expires}. "
            "It is shown once: store it as a CI secret and send it as user __token__ "
            "(MODELPACK_USERNAME=__token__ / TWINE_USERNAME=__token__).",
            file=sys.stderr,
        )
    elif args.action == "list":
        found = tokens.list_tokens(args.name, args.registry)
        if args.json:
            print(json.dumps({"tokens": found}, indent=2))
            return 0
        rows: list[tuple[str, ...]] = [("ID", "USER", "CREATED", "EXPIRES", "LAST USED")]
        for t in found:
            expires = (t.get("expires") or "never") + (" (expired)" if t.get("expired") else "")
            rows.append((t["id"], t["user"], t["created"], expires, t.get("last_used") or "-"))
        _table(rows)
        if not found:
            print(f"(no tokens of {args.name} that you may see; make one with "
                  f"`modelpack token create {args.name}`)", file=sys.stderr)  # fmt: skip
    else:
        gone = tokens.revoke_token(args.name, args.id, args.registry)
        print(f"revoked token {gone['id']} ({gone['user']} on {gone['model']})")
    return 0


def _parser() -> argparse.ArgumentParser:
    # -v works before or after the command: the sub-parsers' copy defaults to SUPPRESS so
    # it never overwrites a -v given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show details and tracebacks")  # fmt: skip
    parser = argparse.ArgumentParser(
        prog="modelpack",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"modelpack {__version__}")
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--registry", metavar="URL",
        help="registry base URL (default: $MODELPACK_REGISTRY, [tool.modelpack] registry, "
        "http://127.0.0.1:8080)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "new", parents=[common, remote], help="scaffold a model project from the template",
        description="Create DIR/NAME/ from the model template (cookiecutter-model); warn "
        "if the registry's upstream index has NAME too (see `modelpack-registry reserve`).",
    )  # fmt: skip
    p.add_argument(
        "name", metavar="NAME", help="distribution name, e.g. model-foo (import: model_foo)"
    )
    p.add_argument(
        "-o", "--output-dir", default=".", metavar="DIR", help="parent folder (default: .)"
    )
    p.add_argument(
        "--framework", choices=("python", "sklearn", "xgboost", "onnx"), metavar="F",
        help="python (default: pure Python, no dependencies), sklearn (a pipeline saved with "
        "skops), xgboost (UBJSON model format) or onnx (run with onnxruntime); asked when "
        "neither this nor --no-input is given",
    )  # fmt: skip
    p.add_argument(
        "--no-input", action="store_true", help="do not prompt; use the template defaults"
    )
    p.set_defaults(func=_cmd_new)

    p = sub.add_parser(
        "check", parents=[common], help="check a model project (dependencies, pickles, manifest, weights)",
        description=(
            "Check PROJECT before building: the [tool.modelpack] manifest, the weights, "
            "imports that no declared dependency provides (AST scan), and every weight file, "
            "scanned by content for pickles (joblib, .npy, torch files too; never unpickled): "
            "each global they name must be a harmless stdlib constructor, defined in the "
            "package, or from a declared dependency. A file reviewed by hand can be exempted "
            "with its sha256 in [tool.modelpack] trusted-pickles (see docs/model-checks.md). "
            "`modelpack build` and `publish` run the same checks."
        ),
    )  # fmt: skip
    p.add_argument("project", nargs="?", default=".", metavar="PROJECT", help="default: .")
    p.add_argument(
        "--fix", action="store_true",
        help="add missing dependencies to pyproject.toml with a range that can read the pickles "
        "(scikit-learn>=1.9.1,<1.10, numpy>=2.1,<3) and raise requires-python to match",
    )  # fmt: skip
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "build", parents=[common], help="build the model's wheel into PROJECT/dist/",
        description="Build PROJECT's wheel (PEP 517, isolated), check it, print its path. "
        "The wheel's digests are recorded beside it, so that publish need not hash it.",
    )  # fmt: skip
    p.add_argument("project", nargs="?", default=".", metavar="PROJECT", help="default: .")
    p.add_argument(
        "--no-isolation", action="store_true",
        help="build in this environment (the backend must be installed here)",
    )  # fmt: skip
    p.add_argument(
        "--no-cache", action="store_true",
        help="hash every weight file again instead of reusing digests of unchanged files "
        "(kept in $MODELPACK_CACHE_DIR, default ~/.cache/modelpack)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser(
        "publish", parents=[common, remote], help="upload wheels to the registry",
        description=(
            "Upload the wheel of PROJECT's current version (default: .), or the WHEEL "
            "files given, with twine. A version already in the registry is an error; "
            "after the upload the registry must list the file with the same sha256. A "
            "wheel unchanged since `modelpack build` is sent without being hashed again."
        ),
    )  # fmt: skip
    p.add_argument("targets", nargs="*", metavar="PROJECT | WHEEL", help="default: .")
    p.add_argument(
        "--verify", action="store_true",
        help=(
            "first install the wheel into a clean environment and call load() and predict("
            "input_example); upload only if that works, then check what the registry serves"
        ),
    )  # fmt: skip
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser(
        "list", parents=[common, remote], help="list the models in the registry",
        description="List every model in the registry: latest version, stages, task, summary.",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser(
        "show", parents=[common, remote], help="show one model: versions, stages, yank state",
        description="Show NAME's versions (yanked ones marked), stages and summary.",
    )  # fmt: skip
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser(
        "diff", parents=[common, remote], help="what changed between two versions of a model",
        description="Compare two versions (NAME==VERSION in the registry, or local .whl "
        "files): metrics (better or worse), dataset, dependencies, weights (sha256) and "
        "lineage (commit, framework, Python, build time).",
    )  # fmt: skip
    p.add_argument(
        "old", metavar="OLD", help="e.g. model-foo==1.1 or dist/model_foo-1.1-py3-none-any.whl"
    )
    p.add_argument("new", metavar="NEW", help="e.g. model-foo==1.2")
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser(
        "promote", parents=[common, remote], help="point a stage (e.g. production) at a version",
        description=(
            "Point STAGE of the model at exactly NAME==VERSION; promoting another version "
            "moves the stage, promoting the old one rolls back. Consumers install the "
            "staged version with --index-url <registry>/stages/STAGE/simple/."
        ),
    )  # fmt: skip
    p.add_argument("spec", metavar="NAME==VERSION")
    p.add_argument("--stage", required=True, metavar="STAGE", help="e.g. production, staging")
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser(
        "yank", parents=[common, remote], help="yank a version (PEP 592), or undo it",
        description=(
            "Yank NAME==VERSION: unpinned installs skip it, exact pins still get it, and "
            "pip and uv show the reason. --undo restores it."
        ),
    )  # fmt: skip
    p.add_argument("spec", metavar="NAME==VERSION")
    p.add_argument("--reason", metavar="TEXT", help="why (required to yank)")
    p.add_argument("--undo", action="store_true", help="un-yank the version")
    p.set_defaults(func=_cmd_yank)

    p = sub.add_parser(
        "token", parents=[common], help="make, list and revoke a model's API tokens for CI",
        description=(
            "API tokens act as you on one model only; CI sends one as user __token__. "
            "Owners and maintainers of a model make them with their own user name and "
            "password (MODELPACK_USERNAME / MODELPACK_PASSWORD), never with a token. "
            "Needs modelpack-registry with credentials."
        ),
    )  # fmt: skip
    tsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (
        ("create", "make a token for NAME; prints it once on stdout (the rest on stderr)"),
        ("list", "NAME's tokens: all of them for its owners and admins, else yours"),
        ("revoke", "revoke token ID of NAME (yours, or any as an owner); its next request fails"),
    ):
        t = tsub.add_parser(action, parents=[common, remote], help=text, description=text)
        t.add_argument("name", metavar="NAME")
    create, listing, revoke = tsub.choices.values()
    create.add_argument(
        "--expires", metavar="WHEN",
        help="a lifetime (90d, 12h), a UTC date (2027-06-30) or never (default: 365d)",
    )  # fmt: skip
    create.add_argument("--user", metavar="USER", help="admins only: the user it acts as")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke.add_argument("id", metavar="ID", help="the token's id (16 hex digits; token list)")
    p.set_defaults(func=_cmd_token)
    from modelpack.cli_serve import add_parsers

    add_parsers(sub, common, remote)  # serve, predict
    return parser


_verbose = False


def _info(message: str) -> None:
    if _verbose:
        print(message, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``modelpack`` command line; return the exit status."""
    global _verbose
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    _verbose = args.verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return int(args.func(args))
    except ModelpackError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"modelpack {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"modelpack {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
