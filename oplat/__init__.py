"""oplat: operator latency profiler and network search for image super-resolution."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
