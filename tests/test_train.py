"""oplat train: the torch network is the ONNX network, metrics are the SR papers', training
beats bicubic, a killed run resumes, and without torch the command names the extra.

Everything but :func:`test_without_torch_train_names_the_extra` needs the ``train`` extra
(torch and scikit-image) and is skipped without it. Networks are tiny and images are
small crops of the built-in photographs, so the file runs in well under two minutes on
two cores.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import REPO, assert_one_line_error, run_python
from oplat.arch import ABPN, ArchSpec, Layer, calibration_images, model_from_arch, optimized_op_counts, quantize_qdq
from oplat.errors import OplatError
from oplat.onnxgraph import attr

HAVE_TRAIN = all(importlib.util.find_spec(m) is not None for m in ("torch", "skimage"))
needs_train = pytest.mark.skipif(not HAVE_TRAIN, reason="needs the train extra: pip install 'oplat[train]'")

if HAVE_TRAIN:
    import torch

    from oplat.backends.ort import exact_session
    from oplat.train.data import (
        BUILTIN_TRAIN,
        BUILTIN_VAL,
        ImageSet,
        PatchSampler,
        TrainData,
        bicubic_down,
        bicubic_up,
        builtin_dir,
        imresize,
        modcrop,
        read_image,
        resolve_data,
    )
    from oplat.train.loop import CHECKPOINT, TrainConfig, Trainer, measure_onnx
    from oplat.train.metrics import crop_border, psnr, psnr_y, rgb_to_y, ssim, ssim_y
    from oplat.train.onnxio import activation_qparams, arch_to_json, load_arch
    from oplat.train.torchnet import ArchNet, FakeQuant, depth_to_space_dcr

    torch.set_num_threads(1)  # repeatable, and fast for networks this small


def _tiny(residual: str = "anchor", clip: bool = True, scale: int = 3, widths=(8,), kernels=None) -> ArchSpec:
    kernels = kernels or [3] * (len(widths) + 1)
    layers = [Layer(c, kernel=k) for c, k in zip(widths, kernels, strict=False)]
    layers.append(Layer(3 * scale * scale, kernel=kernels[-1], act="none"))
    return ArchSpec(scale, 12, 16, tuple(layers), residual=residual, clip=clip)


# ---------------------------------------------------------------- without torch
def test_without_torch_train_names_the_extra():
    """torch blocked: `oplat --help` lists train, and `oplat train` is one line naming the
    extra (and the CPU wheel), exit 2."""
    result = run_python(
        "import sys; sys.modules['torch'] = None\n"
        "from oplat.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "sys.exit(main(['train', 'abpn', '--steps', '5']))"
    )
    assert result.returncode == 2, result.stderr
    assert "train" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oplat: error: "), result.stderr
    assert "pip install 'oplat[train]'" in lines[0] and "CPU wheel" in lines[0]
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- torch == ONNX
@needs_train
@pytest.mark.parametrize("residual", ["anchor", "none", "folded"])
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_torch_module_is_the_onnx_network(residual, clip, scale):
    """Same weights, same input: the torch module and ONNX Runtime on model_from_arch's
    graph agree within 1e-4; the export is model_from_arch's graph, byte for byte."""
    arch = _tiny(residual, clip, scale, widths=(8, 6), kernels=[3, 5, 1])
    onnx_model = model_from_arch(arch, seed=7)
    net = ArchNet(arch)
    net.load_onnx(onnx_model)
    x = np.random.default_rng(scale).random((1, 3, arch.in_h, arch.in_w), dtype=np.float32)
    if not clip:
        x = x * 1.2 - 0.1  # values outside [0, 1] reach the output when nothing clips
    expected = exact_session(onnx_model).run(None, {"x": x})[0]
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (1, 3, scale * arch.in_h, scale * arch.in_w)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert net.onnx_model().SerializeToString() == onnx_model.SerializeToString()


@needs_train
def test_abpn_in_torch_matches_onnx_and_round_trips_trained_weights():
    """ABPN itself, after its weights changed in torch: the export carries them, ORT on the
    export agrees with torch within 1e-4, and reading the export back gives the same module."""
    arch = ABPN.with_input(20, 24)
    net = ArchNet.from_arch(arch, seed=1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    exported = net.onnx_model()
    reference = model_from_arch(arch, seed=1)
    assert [(n.op_type, list(n.input), list(n.output)) for n in exported.graph.node] == [
        (n.op_type, list(n.input), list(n.output)) for n in reference.graph.node
    ]
    depth = next(n for n in exported.graph.node if n.op_type == "DepthToSpace")
    assert attr(depth, "mode") in (b"DCR", "DCR") and attr(depth, "blocksize") == 3
    x = calibration_images(20, 24, 1, seed=3)[0]
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, exact_session(exported).run(None, {"x": x})[0], atol=1e-4, rtol=0)
    again = ArchNet(arch)
    again.load_onnx(exported)
    for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@needs_train
def test_depth_to_space_is_dcr_not_pixel_shuffle():
    x = torch.arange(2 * 12 * 2 * 3, dtype=torch.float32).reshape(2, 12, 2, 3)
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="DCR")], "d2s",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    expected = exact_session(model).run(None, {"x": x.numpy()})[0]
    assert np.array_equal(depth_to_space_dcr(x, 2).numpy(), expected)
    assert not torch.equal(torch.nn.functional.pixel_shuffle(x, 2), depth_to_space_dcr(x, 2))


@needs_train
def test_load_onnx_refuses_another_architecture():
    net = ArchNet(_tiny(widths=(8,)))
    with pytest.raises(OplatError, match="conv0"):
        net.load_onnx(model_from_arch(_tiny(widths=(6,))))


# ---------------------------------------------------------------- fake quant == QDQ
@needs_train
@pytest.mark.parametrize("residual,clip", [("anchor", True), ("anchor", False), ("none", True), ("folded", True)])
def test_fake_quant_is_the_qdq_model(residual, clip):
    """With the activation parameters read from quantize_qdq's model, the torch fake-quant
    forward is ORT's exact int8 output to within one output step (mostly equal), its
    weight scales are the model's, and it quantizes exactly the tensors the model does."""
    from onnx import numpy_helper

    arch = replace(_tiny(residual, clip, widths=(12, 12)), in_h=24, in_w=24)
    model = model_from_arch(arch, seed=2)
    qdq = quantize_qdq(model, calibration=calibration_images(24, 24, 4, seed=1))
    net = ArchNet(arch)
    net.load_onnx(model)
    params = activation_qparams(qdq)
    expected = {"x", "relu0", "relu1", "conv2", "y"} | ({"anchor", "residual_sum"} if residual == "anchor" else set())
    assert set(params) == expected
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    for i, (w, _) in enumerate(net.graph_weights()):
        np.testing.assert_allclose(FakeQuant.weight(w)[1].detach().numpy(), inits[f"conv{i}.weight_scale"], rtol=1e-6)
    x = calibration_images(24, 24, 1, seed=9)[0]
    with torch.no_grad():
        got = net(torch.from_numpy(x), FakeQuant(params)).numpy()
    steps = np.abs(got - exact_session(qdq).run(None, {"x": x})[0]) * 255
    assert steps.max() <= 1.0 + 1e-3 and steps.mean() < 0.01, (steps.max(), steps.mean())


# ---------------------------------------------------------------- metrics
@needs_train
def test_y_psnr_ssim_match_scikit_image():
    """Y (BT.601), PSNR and SSIM equal scikit-image's on the same arrays: rgb2ycbcr,
    peak_signal_noise_ratio(data_range=255), structural_similarity with the Gaussian
    window of Wang et al. (sigma 1.5, population covariance)."""
    from skimage.color import rgb2ycbcr
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    hr = modcrop(read_image(builtin_dir() / "chelsea.png"), 3)
    sr = bicubic_up(bicubic_down(hr, 3), 3)
    noisy = np.clip(hr.astype(int) + np.random.default_rng(0).integers(-9, 10, hr.shape), 0, 255).astype(np.uint8)
    for a in (hr, sr):
        np.testing.assert_allclose(rgb_to_y(a), rgb2ycbcr(a)[..., 0], atol=1e-9)
        np.testing.assert_allclose(rgb_to_y(a.astype(np.float64) / 255), rgb2ycbcr(a)[..., 0], atol=1e-9)
    assert rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)
    for other in (sr, noisy):
        ya, yb = crop_border(rgb_to_y(hr), 3), crop_border(rgb_to_y(other), 3)
        assert psnr(ya, yb) == pytest.approx(peak_signal_noise_ratio(ya, yb, data_range=255), abs=1e-9)
        ref = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
        assert ssim(ya, yb) == pytest.approx(ref, abs=1e-9)
        assert psnr_y(other, hr, 3) == pytest.approx(psnr(ya, yb), abs=1e-12)
        assert ssim_y(other, hr, 3) == pytest.approx(ssim(ya, yb), abs=1e-12)


@needs_train
def test_border_of_scale_pixels_is_cropped():
    hr = modcrop(read_image(builtin_dir() / "coffee.png"), 3)[:60, :90]
    sr = hr.copy()
    sr[:3] = 0
    sr[:, -3:] = 255  # only the border differs
    assert psnr_y(sr, hr, 3) == float("inf") and ssim_y(sr, hr, 3) == pytest.approx(1.0)
    assert psnr_y(sr, hr, 2) < 30 and psnr_y(sr, hr, 0) < 30
    sr[3, 3] = 255 - sr[3, 3]  # the first pixel inside the crop counts
    assert psnr_y(sr, hr, 3) < 100
    assert crop_border(hr, 3).shape == (54, 84, 3)
    with pytest.raises(OplatError, match="too small"):
        crop_border(hr[:6], 3)


# ---------------------------------------------------------------- data
@needs_train
def test_bicubic_is_matlab_imresize():
    """Away from the borders imresize is Pillow's float bicubic (the same kernel, a=-0.5,
    antialiased); at the borders it mirrors (a constant image stays constant); the sizes
    follow the scale; HR must be modcropped."""
    from PIL import Image

    hr = modcrop(read_image(builtin_dir() / "astronaut.png"), 3)[:150, :201].astype(np.float64)
    down = imresize(hr, 1 / 3)
    up = imresize(down, 3)
    assert down.shape == (50, 67, 3) and up.shape == (150, 201, 3)
    for src, out, margin in ((hr, down, 3), (down, up, 6)):
        pil = np.stack(
            [np.asarray(Image.fromarray(src[..., c].astype(np.float32), "F").resize(out.shape[1::-1], Image.BICUBIC))
             for c in range(3)], -1)
        np.testing.assert_allclose(out[margin:-margin, margin:-margin], pil[margin:-margin, margin:-margin], atol=1e-3)
    np.testing.assert_allclose(imresize(np.full((30, 33), 77.0), 1 / 3), 77.0, atol=1e-9)
    lr8 = bicubic_down(hr.astype(np.uint8), 3)
    assert lr8.dtype == np.uint8 and np.array_equal(lr8, np.clip(np.floor(down + 0.5), 0, 255).astype(np.uint8))
    with pytest.raises(OplatError, match="modcrop"):
        bicubic_down(np.zeros((31, 30, 3), np.uint8), 3)


@needs_train
def test_bicubic_baseline_is_computed_once_per_set(small_data, monkeypatch):
    """Every psnr trial of a search scores against the same validation set; the bicubic
    baseline is upsampled once per set, and a subset (another set) gets its own."""
    import oplat.train.loop as loop

    train, _ = small_data
    images = ImageSet.load(sorted(train.glob("*.png")), 3)
    calls = []
    real = loop.bicubic_up
    monkeypatch.setattr(loop, "bicubic_up", lambda lr, s: calls.append(1) or real(lr, s))
    first = loop.measure_bicubic(images)
    assert len(calls) == 2 and first.psnr > 20
    assert loop.measure_bicubic(images) is first and len(calls) == 2
    part = loop.measure_bicubic(images.subset(1))
    assert len(calls) == 3 and part is not first


@needs_train
def test_patches_are_deterministic_paired_and_augmented(small_data):
    train, _ = small_data
    paths = sorted(train.iterdir())
    sampler = PatchSampler(paths, scale=3, patch=20, batch=6, seed=4)
    lr, hr = sampler.sample(5)
    assert lr.shape == (6, 3, 20, 20) and hr.shape == (6, 3, 60, 60) and lr.dtype == np.float32
    assert 0 <= lr.min() and lr.max() <= 1
    again = PatchSampler(paths, scale=3, patch=20, batch=6, seed=4).sample(5)
    assert np.array_equal(again[0], lr) and np.array_equal(again[1], hr)
    assert not np.array_equal(sampler.sample(6)[0], lr)
    # every LR patch is the bicubic down-scale of its HR patch (flips/rotations commute
    # with the separable kernel), up to the patch border and 8-bit rounding
    for i in range(6):
        down = np.clip(imresize(hr[i].transpose(1, 2, 0) * 255, 1 / 3), 0, 255)
        np.testing.assert_allclose(down[3:-3, 3:-3], lr[i].transpose(1, 2, 0)[3:-3, 3:-3] * 255, atol=0.51)
    flips = {tuple(sampler.sample(s)[0][0, :, 0, 0]) for s in range(30)}
    assert len(flips) > 20
    # a data set larger than the memory budget: a window of images slides over it
    small = PatchSampler(paths, scale=3, patch=20, batch=6, seed=4, memory_budget=1)
    assert small.window == 1
    for step in range(16):
        small.sample(step)
    assert {small._window(step)[0] for step in range(16)} == {0, 1} and len(small._cache) <= 2
    assert np.array_equal(small.sample(9)[1], PatchSampler(paths, scale=3, patch=20, batch=6, seed=4, memory_budget=1).sample(9)[1])


@needs_train
def test_builtin_images_are_files_in_the_wheel_split_in_two():
    d = builtin_dir()
    assert d is not None and d.name == "data" and d.parent.name == "skimage"
    train, val, text = resolve_data(None, None)
    assert [p.name for p in train] == list(BUILTIN_TRAIN) and [p.name for p in val] == list(BUILTIN_VAL)
    assert not set(BUILTIN_TRAIN) & set(BUILTIN_VAL) and all(p.is_file() for p in train + val)
    assert all(read_image(p).shape[2] == 3 for p in train + val)
    assert "built-in" in text


@needs_train
def test_missing_data_is_one_clear_line(cli, tmp_path, monkeypatch):
    import oplat.train.data as data

    monkeypatch.setattr(data, "builtin_dir", lambda: None)
    result = cli("train", "abpn", "--results", str(tmp_path), "--no-progress")
    assert_one_line_error(result, "no training data", "--data", "pip install 'oplat[train]'")
    result = cli("train", "abpn", "--data", str(tmp_path / "nowhere"), "--results", str(tmp_path))
    assert_one_line_error(result, "--data", "not a folder")
    (tmp_path / "empty").mkdir()
    result = cli("train", "abpn", "--data", str(tmp_path / "empty"), "--val", str(tmp_path / "empty"), "--results", str(tmp_path))
    assert_one_line_error(result, "no .png/.jpg")


@needs_train
def test_architecture_files(tmp_path, cli):
    arch = _tiny("folded", False, 2, widths=(8, 8))
    path = tmp_path / "net.json"
    path.write_text(arch_to_json(arch))
    assert load_arch(str(path)) == (arch, "net")
    assert load_arch("abpn") == (ABPN, "abpn")
    path.write_text('{"scale": 3, "in_h": 8, "in_w": 8, "layers": [{"c_out": 26, "act": "none"}]}')
    with pytest.raises(OplatError, match="27 channels"):
        load_arch(str(path))
    path.write_text('{"scale": 3, "in_h": 8, "in_w": 8, "layers": [27], "depth": 2}')
    with pytest.raises(OplatError, match="unknown architecture field"):
        load_arch(str(path))
    onnx.save(model_from_arch(arch), tmp_path / "plain.onnx")
    assert_one_line_error(cli("train", str(tmp_path / "plain.onnx"), "--results", str(tmp_path)), "oplat.arch", "ARCH.json")
    assert_one_line_error(cli("train", "abpn", "--name", "../up", "--results", str(tmp_path)), "plain name")
    assert_one_line_error(cli("train", "abpn", "--qat-steps", "5", "--results", str(tmp_path)), "--qat")


# ---------------------------------------------------------------- training
BEATS_ARCH = ArchSpec(3, 32, 32, (Layer(32), Layer(32), Layer(32), Layer(27, act="none")))


@pytest.fixture(scope="module")
def trained(small_data, tmp_path_factory):
    """One real `oplat train` run (in process): a small anchor net, 500 steps, QAT."""
    from oplat.cli import main

    train, val = small_data
    root = tmp_path_factory.mktemp("trained")
    arch_file = root / "small.json"
    arch_file.write_text(arch_to_json(BEATS_ARCH))
    code = main(["train", str(arch_file), "--data", str(train), "--val", str(val), "--steps", "500", "--batch", "16",
                 "--patch", "16", "--lr", "3e-3", "--qat", "--qat-steps", "40", "--results", str(root), "--threads", "1",
                 "--no-progress"])
    assert code == 0
    return root / "train" / "small"


@needs_train
def test_training_beats_bicubic_and_reports_every_figure(trained, small_data):
    report = json.loads((trained / "train.json").read_text())
    res, summary = report["results"], report["summary"]
    assert set(res) == {"bicubic", "fp32", "int8_ptq", "int8_qat"}
    assert res["fp32"]["psnr"] > res["bicubic"]["psnr"] + 0.15, summary  # measured +0.33 dB here
    assert res["int8_ptq"]["psnr"] > res["bicubic"]["psnr"] and res["int8_qat"]["psnr"] > res["bicubic"]["psnr"]
    assert abs(summary["int8_ptq_drop_db"]) < 0.3 and abs(summary["int8_qat_drop_db"]) < 0.3
    assert summary["int8_ptq_drop_db"] == pytest.approx(res["fp32"]["psnr"] - res["int8_ptq"]["psnr"])
    assert report["timing"]["seconds_per_step"] > 0 and report["history"][-1]["phase"] == "qat"
    md = (trained / "train.md").read_text()
    for needle in ("| bicubic |", "| FP32 | `best.onnx`", "| INT8 PTQ | `best.int8.onnx`", "| INT8 QAT | `best.qat.int8.onnx`", "MATLAB"):
        assert needle in md
    # the figures are those of the emitted files, run in ONNX Runtime
    _, val = small_data
    images = ImageSet.load(sorted(val.iterdir()), 3)
    for key, file in (("fp32", "best.onnx"), ("int8_ptq", "best.int8.onnx"), ("int8_qat", "best.qat.int8.onnx")):
        assert measure_onnx(trained / file, images, key).psnr == pytest.approx(res[key]["psnr"], abs=1e-9)


@needs_train
def test_emitted_files_are_the_deployable_networks(trained):
    """best.onnx is model_from_arch's graph at the arch's input size with the trained
    weights; the INT8 files are QDQ that ORT fuses into one QLinearConv per conv; each
    carries the architecture, so `oplat train best.onnx` reads it back."""
    fp32 = onnx.load(trained / "best.onnx")
    dims = [d.dim_value for d in fp32.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 32]
    assert [n.op_type for n in fp32.graph.node] == [n.op_type for n in model_from_arch(BEATS_ARCH).graph.node]
    for file in ("best.int8.onnx", "best.qat.int8.onnx"):
        model = onnx.load(trained / file)
        assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 3, 96, 96]
        counts = optimized_op_counts(model)
        assert counts.get("QLinearConv") == 4 and not counts.get("Conv")
    assert load_arch(str(trained / "best.onnx")) == (BEATS_ARCH, "small")


@needs_train
def test_resume_is_the_uninterrupted_run(small_data, tmp_path):
    """A run stopped mid-training and again mid-QAT, resumed from its checkpoints, ends
    with the weights of the run that was never stopped."""
    train, val = small_data
    arch = _tiny(widths=(8,))
    images = ImageSet.load(sorted(val.iterdir()), 3)
    cfg = TrainConfig(steps=30, batch=4, patch=12, qat_steps=12, qat_refresh=5, checkpoint_every=5, val_every=10)

    def trainer(folder: Path, on_step=None) -> Trainer:
        sampler = PatchSampler(sorted(train.iterdir()), scale=3, patch=12, batch=4, seed=0)
        data = TrainData(sampler, images, images, "test", (), ())
        return Trainer(ArchNet.from_arch(arch), data, cfg, folder / CHECKPOINT, fingerprint={"run": 1},
                       progress=False, on_step=on_step)

    (tmp_path / "a").mkdir()
    whole = trainer(tmp_path / "a").run()

    class Stop(Exception):
        pass

    def stop_at(phase, step):
        def hook(p, s, _val_psnr):
            if (p, s) == (phase, step):
                raise Stop
        return hook

    (tmp_path / "b").mkdir()
    for where in (("train", 23), ("qat", 8)):
        with pytest.raises(Stop):
            trainer(tmp_path / "b", stop_at(*where)).run()
    resumed = trainer(tmp_path / "b").run()
    assert resumed.resumed_from == [("qat", 5)]
    for key in ("fp32_state", "qat_state"):
        for name, value in getattr(whole, key).items():
            torch.testing.assert_close(getattr(resumed, key)[name], value, rtol=0, atol=1e-6)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in whole.history]
    # a checkpoint of other settings is refused, not silently continued
    sampler = PatchSampler(sorted(train.iterdir()), scale=3, patch=12, batch=4, seed=0)
    other = Trainer(ArchNet.from_arch(arch), TrainData(sampler, images, images, "test", (), ()), cfg,
                    tmp_path / "b" / CHECKPOINT, fingerprint={"run": 2}, progress=False)
    with pytest.raises(OplatError, match="--fresh"):
        other.run()


@needs_train
def test_killed_training_resumes(small_data, tmp_path, cli):
    """A real `oplat train` process is SIGKILLed after its first checkpoints; the same
    command continues from the checkpoint (not from step 0) and finishes."""
    train, val = small_data
    arch_file = tmp_path / "tiny.json"
    arch_file.write_text(arch_to_json(_tiny(widths=(8,))))
    args = ["train", str(arch_file), "--data", str(train), "--val", str(val), "--steps", "1500", "--batch", "4",
            "--patch", "12", "--checkpoint-every", "10", "--val-every", "1000", "--results", str(tmp_path),
            "--threads", "1", "--no-progress"]
    ckpt = tmp_path / "train" / "tiny" / CHECKPOINT
    proc = subprocess.Popen([sys.executable, "-m", "oplat", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ckpt.exists():
            time.sleep(0.02)
        assert ckpt.exists(), "no checkpoint within 120 s"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = torch.load(ckpt, weights_only=True)
    assert state["phase"] == "train" and 10 <= state["step"] < 1500, "the process should have been killed mid-run"
    # a different command is refused with one line
    assert_one_line_error(cli(*[a if a != "1500" else "1499" for a in args]), "another run", "steps", "--fresh")
    result = cli(*args)
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "train" / "tiny" / "train.json").read_text())
    assert report["resumed_from"] == [["train", state["step"]]]
    assert report["history"][-1]["step"] == 1500
    assert (tmp_path / "train" / "tiny" / "best.int8.onnx").exists()
