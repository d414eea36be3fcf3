"""Cut each distinct kernel out of a network as a one-kernel model (``measure --model``).

A kernel (see :mod:`oplat.graph`) is the group of ONNX nodes the device runs as one. To
time it alone at its real shapes and attributes, the network (folded as a runtime folds
it) is cut at the kernel's edge with onnx-graphsurgeon — ``graph.inputs = [...];
graph.outputs = [...]; graph.cleanup()`` — so its initializers stay constants and the
activations crossing the edge become graph inputs. Those inputs are fed with the values
they really have inside the network on generated input: the network runs once in ONNX
Runtime with every cut tensor as an extra output, so a kernel sees activations in their
real range (a quantized kernel its real uint8 codes). A kernel that occurs several times
(one key) is timed on the inputs of all its occurrences, band by band along the image
rows (:attr:`KernelModel.timing_feeds`): some kernels run at a speed that depends on the
data (ORT's PRelu at 16×360×640: 6 ms on inputs of one sign, 25 ms on random signs;
ECBSR's FP32 PReLU 10.6 ms on its first occurrence's inputs, 13.0 ms on all five's), so
the first occurrence alone is not the network's average. Quantized codes are first
re-expressed in the scale and zero point of the first occurrence, which the cut keeps
(codes mean something only with their own).

Given the ONNX Runtime device, a kernel that ORT runs on NHWC data inside the network
(a PRelu or MaxPool between INT8 convs; :func:`oplat.backends.ort.inner_reorders`) is cut
a second time as its ``nhwc`` variant: the same model between Transposes ORT's transpose
optimizer cancels (:func:`oplat.onnxgraph.nhwc_context`), so it runs as in the network.
Where ORT keeps those Transposes (a uint8 MaxPool alone stays an NCHW MaxPool; inside the
network it becomes ORT's contrib ``NhwcMaxPool``, 20–30× faster here), the variant is that NHWC
node from ORT's optimized graph of the network, alone at the kernel's shapes, kept only if
its output equals the cut's. Where neither form times what the network runs, there is no
variant: the predictor prices the NCHW row and says the kernel runs NHWC in the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from oplat.build import inputs_for
from oplat.errors import OplatError
from oplat.fold import prepare
from oplat.graph import Kernel, net_graph
from oplat.onnxgraph import GraphIndex, infer_shapes, native_nhwc_model, nhwc_context, nhwc_feeds

__all__ = ["KernelModel", "extract_kernels", "kernel_model"]


@dataclass(frozen=True)
class KernelModel:
    """One distinct kernel of a network: its spec, the one-kernel model, its feeds (the
    real inputs of its first occurrence: the cut computes what that node computes in the
    network) and ``mixed``, where it occurs more than once, the feeds it is timed on."""

    kernel: Kernel
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    mixed: dict[str, np.ndarray] | None = None

    @property
    def spec(self):
        return self.kernel.spec

    @property
    def timing_feeds(self) -> dict[str, np.ndarray]:
        """What ``measure --model`` times the kernel on: the inputs of all its
        occurrences band by band (see the module's docstring), else its feeds."""
        return self.mixed if self.mixed is not None else self.feeds


def _typed(model: onnx.ModelProto) -> onnx.ModelProto:
    """Folded, shape-inferred, every node named (as :mod:`oplat.graph` names unnamed ones)."""
    typed = infer_shapes(prepare(model))
    for idx, node in enumerate(typed.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{idx}"
    return typed


def kernel_model(model: onnx.ModelProto, kernel: Kernel) -> onnx.ModelProto:
    """``kernel`` of the (folded, shape-inferred) ``model`` as a model of its own."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    missing = [t for t in (*kernel.inputs, *kernel.outputs) if t not in tensors]
    if missing:
        raise OplatError(f"kernel {'+'.join(kernel.nodes)}: tensors {missing} are not in the network")
    inputs = []
    for name in kernel.inputs:
        tensor = tensors[name]
        for producer in list(tensor.inputs):  # cut: the kernel's input is now fed from outside
            producer.outputs = [t for t in producer.outputs if t is not tensor]
        inputs.append(tensor)
    graph.inputs = inputs
    graph.outputs = [tensors[name] for name in kernel.outputs]
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    cut = gs.export_onnx(graph)
    cut.ir_version = model.ir_version
    del cut.opset_import[:]
    cut.opset_import.extend(model.opset_import)
    kept = {n.name for n in cut.graph.node}
    if kernel.members and not kept <= set(kernel.members):
        extra = sorted(kept - set(kernel.members))
        raise OplatError(f"kernel {'+'.join(kernel.nodes)}: the cut also holds {extra}; the kernel's inputs do not close it off")
    try:
        onnx.checker.check_model(cut)
    except onnx.checker.ValidationError as exc:
        raise OplatError(f"kernel {'+'.join(kernel.nodes)} does not cut into a valid model: {str(exc).splitlines()[0]}") from None
    return cut


def _real_values(model: onnx.ModelProto, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The values ``names`` take inside ``model`` on generated input (one ORT run)."""
    from oplat.backends.ort import exact_session

    wanted = [n for n in dict.fromkeys(names) if n not in {i.name for i in model.graph.input}]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    info = {vi.name: vi for vi in probe.graph.value_info}
    for name in wanted:
        if name not in have:
            probe.graph.output.append(info[name] if name in info else onnx.helper.make_empty_tensor_value_info(name))
    feeds = inputs_for(model)
    try:
        session = exact_session(probe)
        values = session.run(wanted, feeds) if wanted else []
    except Exception as exc:  # the network itself does not run: feed generated data instead
        raise OplatError(f"the network does not run in ONNX Runtime ({str(exc).splitlines()[0]}); cannot capture its activations") from None
    return {**feeds, **dict(zip(wanted, values))}


def extract_kernels(model: onnx.ModelProto, *, device=None) -> list[KernelModel]:
    """Every distinct kernel of ``model`` (by key, first occurrence), cut out as a model of
    its own with feeds of its real activations; with ``device`` the ONNX Runtime device,
    also the ``nhwc`` variant of each kernel ORT runs on NHWC data inside the network."""
    typed = _typed(model)
    net = net_graph(typed)
    occurrences: dict[str, list[Kernel]] = {}  # key -> the kernel's occurrences, first first
    for kernel in net.kernels:
        occurrences.setdefault(kernel.spec.key, []).append(kernel)
    layout = _layout(model, device)
    in_nhwc = {k.spec.key for k in net.kernels if layout.nhwc.intersection(k.nodes)}
    values = _real_values(typed, [t for k in net.kernels for t in k.inputs])
    index = GraphIndex.of(typed)
    out = []
    for group in occurrences.values():
        kernel = group[0]
        cut = kernel_model(typed, kernel)
        feeds = {name: np.ascontiguousarray(values[name]) for name in kernel.inputs}
        mixed = _mixed_feeds(group, values, index)
        out.append(KernelModel(kernel, cut, feeds, mixed))
        variant = _nhwc_variant(cut, feeds, kernel, layout.native, device) if kernel.spec.key in in_nhwc else None
        if variant is not None:
            nmixed = nhwc_feeds(mixed, variant[0]) if mixed is not None else None
            out.append(KernelModel(replace(kernel, spec=replace(kernel.spec, layout="nhwc")), *variant, nmixed))
    return out


def _dequantization(index: GraphIndex, kernel: Kernel, tensor: str) -> tuple[float, int] | None:
    """(scale, zero point) of the per-tensor DequantizeLinear of ``kernel`` that reads
    ``tensor``, with constant scale and zero point; None if there is none."""
    for node in index.consumers.get(tensor, ()):
        if node.op_type == "DequantizeLinear" and node.name in kernel.members:
            scale = index.const(node.input[1])
            zero = index.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
            if scale is not None and zero is not None and scale.size == 1 and zero.size == 1:
                return float(scale.reshape(())), int(zero.reshape(()))
    return None


def _requantized(codes: np.ndarray, source: tuple[float, int], target: tuple[float, int]) -> np.ndarray:
    """Quantized ``codes`` (scale, zero point ``source``) as the same real values in the
    codes of ``target``, clipped to the type's range."""
    info = np.iinfo(codes.dtype)
    real = (codes.astype(np.float64) - source[1]) * source[0]
    return np.clip(np.rint(real / target[0]) + target[1], info.min, info.max).astype(codes.dtype)


def _mixed_feeds(occurrences: list[Kernel], values: dict[str, np.ndarray], index: GraphIndex) -> dict[str, np.ndarray] | None:
    """Feeds of a kernel (its ``occurrences``, the first one cut) made of the real inputs
    of each occurrence in turn, one band of image rows each (axis 2 of NCHW tensors):
    data-dependent kernels are then timed at the network's mix of data. Quantized inputs
    are first expressed in the codes of the first occurrence's DequantizeLinear, which the
    cut keeps. None for a kernel that occurs once, or whose inputs are not image tensors of
    one shape at every occurrence, or are quantized other than per tensor."""
    if len(occurrences) < 2:
        return None
    kernel, mixed = occurrences[0], {}
    for j, name in enumerate(kernel.inputs):
        arrays = [values[k.inputs[j]] if j < len(k.inputs) else None for k in occurrences]
        first = arrays[0]
        if first.ndim != 4 or first.shape[2] < len(arrays) or any(
                a is None or a.shape != first.shape or a.dtype != first.dtype for a in arrays):
            return None
        if not np.issubdtype(first.dtype, np.floating):
            scales = [_dequantization(index, k, k.inputs[j]) for k in occurrences]
            if any(q is None for q in scales):
                return None
            arrays = [_requantized(a, q, scales[0]) for a, q in zip(arrays, scales)]
        bounds = np.linspace(0, first.shape[2], len(arrays) + 1).astype(int)
        mixed[name] = np.ascontiguousarray(np.concatenate(
            [a[:, :, lo:hi] for a, lo, hi in zip(arrays, bounds[:-1], bounds[1:])], axis=2))
    return mixed


def _nhwc_variant(cut, feeds, kernel: Kernel, native: dict, device):
    """(model, feeds) of ``kernel`` as ORT runs it on NHWC data inside its network: the
    cut between Transposes ORT cancels, or where ORT keeps them, the NHWC node ORT runs in
    the network (``native``) alone, used only if its output equals the cut's; None if
    neither times what the network runs."""
    context = nhwc_context(cut)
    if _cancelled(context, device):
        return context, nhwc_feeds(feeds, context)
    found = [native[n] for n in kernel.nodes if n in native]
    model = native_nhwc_model(cut, *found[0]) if len(found) == 1 else None
    if model is None:
        return None
    nfeeds = nhwc_feeds(feeds, model)
    return (model, nfeeds) if _same_outputs(cut, feeds, model, nfeeds) else None


def _same_outputs(cut, feeds, model, nfeeds) -> bool:
    """Whether NHWC ``model`` computes what ``cut`` does (outputs equal, transposed)."""
    from oplat.backends.ort import exact_session

    try:
        ref = exact_session(cut).run(None, feeds)
        got = exact_session(model).run(None, nfeeds)
    except Exception:  # noqa: BLE001 - ORT refuses the native form: no variant
        return False
    return all(a.ndim == 4 and np.array_equal(b, a.transpose(0, 2, 3, 1)) for a, b in zip(ref, got))


def _cancelled(context: onnx.ModelProto, device) -> bool:
    from oplat.backends.ort import runs_without_transposes

    try:
        return runs_without_transposes(context, device.options)
    except Exception:  # noqa: BLE001 - ORT refuses the variant: measure the NCHW cut only
        return False


def _layout(model: onnx.ModelProto, device):
    """What ``device`` does to layout inside ``model`` (ONNX Runtime only; an empty
    :class:`~oplat.backends.ort.InnerReorders` elsewhere)."""
    from oplat.backends.ort import InnerReorders, inner_reorders

    if device is None or device.backend != "ort":
        return InnerReorders(frozenset(), {})
    try:
        return inner_reorders(model, device.options)
    except Exception:  # ORT refuses the network: the NCHW cuts are still measured  # noqa: BLE001
        return InnerReorders(frozenset(), {})
