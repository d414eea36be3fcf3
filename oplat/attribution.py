"""Which kernel of a prediction a runtime's profiled node belongs to: the per-kernel-type
split of a whole network's profile that ``oplat validate`` and ``benchmarks/seed_nets.py``
compare predictions with.

A runtime names its nodes after the ONNX nodes they run, mostly: ORT appends ``_nchwc`` /
``_token_N`` and names a fused node after the last op it absorbed (a Conv+Mul+Add is one
Conv node named after the Add); OpenVINO appends ``/WithoutBiases`` or ``_N`` and
sometimes names a node after an op it folded away (``Multiply_13485``: a conv with a Mul
folded in; ``ConvolutionBackpropData_11601``). The rules, in order:

1. a node whose name (stripped of those suffixes) is a kernel's node, member or output
   belongs to that kernel;
2. a node of a runtime type that is one ONNX family (``Interpolate`` → Resize, …), where
   the network's kernels of that family are all of one type, belongs to the first of them;
3. a convolution-type node still unowned is the first conv kernel, in graph order, that no
   profiled node is named after;
4. a convolution-type node named after a kernel that is no conv is the conv upstream of
   that kernel (the absorbed op shows its predicted time against nothing measured);
5. layout nodes (reorders) are ``(layout)``, the rest ``(unattributed)``.
"""

from __future__ import annotations

import re
from collections import defaultdict

__all__ = ["CONV_RUNTIME_OPS", "attribute_profile", "kernel_type"]

_SUFFIX = re.compile(r"(_nchwc|_token_\d+|/WithoutBiases|_\d+)$")

#: Runtime node types that are a convolution / matrix product (what a Mul or Add the runtime
#: fused into its producer shows up as, under the fused op's name).
CONV_RUNTIME_OPS = frozenset({
    "Conv", "FusedConv", "NhwcFusedConv", "QLinearConv", "Convolution", "GroupConvolution", "ConvTranspose",
    "Deconvolution", "GroupDeconvolution", "MatMul", "FullyConnected", "Gemm", "FusedGemm",
})
#: Runtime node types -> the ONNX op they run (for nodes whose names are the runtime's own).
_RUNTIME_FAMILY = {"ConvolutionBackpropData": "ConvTranspose", "GroupConvolutionBackpropData": "ConvTranspose",
                   "Deconvolution": "ConvTranspose", "Interpolate": "Resize", "FullyConnected": "Gemm",
                   "LRN": "LRN", "Lrn": "LRN", "SoftMax": "Softmax", "Softmax": "Softmax", "Pooling": "MaxPool"}
#: Built-in families -> the ONNX op they are.
_SPEC_FAMILY = {"conv": "Conv", "conv+relu": "Conv", "resize": "Resize", "add": "Add", "concat": "Concat",
                "relu": "Relu", "clip": "Clip", "depth_to_space": "DepthToSpace"}


def kernel_type(spec, net_precision: str) -> str:
    """A kernel's type: the built-in family's op, or a node kernel's op types (``PRelu``,
    ``Conv+LeakyRelu``), with its precision when it is not the network's (a float island
    of an INT8 network: ``PRelu (fp32)``)."""
    kind = getattr(spec, "kind", None) or spec.op
    return kind if spec.precision == net_precision else f"{kind} ({spec.precision})"


def _conv_like(spec) -> bool:
    return spec.op in ("conv", "conv+relu") or any(o in ("Conv", "ConvTranspose", "Gemm", "MatMul") for o in getattr(spec, "ops", ()))


def _owner_of(name: str, owner: dict):
    for _ in range(6):
        if name in owner:
            return owner[name]
        stripped = _SUFFIX.sub("", name)
        if stripped == name:
            return None
        name = stripped
    return None


class _Graph:
    """The prediction's kernels as a graph: who owns a node name, who produces a tensor."""

    def __init__(self, costs: list, precision: str) -> None:
        self.costs, self.precision = costs, precision
        self.owner: dict[str, int] = {}
        self.producer: dict[str, int] = {}
        for i, cost in enumerate(costs):
            for node in (*cost.kernel.nodes, *cost.kernel.members):
                self.owner.setdefault(node, i)
            for t in cost.kernel.outputs:
                self.producer[t] = i
        for i, cost in enumerate(costs):  # a folded-away node's name lives on as its output (ORT names the fused node so)
            for t in cost.kernel.outputs:
                self.owner.setdefault(t, i)

    def kind(self, i: int) -> str:
        return kernel_type(self.costs[i].kernel.spec, self.precision)

    def upstream_conv(self, i: int) -> int:
        seen, frontier = {i}, [i]
        for _ in range(4):
            nxt = []
            for j in frontier:
                for t in self.costs[j].kernel.inputs:
                    p = self.producer.get(t)
                    if p is None or p in seen:
                        continue
                    if _conv_like(self.costs[p].kernel.spec):
                        return p
                    seen.add(p)
                    nxt.append(p)
            frontier = nxt
        return i

    def by_family(self) -> dict[str, int]:
        """ONNX family -> its first kernel, for families whose kernels are all of one type."""
        families: dict[str, set[str]] = defaultdict(set)
        first_of: dict[tuple[str, str], int] = {}
        for i, cost in enumerate(self.costs):
            spec = cost.kernel.spec
            for family in {_SPEC_FAMILY.get(spec.op, spec.op), *getattr(spec, "ops", ())}:
                families[family].add(self.kind(i))
                first_of.setdefault((family, self.kind(i)), i)
        return {f: first_of[(f, next(iter(kinds)))] for f, kinds in families.items() if len(kinds) == 1}


def _node_kind(graph: _Graph, node: dict, found: int | None, by_family: dict[str, int], unseen: list[int]) -> str:
    if node["layout"]:
        return "(layout)"
    i = found
    if i is None:
        i = by_family.get(_RUNTIME_FAMILY.get(node["op_type"]))
    if i is None and node["op_type"] in CONV_RUNTIME_OPS and unseen:
        i = unseen.pop(0)
    if i is None:
        return "(unattributed)"
    if node["op_type"] in CONV_RUNTIME_OPS and not _conv_like(graph.costs[i].kernel.spec):
        i = graph.upstream_conv(i)
    return graph.kind(i)


def attribute_profile(pred, profile, precision: str) -> dict[str, list[float]]:
    """type -> [predicted compute ms, profiled ms] of a network's prediction ``pred`` and
    its whole-network runtime ``profile`` (a :class:`~oplat.records.KernelProfile`, or
    None: the predicted side only); types as :func:`kernel_type`, plus ``(layout)`` and
    ``(unattributed)`` for profiled nodes no kernel owns."""
    costs = list(pred.kernels)
    graph = _Graph(costs, precision)
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for i, cost in enumerate(costs):
        out[graph.kind(i)][0] += cost.compute_ms
    reorder = sum(c.reorder_ms for c in costs)  # the in-network reorders priced (ORT)
    if reorder:
        out["(layout)"][0] += reorder
    if profile is None:
        return dict(out)
    by_family = graph.by_family()
    found = [None if n["layout"] else _owner_of(n["name"], graph.owner) for n in profile.nodes]
    unseen = sorted({i for i, c in enumerate(costs) if _conv_like(c.kernel.spec)} - set(found))
    for node, i in zip(profile.nodes, found, strict=True):
        out[_node_kind(graph, node, i, by_family, unseen)][1] += node["median_ms"]
    return dict(out)
