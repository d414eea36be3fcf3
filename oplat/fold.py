"""Fold a network the way a runtime's graph optimizer does before it runs anything.

Older exporters write weights computed by constant sub-graphs (ConstantOfShape,
Reshape/Unsqueeze of constants, Shape→Gather chains), inference-time no-ops (Identity,
Dropout) and BatchNormalization after convolutions. ONNX Runtime's basic optimizations
(and OpenVINO's) fold all of them away, so a kernel table must price the network they
leave: constants folded (onnx-graphsurgeon, which evaluates constant sub-graphs with ONNX
Runtime), Identity and Dropout bypassed, a BatchNormalization that only follows a Conv
merged into its weights, and so is a Mul or Add by a constant scalar or per-channel
tensor (ESRGAN's 0.2 residual scaling: ORT's ConvMulFusion). A graph with none of these
is returned unchanged (the same object), so oplat's own networks are read exactly as built.
"""

from __future__ import annotations

import numpy as np
import onnx

from oplat.errors import OplatError

__all__ = ["prepare"]

_DROPPED = ("Identity", "Dropout")
#: Element-wise ops by a constant that a runtime folds into the Conv before them.
_AFFINE = ("Mul", "Add")
#: Node types that only ever compute constants in an inference graph of static shapes.
_CONSTANT_MAKERS = ("Constant", "ConstantOfShape", "Shape", "Range")


def _needs_folding(model: onnx.ModelProto) -> bool:
    inits = {t.name for t in model.graph.initializer}
    produced_const = set(inits)
    conv_out: set[str] = set()
    for node in model.graph.node:
        if node.op_type in _DROPPED or node.op_type == "BatchNormalization" or node.op_type in _CONSTANT_MAKERS[1:]:
            return True
        if node.op_type == "Constant":
            produced_const.update(node.output)
            continue
        if node.op_type == "Conv":
            conv_out.update(node.output)
        # Conv → Mul / Add by a constant: folded into the conv's weights and bias
        if node.op_type in _AFFINE and len(node.input) == 2 and any(i in conv_out for i in node.input) \
                and any(i in produced_const for i in node.input):
            return True
        # a node all of whose inputs are constants computes a constant (e.g. Reshape of a weight)
        if node.input and all((not i) or i in produced_const for i in node.input) and node.op_type != "DequantizeLinear":
            return True
    return False


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` as a runtime runs it: constants folded, Identity/Dropout bypassed,
    Conv→BatchNormalization and Conv→Mul/Add by a constant merged (see the module docstring)."""
    if not _needs_folding(model):
        return model
    import onnx_graphsurgeon as gs

    try:
        graph = gs.import_onnx(model)
        _bypass(graph)
        graph.fold_constants()
        graph.cleanup().toposort()
        _merge_batchnorm(graph)
        graph.cleanup().toposort()
        _merge_affine(graph)
        graph.cleanup().toposort()
        folded = gs.export_onnx(graph)
    except Exception as exc:  # graphsurgeon and ORT raise several types on odd graphs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OplatError(f"could not fold the network's constants ({first}); export it with constant folding on") from None
    folded.ir_version = model.ir_version
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    return folded


def _bypass(graph) -> None:
    """Remove Identity and Dropout (inference: output 0 is the input)."""
    for node in [n for n in graph.nodes if n.op in _DROPPED]:
        src, dst = node.inputs[0], node.outputs[0]
        if dst in graph.outputs:
            # keep the graph output's name: the producer writes it directly
            for producer in list(src.inputs):
                producer.outputs = [dst if t is src else t for t in producer.outputs]
            for consumer in list(src.outputs):
                if consumer is not node:
                    consumer.inputs = [dst if t is src else t for t in consumer.inputs]
            if src in graph.inputs:  # input → Identity → output: nothing to bypass into
                continue
        else:
            for consumer in list(dst.outputs):
                consumer.inputs = [src if t is dst else t for t in consumer.inputs]
        node.outputs.clear()
        node.inputs.clear()


def _merge_batchnorm(graph) -> None:
    """Conv (constant weights) → BatchNormalization with no other reader: one Conv."""
    import onnx_graphsurgeon as gs

    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        x = bn.inputs[0]
        conv = x.inputs[0] if len(x.inputs) == 1 else None
        if conv is None or conv.op != "Conv" or len(x.outputs) != 1 or x in graph.outputs:
            continue
        params = bn.inputs[1:5]
        if not all(isinstance(p, gs.Constant) for p in params) or not isinstance(conv.inputs[1], gs.Constant):
            continue
        gamma, beta, mean, var = (np.asarray(p.values, np.float64) for p in params)
        eps = float(bn.attrs.get("epsilon", 1e-5))
        factor = gamma / np.sqrt(var + eps)
        w = np.asarray(conv.inputs[1].values)
        b = np.asarray(conv.inputs[2].values, np.float64) if len(conv.inputs) > 2 else np.zeros(w.shape[0])
        new_w = (w * factor.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
        new_b = ((b - mean) * factor + beta).astype(w.dtype)
        conv.inputs = [conv.inputs[0], gs.Constant(f"{conv.name}_w_bn", new_w), gs.Constant(f"{conv.name}_b_bn", new_b)]
        y = bn.outputs[0]
        conv.outputs = [y]
        bn.outputs.clear()
        bn.inputs.clear()


def _merge_affine(graph) -> None:
    """Conv (constant weights) → Mul / Add by a constant scalar or per-output-channel
    tensor, with no other reader of the conv: one Conv (ONNX Runtime's ConvMulFusion /
    ConvAddFusion and OpenVINO's do the same, so the Mul or Add never runs)."""
    import onnx_graphsurgeon as gs

    for node in [n for n in graph.nodes if n.op in _AFFINE]:
        if len(node.inputs) != 2:
            continue
        x, k = node.inputs
        if isinstance(x, gs.Constant):
            x, k = k, x
        conv = x.inputs[0] if len(x.inputs) == 1 else None
        if conv is None or conv.op != "Conv" or not isinstance(k, gs.Constant) or len(x.outputs) != 1 or x in graph.outputs:
            continue
        weight = conv.inputs[1] if len(conv.inputs) > 1 else None
        bias = conv.inputs[2] if len(conv.inputs) > 2 else None
        if not isinstance(weight, gs.Constant) or (bias is not None and not isinstance(bias, gs.Constant)):
            continue
        w = np.asarray(weight.values)
        c_out = w.shape[0]
        value = np.asarray(k.values)
        if not np.issubdtype(value.dtype, np.floating) or value.size not in (1, c_out) or value.ndim > w.ndim:
            continue
        if value.size == c_out and c_out > 1 and (value.ndim < 3 or value.shape[-3] != c_out or any(d != 1 for d in value.shape[-2:])
                                                 or value.ndim > 4 or (value.ndim == 4 and value.shape[0] != 1)):
            continue  # not one value per output channel (N, C, 1, 1 or C, 1, 1)
        per_channel = np.broadcast_to(value.reshape(-1).astype(np.float64), (c_out,))
        b = np.asarray(bias.values, np.float64) if bias is not None else np.zeros(c_out)
        if node.op == "Mul":
            new_w = (w * per_channel.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
            new_b = (b * per_channel).astype(w.dtype)
        else:
            new_w, new_b = w, (b + per_channel).astype(w.dtype)
        conv.inputs = [conv.inputs[0], gs.Constant(f"{node.name}_w_fused", new_w), gs.Constant(f"{node.name}_b_fused", new_b)]
        y = node.outputs[0]
        conv.outputs = [y]
        node.outputs.clear()
        node.inputs.clear()
