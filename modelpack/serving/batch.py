"""``modelpack predict``: score a JSON Lines or CSV file in bounded batches.

``python -m modelpack.serving.batch NAME --input FILE [--output FILE]`` in the model's
environment. JSON Lines: one row (a list of values, or a record) per line. CSV: a header
line, then one row per line (numbers parsed as numbers). Rows are read, checked against
the signature and predicted ``--batch-size`` at a time, so memory stays flat however
large the file; a bad row stops the run with its line number. The output (JSON Lines:
one prediction per line; ``.csv``: a ``prediction`` column) is written to a temporary
file beside it and renamed into place only when every row was scored: nothing
half-written. On a terminal, stderr shows progress.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from modelpack.errors import ModelpackError, UsageError
from modelpack.serving.payloads import _number
from modelpack.serving.signature import SignatureError, jsonable, validate

__all__ = ["main", "rows_of"]


class BadRowError(ModelpackError):
    """A row of the input cannot be scored; the message names its line."""


def rows_of(path: Path, signature: dict[str, Any] | None) -> Iterator[tuple[int, Any]]:
    """(line number, row) for each row of *path* (JSON Lines, or CSV by its suffix)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise BadRowError(f"{path}: empty; a CSV input needs a header line")
            records = signature is not None and signature.get("layout") == "columns"
            for values in reader:
                line = reader.line_num
                if not values:
                    continue
                if len(values) != len(header):
                    raise BadRowError(
                        f"{path} line {line}: {len(values)} values, the header has {len(header)}"
                    )
                parsed = [_number(v) for v in values]
                yield line, dict(zip(header, parsed, strict=True)) if records else parsed
            return
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                yield line, json.loads(text)
            except ValueError as exc:
                raise BadRowError(
                    f"{path} line {line}: not JSON ({exc}); each line must be one row"
                ) from None


def _batches(rows: Iterator[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    batch: list[tuple[int, Any]] = []
    for item in rows:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write(out: IO[str], predictions: list[Any], as_csv: Any) -> None:
    for p in predictions:
        if as_csv is not None:
            as_csv.writerow(
                list(p.values())
                if isinstance(p, dict)
                else [json.dumps(p) if isinstance(p, list) else p]
            )
        else:
            out.write(json.dumps(p) + "\n")


def score(
    model: Any, source: Path, output: Path | None, signature: dict[str, Any] | None, batch_size: int
) -> int:
    """Score *source* into *output* (stdout if None); return the number of rows.

    :raises BadRowError: a row does not fit the signature, or the model rejects its batch.
    """
    tty, started = sys.stderr.isatty(), time.monotonic()
    target = output.resolve() if output else None
    tmp = None
    if target is not None:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        out: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="")
        tmp = Path(name)
    else:
        out = sys.stdout
    as_csv = csv.writer(out) if target is not None and target.suffix.lower() == ".csv" else None
    count, header_done = 0, False
    try:
        for batch in _batches(rows_of(source, signature), batch_size):
            rows = [row for _, row in batch]
            if signature is not None:
                for line, row in batch:
                    try:
                        validate([row], signature)
                    except SignatureError as exc:
                        raise BadRowError(f"{source} line {line}: {exc}") from None
            try:
                predictions = jsonable(model.predict(rows))
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                raise BadRowError(
                    f"{source} lines {batch[0][0]}-{batch[-1][0]}: the model rejected the batch: {exc}"
                ) from None
            if as_csv is not None and not header_done:
                first = predictions[0] if predictions else None
                as_csv.writerow(list(first) if isinstance(first, dict) else ["prediction"])
                header_done = True
            _write(out, list(predictions), as_csv)
            count += len(rows)
            if tty:
                rate = count / max(time.monotonic() - started, 1e-6)
                print(
                    f"\rscored {count} rows ({rate:,.0f} rows/s)",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        if tty:
            print(file=sys.stderr)
        if tmp is not None and target is not None:
            out.close()
            os.replace(tmp, target)
            tmp = None
    finally:
        if tmp is not None:
            out.close()
            tmp.unlink(missing_ok=True)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelpack.serving.batch")
    parser.add_argument("name")
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args(argv)
    from modelpack.serving.server import installed, manifest_of

    try:
        if not args.input.is_file():
            raise UsageError(f"--input {args.input}: no such file")
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        found = installed(args.name)
        if found is None:
            raise ModelpackError(f"no installed model named {args.name!r}")
        signature = manifest_of(found[0]).get("signature")
        model = found[1].load()()
        count = score(model, args.input, args.output, signature, args.batch_size)
    except ModelpackError as exc:
        print(f"modelpack predict: error: {exc}", file=sys.stderr)
        return exc.exit_code if hasattr(exc, "exit_code") else 1
    print(f"scored {count} rows" + (f" into {args.output}" if args.output else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
