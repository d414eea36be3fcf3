"""Where the built-in data folders are.

The repository keeps them at the top (``opsets/``, ``search/``); a wheel ships them inside
the package (``oplat/opsets``, ``oplat/search_spaces``, see pyproject's package-dir). Both
places are looked at, so a source checkout, an editable and a regular install all work.
"""

from __future__ import annotations

from pathlib import Path

from oplat.errors import OplatError

__all__ = ["builtin_dir", "builtin_files"]

_PACKAGED = {"opsets": "opsets", "search": "search_spaces", "device_files": "device_files"}


def builtin_dir(kind: str) -> Path:
    """The folder of built-in ``kind`` files: ``opsets``, ``search`` or ``device_files``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / _PACKAGED[kind], here.parent / kind):
        if candidate.is_dir():
            return candidate
    raise OplatError(f"built-in {kind} folder not found next to {here}; reinstall oplat")


def builtin_files(kind: str) -> dict[str, Path]:
    """Built-in TOML files of ``kind``: name (file stem) -> path."""
    return {p.stem: p for p in sorted(builtin_dir(kind).glob("*.toml"))}
