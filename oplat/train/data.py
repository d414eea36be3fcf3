"""Training and validation images: reading, MATLAB-compatible bicubic resizing, patches.

The SR convention (DIV2K, Set5, …): the HR image is cropped to a multiple of the scale
(``modcrop``) and its LR twin is MATLAB's ``imresize(HR, 1/s, 'bicubic')`` stored as 8-bit
— a cubic kernel with a = −0.5, widened by ``s`` when down-scaling (antialiasing), pixel
centres aligned, symmetric (mirror) borders, rounded to the nearest integer at the end.
:func:`imresize` is that algorithm in numpy. Away from the borders it agrees with
Pillow's float (mode ``F``) ``BICUBIC`` to 1e-4 (Pillow renormalises the kernel at a
border where MATLAB mirrors the image, and its 8-bit path rounds and clips between its
two passes, so it is not used). The bicubic baseline is the same function up-scaling the
LR by ``s``.

Built-in data: the natural RGB photographs that scikit-image ships *inside its wheel*
(``skimage/data/*.png|jpg``; nothing is fetched): :data:`BUILTIN_TRAIN` and
:data:`BUILTIN_VAL`. Only numpy and Pillow are needed here (scikit-image brings Pillow);
torch is not imported.
"""

from __future__ import annotations

import importlib.util
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oplat.errors import OplatError, warn

__all__ = [
    "BUILTIN_TRAIN",
    "BUILTIN_VAL",
    "IMAGE_SUFFIXES",
    "RESAMPLER",
    "ImageSet",
    "PatchSampler",
    "TrainData",
    "bicubic_down",
    "bicubic_up",
    "builtin_dir",
    "image_paths",
    "imresize",
    "modcrop",
    "read_image",
    "resolve_data",
]

#: One line for reports: how LR images are made.
RESAMPLER = (
    "MATLAB-compatible bicubic imresize (cubic a=-0.5, antialiased, symmetric borders, "
    "rounded to 8 bits; numpy, oplat.train.data.imresize)"
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

#: The natural RGB photographs inside scikit-image's wheel (files, never fetched). The
#: two motorcycle views are a stereo pair, so both stay on the training side.
BUILTIN_TRAIN = ("astronaut.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png")
BUILTIN_VAL = ("chelsea.png", "coffee.png")

#: Decoded training images kept in memory (HR + LR, uint8) before the sampler switches
#: to a rotating pool of images read from disk.
MEMORY_BUDGET_BYTES = 2 << 30
#: Steps between two moves of the sampler's window (one image read and down-scaled).
SLIDE_EVERY = 4


# ---------------------------------------------------------------------- resizing
def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


def _contributions(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(weights, indices), each (n_out, taps): MATLAB imresize's ``contributions``."""
    width = 4.0
    if scale < 1:  # antialiasing: the kernel stretched by 1/scale
        width = width / scale

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * x)
    else:
        kernel = _cubic
    x = np.arange(1, n_out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # output pixel centre in input coordinates (1-based)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric padding: 1..n, n..1 repeated.
    aux = np.concatenate([np.arange(n_in), np.arange(n_in - 1, -1, -1)])
    idx = aux[np.mod(indices.astype(np.int64) - 1, aux.size)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], idx[:, keep]


def _resize_axis(a: np.ndarray, axis: int, n_out: int, scale: float) -> np.ndarray:
    weights, idx = _contributions(a.shape[axis], n_out, scale)
    a = np.moveaxis(a, axis, 0)
    out = np.zeros((n_out, *a.shape[1:]), np.float64)
    shape = (n_out,) + (1,) * (a.ndim - 1)
    for t in range(weights.shape[1]):
        out += weights[:, t].reshape(shape) * a[idx[:, t]]
    return np.moveaxis(out, 0, axis)


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` of an H×W or H×W×C image.

    Works in float64 and returns float64 in the input's value range (round and clip to
    get 8-bit pixels, as MATLAB does for a uint8 input: :func:`bicubic_down`). The output
    is ``ceil(scale·H)`` × ``ceil(scale·W)``; rows are resized first, as MATLAB does when
    both factors are equal.
    """
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise OplatError(f"imresize scale must be a positive number, got {scale!r}")
    a = np.asarray(img, dtype=np.float64)
    h, w = a.shape[:2]
    out = _resize_axis(a, 0, int(math.ceil(h * scale - 1e-9)), scale)
    return _resize_axis(out, 1, int(math.ceil(w * scale - 1e-9)), scale)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(a + 0.5), 0, 255).astype(np.uint8)  # MATLAB rounds half away from 0


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """``img`` cropped (bottom/right) to a multiple of ``scale`` in both dimensions."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """The LR twin of a (modcropped) uint8 HR image: 8-bit MATLAB bicubic by 1/scale."""
    if hr.shape[0] % scale or hr.shape[1] % scale:
        raise OplatError(f"HR image {hr.shape[1]}×{hr.shape[0]} is not a multiple of ×{scale}; modcrop it first")
    return _to_uint8(imresize(hr, 1.0 / scale))


def bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: 8-bit MATLAB bicubic up-scaling of a uint8 LR image."""
    return _to_uint8(imresize(lr, float(scale)))


# ---------------------------------------------------------------------- files
def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 H×W×3 RGB (grey and palette images are converted, alpha is
    dropped, 16-bit images are scaled to 8 bits)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if arr.max() > 255 else 255.0
                arr = _to_uint8(arr * (255.0 / top))
                return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr[..., :3]
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise OplatError(f"{path}: cannot read this image ({exc}); give png or jpg files") from None


def image_paths(folder: str | Path, *, what: str) -> list[Path]:
    """The png/jpg files directly in ``folder``, sorted by name."""
    d = Path(folder)
    if not d.is_dir():
        raise OplatError(f"{what} {d} is not a folder; give a folder of HR .png/.jpg images (e.g. DIV2K_train_HR)")
    paths = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise OplatError(
            f"{what} {d} has no .png/.jpg images directly in it; give the folder of HR images itself "
            "(e.g. DIV2K/DIV2K_train_HR)"
        )
    return paths


def builtin_dir() -> Path | None:
    """scikit-image's installed ``data`` folder when it holds every built-in image, else
    None (found without importing scikit-image)."""
    try:
        spec = importlib.util.find_spec("skimage")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        d = Path(location) / "data"
        if all((d / name).is_file() for name in (*BUILTIN_TRAIN, *BUILTIN_VAL)):
            return d
    return None


def resolve_data(data: str | Path | None, val: str | Path | None) -> tuple[list[Path], list[Path], str]:
    """(training image paths, validation image paths, a one-line description).

    ``data`` None: the built-in training images; ``val`` None: the built-in validation
    images. Raises one clear error when what is needed is not there.
    """
    builtin = builtin_dir()
    missing = (
        "no training data: give --data DIR (a folder of HR .png/.jpg images, e.g. DIV2K_train_HR) and "
        "--val DIR, or install scikit-image for the built-in images: pip install 'oplat[train]'"
    )
    if data is None:
        if builtin is None:
            raise OplatError(missing)
        train = [builtin / n for n in BUILTIN_TRAIN]
        train_text = f"built-in: {', '.join(BUILTIN_TRAIN)} (scikit-image's wheel, {builtin})"
    else:
        train = image_paths(data, what="--data")
        train_text = f"{Path(data)} ({len(train)} images)"
    if val is None:
        if data is not None and builtin is not None:
            warn("no --val given: validating on the built-in photographs; give --val DIR for your own images")
        if builtin is None:
            raise OplatError(
                "no validation data: give --val DIR (a folder of HR .png/.jpg images, e.g. DIV2K_valid_HR), "
                "or install scikit-image for the built-in images: pip install 'oplat[train]'"
            )
        vals = [builtin / n for n in BUILTIN_VAL]
        val_text = f"built-in: {', '.join(BUILTIN_VAL)}"
    else:
        vals = image_paths(val, what="--val")
        val_text = f"{Path(val)} ({len(vals)} images)"
    overlap = {p.resolve() for p in train} & {p.resolve() for p in vals}
    if overlap:
        raise OplatError(
            f"{len(overlap)} image(s) are in both the training and validation sets (e.g. {sorted(overlap)[0]}); "
            "give separate folders"
        )
    return train, vals, f"train: {train_text}; val: {val_text}"


# ---------------------------------------------------------------------- sets and patches
@dataclass(frozen=True)
class ImageSet:
    """Whole images: HR (modcropped) and their LR twins, uint8 H×W×3."""

    names: tuple[str, ...]
    hr: tuple[np.ndarray, ...]
    lr: tuple[np.ndarray, ...]
    scale: int
    #: results computed once per set (the bicubic baseline), not part of its identity
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, paths: list[Path], scale: int) -> ImageSet:
        names, hrs, lrs = [], [], []
        for p in paths:
            hr = modcrop(read_image(p), scale)
            if hr.shape[0] < scale or hr.shape[1] < scale:
                raise OplatError(f"{p}: image is smaller than one ×{scale} LR pixel")
            names.append(p.name)
            hrs.append(hr)
            lrs.append(bicubic_down(hr, scale))
        return cls(tuple(names), tuple(hrs), tuple(lrs), scale)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, count: int) -> ImageSet:
        return ImageSet(self.names[:count], self.hr[:count], self.lr[:count], self.scale)


def _dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of an H×W×C array."""
    if k & 1:
        a = a[:, ::-1]
    if k & 2:
        a = a[::-1]
    if k & 4:
        a = a.transpose(1, 0, 2)
    return a


class PatchSampler:
    """Random LR/HR patch pairs with flips and rotations, a pure function of
    ``(seed, stream, step)``: a resumed run draws exactly the batches it would have.

    Images are decoded (and their LR made) on first use. When every image fits in
    :data:`MEMORY_BUDGET_BYTES` all stay in memory; otherwise a window of as many images as
    fit slides one image every :data:`SLIDE_EVERY` steps over a fixed shuffled order, and
    each batch draws its patches from the window.
    """

    def __init__(self, paths: list[Path], *, scale: int, patch: int, batch: int, seed: int,
                 memory_budget: int = MEMORY_BUDGET_BYTES) -> None:
        if not paths:
            raise OplatError("no training images")
        self.paths = list(paths)
        self.scale, self.patch, self.batch, self.seed = scale, patch, batch, seed
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._order = np.random.default_rng([seed, 7]).permutation(len(self.paths))
        first = self._image(0)
        per_image = first[0].nbytes * (1 + 1 / (scale * scale))
        self.window = max(1, min(len(self.paths), int(memory_budget // max(per_image, 1))))
        self._usable: dict[int, bool] = {}

    def _image(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        hr = modcrop(read_image(self.paths[index]), self.scale)
        need = self.patch * self.scale
        if hr.shape[0] < need or hr.shape[1] < need:
            raise OplatError(
                f"{self.paths[index]}: {hr.shape[1]}×{hr.shape[0]} is smaller than one training patch "
                f"({need}×{need} HR for --patch {self.patch} at ×{self.scale}); use a smaller --patch or drop the image"
            )
        pair = (hr, bicubic_down(hr, self.scale))
        self._cache[index] = pair
        limit = getattr(self, "window", len(self.paths)) + 1
        while len(self._cache) > limit:
            self._cache.popitem(last=False)
        return pair

    def _window(self, step: int) -> list[int]:
        n = len(self.paths)
        if self.window >= n:
            return list(range(n))
        start = step // SLIDE_EVERY
        return [int(self._order[(start + j) % n]) for j in range(self.window)]

    def sample(self, step: int, *, stream: int = 0, augment: bool = True, count: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(lr, hr) float32 arrays N×3×p×p and N×3×(s·p)×(s·p) in [0, 1]."""
        rng = np.random.default_rng([self.seed, stream, step])
        window = self._window(step)
        n = self.batch if count is None else count
        p, s = self.patch, self.scale
        lrs = np.empty((n, p, p, 3), np.uint8)
        hrs = np.empty((n, s * p, s * p, 3), np.uint8)
        for i in range(n):
            hr, lr = self._image(window[int(rng.integers(len(window)))])
            y = int(rng.integers(lr.shape[0] - p + 1))
            x = int(rng.integers(lr.shape[1] - p + 1))
            lp = lr[y : y + p, x : x + p]
            hp = hr[s * y : s * (y + p), s * x : s * (x + p)]
            if augment:
                k = int(rng.integers(8))
                lp, hp = _dihedral(lp, k), _dihedral(hp, k)
            lrs[i], hrs[i] = lp, hp
        to_float = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)  # noqa: E731
        return to_float(lrs), to_float(hrs)


# ---------------------------------------------------------------------- a run's data
@dataclass(frozen=True)
class TrainData:
    """What a run learns from and is judged on: ``sampler`` (training patches), ``val``
    (whole validation images: the reported figures), ``monitor`` (the first of them: the
    progress bar's val PSNR and a search's intermediate values), ``text`` (one line for
    reports) and the image files."""

    sampler: PatchSampler
    val: ImageSet
    monitor: ImageSet
    text: str
    train_paths: tuple[Path, ...]
    val_paths: tuple[Path, ...]

    @classmethod
    def load(cls, data: str | Path | None, val: str | Path | None, *, scale: int, patch: int, batch: int, seed: int,
             monitor_images: int) -> TrainData:
        """Resolve ``--data``/``--val`` (:func:`resolve_data`), decode the validation
        images and make the patch sampler."""
        train_paths, val_paths, text = resolve_data(data, val)
        sampler = PatchSampler(train_paths, scale=scale, patch=patch, batch=batch, seed=seed)
        images = ImageSet.load(val_paths, scale)
        return cls(sampler, images, images.subset(monitor_images), text, tuple(train_paths), tuple(val_paths))
