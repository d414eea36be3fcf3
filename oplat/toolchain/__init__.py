"""Drive real device toolchains described by a TOML *device file*.

A device file says how to **compile** a model for a target (optional), how to **move**
it there (a transport: ``local``, ``adb`` or ``ssh``), how to **run** the target's
timing tool, and which **parser** turns that tool's output into a
:class:`~oplat.toolchain.parsers.DeviceTiming` (milliseconds).

- :mod:`oplat.toolchain.parsers` — one parser per timing tool, registered by name.
- :mod:`oplat.toolchain.transport` — ``Local``, ``Adb``, ``Ssh``: push, run, pull, with
  timeouts and retries; commands are argv lists, never shell strings built by hand.
- :mod:`oplat.toolchain.devicefile` — the TOML schema, loader, validation, readiness.
- :mod:`oplat.toolchain.runner` — :class:`ToolchainSession`: compile → push → run →
  parse → clean up.

Built-in device files live in :mod:`oplat.device_files`; users add their own in
``$OPLAT_CONFIG_DIR/devices`` (default ``~/.config/oplat/devices``).

Names are re-exported lazily so ``import oplat.toolchain`` stays cheap.
"""

from __future__ import annotations

import importlib

__all__ = [
    "CompletedRun",
    "DeviceFile",
    "DeviceFileError",
    "DeviceTiming",
    "ParseError",
    "StepTimeout",
    "ToolchainError",
    "ToolchainSession",
    "get_parser",
    "list_device_files",
    "load_device_file",
    "readiness",
]

_WHERE = {
    "CompletedRun": "oplat.toolchain.transport",
    "StepTimeout": "oplat.toolchain.errors",
    "ToolchainError": "oplat.toolchain.errors",
    "ParseError": "oplat.toolchain.errors",
    "DeviceTiming": "oplat.toolchain.parsers",
    "get_parser": "oplat.toolchain.parsers",
    "DeviceFile": "oplat.toolchain.devicefile",
    "DeviceFileError": "oplat.toolchain.devicefile",
    "list_device_files": "oplat.toolchain.devicefile",
    "load_device_file": "oplat.toolchain.devicefile",
    "readiness": "oplat.toolchain.devicefile",
    "ToolchainSession": "oplat.toolchain.runner",
}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
