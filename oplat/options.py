"""The one calling convention of oplat's long operations: ``f(config=None, /, **options)``.

A frozen options record (``SearchConfig``, ``MeasureConfig``, ``CalibrateConfig``, …)
carries an operation through its steps instead of a long parameter list; callers pass the
record, its fields as keywords, or a record and fields that replace its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

__all__ = ["configured"]

C = TypeVar("C")


def configured(kind: type[C], config: C | None, options: dict[str, Any], defaults: dict[str, Any] | None = None) -> C:
    """``config`` (a ``kind``) with ``options`` replaced, or a ``kind`` of ``defaults``
    updated by ``options`` when no config is given."""
    if config is None:
        return kind(**{**(defaults or {}), **options})
    if not isinstance(config, kind):
        raise TypeError(f"expected a {kind.__name__}, got {type(config).__name__}")
    return replace(config, **options) if options else config
