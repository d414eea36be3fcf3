"""The quality objective of ``oplat search`` — a **capacity proxy (not PSNR)**.

Nothing here trains a network, so quality is a *proxy*, named as one in every output::

    Q = log2(M) + log2(R)

``M``
    learned multiply-accumulates per **output** pixel: Σ over the declared convs of
    c_in·c_out·k², divided by s² (the output has s² pixels per LR pixel). ``folded`` counts
    its declared widths, not the 3 identity channels it carries (``anchor`` and ``folded``
    compute the same function, so they score the same). ``none`` is credited as an anchor
    network 3 channels narrower in every layer but the last: ``folded`` shows that a plain
    network needs exactly those 3 channels per layer to carry the image that the anchor
    adds for free.
``R``
    receptive field of one output pixel, in LR pixels (one side): 1 + Σ (k − 1).

Why this is defensible: within one family of plain conv+ReLU SR networks, PSNR is commonly
observed to rise roughly linearly in log(compute) until it saturates (FSRCNN/ESPCN/ABPN-style
width and depth sweeps; the Mobile AI 2021 SR challenge's PSNR-vs-runtime plots), so
``log2(M)`` is the capacity axis; ``log2(R)`` is the depth term — at equal compute a deeper
network sees more context and composes more nonlinearities. Q is monotone: widening any
layer or adding a layer never lowers it. It ranks networks; it does not predict dB, and a
search result must still be trained and evaluated on real images.
"""

from __future__ import annotations

import math
from functools import lru_cache

from oplat.arch import ArchSpec

__all__ = [
    "IMAGE_CHANNELS",
    "QUALITY_PROXY_FORMULA",
    "QUALITY_PROXY_NAME",
    "learned_macs_per_output_pixel",
    "quality_proxy",
    "receptive_field_px",
]

QUALITY_PROXY_NAME = "capacity proxy (not PSNR)"
QUALITY_PROXY_FORMULA = (
    "Q = log2(learned MACs per output pixel) + log2(receptive field in LR pixels); "
    "folded counts its declared widths, none is credited 3 channels narrower per layer"
)
#: Channels of the networks' input and output image (RGB).
IMAGE_CHANNELS = 3


def _learned_widths(arch: ArchSpec) -> list[tuple[int, int, int]]:
    """(c_in, c_out, kernel) of the declared convs, as :func:`quality_proxy` credits them."""
    narrow = 3 if arch.residual == "none" else 0
    out = []
    c_in = IMAGE_CHANNELS
    last = len(arch.layers) - 1
    for i, layer in enumerate(arch.layers):
        c_out = layer.c_out if i == last else max(1, layer.c_out - narrow)
        out.append((c_in, c_out, layer.kernel))
        c_in = c_out
    return out


def learned_macs_per_output_pixel(arch: ArchSpec) -> float:
    """Σ c_in·c_out·k² over the declared convs / s² (see the module docstring), MACs per
    output pixel."""
    total = sum(ci * co * k * k for ci, co, k in _learned_widths(arch))
    return total / (arch.scale * arch.scale)


def receptive_field_px(arch: ArchSpec) -> int:
    """Receptive field of one output pixel along one side, in LR pixels: 1 + Σ (k − 1)."""
    return 1 + sum(layer.kernel - 1 for layer in arch.layers)


@lru_cache(maxsize=65536)
def quality_proxy(arch: ArchSpec) -> float:
    """The capacity proxy (not PSNR), dimensionless, higher is better:
    ``log2(learned_macs_per_output_pixel) + log2(receptive_field_px)``."""
    return math.log2(learned_macs_per_output_pixel(arch)) + math.log2(receptive_field_px(arch))
