"""Where results go: the one results-path policy, and names that must never be paths.

``results/<device dir>/<op set>.jsonl`` for tables, ``results/validate/<device>/`` for
validation reports, ``results/search/<study>/`` for searches. Names users give (op sets,
study names) become file names, so they are plain names: never ``..``, a slash or a
hidden file.
"""

from __future__ import annotations

import re
from pathlib import Path

from oplat.errors import OplatError

__all__ = ["PLAIN_NAME", "check_plain_name", "default_table_path", "table_dir_name", "validate_dir"]

#: Letters, digits, '.', '_', '-'; not starting with '.'; at most 100 characters.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def check_plain_name(name: object, *, what: str, where: str = "") -> str:
    """``name`` when it is a plain name (see :data:`PLAIN_NAME`); else one clear error."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        prefix = f"{where}: " if where else ""
        raise OplatError(
            f"{prefix}{what} {name!r} must be a plain name (letters, digits, '.', '_', '-', "
            "not starting with '.'): it becomes a file or folder name under results/"
        )
    return name


def table_dir_name(device) -> str:
    """results/<dir>/ of a device's tables: its name, plus the thread count when it is
    not the default 1, plus an OpenVINO inference precision other than f32."""
    threads = device.options.get("threads", 1)
    name = device.name if threads in (None, 1) else f"{device.name}-{threads}t"
    precision = device.options.get("precision")
    if device.backend == "openvino" and precision not in (None, "f32", "fp32"):
        name += f"-{precision}"
    return name


def default_table_path(device_dir: str, opset: str, results: str | Path = "results") -> Path:
    """``<results>/<device_dir>/<opset>.jsonl``."""
    return Path(results) / device_dir / f"{opset}.jsonl"


def validate_dir(results: str | Path, device: str) -> Path:
    """``<results>/validate/<device>/``: where validation reports are saved."""
    return Path(results) / "validate" / device
