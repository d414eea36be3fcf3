"""An ArchSpec as a PyTorch module — the same network as :func:`oplat.arch.model_from_arch`
— and the fake quantization that mirrors oplat's QDQ INT8 form.

One architecture, two back-ends: :class:`ArchNet` runs the convs of
:func:`oplat.arch.convs` in graph order with the same anchor (the input repeated s²
times along channels: R, G, B, R, G, B, …), the same DCR depth-to-space (ONNX's default
and TensorFlow's, *not* ``nn.PixelShuffle``'s CRD) and the same final Clip.
:meth:`ArchNet.onnx_model` exports by writing the module's weights into the graph
``model_from_arch`` builds (so the exported graph is that one, node for node), and
:meth:`ArchNet.load_onnx` reads them back. ``folded`` keeps the carried identity taps as
fixed buffers: only the declared layers' weights are trained.

:class:`FakeQuant` simulates what :func:`oplat.arch.quantize_qdq` emits and ONNX Runtime
runs: every activation the QDQ graph quantizes (its scale and zero point read from a QDQ
model, :func:`oplat.train.onnxio.activation_qparams`) becomes a uint8 asymmetric
fake-quant, every conv weight an int8 symmetric per-output-channel fake-quant
(scale = max|w| / 127, as ORT computes it from the current weights), and every bias an
int32 one at scale input_scale × weight_scale; gradients pass straight through (STE),
and are zero where a value is clipped.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from oplat.arch import ArchSpec, convs, model_from_arch
from oplat.errors import OplatError

__all__ = ["ArchNet", "FakeQuant", "depth_to_space_dcr"]


def depth_to_space_dcr(x: torch.Tensor, s: int) -> torch.Tensor:
    """ONNX DepthToSpace, mode DCR: channel (i·s + j)·C + c goes to sub-pixel (i, j) of
    output channel c."""
    n, c, h, w = x.shape
    x = x.reshape(n, s, s, c // (s * s), h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, c // (s * s), h * s, w * s)


class FakeQuant:
    """QDQ-matching fake quantization (see the module text); ``act`` maps each quantized
    activation's FP32-graph name to (scale, zero point)."""

    def __init__(self, act: dict[str, tuple[float, int]]) -> None:
        self.act_params = dict(act)

    def scale(self, name: str) -> float:
        return self.act_params[name][0]

    def act(self, name: str, t: torch.Tensor) -> torch.Tensor:
        if name not in self.act_params:
            return t
        scale, zp = self.act_params[name]
        return torch.fake_quantize_per_tensor_affine(t, scale, zp, 0, 255)

    @staticmethod
    def weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fake-quantized weight, per-output-channel scale)."""
        absmax = w.detach().abs().amax(dim=(1, 2, 3))
        scale = torch.where(absmax > 0, absmax / 127.0, torch.ones_like(absmax)).float()
        zp = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -127, 127), scale

    @staticmethod
    def bias(b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return b + (torch.round(b / scale) * scale - b).detach()


class ArchNet(nn.Module):
    """The network of ``arch`` (any input size: convs are same-padded)."""

    def __init__(self, arch: ArchSpec) -> None:
        super().__init__()
        self.arch = arch
        self.graph_convs = convs(arch)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        c_in = 3
        for layer in arch.layers:
            self.weights.append(nn.Parameter(torch.zeros(layer.c_out, c_in, layer.kernel, layer.kernel)))
            self.biases.append(nn.Parameter(torch.zeros(layer.c_out)))
            c_in = layer.c_out
        if arch.residual == "folded":
            # The carried identity taps, fixed: model_from_arch's folded weights with the
            # declared layers' block zeroed are exactly these.
            zero = model_from_arch(arch.with_input(1, 1))
            for init in zero.graph.initializer:
                if init.name.endswith(".weight"):
                    i = int(init.name[len("conv"):].split(".")[0])
                    fixed = numpy_helper.to_array(init).copy()
                    w_l = self.weights[i]
                    fixed[: w_l.shape[0], : w_l.shape[1]] = 0.0
                    self.register_buffer(f"carry{i}", torch.from_numpy(fixed))

    @classmethod
    def from_arch(cls, arch: ArchSpec, *, seed: int = 0) -> ArchNet:
        """The module with model_from_arch's initial weights for ``seed`` (He init)."""
        net = cls(arch)
        net.load_onnx(model_from_arch(arch.with_input(1, 1), seed=seed))
        return net

    # ------------------------------------------------------------------ weights
    def graph_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of each conv as the graph runs it (``folded``: with the carried
        channels)."""
        out = []
        for i, (conv, w, b) in enumerate(zip(self.graph_convs, self.weights, self.biases, strict=True)):
            if self.arch.residual == "folded":
                pad_out, pad_in = conv.c_out - w.shape[0], conv.c_in - w.shape[1]
                w = F.pad(w, (0, 0, 0, 0, 0, pad_in, 0, pad_out)) + getattr(self, f"carry{i}")
                b = F.pad(b, (0, pad_out))
            out.append((w, b))
        return out

    def onnx_model(self, in_h: int | None = None, in_w: int | None = None) -> onnx.ModelProto:
        """The FP32 ONNX model: ``model_from_arch``'s graph (for an ``in_h`` × ``in_w``
        input, default the arch's) with this module's weights."""
        arch = self.arch if in_h is None else self.arch.with_input(in_h, in_w if in_w is not None else in_h)
        model = model_from_arch(arch)
        values = {}
        with torch.no_grad():
            for i, (w, b) in enumerate(self.graph_weights()):
                values[f"conv{i}.weight"] = w.detach().cpu().numpy().astype(np.float32)
                values[f"conv{i}.bias"] = b.detach().cpu().numpy().astype(np.float32)
        for init in model.graph.initializer:
            if init.name in values:
                init.CopyFrom(numpy_helper.from_array(values.pop(init.name), init.name))
        if values:  # pragma: no cover - model_from_arch names every conv's weights
            raise OplatError(f"model_from_arch has no initializers {sorted(values)}")
        return model

    def load_onnx(self, model: onnx.ModelProto) -> None:
        """Take the weights of a ``model_from_arch``-shaped FP32 graph of this arch."""
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        with torch.no_grad():
            for i, conv in enumerate(self.graph_convs):
                wn, bn = f"conv{i}.weight", f"conv{i}.bias"
                if wn not in inits or bn not in inits:
                    raise OplatError(f"the ONNX model has no {wn}/{bn}: not a model_from_arch graph of this architecture")
                w, b = inits[wn], inits[bn]
                shape = (conv.c_out, conv.c_in, conv.kernel, conv.kernel)
                if w.shape != shape or b.shape != (conv.c_out,):
                    raise OplatError(f"{wn} is {w.shape}, this architecture's conv {i} is {shape}")
                p = self.weights[i]
                if self.arch.residual == "folded":
                    fixed = getattr(self, f"carry{i}").cpu().numpy()
                    rest = w.copy()
                    rest[: p.shape[0], : p.shape[1]] = 0.0
                    if not np.array_equal(rest, fixed) or np.any(b[p.shape[0] :] != 0):
                        raise OplatError(f"{wn}: the carried identity taps of the folded residual are not intact")
                p.copy_(torch.from_numpy(np.array(w[: p.shape[0], : p.shape[1]], dtype=np.float32)))
                self.biases[i].copy_(torch.from_numpy(np.array(b[: p.shape[0]], dtype=np.float32)))

    # ------------------------------------------------------------------ forward
    def apply_conv(self, i: int, weights: tuple[torch.Tensor, torch.Tensor], cur: torch.Tensor, cur_name: str,
                   quant: FakeQuant | None) -> tuple[torch.Tensor, str]:
        """The graph's conv ``i`` (and its ReLU) on ``cur``, fake-quantized like the QDQ
        graph when ``quant`` is given (``cur_name``: the tensor's name in that graph);
        (the output, its name)."""
        conv = self.graph_convs[i]
        w, b = weights
        if quant is not None:
            w, w_scale = quant.weight(w)
            b = quant.bias(b, quant.scale(cur_name) * w_scale)
        y = F.conv2d(cur, w, b, padding=conv.kernel // 2)
        name = f"conv{i}"
        if conv.act == "relu":
            y = F.relu(y)
            name = f"relu{i}"
        return (quant.act(name, y) if quant is not None else y), name

    def forward(self, x: torch.Tensor, quant: FakeQuant | None = None) -> torch.Tensor:
        s = self.arch.scale
        q = quant.act if quant is not None else (lambda name, t: t)
        x = q("x", x)
        cur, cur_name = x, "x"
        for i, weights in enumerate(self.graph_weights()):
            cur, cur_name = self.apply_conv(i, weights, cur, cur_name, quant)
        if self.arch.residual == "anchor":
            anchor = q("anchor", x.repeat(1, s * s, 1, 1))
            cur = q("residual_sum", cur + anchor)
        cur = q("y", depth_to_space_dcr(cur, s))
        if self.arch.clip:
            cur = cur.clamp(0.0, 1.0)
        return cur
