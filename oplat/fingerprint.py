"""The environment fingerprint recorded with every table row."""

from __future__ import annotations

import functools
import os
import platform

import oplat

__all__ = ["SETUP_FIELDS", "cpu_isa", "cpu_model", "environment", "setup_diff"]

#: CPU flags that decide which kernels a runtime picks (an AVX2-only host runs ORT's INT8
#: convs about 2x slower than a VNNI one with the same "AMD EPYC" model name).
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")
#: Fingerprint fields that must match for rows to share a table (or a table to stand for
#: a device): the one setup-compatibility rule. Host details that do not change timings
#: (OS patch level, Python, oplat version) are recorded but not compared.
SETUP_FIELDS = ("name", "runtime", "runtime_version", "threads", "options", "cpu", "cpu_isa")
#: Fields that older rows lack: compared only when both fingerprints have them.
_OPTIONAL = {"cpu_isa"}


def _cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else the platform's word)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


@functools.cache
def cpu_isa() -> str:
    """The kernel-relevant SIMD flags of the CPU (Linux), space-separated; "" if unknown."""
    have = set((_cpuinfo("flags") or "").split())
    return " ".join(flag for flag in _ISA_FLAGS if flag in have)


def environment(*, device: str, runtime: str, runtime_version: str, threads: int | None, options: dict) -> dict:
    """Everything needed to tell whether two rows were measured alike."""
    return {
        "name": device,
        "runtime": runtime,
        "runtime_version": runtime_version,
        "threads": threads,
        "options": dict(sorted(options.items())),
        "cpu": cpu_model(),
        "cpu_isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "oplat_version": oplat.__version__,
    }


def setup_diff(theirs: dict, ours: dict, fields=SETUP_FIELDS) -> tuple[str, str] | None:
    """Where two fingerprints differ in ``fields``: ("f=a, …", "f=b, …"), or None."""
    diff = [
        f for f in fields
        if theirs.get(f) != ours.get(f) and not (f in _OPTIONAL and (f not in theirs or f not in ours))
    ]
    if not diff:
        return None
    return ", ".join(f"{f}={theirs.get(f)!r}" for f in diff), ", ".join(f"{f}={ours.get(f)!r}" for f in diff)
