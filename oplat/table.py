"""Latency tables: append-only JSONL, one self-describing row per measured entry.

Writing: a row is one line, written, flushed and fsynced before the next entry starts,
so a crash loses at most the entry in flight. Reading: a torn last line (the write an
interrupted run was doing) is tolerated with a warning; a corrupt line anywhere else is
an error that names the file and line. When several rows share a key, the last wins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from oplat.errors import OplatError, warn
from oplat.spec import OpSpec

__all__ = ["SCHEMA_VERSION", "STATUSES", "read_rows", "read_table", "TableWriter", "latest_by_key"]

SCHEMA_VERSION = 1
STATUSES = ("ok", "unsupported", "error")
_REQUIRED = ("schema_version", "key", "spec", "status", "device")


@dataclass(frozen=True)
class TableFile:
    """Rows of one table file (in file order) and what reading it found."""

    path: Path
    rows: list[dict]
    torn_tail: bool = False

    def latest(self) -> dict[str, dict]:
        return latest_by_key(self.rows)


def latest_by_key(rows: Iterable[dict]) -> dict[str, dict]:
    """Map key -> the last row written for it."""
    out: dict[str, dict] = {}
    for row in rows:
        out[row["key"]] = row
    return out


def _check_row(row: object, where: str) -> dict:
    if not isinstance(row, dict):
        raise OplatError(f"{where}: a table row must be a JSON object; remove or repair that line")
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise OplatError(f"{where}: row lacks {', '.join(missing)}; remove or repair that line")
    if row["schema_version"] != SCHEMA_VERSION:
        raise OplatError(
            f"{where}: schema_version {row['schema_version']!r} is not {SCHEMA_VERSION}; "
            "re-measure with this oplat version or use the version that wrote it"
        )
    if row["status"] not in STATUSES:
        raise OplatError(f"{where}: status {row['status']!r} is not one of {', '.join(STATUSES)}")
    try:
        spec = OpSpec.from_dict(row["spec"])
    except (OplatError, TypeError) as exc:
        raise OplatError(f"{where}: bad spec ({exc}); remove or repair that line") from None
    if spec.key != row["key"]:
        raise OplatError(f"{where}: key does not match spec; remove or repair that line")
    return row


def read_table(path: str | Path, *, quiet: bool = False) -> TableFile:
    """Read a table file; a torn last line is dropped with a warning."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise OplatError(f"{path}: no such table file; run `oplat measure` first or check the path") from None
    except OSError as exc:
        raise OplatError(f"{path}: cannot read table ({exc.strerror})") from None
    lines = data.split(b"\n")
    # A complete file ends with "\n", so the last piece is empty; anything else there is
    # a line whose write was cut short.
    tail = lines.pop()
    torn = bool(tail.strip())
    rows = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise OplatError(f"{where}: corrupt table line ({exc.msg if hasattr(exc, 'msg') else exc}); remove or repair that line") from None
        rows.append(_check_row(row, where))
    if torn and not quiet:
        warn(f"{path}:{len(lines) + 1}: ignoring a torn last line (an interrupted write); that entry counts as not measured")
    return TableFile(path, rows, torn)


def read_rows(paths: Iterable[str | Path]) -> list[dict]:
    """All rows of several table files, in order."""
    return [row for p in paths for row in read_table(p).rows]


class TableWriter:
    """Appends rows to a table file: one line each, flushed and fsynced.

    Opening checks the path can be written (before anything is measured) and cuts off a
    torn last line left by an interrupted run, so the next row starts on its own line.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab+")
        except OSError as exc:
            raise OplatError(
                f"cannot write table {self.path} ({exc.strerror}); choose a writable path with --out"
            ) from None
        self._cut_torn_tail()

    def _cut_torn_tail(self) -> None:
        f = self._file
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())

    def append(self, row: dict) -> None:
        line = json.dumps(row, separators=(",", ":"), allow_nan=False) + "\n"
        self._file.seek(0, os.SEEK_END)
        self._file.write(line.encode())
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
