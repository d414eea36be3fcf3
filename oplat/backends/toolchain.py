"""Devices described by a device file (``dolphin``, ``tflite-adb``, ``openvino-benchmark-app``, …).

The target's own tool times the model (``synap_cli``, ``benchmark_model``,
``benchmark_app``, ``litert-benchmark``), so these sessions are *self-timed*: instead of
``run()`` they offer ``time(policy)``, which applies the shared policy at the level the
tool allows. Each round is one invocation of the tool with enough runs to last
``policy.round_s``; the first invocation is the warm-up and calibration; rounds whose
medians disagree by more than ``policy.agree_pct`` are re-measured as for any device
(:func:`oplat.timing.time_rounds`, the same rounds rule).
Where the tool prints per-run latencies they are the samples; where it prints only a
summary, each round contributes its median (and the row says ``samples: tool summary``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from oplat.backends import SelfTimedSession
from oplat.timing import Timing, TimingPolicy, time_rounds

__all__ = ["MODEL_FORMATS", "available", "fingerprint", "runtime", "open"]

#: Model formats :func:`open` takes (an ONNX model; it writes the device file's
#: ``input_format`` itself, converting to .tflite where the tool wants that).
MODEL_FORMATS: tuple[str, ...] = ("onnx",)


def _device_file(options: dict):
    from oplat.toolchain.devicefile import load_device_file

    return load_device_file(options["device_file"])


def available(options: dict | None = None) -> str | None:
    """None when the device file's tools and target are ready; else what is missing."""
    from oplat.errors import OplatError
    from oplat.toolchain.devicefile import readiness

    if not options or "device_file" not in options:
        return None
    try:
        problems = readiness(_device_file(options), options.get("overrides") or {})
    except OplatError as exc:
        return str(exc)
    return "; ".join(problems) or None


def runtime(options: dict | None = None) -> tuple[str, str]:
    name = options.get("device_file", "toolchain") if options else "toolchain"
    return f"toolchain:{name}", "device file"


def fingerprint(options: dict | None = None) -> None:
    """None: rows record this host's environment with the device file as the runtime."""
    return None


def _precision_of(model) -> str:
    quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    return "int8" if quantized else "fp32"


class ToolchainDeviceSession(SelfTimedSession):
    """A model written where the tool can read it, timed by the tool."""

    def __init__(self, model, options: dict):
        self._model = model
        self._options = options
        self._dir: tempfile.TemporaryDirectory | None = None
        self._path: Path | None = None
        self._session = None

    def __enter__(self) -> ToolchainDeviceSession:
        from oplat.toolchain.runner import ToolchainSession

        self._session = ToolchainSession(self._options["device_file"], overrides=self._options.get("overrides") or {})
        self._dir = tempfile.TemporaryDirectory(prefix="oplat-model-")
        fmt = self._session.device.input_format
        if fmt == "tflite":
            from oplat.tflite import tflite_from_onnx

            self._path = Path(self._dir.name) / "model.tflite"
            self._path.write_bytes(tflite_from_onnx(self._model))
        else:
            self._path = Path(self._dir.name) / "model.onnx"
            self._path.write_bytes(self._model.SerializeToString())
        self._precision = _precision_of(self._model)
        return self

    def run(self) -> None:
        raise NotImplementedError("toolchain devices are timed by the device's own tool; use time()")

    def profile(self, runs: int):
        return None

    def _invoke(self, runs: int, warmup: int) -> tuple[list[float], float]:
        timing = self._session.time(
            self._path,
            runs=runs,
            warmup=warmup,
            threads=int(self._options.get("threads", 1)),
            precision=self._precision,
        )
        if timing.samples_ms:
            samples = list(timing.samples_ms)
            return samples, float(np.median(samples))
        middle = timing.median_ms if timing.median_ms is not None else timing.mean_ms
        if middle is None:
            from oplat.errors import OplatError

            raise OplatError(f"device {self._session.device.name}: the tool reported neither samples nor a median/mean")
        return [float(middle)], float(middle)

    def time(self, policy: TimingPolicy) -> Timing:
        """The shared policy, one tool invocation per round."""
        first_runs = max(policy.min_runs, 5)
        _, per_run_ms = self._invoke(first_runs, warmup=policy.warmup_runs)
        runs = policy.runs_per_round(sample_ms=max(per_run_ms, 1e-6))
        summary_only = False

        def one_round() -> list[float]:
            nonlocal summary_only
            samples, _ = self._invoke(runs, warmup=1)
            summary_only = summary_only or len(samples) == 1 < runs
            return samples

        timing = time_rounds(one_round, policy, Timing(inner=1, runs_per_round=runs))
        if summary_only:
            timing.runs_total = runs * len(timing.rounds_ms)
            timing.note = "samples are the tool's per-invocation medians (it prints no per-run latencies)"
        return timing

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            self._dir.cleanup()
        self._dir = self._session = None


def open(model, feeds, options: dict) -> ToolchainDeviceSession:  # noqa: A001 (backend contract)
    return ToolchainDeviceSession(model, options)
