"""LiteRT (TensorFlow Lite) on the CPU through XNNPACK, in process (the ``litert`` device).

The ONNX model is converted with :func:`oplat.tflite.tflite_from_onnx` (no TensorFlow):
the ``.tflite`` model is NHWC, and INT8 models run int8 activations with int8 I/O where
the ONNX model has uint8 I/O. The session converts the ONNX feeds once (N, C, H, W →
N, H, W, C; uint8 → int8) and :meth:`LiteRtSession.output` converts back, so callers see
ONNX layouts and dtypes on both sides.

XNNPACK is LiteRT's default CPU delegate: ``Interpreter`` applies it on its own with the
default op resolver (``OpResolverType.AUTO``), for FP32 and for int8 (QS8) graphs alike,
and gives it ``num_threads``; no explicit delegate option is needed. Ops XNNPACK does not
take (in ai-edge-litert 2.3: RESIZE_NEAREST_NEIGHBOR, CONCATENATION of more than 5
inputs, int8 RELU/RELU6/RELU_N1_TO_1, RELU_0_TO_1) run on LiteRT's builtin kernels in
between the delegated parts.

Options: ``threads`` (default 1); ``xnnpack`` (default true; false runs every op on
LiteRT's builtin kernels, ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``).

``profile()`` returns None: the Python API has no per-op profiler (LiteRT's op profiling
lives in the C++ ``benchmark_model`` tool).
"""

from __future__ import annotations

import numpy as np

from oplat.backends import KernelProfile, Session, Unsupported

__all__ = ["MODEL_FORMATS", "available", "fingerprint", "runtime", "open"]

#: Model formats :func:`open` takes (it converts the ONNX model to .tflite itself).
MODEL_FORMATS: tuple[str, ...] = ("onnx",)

_HINT = "install it with: pip install 'oplat[litert]'"
#: ONNX element type → the dtype :meth:`LiteRtSession.output` returns.
_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8}  # TensorProto FLOAT, UINT8, INT8


def available(options: dict | None = None) -> str | None:
    import importlib.util

    try:
        # find_spec looks for the module without loading the interpreter's native library.
        found = importlib.util.find_spec("ai_edge_litert.interpreter") is not None
    except (ImportError, ValueError):  # parent package missing or blocked in sys.modules
        found = False
    if not found:
        return f"LiteRT is not installed; {_HINT}"
    return None


def runtime(options: dict | None = None) -> tuple[str, str]:
    from importlib import metadata

    try:
        return "litert", metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:  # a source build without dist metadata
        import ai_edge_litert

        return "litert", ai_edge_litert.__version__


def fingerprint(options: dict | None = None) -> None:
    """None: this host times (rows record :func:`oplat.fingerprint.environment`)."""
    return None


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off")
    return bool(value)


class LiteRtSession(Session):
    def __init__(self, model, feeds: dict[str, np.ndarray], options: dict):
        from oplat.tflite import tflite_from_onnx

        self._content = tflite_from_onnx(model)  # OplatError for an op outside the vocabulary
        self._onnx_feeds = feeds
        self._options = options
        self._out_dtypes = [_ONNX_DTYPES.get(o.type.tensor_type.elem_type) for o in model.graph.output]
        self._interpreter = None
        self._invoke = None
        self._outputs: list[int] = []

    def __enter__(self) -> LiteRtSession:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from oplat.errors import OplatError
        from oplat.tflite import tflite_feeds

        resolver = (
            OpResolverType.AUTO
            if _flag(self._options.get("xnnpack", True))
            else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        try:
            interpreter = Interpreter(
                model_content=self._content,
                num_threads=int(self._options.get("threads", 1)),
                experimental_op_resolver_type=resolver,
            )
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            text = str(exc)
            if "Didn't find op" in text or "not supported" in text.lower():
                raise Unsupported(text.strip().splitlines()[0][:300]) from None
            raise
        feeds = tflite_feeds(self._onnx_feeds)
        for detail in interpreter.get_input_details():
            name = detail["name"]
            if name not in feeds:
                raise OplatError(f"no feed for the model's input {name!r}; feeds: {', '.join(feeds)}")
            value = feeds[name]
            if value.dtype != detail["dtype"] or tuple(value.shape) != tuple(detail["shape"]):
                raise OplatError(
                    f"feed {name!r} is {value.dtype} {tuple(value.shape)} after NHWC conversion; "
                    f"the .tflite input is {np.dtype(detail['dtype'])} {tuple(detail['shape'])}"
                )
            # Inputs are set once: graph inputs keep their buffers across invokes, so
            # run() is the inference alone.
            interpreter.set_tensor(detail["index"], value)
        self._outputs = [d["index"] for d in interpreter.get_output_details()]
        # The first invoke does one-time work (buffer setup, XNNPACK's lazy init); keep
        # it out of the timed runs.
        interpreter.invoke()
        self._interpreter, self._invoke = interpreter, interpreter.invoke
        return self

    def run(self) -> None:
        self._invoke()

    def output(self) -> list[np.ndarray]:
        """The outputs in the ONNX model's layout (N, C, H, W) and element types."""
        from oplat.tflite import onnx_like_output

        return [
            onnx_like_output(self._interpreter.get_tensor(index), dtype)
            for index, dtype in zip(self._outputs, self._out_dtypes)
        ]

    def profile(self, runs: int) -> KernelProfile | None:
        return None

    def __exit__(self, *exc: object) -> None:
        self._interpreter = self._invoke = None
        self._outputs = []


def open(model, feeds: dict[str, np.ndarray], options: dict) -> LiteRtSession:  # noqa: A001 (backend contract)
    return LiteRtSession(model, feeds, options)
