"""Latency tables: append-only JSONL, one self-describing row per measured entry.

Writing: a row is one line, written, flushed and fsynced as soon as its entry is done
(see :mod:`oplat.measure` for when that is), under an exclusive lock held for the whole
run, so two runs never write one table at once. Reading: every row is validated (types,
finite non-negative statistics, schema version, one setup per table) and a bad line is an
error that names the file and line. A torn last line (the write an interrupted run was
doing) is tolerated with a warning; a complete last row that only lacks its newline is a
row. When several rows share a key, the last wins.

Nothing a writer did not write is ever destroyed: a file that is not an oplat table is
refused, and a torn last line is moved to ``<table>.torn-<time>`` beside the table before
the next row is appended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from oplat.errors import OplatError, OplatRuntimeError, warn
from oplat.fingerprint import SETUP_FIELDS, setup_diff
from oplat.records import SCHEMA_VERSION, STATUSES, Row, latest_by_key

__all__ = [
    "SCHEMA_VERSION", "STATUSES", "TableBusy", "TableFile", "TableWriteError", "read_rows", "read_table",
    "TableWriter", "latest_by_key",
]

#: How every row line starts (rows keep the insertion order of ``Row.measured``): a torn
#: fragment that starts so is an oplat row cut short, anything else is not ours.
_ROW_PREFIX = b'{"schema_version"'


@dataclass(frozen=True)
class TableFile:
    """Rows of one table file (in file order) and what reading it found."""

    path: Path
    rows: list[Row]
    torn_tail: bool = False

    def latest(self) -> dict[str, Row]:
        return latest_by_key(self.rows)

    @property
    def device(self) -> dict:
        """The fingerprint the table was measured with ({} for an empty table)."""
        return self.rows[0].device if self.rows else {}

    @property
    def measured_between(self) -> tuple[str, str] | None:
        """(first, last) ``measured_at`` of its rows (ISO 8601, UTC), or None."""
        times = sorted(r.measured_at for r in self.rows if r.measured_at)
        return (times[0], times[-1]) if times else None


def _parse_line(raw: bytes, where: str) -> Row:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise OplatError(f"{where}: corrupt table line ({why}); remove or repair that line") from None
    return Row.from_json(data, where)


def _check_one_setup(path: Path, rows: list[Row], numbers: list[int]) -> None:
    """A table holds one setup: refuse rows measured under another (another host,
    runtime version, thread count), naming the first line that differs."""
    first = rows[0].device
    for row, number in zip(rows, numbers):
        diff = setup_diff(first, row.device, SETUP_FIELDS)
        if diff:
            was, now = diff
            raise OplatError(
                f"{path}:{number}: row measured with {now}, but line {numbers[0]} with {was}; "
                "a table holds one setup: move the other rows to their own table"
            )


def _not_a_table(path: Path, why: str) -> OplatError:
    return OplatError(
        f"{path} is not an oplat latency table ({why}); nothing was changed: "
        "choose another --out, or move that file away"
    )


def read_table(path: str | Path, *, quiet: bool = False) -> TableFile:
    """Read and validate a table file; a torn last line is dropped with a warning."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            raise OplatError(f"{path} is not a regular file; give the path of a .jsonl table")
        data = path.read_bytes()
    except FileNotFoundError:
        raise OplatError(f"{path}: no such table file; run `oplat measure` first or check the path") from None
    except OSError as exc:
        raise OplatError(f"{path}: cannot read table ({exc.strerror})") from None
    lines = data.split(b"\n")
    # A complete file ends with "\n", so the last piece is empty; anything else there is
    # a complete row that lacks its newline, or a line whose write was cut short.
    tail = lines.pop()
    rows, numbers = [], []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            rows.append(_parse_line(raw, where))
        except OplatError as exc:
            if not rows and not raw.lstrip().startswith(_ROW_PREFIX):
                raise _not_a_table(path, f"line {number} is not a table row") from None
            raise exc from None
        numbers.append(number)
    torn = False
    if tail.strip():
        number = len(lines) + 1
        try:
            rows.append(_parse_line(tail, f"{path}:{number}"))
            numbers.append(number)
        except OplatError:
            if not tail.lstrip().startswith(_ROW_PREFIX):
                raise _not_a_table(path, f"line {number} is not a table row") from None
            torn = True
            if not quiet:
                warn(f"{path}:{number}: ignoring a torn last line (an interrupted write); that entry counts as not measured")
    if rows:
        _check_one_setup(path, rows, numbers)
    return TableFile(path, rows, torn)


def read_rows(paths: Iterable[str | Path]) -> list[Row]:
    """All rows of several table files, in order."""
    return [row for p in paths for row in read_table(p).rows]


class TableBusy(OplatRuntimeError):
    """Another process holds the table's lock."""


class TableWriteError(OplatRuntimeError):
    """A row could not be appended (disk full, another setup): the run must stop."""


def _lock_holder(fd: int) -> int | None:
    """The pid holding a lock on ``fd``'s file, from /proc/locks (Linux), or None."""
    st = os.fstat(fd)
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a blocked waiter has "->")
                if len(parts) >= 6 and parts[1] != "->" and parts[5].rsplit(":", 1)[-1] == str(st.st_ino):
                    return int(parts[4])
    except (OSError, ValueError):
        pass
    return None


class TableWriter:
    """Appends rows to a table file: one line each, flushed and fsynced.

    Opening takes an exclusive lock on the file for the writer's life (``wait=False``
    refuses at once with the holder's pid, ``wait=True`` waits), then checks the file: a
    file that is not an oplat table is refused untouched, a complete last row without a
    newline gets its newline, and a torn last row is moved to ``<table>.torn-<time>``.
    ``table`` is what the file held then. Every appended row must have the table's setup
    (its first row's, or the first appended row's when the table was empty).
    """

    def __init__(self, path: str | Path, *, wait: bool = False):
        import fcntl

        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise OplatError(f"{self.path} is not a regular file; give --out the path of a .jsonl table")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: a failed write (disk full) must not stay in a buffer that close()
            # would try, and fail, to write again.
            self._file = open(self.path, "ab+", buffering=0)
        except OSError as exc:
            raise OplatError(
                f"cannot write table {self.path} ({exc.strerror}); choose a writable path with --out"
            ) from None
        try:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(self._file.fileno())
                who = f"process {holder}" if holder else "another process"
                if not wait:
                    raise TableBusy(
                        f"{self.path} is being written by {who} (another oplat measure); wait for it to finish, "
                        "add --wait to continue after it, or write to another --out"
                    ) from None
                warn(f"waiting for {who} to finish writing {self.path}")
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
            # Read (and so validate) before changing anything: a file that is not a table
            # is refused as it is.
            self.table = read_table(self.path, quiet=True)
            self._repair_tail()
        except BaseException:
            self._file.close()
            raise
        self._setup = self.table.device or None

    def _repair_tail(self) -> None:
        f = self._file
        f.seek(0)
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        number = data.count(b"\n") + 1
        try:
            _parse_line(tail, f"{self.path}:{number}")
        except OplatError:
            if not tail.lstrip().startswith(_ROW_PREFIX):
                raise _not_a_table(self.path, "its last line is not a table row") from None
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            aside = self.path.with_name(f"{self.path.name}.torn-{stamp}")
            try:
                with open(aside, "xb") as out:
                    out.write(tail)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                raise OplatError(
                    f"{self.path} ends in a torn line that could not be saved to {aside} ({exc.strerror}); "
                    "nothing was changed: free space or move the table to a writable place"
                ) from None
            f.truncate(cut)
            warn(f"{self.path}: a torn last line (an interrupted write) was moved to {aside}; that entry counts as not measured")
        else:
            f.write(b"\n")  # a complete row that only lacked its newline stays
        os.fsync(f.fileno())

    def append(self, row: Row) -> None:
        """Write one row (one line), flushed and fsynced. A failed write (disk full)
        leaves the file as it was before the row and raises :class:`OplatError`."""
        if self._setup is None:
            self._setup = row.device
        diff = setup_diff(self._setup, row.device, SETUP_FIELDS)
        if diff:
            was, now = diff
            raise TableWriteError(f"{self.path} holds rows measured with {was}; refusing a row measured with {now}")
        line = json.dumps(row.to_json(), separators=(",", ":"), allow_nan=False) + "\n"
        f = self._file
        f.seek(0, os.SEEK_END)
        before = f.tell()
        try:
            data = memoryview(line.encode())
            while data:
                data = data[f.write(data):]
            os.fsync(f.fileno())
        except OSError as exc:
            try:  # take the partial line back so the table stays whole
                f.truncate(before)
                os.fsync(f.fileno())
            except OSError:
                pass
            raise TableWriteError(
                f"cannot write to {self.path} ({exc.strerror or exc}); every row written before is kept: "
                "free space (or fix the file system) and run the same command again to continue"
            ) from None

    def close(self) -> None:
        self._file.close()  # closing releases the lock

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
