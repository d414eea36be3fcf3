"""Devices: the names users type, bound to a backend and its options.

Listing devices imports no runtime: each backend's ``available()`` only looks for its
module, so ``oplat devices`` and ``oplat --help`` work with no optional runtime.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from types import ModuleType

from oplat.errors import OplatError

__all__ = ["Device", "DEVICES", "all_devices", "file_devices", "get_device"]


@dataclass(frozen=True)
class Device:
    """A device name bound to a backend module and its options.

    ``options`` are backend options: ``threads`` (intra-op threads), ``precision``
    (OpenVINO inference precision), ``graph_optimization`` (ORT level).
    """

    name: str
    backend: str  # module under oplat.backends
    description: str
    options: dict = field(default_factory=dict)

    def module(self) -> ModuleType:
        return importlib.import_module(f"oplat.backends.{self.backend}")

    def available(self) -> str | None:
        """None when usable; else what is missing and how to install it."""
        return self.module().available(self.options)

    def require(self) -> ModuleType:
        """The backend module, or an OplatError saying what to install."""
        reason = self.available()
        if reason:
            raise OplatError(f"device {self.name!r} is not available: {reason}")
        return self.module()

    def with_options(self, **overrides) -> Device:
        merged = dict(self.options)
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return replace(self, options=merged)


DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        Device(
            "cpu",
            "ort",
            "ONNX Runtime CPU execution provider, in process (1 intra-op thread by default)",
            {"threads": 1, "graph_optimization": "all"},
        ),
        Device(
            "openvino",
            "openvino",
            "OpenVINO CPU plugin, in process, precision set explicitly (f32 by default)",
            {"threads": 1, "precision": "f32"},
        ),
        Device(
            "litert",
            "litert",
            "LiteRT (XNNPACK CPU), in process, on the .tflite oplat writes from the ONNX model (NHWC)",
            {"threads": 1},
        ),
    )
}


def file_devices() -> dict[str, Device]:
    """Devices described by device files: built-in ones and the user's (see oplat.toolchain)."""
    from oplat.toolchain.devicefile import list_device_files, load_device_file

    out = {}
    for name in list_device_files():
        try:
            description = load_device_file(name).description
        except OplatError as exc:
            description = f"(device file does not load: {exc})"
        out[name] = Device(name, "toolchain", description, {"device_file": name, "threads": 1})
    return out


def _remote_device(name: str) -> Device:
    """``remote:HOST:PORT``: an ``oplat agent`` on a board (token in OPLAT_AGENT_TOKEN)."""
    host, _, port = name[len("remote:") :].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OplatError(f"device {name!r} must look like remote:HOST:PORT, e.g. remote:192.0.2.7:8765")
    return Device(name, "remote", f"oplat agent at {host}:{port}", {"url": f"http://{host}:{port}", "threads": 1})


def all_devices() -> dict[str, Device]:
    return {**DEVICES, **file_devices()}


def get_device(name: str) -> Device:
    """Look a device up by name (or a device file path); an unknown name lists the known ones."""
    if name in DEVICES:
        return DEVICES[name]
    if name.startswith("remote:"):
        return _remote_device(name)
    files = file_devices()
    if name in files:
        return files[name]
    if name.endswith(".toml"):
        from oplat.toolchain.devicefile import load_device_file

        dev = load_device_file(name)
        return Device(dev.name, "toolchain", dev.description, {"device_file": name, "threads": 1})
    known = ", ".join([*DEVICES, *files])
    raise OplatError(f"unknown device {name!r}; known devices: {known} (see `oplat devices`)")
