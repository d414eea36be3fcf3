"""Cut each distinct kernel out of a network as a one-kernel model (``measure --model``).

A kernel (see :mod:`oplat.graph`) is the group of ONNX nodes the device runs as one. To
time it alone at its real shapes and attributes, the network (folded as a runtime folds
it) is cut at the kernel's edge with onnx-graphsurgeon — ``graph.inputs = [...];
graph.outputs = [...]; graph.cleanup()`` — so its initializers stay constants and the
activations crossing the edge become graph inputs. Those inputs are fed with the values
they really have inside the network on generated input: the network runs once in ONNX
Runtime with every cut tensor as an extra output, so a kernel sees activations in their
real range (a quantized kernel its real uint8 codes).

Given the ONNX Runtime device, a kernel that ORT runs on NHWC data inside the network
(a PRelu or MaxPool between INT8 convs; :func:`oplat.backends.ort.inner_reorders`) is cut
a second time as its ``nhwc`` variant: the same model between Transposes ORT's transpose
optimizer cancels (:func:`oplat.onnxgraph.nhwc_context`), so it runs as in the network.
Where ORT keeps those Transposes (a uint8 MaxPool alone stays a MaxPool; inside the network
it becomes an NhwcMaxPool), the variant would not time what the network runs and is left
out: the predictor then prices the NCHW row and says the kernel runs NHWC in the network.
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
from oplat.onnxgraph import infer_shapes, nhwc_context, nhwc_feeds

__all__ = ["KernelModel", "extract_kernels", "kernel_model"]


@dataclass(frozen=True)
class KernelModel:
    """One distinct kernel of a network: its spec, the one-kernel model and its feeds."""

    kernel: Kernel
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]

    @property
    def spec(self):
        return self.kernel.spec


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
    distinct: dict[str, Kernel] = {}
    for kernel in net.kernels:
        distinct.setdefault(kernel.spec.key, kernel)
    nhwc_nodes = _nhwc_nodes(model, device)
    in_nhwc = {k.spec.key for k in net.kernels if nhwc_nodes.intersection(k.nodes)}
    values = _real_values(typed, [t for k in distinct.values() for t in k.inputs])
    out = []
    for kernel in distinct.values():
        cut = kernel_model(typed, kernel)
        feeds = {name: np.ascontiguousarray(values[name]) for name in kernel.inputs}
        out.append(KernelModel(kernel, cut, feeds))
        if kernel.spec.key in in_nhwc:
            context = nhwc_context(cut)
            if _cancelled(context, device):
                out.append(KernelModel(replace(kernel, spec=replace(kernel.spec, layout="nhwc")), context, nhwc_feeds(feeds, context)))
    return out


def _cancelled(context: onnx.ModelProto, device) -> bool:
    from oplat.backends.ort import runs_without_transposes

    try:
        return runs_without_transposes(context, device.options)
    except Exception:  # noqa: BLE001 - ORT refuses the variant: measure the NCHW cut only
        return False


def _nhwc_nodes(model: onnx.ModelProto, device) -> frozenset[str]:
    """Nodes ``device`` runs on NHWC data inside ``model`` (ONNX Runtime only)."""
    if device is None or device.backend != "ort":
        return frozenset()
    from oplat.backends.ort import inner_reorders

    try:
        return inner_reorders(model, device.options).nhwc
    except Exception:  # ORT refuses the network: the NCHW cuts are still measured  # noqa: BLE001
        return frozenset()
