"""Backends: one module each, the same shape in every one.

The contract lives in :mod:`oplat.backends.base`: a backend module defines the names
:class:`~oplat.backends.base.Backend` lists:

- ``MODEL_FORMATS`` — the model formats ``open()`` takes (``("onnx",)`` today for all).
- ``available(options=None) -> str | None`` — None when usable, else why not and how to
  fix it. Cheap: it may look for a module or a tool, it never loads a model.
- ``runtime(options=None) -> tuple[str, str]`` — runtime name and version for the fingerprint.
- ``fingerprint(options=None) -> dict | None`` — None when this host times (the usual);
  the timing machine's fingerprint when that is elsewhere (a remote agent's board).
- ``open(model, feeds, options)`` — a context manager; nothing is timed here.

``open()`` returns a plain :class:`Session` (``run()`` runs the model once on fixed
inputs; where the runtime exposes per-node times, ``profile(runs)`` returns a
:class:`KernelProfile`) or a :class:`SelfTimedSession` (a board's CLI tool, a remote
agent: ``time(policy) -> Timing`` applies the same policy where the timing happens).
``isinstance(session, SelfTimedSession)`` is the one rule that tells them apart.
The timing policy (warm-up, rounds, statistics) is not a backend's business: it lives in
:mod:`oplat.timing`.
"""

from __future__ import annotations

import numpy as np

from oplat.backends.base import Backend, SelfTimedSession, Session, Unsupported
from oplat.records import KernelProfile

__all__ = [
    "Backend",
    "KernelProfile",
    "LAYOUT_OPS",
    "SelfTimedSession",
    "Session",
    "Unsupported",
    "import_problem",
    "summarize_profile",
]

#: Node types that only change memory layout (not part of any op oplat times).
LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "Reorder", "Transpose"})


def import_problem(module: str, runtime: str, hint: str) -> str | None:
    """None when ``module`` imports; else one line: not installed (with ``hint``), or
    installed but failing to import (with the real reason: a missing shared library or
    a broken dependency is not fixed by installing the package again the usual way)."""
    import importlib

    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
            return f"{runtime} is not installed; {hint}"
        return f"{runtime} is installed but cannot be imported: {exc} (its dependency {exc.name!r} is missing)"
    except ImportError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{runtime} is installed but cannot be imported: {first}; reinstall it ({hint})"
    return None


def summarize_profile(per_node_ms: dict[tuple[str, str, str], list[float]]) -> KernelProfile:
    """Build a KernelProfile from {(name, op_type, exec_type): [ms per run]}."""
    if not per_node_ms:
        return KernelProfile(0.0, 0.0, [], 0)
    runs = min(len(v) for v in per_node_ms.values())
    compute = np.zeros(runs)
    layout = np.zeros(runs)
    nodes = []
    for (name, op_type, exec_type), values in per_node_ms.items():
        values = np.asarray(values[-runs:], dtype=np.float64)
        is_layout = op_type in LAYOUT_OPS
        (layout if is_layout else compute)[:] += values
        nodes.append(
            {
                "name": name,
                "op_type": op_type,
                "exec_type": exec_type,
                "median_ms": round(float(np.median(values)), 6),
                "layout": is_layout,
            }
        )
    return KernelProfile(
        compute_ms=round(float(np.median(compute)), 6),
        layout_ms=round(float(np.median(layout)), 6),
        nodes=nodes,
        runs=runs,
    )

