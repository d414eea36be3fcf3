"""Fold a network the way a runtime's graph optimizer does before it runs anything.

Older exporters write weights computed by constant sub-graphs (ConstantOfShape,
Reshape/Unsqueeze of constants, Shape→Gather chains), inference-time no-ops (Identity,
Dropout) and BatchNormalization after convolutions. ONNX Runtime's basic optimizations
(and OpenVINO's) fold all of them away, so a kernel table must price the network they
leave: constants folded (onnx-graphsurgeon, which evaluates constant sub-graphs with ONNX
Runtime), Identity and Dropout bypassed, a BatchNormalization that only follows a Conv
merged into its weights. A graph with none of these is returned unchanged (the same
object), so oplat's own networks are read exactly as built.
"""

from __future__ import annotations

import numpy as np
import onnx

from oplat.errors import OplatError

__all__ = ["prepare"]

_DROPPED = ("Identity", "Dropout")
#: Node types that only ever compute constants in an inference graph of static shapes.
_CONSTANT_MAKERS = ("Constant", "ConstantOfShape", "Shape", "Range")


def _needs_folding(model: onnx.ModelProto) -> bool:
    inits = {t.name for t in model.graph.initializer}
    produced_const = set(inits)
    for node in model.graph.node:
        if node.op_type in _DROPPED or node.op_type == "BatchNormalization" or node.op_type in _CONSTANT_MAKERS[1:]:
            return True
        if node.op_type == "Constant":
            produced_const.update(node.output)
            continue
        # a node all of whose inputs are constants computes a constant (e.g. Reshape of a weight)
        if node.input and all((not i) or i in produced_const for i in node.input) and node.op_type != "DequantizeLinear":
            return True
    return False


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` as a runtime runs it: constants folded, Identity/Dropout bypassed,
    Conv→BatchNormalization merged (see the module docstring)."""
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
