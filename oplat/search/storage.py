"""Where a study lives: the journal file, its locks, opening any Optuna storage, and
keeping storage passwords out of everything oplat writes or prints.

By default the study lives in ``<out_dir>/study.journal``, an Optuna journal file (the
standard format: Optuna's own ``JournalFileBackend`` and optuna-dashboard read it). oplat
writes it with Optuna's ``JournalFileBackend`` and Optuna's own lock
(``JournalFileOpenLock``: the ``<journal>.lock`` file, which Optuna's default symlink lock —
optuna-dashboard's — takes too, so they never write at once), without an fsync per record:
each batch of records is one ``write`` under that lock, so a killed process loses nothing it
wrote; the file is fsynced about once a second and at the end, so only a power cut can lose
the last second. A torn last record (a writer killed inside its write) is cut off when the
journal is opened, so the file always stays readable by Optuna; a lock file such a writer
left is removed when no other oplat worker is running (otherwise Optuna's grace period
frees it). One ``oplat search`` at a time may use a result folder with the default journal
(``<out_dir>/search.lock``, :class:`FolderLock`).

Several workers share one study through ``--storage``: a journal file path (in an existing
folder; an existing file there must be an Optuna journal, anything else is refused
untouched, :func:`check_storage`) or a database URL (``postgresql://…``, ``sqlite:///…``).
Every worker holds ``<journal>.flock`` shared while it runs; one that gets it exclusively
at the start is alone, so RUNNING trials it finds are a killed run's. The study is set up,
and each trial is claimed (so that ``--trials`` is the study's total), under one lock per
study: an ``flock`` of the journal file, a PostgreSQL advisory lock (which also serializes
creating the tables of a fresh database), or an ``flock`` of an SQLite file's folder. On a
database a killed worker's trial is failed and run again once its heartbeat is
:data:`STALE_S` seconds old.

A storage URL's password never reaches a report, a summary, an error or the dashboard
command: everything that names the storage goes through :func:`mask_password`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from oplat.errors import OplatError, warn
from oplat.locks import Flock

__all__ = [
    "HEARTBEAT_S",
    "STALE_S",
    "FolderLock",
    "OpenedStorage",
    "check_storage",
    "dashboard_command",
    "mask_password",
    "open_storage",
    "sqlalchemy_url",
]

_JOURNAL = "study.journal"
_LOCK = "search.lock"
_FSYNC_EVERY_S = 1.0
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: Optuna's journal locks (open and symlink) both take ``<journal>`` + this suffix.
_OPTUNA_LOCK_SUFFIX = ".lock"
#: How long a journal lock file may stay before a worker that is alone removes it.
_STALE_LOCK_WAIT_S = 1.0
#: Database workers record a heartbeat this often (seconds) ...
HEARTBEAT_S = 10
#: ... and a RUNNING trial whose heartbeat is older than this is a dead worker's: failed, run again.
STALE_S = 60
#: PostgreSQL advisory lock held while Optuna creates its tables ("oplat" in ASCII).
_SCHEMA_LOCK_KEY = 0x6F706C6174


# ---------------------------------------------------------------------- secrets
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<secret>[^\s]*?)(?=@[^\s@]*(?:\s|$))")
_KEY_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>[^\s&;'\"]+)", re.IGNORECASE)


def mask_password(text: str, url: str | None = None) -> str:
    """``text`` with every password in it replaced by ``***``: that of any
    ``scheme://user:password@host`` URL, any ``password=…`` pair and, given the storage
    ``url``, its password wherever else it appears (as written or %-decoded). The one place
    oplat hides a storage password: reports, summaries, errors and the dashboard command
    all name a storage through it."""
    if not text:
        return text
    out = _URL_PASSWORD.sub(lambda m: m["head"] + "***", text)
    out = _KEY_PASSWORD.sub(lambda m: m["head"] + "***", out)
    if url:
        secrets = {m["secret"] for m in _URL_PASSWORD.finditer(url)} | {m["secret"] for m in _KEY_PASSWORD.finditer(url)}
        for secret in sorted(secrets | {unquote(s) for s in secrets}, key=len, reverse=True):
            if len(secret) >= 3 and secret != "***":  # a one- or two-character "password" would mask half the message
                out = out.replace(secret, "***")
    return out


def _first_line(exc: BaseException, url: str | None) -> str:
    text = str(exc).strip()
    return mask_password(text.splitlines()[0] if text else type(exc).__name__, url)


# ---------------------------------------------------------------------- database URLs
def sqlalchemy_url(url: str) -> str:
    """The URL SQLAlchemy opens for ``url``: a plain ``postgresql://`` (or ``postgres://``)
    URL names psycopg 3 (``postgresql+psycopg://``, the ``postgres`` extra), unless only
    psycopg2 is installed; anything else is unchanged."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("postgresql", "postgres"):
        from importlib.util import find_spec

        if find_spec("psycopg") is not None or find_spec("psycopg2") is None:
            return "postgresql+psycopg://" + rest
        return "postgresql://" + rest
    return url


def _driver_hint(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    if scheme.startswith("postgres"):
        return "install the PostgreSQL driver: pip install 'oplat[postgres]' (psycopg 3)"
    if scheme.startswith("mysql"):
        return "install the URL's database driver (e.g. pip install pymysql for mysql+pymysql://)"
    return "install the URL's database driver"


def dashboard_command(storage: str | None, out_dir: str | Path) -> str:
    """The shell command that opens the study of ``storage`` (as :func:`open_storage` takes
    it) in optuna-dashboard; a password in a URL is shown as ``***``."""
    path, _ = _journal_file(storage, Path(out_dir))
    target = str(path) if path is not None else mask_password(sqlalchemy_url(storage or ""), storage)
    return f"optuna-dashboard {shlex.quote(target)}"


# ---------------------------------------------------------------------- locks
class _FileStudyLock:
    """The study lock of a journal (the journal file) or an SQLite database (its folder):
    an exclusive ``flock`` for a moment."""

    def __init__(self, path: Path) -> None:
        import fcntl

        self._fcntl = fcntl
        self._fd = os.open(path, os.O_RDONLY)

    @contextmanager
    def hold(self) -> Iterator[None]:
        self._fcntl.flock(self._fd, self._fcntl.LOCK_EX)
        try:
            yield
        finally:
            self._fcntl.flock(self._fd, self._fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class _PgStudyLock:
    """A PostgreSQL session advisory lock, taken on its own autocommit connection (the
    server drops it with the connection, so a killed worker never keeps it)."""

    def __init__(self, conn, key: int) -> None:
        self._conn, self._key = conn, key

    @contextmanager
    def hold(self) -> Iterator[None]:
        from sqlalchemy import text

        self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
        try:
            yield
        finally:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})

    def close(self) -> None:
        pass


class _NoStudyLock:
    """Databases oplat has no lock for: workers may overshoot ``--trials`` by a few."""

    def hold(self):
        return nullcontext()

    def close(self) -> None:
        pass


def _lock_key(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big", signed=True)


class _JournalWorkers:
    """``<journal>.flock``: held shared by every oplat worker on a journal while it runs."""

    def __init__(self, journal: Path) -> None:
        self._lock = Flock(Path(str(journal) + ".flock"), blocking=True)
        self._exclusive = False

    def join(self) -> bool:
        """Join the journal's workers; True when no other oplat worker is running (held
        exclusively until :meth:`share`)."""
        if self._lock.acquire(blocking=False):
            self._exclusive = True
            return True
        self._lock.acquire(shared=True)
        return False

    def share(self) -> None:
        if self._exclusive:
            self._lock.acquire(shared=True)  # flock converts the lock
            self._exclusive = False

    def close(self) -> None:
        self._lock.close()  # closing the descriptor drops the flock


# ---------------------------------------------------------------------- the journal backend
def _clear_stale_lock(path: str) -> None:
    """Remove Optuna's lock file of the journal ``path`` when it stays past
    ``_STALE_LOCK_WAIT_S``."""
    # No other oplat worker runs: a lock file that stays is a killed writer's
    # (Optuna's own writers hold it for one write).
    lock_file = path + _OPTUNA_LOCK_SUFFIX
    deadline = time.monotonic() + _STALE_LOCK_WAIT_S
    while os.path.lexists(lock_file):
        if time.monotonic() > deadline:
            try:
                os.unlink(lock_file)
            except FileNotFoundError:
                return
            warn(f"removed the journal lock {lock_file} (left by a run killed while writing)")
            return
        time.sleep(0.01)


def _last_newline_end(fd: int, size: int) -> int:
    """The offset just past the last newline among the first ``size`` bytes of ``fd``
    (0 when there is none)."""
    end = size
    while end > 0:
        start = max(0, end - (1 << 16))
        i = os.pread(fd, end - start, start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


def _cut_torn_tail(path: str, lock: Any) -> None:
    """Cut a last line without its newline off the journal ``path`` (under ``lock``)."""
    # A writer killed inside its write (or a power cut) can leave a last line without
    # its newline. Optuna skips it, but the next append would glue a record onto it
    # and make the file unreadable. Under the writers' lock nobody is mid-write, so a
    # tail without a newline is torn: cut it (it was never a finished record).
    lock.acquire()
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
                return
            keep = _last_newline_end(fd, size)
            os.ftruncate(fd, keep)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        lock.release()
    warn(f"{path} ended in a torn record ({size - keep} bytes, a run killed while writing it); cut it off")


def _append_records(path: str, lock: Any, data: bytes, synced: float) -> float:
    """Append ``data`` to the journal ``path`` in one ``write`` (under ``lock``), with an
    fsync when the last was over ``_FSYNC_EVERY_S`` ago; returns when the file was last
    synced (``synced`` when it was not now)."""
    lock.acquire()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if time.monotonic() - synced > _FSYNC_EVERY_S:
                os.fsync(fd)
                synced = time.monotonic()
        finally:
            os.close(fd)
    finally:
        lock.release()
    return synced


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@lru_cache(maxsize=1)
def _journal_class() -> type:
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock  # Optuna is imported only when a study opens

    class _OplatJournalFile(JournalFileBackend):
        """Optuna's ``JournalFileBackend`` with Optuna's ``JournalFileOpenLock``; a batch
        of records is one ``write`` without an fsync (see the module docstring), a file
        that has not grown since the last read is not read again, a torn tail is cut on
        open."""

        def __init__(self, file_path: str, *, alone: bool) -> None:
            lock = JournalFileOpenLock(file_path)
            super().__init__(file_path, lock_obj=lock)
            self._oplat_path = file_path
            self._oplat_lock = lock
            self._oplat_synced = time.monotonic()
            self._oplat_read_to: tuple[int, int] | None = None  # (next log number, file size) after a full read
            if alone:
                self._oplat_clear_stale_lock()
            self._oplat_cut_torn_tail()

        def _oplat_clear_stale_lock(self) -> None:
            _clear_stale_lock(self._oplat_path)

        def _oplat_cut_torn_tail(self) -> None:
            _cut_torn_tail(self._oplat_path, self._oplat_lock)

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
            self._oplat_synced = _append_records(self._oplat_path, self._oplat_lock, data, self._oplat_synced)

        def read_logs(self, log_number_from: int):
            # Optuna re-reads the journal before every storage call (~20 per trial). When
            # the file has not grown since a read that ended at this log number (every
            # writer appends), there is nothing new: a stat instead of an open and a read.
            try:
                size = os.stat(self._oplat_path).st_size
            except OSError:
                size = -1
            if self._oplat_read_to == (log_number_from, size):
                return iter(())
            return self._oplat_read(log_number_from, size)

        def _oplat_read(self, log_number: int, size: int):
            for log in super().read_logs(log_number):
                log_number += 1
                yield log
            self._oplat_read_to = (log_number, size)

        def sync(self) -> None:
            _fsync_path(self._oplat_path)
            self._oplat_synced = time.monotonic()

    return _OplatJournalFile


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


# ---------------------------------------------------------------------- opening a study's storage
@dataclass
class OpenedStorage:
    """An open study storage. ``storage``: the Optuna storage object; ``text``: how outputs
    name it (password masked); ``journal``: its file (None for a database); ``alone``: no
    other oplat worker uses it, so its RUNNING trials are a killed run's; ``lock``: held
    (``lock.hold()``) to set the study up and to claim each trial."""

    storage: Any
    text: str
    journal: Path | None
    alone: bool
    lock: Any
    _backend: Any = None
    _workers: _JournalWorkers | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def set_up_done(self) -> None:
        """The study is set up: let other workers join (a lone journal worker shares its lock)."""
        if self._workers is not None:
            self._workers.share()

    def close(self) -> None:
        """fsync the journal and drop this worker's locks and connections."""
        try:
            if self._backend is not None:
                self._backend.sync()
        finally:
            for close in reversed(self._closers):
                try:
                    close()
                except Exception:  # pragma: no cover - closing is best effort
                    pass
            self._closers.clear()


def open_storage(
    storage: str | None, out_dir: Path, *, name: str, on_stale: Callable[[Any, Any], None] | None = None
) -> OpenedStorage:
    """Open the storage of study ``name`` (``storage`` as :class:`~oplat.search.SearchConfig`
    takes it). ``on_stale(study, trial)``: called on a database for a trial whose worker's
    heartbeat stopped (after Optuna fails it)."""
    from optuna.storages import JournalStorage

    path, hint = _journal_file(storage, out_dir)
    if path is None:
        return _open_database(storage or "", name=name, on_stale=on_stale)
    writable = "pick a writable --results" if storage is None else "give a writable --storage path"
    closers: list[Callable[[], None]] = []
    try:
        workers = _JournalWorkers(path)
        closers.append(workers.close)
        alone = workers.join()
        backend = _journal_class()(str(path), alone=alone)
        lock = _FileStudyLock(path)
        closers.append(lock.close)
    except OSError as exc:
        for close in reversed(closers):
            close()
        raise OplatError(f"cannot write the study journal {path} ({exc.strerror}); {writable}") from None
    opened = OpenedStorage(None, str(path), path, alone, lock, _backend=backend, _workers=workers, _closers=closers)
    try:
        opened.storage = JournalStorage(backend)
    except Exception as exc:  # a damaged journal: Optuna raises JSON, key or value errors
        opened.close()
        raise OplatError(f"cannot read the study journal {path} ({type(exc).__name__}: {_first_line(exc, None)}); {hint}") from None
    return opened


def _open_database(url: str, *, name: str, on_stale) -> OpenedStorage:
    text = mask_password(url)
    sa_url = sqlalchemy_url(url)
    closers: list[Callable[[], None]] = []
    try:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(sa_url, poolclass=NullPool)  # the lock's connection
        closers.append(engine.dispose)
        dialect, database = engine.dialect.name, engine.url.database
        if dialect == "postgresql":
            conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            closers.append(conn.close)
            schema_lock, lock = _PgStudyLock(conn, _SCHEMA_LOCK_KEY), _PgStudyLock(conn, _lock_key(f"oplat-study:{name}"))
        elif dialect == "sqlite" and database not in (None, "", ":memory:") and Path(database).parent.is_dir():
            lock = _FileStudyLock(Path(database).parent)
            closers.append(lock.close)
            schema_lock = lock
        else:
            schema_lock = lock = _NoStudyLock()
        with schema_lock.hold():  # workers starting together on a fresh database create the tables once
            rdb = _rdb_storage(sa_url, on_stale)
    except ImportError as exc:
        _close_all(closers)
        raise OplatError(f"storage {text}: {_first_line(exc, url)} — {_driver_hint(url)}") from None
    except OplatError:
        _close_all(closers)
        raise
    except Exception as exc:  # a storage URL can fail in many driver-specific ways
        _close_all(closers)
        raise OplatError(f"cannot open the study storage {text}: {_first_line(exc, url)}") from None
    return OpenedStorage(rdb, text, None, False, lock, _closers=closers)


def _close_all(closers: list[Callable[[], None]]) -> None:
    for close in reversed(closers):
        try:
            close()
        except Exception:  # pragma: no cover
            pass


def _rdb_storage(url: str, on_stale):
    """Optuna's ``RDBStorage`` with heartbeats (a dead worker's trial is failed after
    :data:`STALE_S` and handed to ``on_stale``); a table creation another client raced
    us to is retried."""
    import inspect
    import warnings

    import optuna
    import sqlalchemy.exc

    kwargs: dict[str, Any] = {}
    if on_stale is not None:
        params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
        callback = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
        kwargs = {"heartbeat_interval": HEARTBEAT_S, "grace_period": STALE_S, callback: on_stale}
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 3:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("not reached")  # pragma: no cover


# ---------------------------------------------------------------------- one search per folder
class FolderLock:
    """Holds ``<out_dir>/search.lock`` while a search with the default journal
    (``<out_dir>/study.journal``) runs and emits.

    With ``--storage`` (a journal path or a database URL) nothing is locked (several workers
    share the study and may emit into one folder; every emitted file is replaced whole) and
    ``owned`` is False.
    """

    def __init__(self, out_dir: Path, storage: str | None) -> None:
        self.out_dir = out_dir
        self.owned = storage is None
        self._lock: Flock | None = None

    def __enter__(self) -> FolderLock:
        if not self.owned:
            return self
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            lock = Flock(self.out_dir / _LOCK, blocking=False)
        except OSError as exc:
            raise OplatError(f"cannot write to {self.out_dir} ({exc.strerror}); pick a writable --results") from None
        if not lock.acquire():
            lock.close()
            raise OplatError(
                f"another oplat search is running in {self.out_dir}; wait for it to finish or pick another --name "
                "(several workers on one study: give each the same --storage, a journal file or a database URL)"
            )
        lock.write_pid()
        self._lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock.close()
            self._lock = None
