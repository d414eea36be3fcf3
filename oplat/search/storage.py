"""Where a study lives: the journal file, its locks, and opening any Optuna storage.

By default the study lives in ``<out_dir>/study.journal``, an Optuna journal file (the
standard format: Optuna's own ``JournalFileBackend`` and optuna-dashboard read it). oplat
writes it without an fsync per record — each record is one ``write`` under an ``flock``, so
a killed process loses nothing it wrote; the file is fsynced about once a second and at the
end, so only a power cut can lose the last second. One ``oplat search`` at a time may use a
result folder (``<out_dir>/search.lock``, :class:`FolderLock`). Any Optuna storage URL
(``postgresql://…``, ``sqlite:///…``) can be given instead, for many workers; then nothing
is locked. A journal path given as storage must be in an existing folder, and an existing
file there must be an Optuna journal (anything else is refused untouched,
:func:`check_storage`). A torn last record (a writer killed inside its write) is cut off
when the journal is opened, so the file always stays readable by Optuna.
"""

from __future__ import annotations

import json
import os
import stat
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from oplat.errors import OplatError, warn

__all__ = ["FolderLock", "check_storage", "open_storage"]

_JOURNAL = "study.journal"
_LOCK = "search.lock"
_FSYNC_EVERY_S = 1.0
_SQLITE_MAGIC = b"SQLite format 3\x00"


class _Flock:
    """An exclusive ``flock`` on a file (released by the kernel when the process dies)."""

    def __init__(self, path: Path, *, blocking: bool) -> None:
        import fcntl

        self._fcntl = fcntl
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._blocking = blocking

    def acquire(self) -> bool:
        flags = self._fcntl.LOCK_EX | (0 if self._blocking else self._fcntl.LOCK_NB)
        try:
            self._fcntl.flock(self._fd, flags)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        self._fcntl.flock(self._fd, self._fcntl.LOCK_UN)

    def write_pid(self) -> None:
        """Record this process in the lock file (for people looking; the lock is the flock)."""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def close(self) -> None:
        os.close(self._fd)


# ---------------------------------------------------------------------- the journal backend
class _FlockedJournal:
    """What oplat changes in Optuna's ``JournalFileBackend`` (mixed in before it, see
    :func:`_journal_backend`): same file format, no fsync per record, an ``flock`` instead
    of Optuna's symlink lock, a torn tail cut on open, no re-read of a file that has not grown."""

    def _oplat_open(self, file_path: str) -> None:
        self._oplat_path = file_path
        self._oplat_lock = _Flock(Path(file_path + ".flock"), blocking=True)
        self._oplat_synced = time.monotonic()
        self._oplat_cut_torn_tail()

    def _oplat_cut_torn_tail(self) -> None:
        # A writer killed inside its write (or a power cut) can leave a last line without
        # its newline. Optuna skips it, but the next append would glue a record onto it
        # and make the file unreadable. Under the writers' lock nobody is mid-write, so a
        # tail without a newline is torn: cut it (it was never a finished record).
        self._oplat_lock.acquire()
        try:
            fd = os.open(self._oplat_path, os.O_RDWR)
            try:
                size = os.fstat(fd).st_size
                if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
                    return
                keep, end = 0, size
                while end > 0:
                    start = max(0, end - (1 << 16))
                    i = os.pread(fd, end - start, start).rfind(b"\n")
                    if i >= 0:
                        keep = start + i + 1
                        break
                    end = start
                os.ftruncate(fd, keep)
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            self._oplat_lock.release()
        warn(f"{self._oplat_path} ended in a torn record ({size - keep} bytes, a run killed while writing it); cut it off")

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        self._oplat_lock.acquire()
        try:
            fd = os.open(self._oplat_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if time.monotonic() - self._oplat_synced > _FSYNC_EVERY_S:
                    os.fsync(fd)
                    self._oplat_synced = time.monotonic()
            finally:
                os.close(fd)
        finally:
            self._oplat_lock.release()

    def read_logs(self, log_number_from: int):
        # Optuna re-reads the journal before every storage call (~20 per trial). When
        # the file has not grown since the last read (every writer appends), there is
        # nothing new: a stat instead of an open and a read.
        offsets = getattr(self, "_log_number_offset", None)
        if offsets is not None and log_number_from in offsets:
            try:
                if os.stat(self._oplat_path).st_size == offsets[log_number_from]:
                    return iter(())
            except OSError:
                pass
        return super().read_logs(log_number_from)

    def sync(self) -> None:
        fd = os.open(self._oplat_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._oplat_synced = time.monotonic()


@lru_cache(maxsize=1)
def _journal_class() -> type:
    from optuna.storages.journal import JournalFileBackend  # Optuna is imported only when a study opens

    class _OplatJournalFile(_FlockedJournal, JournalFileBackend):
        def __init__(self, file_path: str) -> None:
            JournalFileBackend.__init__(self, file_path)
            self._oplat_open(file_path)

    return _OplatJournalFile


def _journal_backend(path: Path):
    """An Optuna journal file backend: same file format, no fsync per record (see the
    module docstring), an ``flock`` instead of Optuna's symlink lock."""
    return _journal_class()(str(path))


# ---------------------------------------------------------------------- which file, and is it a journal
def _journal_file(storage: str | None, out_dir: Path) -> tuple[Path | None, str]:
    """The journal file a search will use (None for a storage URL) and what to tell a user
    whose file is unusable; raises :class:`OplatError` before anything is written when the
    file exists but is not an Optuna journal, or when a ``--storage`` path's folder is
    missing (only the default ``<out_dir>/study.journal`` gets its folder made)."""
    if storage is not None and "://" in storage:
        return None, ""
    if storage is None:
        path, hint = out_dir / _JOURNAL, "delete it or pick another --name"
    else:
        if not storage.strip():
            raise OplatError("--storage is empty; give a journal file path or a database URL (e.g. sqlite:///studies.db)")
        path, hint = Path(storage), "give a new path or a database URL (e.g. sqlite:///studies.db) to --storage"
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            raise OplatError(f"{parent} is not a folder, so it cannot hold the study journal {path}; give another --storage")
        if not parent.is_dir():
            raise OplatError(
                f"the folder {parent} of the study journal {path} does not exist; create the folder first "
                f"(mkdir -p {parent}) or give another --storage"
            )
    _check_journal_file(path, hint)
    return path, hint


def check_storage(storage: str | None, out_dir: str | Path) -> None:
    """Raise the :class:`OplatError` :func:`~oplat.search.run_search` gives for this
    ``storage`` (a journal path whose folder is missing, an existing file that is not an
    Optuna journal), before anything is read, measured or written."""
    _journal_file(storage, Path(out_dir))


def _check_journal_file(path: Path, hint: str) -> None:
    """Refuse an existing file that is not an Optuna journal (a text file, a latency table,
    an SQLite database) before Optuna reads it or appends to it. A missing or empty file is
    a new journal."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OplatError(f"cannot read the study journal {path} ({exc.strerror}); {hint}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OplatError(f"{path} is a folder, not an Optuna journal file; {hint}")
    if not stat.S_ISREG(st.st_mode):
        raise OplatError(f"{path} is not a regular file, so not an Optuna journal file; {hint}")
    if st.st_size == 0:
        return
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
    except OSError as exc:
        raise OplatError(f"cannot read the study journal {path} ({exc.strerror}); {hint}") from None
    if first.startswith(_SQLITE_MAGIC):
        raise OplatError(
            f"{path} is an SQLite database, not an Optuna journal file; give it as a URL "
            f"(--storage sqlite:///{path.resolve()}) or give a new path"
        )
    try:
        record = json.loads(first)
    except ValueError:  # not JSON, not UTF-8
        record = None
    if not (isinstance(record, dict) and isinstance(record.get("op_code"), int) and "worker_id" in record):
        raise OplatError(f"{path} is not an Optuna journal file (its first line is not a journal record); {hint}")


def open_storage(storage: str | None, out_dir: Path):
    """(storage object or URL, journal backend or None, text for reports)."""
    from optuna.storages import JournalStorage

    path, hint = _journal_file(storage, out_dir)
    if path is None:
        return storage, None, storage
    writable = "pick a writable --results" if storage is None else "give a writable --storage path"
    try:
        backend = _journal_backend(path)
    except OSError as exc:
        raise OplatError(f"cannot write the study journal {path} ({exc.strerror}); {writable}") from None
    try:
        return JournalStorage(backend), backend, str(path)
    except Exception as exc:  # a damaged journal: Optuna raises JSON, key or value errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OplatError(f"cannot read the study journal {path} ({type(exc).__name__}: {first}); {hint}") from None


# ---------------------------------------------------------------------- one search per folder
class FolderLock:
    """Holds ``<out_dir>/search.lock`` while a search with a journal file runs and emits.

    With a storage URL nothing is locked (workers elsewhere share the study) and
    ``owned`` is False, so trials other workers are running are left alone.
    """

    def __init__(self, out_dir: Path, storage: str | None) -> None:
        self.out_dir = out_dir
        self.owned = storage is None or "://" not in storage
        self._lock: _Flock | None = None

    def __enter__(self) -> FolderLock:
        if not self.owned:
            return self
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            lock = _Flock(self.out_dir / _LOCK, blocking=False)
        except OSError as exc:
            raise OplatError(f"cannot write to {self.out_dir} ({exc.strerror}); pick a writable --results") from None
        if not lock.acquire():
            lock.close()
            raise OplatError(f"another oplat search is running in {self.out_dir}; wait for it to finish or pick another --name")
        lock.write_pid()
        self._lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock.close()
            self._lock = None
