"""File locks: an ``flock`` on a file, released by the kernel when the process dies.

Used for a search's folder and journal (:mod:`oplat.search.storage`), a psnr search's
winner training (waited for by other workers) and ``oplat train``'s run folder.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["Flock"]


class Flock:
    """An ``flock`` on a file (released by the kernel when the process dies)."""

    def __init__(self, path: Path, *, blocking: bool) -> None:
        import fcntl

        self._fcntl = fcntl
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._blocking = blocking

    def acquire(self, *, shared: bool = False, blocking: bool | None = None) -> bool:
        blocking = self._blocking if blocking is None else blocking
        flags = (self._fcntl.LOCK_SH if shared else self._fcntl.LOCK_EX) | (0 if blocking else self._fcntl.LOCK_NB)
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

    def __enter__(self) -> Flock:
        """Hold the lock (exclusive; waited for when ``blocking``) until the block ends;
        ``BlockingIOError`` when it is not blocking and another process holds it."""
        try:
            if not self.acquire():
                raise BlockingIOError(f"{self.path} is locked by another process")
        except OSError:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # closing the file releases its flock
