"""The environment fingerprint recorded with every table row."""

from __future__ import annotations

import functools
import os
import platform

import oplat

__all__ = ["cpu_model", "environment", "setup_diff"]


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else the platform's word)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(*, device: str, runtime: str, runtime_version: str, threads: int | None, options: dict) -> dict:
    """Everything needed to tell whether two rows were measured alike."""
    return {
        "name": device,
        "runtime": runtime,
        "runtime_version": runtime_version,
        "threads": threads,
        "options": dict(sorted(options.items())),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "oplat_version": oplat.__version__,
    }


def setup_diff(theirs: dict, ours: dict, fields) -> tuple[str, str] | None:
    """Where two fingerprints differ in ``fields``: ("f=a, …", "f=b, …"), or None."""
    diff = [f for f in fields if theirs.get(f) != ours.get(f)]
    if not diff:
        return None
    return ", ".join(f"{f}={theirs.get(f)!r}" for f in diff), ", ".join(f"{f}={ours.get(f)!r}" for f in diff)
