"""OpenVINO on the CPU (the ``openvino`` device).

Precision is always set explicitly: on CPUs with bf16 support OpenVINO's default
inference precision is bf16, which would silently turn an FP32 table into a bf16 one.
``profile()`` reads OpenVINO's per-layer counters (PERF_COUNT) from a second compiled
model and reports the Reorder layers apart: they dominate a lone op's wall time.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from oplat.backends import KernelProfile, Session, Unsupported, import_problem, summarize_profile

__all__ = ["MODEL_FORMATS", "available", "fingerprint", "runtime", "open"]

#: Model formats :func:`open` takes.
MODEL_FORMATS: tuple[str, ...] = ("onnx",)

_HINT = "install it with: pip install 'oplat[openvino]'"
_PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}


def available(options: dict | None = None) -> str | None:
    return import_problem("openvino", "OpenVINO", _HINT)


def runtime(options: dict | None = None) -> tuple[str, str]:
    import openvino

    return "openvino", openvino.__version__.split("-")[0]


def fingerprint(options: dict | None = None) -> None:
    """None: this host times (rows record :func:`oplat.fingerprint.environment`)."""
    return None


def _config(options: dict, *, perf_count: bool) -> dict:
    precision = str(options.get("precision", "f32")).lower()
    if precision not in _PRECISIONS:
        from oplat.errors import OplatError

        raise OplatError(f"openvino precision {precision!r} unknown; use one of f32, bf16, f16")
    return {
        "INFERENCE_PRECISION_HINT": _PRECISIONS[precision],
        "INFERENCE_NUM_THREADS": int(options.get("threads", 1)),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "PERF_COUNT": perf_count,
    }


class OpenVinoSession(Session):
    def __init__(self, model, feeds: dict[str, np.ndarray], options: dict):
        self._model_bytes = model.SerializeToString()
        self._feeds = feeds
        self._options = options
        self._request = None

    def _compile(self, perf_count: bool):
        import openvino as ov

        core = ov.Core()
        try:
            ov_model = core.read_model(self._model_bytes, b"")
            compiled = core.compile_model(ov_model, "CPU", _config(self._options, perf_count=perf_count))
        except RuntimeError as exc:
            text = str(exc)
            if "Unsupported" in text or "not supported" in text or "No conversion rule" in text:
                raise Unsupported(text.strip().splitlines()[0][:300]) from None
            raise
        request = compiled.create_infer_request()
        for name, value in self._feeds.items():
            # Inputs are set once; run() then measures inference alone.
            request.set_tensor(name, ov.Tensor(np.ascontiguousarray(value)))
        return compiled, request

    def __enter__(self) -> OpenVinoSession:
        self._compiled, self._request = self._compile(perf_count=False)
        self._request.infer()
        return self

    def run(self) -> None:
        self._request.infer()

    def output(self) -> list[np.ndarray]:
        return [self._request.get_output_tensor(i).data.copy() for i in range(len(self._compiled.outputs))]

    def profile(self, runs: int) -> KernelProfile:
        _, request = self._compile(perf_count=True)
        for _ in range(2):
            request.infer()
        per_node: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        for _ in range(runs):
            request.infer()
            for info in request.get_profiling_info():
                if info.node_type in ("Parameter", "Result", "Constant"):
                    continue
                if str(info.status).endswith("NOT_RUN"):
                    continue
                key = (info.node_name, info.node_type, info.exec_type)
                per_node[key].append(info.real_time.total_seconds() * 1000.0)
        return summarize_profile(dict(per_node))

    def __exit__(self, *exc: object) -> None:
        self._request = self._compiled = None


def open(model, feeds: dict[str, np.ndarray], options: dict) -> OpenVinoSession:  # noqa: A001 (backend contract)
    return OpenVinoSession(model, feeds, options)
