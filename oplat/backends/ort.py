"""ONNX Runtime, CPU execution provider (the ``cpu`` device).

``run()`` goes through IOBinding with preallocated outputs, so one run is the runtime's
work and not Python's allocation of result arrays. ``profile()`` uses a second session
with ORT's profiler on (profiling slows the timed runs, so they never share a session)
and splits node times into the op's own kernels and the NCHW↔NCHWc reorders ORT wraps
around a lone conv.
"""

from __future__ import annotations

import builtins
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from oplat.backends import KernelProfile, Session, Unsupported, import_problem, summarize_profile

__all__ = ["MODEL_FORMATS", "InnerReorders", "available", "exact_session", "fingerprint", "inner_reorders", "nchwc_block",
           "nchwc_channels", "ran_nchwc", "runtime", "runs_without_transposes", "open"]

#: Model formats :func:`open` takes.
MODEL_FORMATS: tuple[str, ...] = ("onnx",)

_HINT = "install it with: pip install onnxruntime"


def exact_session(model, threads: int = 1):
    """An InferenceSession for checking *outputs*, not for timing: on x86 CPUs without
    VNNI (AVX2, AVX-512 without VNNI) ORT's default U8S8 int8 kernels add pairs of
    u8×s8 products in 16 bits and saturate (measured here: up to 8 output steps off on
    an AVX2-only host); ``session.x64quantprecision`` switches them to exact U8U8. The
    latency tables keep ORT's default, which is what a deployment runs."""
    import onnxruntime as ort

    so = _session_options({"threads": threads})
    so.add_session_config_entry("session.x64quantprecision", "1")
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def available(options: dict | None = None) -> str | None:
    return import_problem("onnxruntime", "ONNX Runtime", _HINT)


def runtime(options: dict | None = None) -> tuple[str, str]:
    import onnxruntime

    return "onnxruntime", onnxruntime.__version__


def fingerprint(options: dict | None = None) -> None:
    """None: this host times (rows record :func:`oplat.fingerprint.environment`)."""
    return None


_OPT_LEVELS = ("disable", "basic", "extended", "all")


def _session_options(options: dict, *, profile_dir: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(options.get("threads", 1))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = options.get("graph_optimization", "all")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.log_severity_level = 3
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "ort")
    return so


def _new_session(model_bytes: bytes, options: dict, profile_dir: str | None = None):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            model_bytes, _session_options(options, profile_dir=profile_dir), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own exception types per failure kind
        text = str(exc)
        if "NOT_IMPLEMENTED" in text or "Could not find an implementation" in text:
            raise Unsupported(text.splitlines()[0][:300]) from None
        raise


@dataclass(frozen=True)
class InnerReorders:
    """The layout changes ORT runs *inside* one network, by the network's own tensor names:
    NCHW↔NCHWc reorders (FP32 convs run blocked) and the Transposes its layout transformer
    inserts (INT8 QLinearConv runs NHWC). ``outputs``: the tensors such a node writes (a
    blocked / NHWC op's result that a plain-layout op reads, or a graph output);
    ``inputs``: the tensors such nodes read (a plain-layout result that a blocked / NHWC
    op reads), with how many read each; ``inner``: how many run between two inserted
    tensors (no tensor of the network to charge them to). ``nhwc``: the network's own
    nodes (by name) that ORT runs on NHWC data inside it although alone they would run
    NCHW (a PRelu, MaxPool, Resize or concat between INT8 convs; the convs themselves
    run NHWC alone too, between Transposes their rows show)."""

    outputs: frozenset[str]
    inputs: dict[str, int]
    inner: int = 0
    nhwc: frozenset[str] = frozenset()
    #: network node name → the ORT-internal NHWC node it runs as (``com.microsoft``
    #: ``NhwcMaxPool`` for a uint8 MaxPool between INT8 convs) with the initializers it
    #: reads: the kernel ORT runs there, which no standard-ONNX model of the op reaches
    #: alone (a lone uint8 MaxPool stays NCHW even between Transposes).
    native: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.outputs) + sum(self.inputs.values()) + self.inner


def inner_reorders(model, options: dict | None = None) -> InnerReorders:
    """Where ORT's NCHWc layout transformer leaves reorders in ``model`` (an ONNX
    ModelProto), read from the optimized graph ORT itself writes for this host (level
    ``all``, where the transformer runs). Another ISA has another NCHWc block (8 floats on
    AVX2, 16 on AVX-512), so the predictor counts a reorder only where the kernel's own
    table row shows the runtime ran that kernel blocked."""
    options = dict(options or {})
    if options.get("graph_optimization", "all") != "all":
        return InnerReorders(frozenset(), {})
    optimized = _optimized_graph(model, options)
    names = {n.name for n in model.graph.node}
    tensors = {t for n in model.graph.node for t in (*n.input, *n.output)} | {i.name for i in model.graph.input}
    outputs, inputs, inner = set(), defaultdict(int), 0
    nhwc = _nhwc_nodes(optimized, names)
    native = _native_nhwc(optimized, names)
    for node in optimized.graph.node:
        inserted = node.op_type in ("ReorderInput", "ReorderOutput") or (node.op_type == "Transpose" and node.name not in names)
        if not inserted or not node.input or not node.output:
            continue
        if node.output[0] in tensors:
            outputs.add(node.output[0])
        elif node.input[0] in tensors:
            inputs[node.input[0]] += 1
        else:
            inner += 1
    return InnerReorders(frozenset(outputs), dict(inputs), inner, nhwc, native)


def runs_without_transposes(model, options: dict | None = None) -> bool:
    """Whether ORT's optimized graph of ``model`` has no Transpose left (an
    :func:`oplat.onnxgraph.nhwc_context` model whose Transposes ORT pushed through the
    kernel and cancelled, so the kernel runs NHWC as inside its network)."""
    return all(n.op_type != "Transpose" for n in _optimized_graph(model, options).graph.node)


def _optimized_graph(model, options: dict | None):
    """The graph ORT optimizes ``model`` into on this host (1 thread, ``options``' level)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="oplat-ort-opt-") as tmp:
        so = _session_options({**dict(options or {}), "threads": 1})
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return onnx.load(so.optimized_model_filepath, load_external_data=False)


def nchwc_block(cpu_isa: str) -> int | None:
    """The NCHWc block (floats) of ORT's MLAS on a CPU with these flags (``cpu_isa`` of a
    row's fingerprint): 16 with AVX-512F, 8 with AVX2; None where MLAS has no NCHWc
    kernels (its layout transformer then leaves FP32 convs alone)."""
    flags = set(cpu_isa.split())
    if "avx512f" in flags:
        return 16
    return 8 if "avx2" in flags else None


def nchwc_channels(c_in: int, c_out: int, block: int) -> tuple[int, int] | None:
    """(input, output channels) a plain FP32 Conv (group 1) computes at once ORT's NCHWc
    layout transformer has taken it: the output padded to the block, the input too when
    it holds a block or more. A conv whose input of a block or more is not a multiple of 4
    stays a plain NCHW Conv (im2col + SGEMM): None. Read from the weights ORT's optimized
    graph gives the NCHWc conv (a 28→28 conv computes as 32→32, 16→1 as 16→8, 3→27 as
    3→32; 27→27 and 10→10 stay plain); ``tests/test_predict.py`` checks this rule
    against ORT on the host it runs on."""
    if c_in >= block and c_in % 4:
        return None

    def pad(c: int) -> int:
        return -(-c // block) * block

    return (pad(c_in) if c_in >= block else c_in), pad(c_out)


def ran_nchwc(kernels) -> bool | None:
    """Whether a lone conv's per-node profile (a row's ``kernels``) shows ORT ran it as
    an NCHWc conv (its node renamed ``…_nchwc``, or Reorder nodes around it); None
    without a profile."""
    if not kernels:
        return None
    return any(str(k.get("name", "")).endswith("_nchwc") or k.get("op_type") in ("ReorderInput", "ReorderOutput")
               for k in kernels)


#: Ops that run NHWC even alone (their lone rows show the Transposes around them).
_NHWC_ALONE = ("QLinearConv", "Conv", "ConvInteger", "FusedConv", "NhwcConv")


def _original_name(name: str, names: set[str]) -> str | None:
    """The network node an optimized node stands for (ORT appends ``_token_N`` to nodes
    it rewrites: ``maxpool1_token_58`` is ``maxpool1`` run as NhwcMaxPool)."""
    if name in names:
        return name
    base = name.split("_token_")[0]
    return base if base in names else None


def _native_nhwc(optimized, names: set[str]) -> dict:
    """Network node name → (ORT's ``Nhwc*`` contrib node standing for it, the initializers
    that node reads) in the optimized graph."""
    inits = {t.name: t for t in optimized.graph.initializer}
    out = {}
    for node in optimized.graph.node:
        original = _original_name(node.name, names)
        if original and node.domain == "com.microsoft" and node.op_type.startswith("Nhwc"):
            out[original] = (node, [inits[t] for t in node.input if t in inits])
    return out


def _nhwc_nodes(optimized, names: set[str]) -> frozenset[str]:
    """Names of the network's nodes whose data input is NHWC in ORT's optimized graph:
    layouts propagate from the graph inputs (NCHW) through the inserted Transposes
    (perm 0,2,3,1 to NHWC, 0,3,1,2 back), channels-last convs and Nhwc* ops (NHWC out),
    and every other op (its data input's layout)."""
    from onnx import helper as onnx_helper

    inits = {t.name for t in optimized.graph.initializer}
    layout: dict[str, str] = {}
    found = set()
    for node in optimized.graph.node:
        data = [t for t in node.input if t and t not in inits]
        here = layout.get(data[0], "nchw") if data else "nchw"
        attrs = {a.name: onnx_helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Transpose":
            perm = list(attrs.get("perm", []))
            out = "nhwc" if perm == [0, 2, 3, 1] and here == "nchw" else "nchw" if perm == [0, 3, 1, 2] and here == "nhwc" else "other"
        elif attrs.get("channels_last") == 1 or node.op_type.startswith("Nhwc"):
            out = "nhwc"
        else:
            out = here
        original = _original_name(node.name, names)
        if here == "nhwc" and original and node.op_type not in _NHWC_ALONE and node.op_type != "Transpose":
            found.add(original)
        for t in node.output:
            layout[t] = out
    return frozenset(found)


class OrtSession(Session):
    def __init__(self, model, feeds: dict[str, np.ndarray], options: dict):
        self._model_bytes = model.SerializeToString()
        self._feeds = feeds
        self._options = options
        self._session = None
        self._binding = None
        self._outputs: list[np.ndarray] = []

    def __enter__(self) -> OrtSession:
        sess = _new_session(self._model_bytes, self._options)
        binding = sess.io_binding()
        for name, value in self._feeds.items():
            binding.bind_cpu_input(name, value)
        # Run once to learn output shapes and types, then bind preallocated buffers.
        first = sess.run(None, self._feeds)
        for meta, value in zip(sess.get_outputs(), first):
            buf = np.empty_like(value)
            self._outputs.append(buf)
            binding.bind_output(
                meta.name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data
            )
        self._session, self._binding = sess, binding
        return self

    def run(self) -> None:
        self._session.run_with_iobinding(self._binding)

    def output(self) -> list[np.ndarray]:
        return self._outputs

    def profile(self, runs: int) -> KernelProfile:
        with tempfile.TemporaryDirectory(prefix="oplat-ort-prof-") as tmp:
            sess = _new_session(self._model_bytes, self._options, profile_dir=tmp)
            warmup = 2
            for _ in range(warmup + runs):
                sess.run(None, self._feeds)
            path = sess.end_profiling()
            with builtins.open(path, encoding="utf-8") as f:
                events = json.load(f)
        per_node: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        for ev in events:
            if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
                continue
            args = ev.get("args", {})
            op = args.get("op_name", "?")
            key = (ev["name"][: -len("_kernel_time")], op, args.get("provider", ""))
            per_node[key].append(ev["dur"] / 1000.0)
        for key in per_node:
            per_node[key] = per_node[key][warmup:]
        return summarize_profile(dict(per_node))

    def __exit__(self, *exc: object) -> None:
        self._session = self._binding = None
        self._outputs = []


def open(model, feeds: dict[str, np.ndarray], options: dict) -> OrtSession:  # noqa: A001 (backend contract)
    return OrtSession(model, feeds, options)
