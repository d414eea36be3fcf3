"""The seed networks as ONNX, built from their published descriptions (random weights).

Each builder returns an FP32 ``onnx.ModelProto`` (opset 17, static shapes, input ``x``
of shape (1, 3, H, W): :func:`oplat.arch.quantize_qdq` calibrates on RGB images) with
deterministic random weights (He-normal scaled down, so activations stay in a sane range
for INT8 calibration). The structures:

- :func:`ecbsr` — ECBSR-M4C16 ×2 in its deploy (re-parameterised) form, as the released
  code's ``ECBSR(module_nums=4, channel_nums=16, act_type='prelu')``: a head ECB
  (3→16) and 4 body ECBs (16→16), each one Conv3×3 + PReLU after re-parameterisation, a
  linear tail ECB (Conv3×3 16→3·s²) and PixelShuffle (DepthToSpace CRD). The code's
  global residual ``upsampler(backbone(x) + x)`` (x broadcast over the s² sub-pixel
  channels of each colour) is written as what it computes for an RGB input: the
  depth-to-space output plus the nearest ×s upsampling of x.
- :func:`xlsr` — XLSR ×3 (MAI 2021 winner, Ayazoglu): a side Conv3×3 3→16; a bank of
  4 Conv3×3 3→8 + ReLU, concatenated and mixed by a Conv1×1 32→32; 3 GBlocks (grouped
  Conv3×3 32→32 group=4 + ReLU, Conv1×1 32→32); concat(side, main) → Conv1×1 48→32 +
  ReLU → Conv3×3 32→27 → DepthToSpace ×3 (DCR, as TensorFlow) → clipped ReLU [0, 1].
- :func:`real_esrgan` — Real-ESRGAN ×4 RRDBNet (nf=64, gc=32) with ``blocks`` RRDBs: conv
  first; each RRDB = 3 residual dense blocks (5 convs, LeakyRelu(0.2) after the first
  4, dense concats of 2..5 inputs, ``x5 * 0.2 + x``) and ``out * 0.2 + x``; conv body +
  the trunk residual; two nearest ×2 Resize each followed by Conv + LeakyRelu; conv HR +
  LeakyRelu; conv last 64→3.
- :func:`unet` — a restoration UNet (Ronneberger's U, as in the Versal denoising
  pipeline): double Conv3×3 + ReLU per level (c, 2c, 4c, 8c), down by MaxPool 2×2 twice
  and by a stride-2 conv once, up by ConvTranspose 2×2/2 twice and a nearest Resize ×2 +
  conv once, skip concats at every level, a Conv1×1 to 3 and the global residual (the
  network predicts the noise).
- :func:`srcnn` — SRCNN 9-5-5 on the Y channel after bicubic upscaling: RGB→Y
  (Conv1×1 with the BT.601 coefficients: the input a deployment ships is RGB), Resize
  mode cubic ×3, Conv9×9 1→64 + ReLU, Conv5×5 64→32 + ReLU, Conv5×5 32→1 ("same"
  padding, as the PyTorch ports).
- :func:`fsrcnn` — FSRCNN(d=56, s=12, m=4) ×3 on Y: RGB→Y, Conv5×5 1→56 + PReLU,
  shrink Conv1×1 56→12 + PReLU, 4 × Conv3×3 12→12 + PReLU, expand Conv1×1 12→56 + PReLU,
  ConvTranspose 9×9 56→1 stride 3 (pads 4, output_padding 2: exactly 3H×3W).
- :func:`classifier` — a classic VGG/ResNet-style image-classification export:
  Conv + BatchNormalization + ReLU, LRN, MaxPool, a residual block (Conv+BN+ReLU,
  Conv+BN, Add, ReLU), a BatchNormalization that follows no conv, Flatten, Gemm whose
  weight is a Constant → Reshape of a flat initializer, Dropout, Gemm whose bias is a
  ConstantOfShape, Softmax.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["NETWORKS", "classifier", "ecbsr", "fsrcnn", "real_esrgan", "srcnn", "unet", "xlsr"]

OPSET = 17


class _Net:
    """A tiny graph builder: unique names, deterministic weights."""

    def __init__(self, name: str, seed: int):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count: dict[str, int] = {}

    def _id(self, kind: str) -> str:
        self.count[kind] = self.count.get(kind, 0) + 1
        return f"{kind}{self.count[kind]}"

    def const(self, value: np.ndarray, kind: str = "k") -> str:
        name = self._id(kind)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        name = name or self._id(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    # ------------------------------------------------------------------ layers
    def conv(self, x, cin, cout, k, *, stride=1, group=1, gain=1.0, bias=True, name=None, weight=None):
        fan_in = cin // group * k * k
        if weight is None:
            weight = self.rng.standard_normal((cout, cin // group, k, k)) * gain * np.sqrt(2.0 / fan_in)
        inputs = [x, self.const(weight.astype(np.float32), "w")]
        if bias:
            inputs.append(self.const((self.rng.standard_normal(cout) * 0.01).astype(np.float32), "b"))
        p = k // 2
        return self.node("Conv", inputs, name, kernel_shape=[k, k], pads=[p, p, p, p], strides=[stride, stride], group=group)

    def relu(self, x):
        return self.node("Relu", [x])

    def lrelu(self, x, alpha=0.2):
        return self.node("LeakyRelu", [x], alpha=alpha)

    def prelu(self, x, c):
        return self.node("PRelu", [x, self.const(np.full((c, 1, 1), 0.25, np.float32), "slope")])

    def add(self, a, b):
        return self.node("Add", [a, b])

    def mul(self, x, value: float):
        return self.node("Mul", [x, self.const(np.array(value, np.float32), "scale")])

    def concat(self, xs):
        return self.node("Concat", list(xs), axis=1)

    def resize(self, x, scale, mode="nearest", **attrs):
        scales = self.const(np.array([1, 1, scale, scale], np.float32), "scales")
        return self.node("Resize", [x, "", scales], mode=mode, **attrs)

    def model(self, in_shape, out: str, out_shape) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))
        graph = helper.make_graph(self.nodes, self.name, [x], [y], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="oplat-seed-nets")
        m.ir_version = 9
        onnx.checker.check_model(m, full_check=True)
        return m


def ecbsr(h=360, w=640, *, scale=2, modules=4, c=16, seed=1) -> onnx.ModelProto:
    n = _Net("ecbsr_m4c16", seed)
    t = n.prelu(n.conv("x", 3, c, 3), c)  # head ECB
    for _ in range(modules):
        t = n.prelu(n.conv(t, c, c, 3), c)
    t = n.conv(t, c, 3 * scale * scale, 3, gain=0.5)  # linear tail ECB
    t = n.node("DepthToSpace", [t], blocksize=scale, mode="CRD")  # nn.PixelShuffle
    y = n.add(t, n.resize("x", scale))  # the global residual (see the module docstring)
    return n.model((1, 3, h, w), y, (1, 3, h * scale, w * scale))


def xlsr(h=360, w=640, *, scale=3, gblocks=3, groups=4, seed=2) -> onnx.ModelProto:
    n = _Net("xlsr", seed)
    side = n.conv("x", 3, 16, 3)
    bank = [n.relu(n.conv("x", 3, 8, 3)) for _ in range(4)]
    t = n.conv(n.concat(bank), 32, 32, 1)
    for _ in range(gblocks):
        t = n.relu(n.conv(t, 32, 32, 3, group=groups))
        t = n.conv(t, 32, 32, 1)
    t = n.relu(n.conv(n.concat([side, t]), 48, 32, 1))
    t = n.conv(t, 32, 3 * scale * scale, 3, gain=0.5)
    t = n.node("DepthToSpace", [t], blocksize=scale, mode="DCR")
    lo, hi = n.const(np.array(0.0, np.float32), "lo"), n.const(np.array(1.0, np.float32), "hi")
    y = n.node("Clip", [t, lo, hi])
    return n.model((1, 3, h, w), y, (1, 3, h * scale, w * scale))


def real_esrgan(h=96, w=96, *, blocks=2, nf=64, gc=32, seed=3) -> onnx.ModelProto:
    n = _Net("real_esrgan_rrdb", seed)

    def rdb(x):
        feats = [x]
        for i in range(4):
            cin = nf + i * gc
            src = feats[0] if i == 0 else n.concat(feats)
            feats.append(n.lrelu(n.conv(src, cin, gc, 3)))
        x5 = n.conv(n.concat(feats), nf + 4 * gc, nf, 3)
        return n.add(n.mul(x5, 0.2), x)

    feat = n.conv("x", 3, nf, 3)
    t = feat
    for _ in range(blocks):
        r = rdb(rdb(rdb(t)))
        t = n.add(n.mul(r, 0.2), t)
    t = n.add(feat, n.conv(t, nf, nf, 3))
    t = n.lrelu(n.conv(n.resize(t, 2), nf, nf, 3))
    t = n.lrelu(n.conv(n.resize(t, 2), nf, nf, 3))
    t = n.lrelu(n.conv(t, nf, nf, 3))
    y = n.conv(t, nf, 3, 3, gain=0.5)
    return n.model((1, 3, h, w), y, (1, 3, 4 * h, 4 * w))


def unet(h=256, w=256, *, c=32, seed=4) -> onnx.ModelProto:
    n = _Net("unet", seed)

    def double(x, cin, cout):
        return n.relu(n.conv(n.relu(n.conv(x, cin, cout, 3)), cout, cout, 3))

    e0 = double("x", 3, c)  # h
    e1 = double(n.node("MaxPool", [e0], kernel_shape=[2, 2], strides=[2, 2]), c, 2 * c)  # h/2
    e2 = double(n.node("MaxPool", [e1], kernel_shape=[2, 2], strides=[2, 2]), 2 * c, 4 * c)  # h/4
    down = n.relu(n.conv(e2, 4 * c, 4 * c, 3, stride=2))  # h/8, the strided-conv way down
    b = double(down, 4 * c, 8 * c)

    def convt(x, cin, cout):
        weight = (n.rng.standard_normal((cin, cout, 2, 2)) * np.sqrt(2.0 / (cin * 4))).astype(np.float32)
        bias = (n.rng.standard_normal(cout) * 0.01).astype(np.float32)
        return n.node("ConvTranspose", [x, n.const(weight, "w"), n.const(bias, "b")], kernel_shape=[2, 2], strides=[2, 2])

    d2 = double(n.concat([convt(b, 8 * c, 4 * c), e2]), 8 * c, 4 * c)
    up1 = n.relu(n.conv(n.resize(d2, 2), 4 * c, 2 * c, 3))  # the Resize way up
    d1 = double(n.concat([up1, e1]), 4 * c, 2 * c)
    d0 = double(n.concat([convt(d1, 2 * c, c), e0]), 2 * c, c)
    noise = n.conv(d0, c, 3, 1, gain=0.5)
    y = n.add("x", noise)
    return n.model((1, 3, h, w), y, (1, 3, h, w))


_BT601 = np.array([65.481, 128.553, 24.966], np.float32) / 255.0


def _rgb_to_y(n: _Net) -> str:
    weight = _BT601.reshape(1, 3, 1, 1)
    inputs = ["x", n.const(weight, "w"), n.const(np.array([16.0 / 255.0], np.float32), "b")]
    return n.node("Conv", inputs, "rgb_to_y", kernel_shape=[1, 1])


def srcnn(h=120, w=214, *, scale=3, seed=5) -> onnx.ModelProto:
    n = _Net("srcnn_955", seed)
    t = n.resize(_rgb_to_y(n), scale, mode="cubic")  # bicubic (a = -0.75, half_pixel)
    t = n.relu(n.conv(t, 1, 64, 9))
    t = n.relu(n.conv(t, 64, 32, 5))
    y = n.conv(t, 32, 1, 5, gain=0.5)
    return n.model((1, 3, h, w), y, (1, 1, h * scale, w * scale))


def fsrcnn(h=360, w=640, *, scale=3, d=56, s=12, m=4, seed=6) -> onnx.ModelProto:
    n = _Net("fsrcnn", seed)
    t = n.prelu(n.conv(_rgb_to_y(n), 1, d, 5), d)  # feature extraction
    t = n.prelu(n.conv(t, d, s, 1), s)  # shrinking
    for _ in range(m):
        t = n.prelu(n.conv(t, s, s, 3), s)  # mapping
    t = n.prelu(n.conv(t, s, d, 1), d)  # expanding
    weight = (n.rng.standard_normal((d, 1, 9, 9)) * 0.5 * np.sqrt(1.0 / (d * 9))).astype(np.float32)
    y = n.node(
        "ConvTranspose", [t, n.const(weight, "w"), n.const(np.zeros(1, np.float32), "b")],
        "deconv", kernel_shape=[9, 9], strides=[scale, scale], pads=[4, 4, 4, 4], output_padding=[scale - 1, scale - 1],
    )
    return n.model((1, 3, h, w), y, (1, 1, h * scale, w * scale))


def classifier(h=112, w=112, *, classes=10, seed=7) -> onnx.ModelProto:
    n = _Net("classifier", seed)

    def bn(x, c, name=None):
        gamma = (1.0 + 0.1 * n.rng.standard_normal(c)).astype(np.float32)
        beta = (0.1 * n.rng.standard_normal(c)).astype(np.float32)
        mean = (0.1 * n.rng.standard_normal(c)).astype(np.float32)
        var = (1.0 + 0.1 * n.rng.random(c)).astype(np.float32)
        return n.node("BatchNormalization", [x, *(n.const(v, "bn") for v in (gamma, beta, mean, var))], name, epsilon=1e-5)

    def pool(x):
        return n.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])

    t = n.relu(bn(n.conv("x", 3, 32, 3, bias=False), 32))
    t = pool(n.node("LRN", [t], size=5, alpha=1e-4, beta=0.75, bias=1.0))  # h/2
    t = pool(n.relu(bn(n.conv(t, 32, 64, 3, bias=False), 64)))  # h/4
    r = n.relu(bn(n.conv(t, 64, 64, 3, bias=False), 64))
    r = bn(n.conv(r, 64, 64, 3, bias=False), 64)
    t = n.relu(n.add(r, t))  # the residual block
    t = bn(pool(t), 64, "bn_after_pool")  # follows no conv: stays a BatchNormalization
    flat = n.node("Flatten", [t], axis=1)
    features = 64 * (h // 8) * (w // 8)
    fc1_flat = n.const((n.rng.standard_normal(256 * features) * np.sqrt(2.0 / features)).astype(np.float32), "fc_flat")
    shape = n.node("Constant", [], "fc1_shape", value=numpy_helper.from_array(np.array([256, features], np.int64)))
    fc1_w = n.node("Reshape", [fc1_flat, shape], "fc1_reshape")
    t = n.relu(n.node("Gemm", [flat, fc1_w, n.const(np.zeros(256, np.float32), "b")], "fc1", transB=1))
    t = n.node("Dropout", [t], "drop")
    bias_shape = n.node("Constant", [], "fc2_bias_shape", value=numpy_helper.from_array(np.array([classes], np.int64)))
    fc2_b = n.node("ConstantOfShape", [bias_shape], "fc2_bias", value=numpy_helper.from_array(np.array([0.01], np.float32)))
    fc2_w = n.const((n.rng.standard_normal((classes, 256)) * np.sqrt(1.0 / 256)).astype(np.float32), "fc2_w")
    logits = n.node("Gemm", [t, fc2_w, fc2_b], "fc2", transB=1)
    y = n.node("Softmax", [logits], "softmax", axis=1)
    return n.model((1, 3, h, w), y, (1, classes))


#: name -> (builder, the precisions it is benchmarked in)
NETWORKS = {
    "ecbsr-m4c16-x2": (ecbsr, ("fp32", "int8")),
    "xlsr-x3": (xlsr, ("fp32", "int8")),
    "real-esrgan-rrdb2-x4": (real_esrgan, ("fp32", "int8")),
    "unet": (unet, ("fp32", "int8")),
    "srcnn-955-x3": (srcnn, ("fp32", "int8")),
    "fsrcnn-56-12-4-x3": (fsrcnn, ("fp32", "int8")),
    "classifier": (classifier, ("fp32",)),
}
