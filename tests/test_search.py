"""oplat.search: the constrained network search, its outputs and its resumability.

Search logic runs on a deterministic FAKE table built in memory (``median_ms`` = MACs/1e9 +
elements moved/1e8, halved for int8) over a tiny ABPN-family space at 24×32, so the
figures are exact and the tests need no measurement.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
from optuna.trial import TrialState

from oplat.arch import ABPN, ArchSpec, Layer, arch_ops, calibration_images, macs, model_from_arch, quantize_qdq
from oplat.errors import OplatError
from oplat.graph import net_graph
from oplat.predict import Predictor
from oplat.search import (
    QUALITY_PROXY_NAME,
    Prices,
    arch_kernels,
    arch_net,
    fastest_network,
    learned_macs_per_output_pixel,
    quality_proxy,
    receptive_field_px,
    run_search,
    search_throughput,
)
from oplat.space import SearchSpace, arch_from_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parent.parent
META_KEYS = (
    "oplat.table",
    "oplat.device",
    "oplat.predicted_ms",
    "oplat.budget_ms",
    "oplat.precision",
    "oplat.arch",
    "oplat.quality_proxy",
    "oplat.version",
)


# ---------------------------------------------------------------------- fake table
def tiny_space(**overrides) -> SearchSpace:
    fields = dict(
        name="tiny",
        scale=3,
        in_h=24,
        in_w=32,
        depth_min=1,
        depth_max=5,
        channels=(8, 16, 24, 32),
        channel_align=8,
        residuals=("anchor", "folded", "none"),
    )
    fields.update(overrides)
    return SearchSpace(**fields)


class _Values:
    def __init__(self, values: dict) -> None:
        self.values = values

    def suggest_int(self, name, low, high):
        return self.values[name]

    def suggest_categorical(self, name, choices):
        return self.values[name]


def all_archs(space: SearchSpace) -> list[ArchSpec]:
    """Every network of a uniform-width space."""
    assert space.widths == "uniform"
    return [
        arch_from_trial(_Values({"depth": d, "width": w, "residual": r}), space)
        for d in range(space.depth_min, space.depth_max + 1)
        for w in space.channels
        for r in space.residuals
    ]


def fake_ms(spec) -> float:
    return (spec.macs / 1e9 + spec.elements_moved / 1e8) * (0.5 if spec.precision == "int8" else 1.0)


def fake_rows(space: SearchSpace) -> list[dict]:
    """``ok`` table rows (the table file's format) for every kernel the space's FP32 and
    INT8 networks run."""
    specs = {}
    for arch in all_archs(space):
        for precision in ("fp32", "int8"):
            for kernel in arch_kernels(arch, precision):
                specs[kernel.spec.key] = kernel.spec
    return [
        {
            "schema_version": 1,
            "key": s.key,
            "spec": s.as_dict(),
            "label": s.label(),
            "status": "ok",
            "device": {"name": "fake"},
            "median_ms": fake_ms(s),
        }
        for s in specs.values()
    ]


def write_table(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_space(path: Path, space: SearchSpace) -> Path:
    lines = []
    for key, value in space.as_toml_dict().items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def int8_ms(arch: ArchSpec) -> float:
    return sum(fake_ms(k.spec) for k in arch_kernels(arch, "int8"))


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return tiny_space()


@pytest.fixture(scope="module")
def predictor(space) -> Predictor:
    return Predictor(fake_rows(space), source="fake.jsonl")


@pytest.fixture(scope="module")
def budget_ms(space) -> float:
    """A budget in the middle of the space: about half the networks meet it."""
    return float(np.median([int8_ms(a) for a in all_archs(space)]))


@pytest.fixture(scope="module")
def searched(tmp_path_factory, space, predictor, budget_ms):
    out = tmp_path_factory.mktemp("search") / "results" / "search" / "t"
    result = run_search(
        space=space, predictor=predictor, budget_ms=budget_ms, trials=60, name="t", out_dir=out, seed=1, progress=False
    )
    return result


# ---------------------------------------------------------------------- kernels without ONNX
_SMALL_ABPN = ABPN.with_input(24, 32)
_VARIANTS = [
    _SMALL_ABPN,
    replace(_SMALL_ABPN, residual="folded"),
    replace(_SMALL_ABPN, residual="none"),
    replace(_SMALL_ABPN, clip=False),
    ArchSpec(2, 12, 16, (Layer(8, kernel=5), Layer(16), Layer(12, act="relu")), residual="folded", clip=True),
    ArchSpec(4, 8, 8, (Layer(8), Layer(48, act="none", kernel=1)), residual="none", clip=False),
]


@pytest.mark.parametrize("arch", _VARIANTS, ids=lambda a: f"{a.residual}-clip{a.clip}-x{a.scale}-{len(a.layers)}L")
def test_kernel_path_matches_the_onnx_graphs(arch: ArchSpec) -> None:
    fp32 = model_from_arch(arch)
    graphs = {"fp32": net_graph(fp32), "int8": net_graph(quantize_qdq(fp32))}
    for precision, want in graphs.items():
        got = arch_net(arch, precision)
        assert [(k.spec, k.nodes) for k in got.kernels] == [(k.spec, k.nodes) for k in want.kernels], precision
        assert got.precision == want.precision == precision
        assert (got.input_elements, got.output_elements) == (want.input_elements, want.output_elements)
        assert got.boundary_nodes == want.boundary_nodes
        assert (got.params, got.macs) == (want.params, want.macs)


def test_kernel_path_predicts_what_the_onnx_graph_does(predictor) -> None:
    arch = all_archs(tiny_space())[17]
    fp32 = model_from_arch(arch)
    for precision, model in (("fp32", fp32), ("int8", quantize_qdq(fp32))):
        fast, slow = predictor.predict(arch_net(arch, precision)), predictor.predict(model)
        assert fast.total_ms == pytest.approx(slow.total_ms, rel=1e-12)
        assert [k.source for k in fast.kernels] == [k.source for k in slow.kernels] == ["measured"] * len(fast.kernels)


def test_search_prices_the_in_network_reorders_predict_prices() -> None:
    """On an ONNX Runtime table the search prices a network with the reorders / transposes
    ORT runs inside it, read from the graph at a tiny input size, exactly as `predict`
    prices the full-size ONNX file (the emitted network's breakdown adds up to the
    search's figure)."""
    rows = Predictor.from_table(REPO / "results" / "cpu" / "sr-core.jsonl").rows.values()
    predictor = Predictor(list(rows))  # uncalibrated: the plain sum, reorders weighed 1
    prices = Prices(predictor, device=None, table_path=None, policy=None, opset="")
    fp32 = model_from_arch(ABPN)
    for precision, model in (("fp32", fp32), ("int8", quantize_qdq(fp32))):
        full = predictor.predict(model)
        assert full.reorder_ms > 0 and "optimized graph" in full.reorder_note, precision
        assert prices.price(ABPN, precision).predicted_ms == pytest.approx(full.total_ms, rel=1e-9), precision
    assert predictor.predict(arch_net(ABPN, "fp32")).reorder_ms == 0.0  # no graph: none priced, and it says so


def test_int8_kernels_drop_relu_and_clip() -> None:
    kernels = arch_kernels(_SMALL_ABPN, "int8")
    assert {k.spec.op for k in kernels} == {"concat", "conv", "add", "depth_to_space"}
    assert all(k.spec.precision == "int8" for k in kernels)
    assert [k.spec.op for k in arch_kernels(_SMALL_ABPN, "fp32")] == [s.op for s in arch_ops(_SMALL_ABPN, "fp32")]
    with pytest.raises(OplatError, match="precision"):
        arch_kernels(_SMALL_ABPN, "fp16")


# ---------------------------------------------------------------------- quality proxy
def test_quality_proxy_formula_and_monotonicity() -> None:
    a = ABPN
    # ABPN: Σ c_in·c_out·9 over its declared convs, per output pixel (÷ s² = 9).
    learned = 3 * 28 + 28 * 28 * 4 + 28 * 27 + 27 * 27  # k² = 9 cancels s² = 9
    assert learned_macs_per_output_pixel(a) == pytest.approx(learned)
    assert receptive_field_px(a) == 1 + 7 * 2
    assert quality_proxy(a) == pytest.approx(math.log2(learned) + math.log2(15))
    # anchor and folded are one function: same score, though folded runs more MACs.
    folded = replace(a, residual="folded")
    assert macs(folded) > macs(a) and quality_proxy(folded) == quality_proxy(a)
    # no residual: credited 3 channels narrower than the anchor network.
    assert quality_proxy(replace(a, residual="none")) < quality_proxy(a)
    # wider or deeper never scores lower
    space = tiny_space()
    for r in space.residuals:
        for d in range(space.depth_min, space.depth_max + 1):
            qs = [quality_proxy(arch_from_trial(_Values({"depth": d, "width": w, "residual": r}), space)) for w in space.channels]
            assert qs == sorted(qs) and len(set(qs)) == len(qs)
        for w in space.channels:
            qs = [quality_proxy(arch_from_trial(_Values({"depth": d, "width": w, "residual": r}), space)) for d in range(1, 6)]
            assert qs == sorted(qs) and len(set(qs)) == len(qs)


# ---------------------------------------------------------------------- budgets
def test_fastest_network(space, predictor) -> None:
    arch, ms = fastest_network(space, predictor)
    assert ms == pytest.approx(min(int8_ms(a) for a in all_archs(space)), rel=1e-12)
    assert arch.layers[0].c_out == min(space.channels) and len(arch.layers) == space.depth_min + 1 + len(space.tail)


def test_impossible_budget_names_the_fastest_latency(tmp_path, space, predictor) -> None:
    _, ms = fastest_network(space, predictor)
    with pytest.raises(OplatError) as info:
        run_search(space=space, predictor=predictor, budget_ms=ms / 2, trials=5, name="x", out_dir=tmp_path / "x", progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"{ms:.4g} ms" in message and "at least" in message and "smaller input" in message and "faster device" in message
    assert not (tmp_path / "x").exists()  # refused before any trial


def test_bad_arguments(tmp_path, space, predictor) -> None:
    for kwargs, needle in (
        ({"budget_ms": -1.0}, "budget"),
        ({"budget_ms": float("nan")}, "budget"),
        ({"trials": 0}, "trials"),
        ({"precision": "fp16"}, "precision"),
    ):
        args = dict(space=space, predictor=predictor, budget_ms=1.0, trials=3, name="b", out_dir=tmp_path / "b", progress=False)
        args.update(kwargs)
        with pytest.raises(OplatError, match=needle):
            run_search(**args)


# ---------------------------------------------------------------------- constraints
def test_infeasible_trials_stay_and_the_best_is_feasible(searched, budget_ms, space) -> None:
    study = optuna.load_study(
        study_name="t",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(searched.journal))),
    )
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 60 == searched.trials_total
    infeasible = [t for t in complete if t.constraints["latency_ms"] > 0]
    feasible = [t for t in complete if t.constraints["latency_ms"] <= 0]
    assert infeasible and feasible
    for t in complete:
        assert t.constraints["latency_ms"] == pytest.approx(t.user_attrs["predicted_ms"] - budget_ms)
        for key in ("predicted_ms", "quality_proxy", "params", "macs", "arch", "measured_share"):
            assert key in t.user_attrs
    # the result is the best feasible trial, and really feasible
    assert searched.predicted_ms <= budget_ms
    assert searched.quality_proxy == max(t.user_attrs["quality_proxy"] for t in feasible)
    assert searched.predicted_ms == pytest.approx(int8_ms(searched.arch), rel=1e-12)
    assert study.user_attrs["oplat.space_fingerprint"] == space.fingerprint
    assert study.user_attrs["oplat.budget_ms"] == budget_ms
    assert study.user_attrs["oplat.precision"] == "int8"
    assert study.user_attrs["oplat.table"] == "fake.jsonl"
    # the first trial is the fastest network (so a feasible trial always exists)
    assert complete[0].user_attrs["predicted_ms"] == pytest.approx(min(int8_ms(a) for a in all_archs(space)))


def test_fp32_budget_constrains_the_fp32_network(tmp_path, space, predictor) -> None:
    budget = float(np.median([sum(fake_ms(k.spec) for k in arch_kernels(a, "fp32")) for a in all_archs(space)]))
    r = run_search(
        space=space, predictor=predictor, budget_ms=budget, precision="fp32", trials=20, name="f",
        out_dir=tmp_path / "f", progress=False,
    )
    assert r.precision == "fp32" and r.predicted_ms == r.predicted_fp32_ms <= budget
    assert r.predicted_int8_ms is not None and r.predicted_int8_ms < r.predicted_fp32_ms


def test_pareto_mode(tmp_path, space, predictor, budget_ms) -> None:
    r = run_search(
        space=space, predictor=predictor, budget_ms=budget_ms, trials=25, name="p", out_dir=tmp_path / "p",
        pareto=True, progress=False,
    )
    study = optuna.load_study(
        study_name="p", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(r.journal)))
    )
    assert len(study.directions) == 2
    assert r.predicted_ms <= budget_ms and r.trials_total == 25
    with pytest.raises(OplatError, match="Pareto"):
        run_search(space=space, predictor=predictor, budget_ms=budget_ms, trials=26, name="p", out_dir=tmp_path / "p", progress=False)


# ---------------------------------------------------------------------- name clashes
def test_name_clash_with_another_space(tmp_path, space, predictor, budget_ms) -> None:
    out = tmp_path / "results" / "search" / "clash"
    run_search(space=space, predictor=predictor, budget_ms=budget_ms, trials=5, name="clash", out_dir=out, progress=False)
    other = tiny_space(channels=(8, 16, 24))
    with pytest.raises(OplatError) as info:
        run_search(
            space=other, predictor=Predictor(fake_rows(other)), budget_ms=budget_ms, trials=10, name="clash",
            out_dir=out, progress=False,
        )
    message = str(info.value)
    assert "study 'clash' was created for another search space" in message
    assert "pick another --name or delete" in message and str(out) in message
    # a renamed but identical space is the same search
    r = run_search(
        space=replace(space, name="renamed"), predictor=predictor, budget_ms=budget_ms, trials=8, name="clash",
        out_dir=out, progress=False,
    )
    assert r.trials_total == 8 and r.trials_run == 3
    with pytest.raises(OplatError, match="budget"):
        run_search(space=space, predictor=predictor, budget_ms=budget_ms * 2, trials=9, name="clash", out_dir=out, progress=False)


# ---------------------------------------------------------------------- resume after a kill
_CHILD = """
from oplat.predict import Predictor
from oplat.search import run_search
from oplat.space import load_space
run_search(space=load_space({space!r}), predictor=Predictor.from_table({table!r}), budget_ms={budget!r},
           trials=100000, name="resume", out_dir={out!r}, table_path={table!r}, progress=False)
"""


def _complete_numbers(journal: Path) -> dict[int, float]:
    if not journal.exists():
        return {}
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    try:
        study = optuna.load_study(study_name="resume", storage=storage)
    except KeyError:
        return {}
    return {t.number: t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def test_resume_after_sigkill(tmp_path, space, budget_ms) -> None:
    table = write_table(tmp_path / "fake.jsonl", fake_rows(space))
    space_file = write_space(tmp_path / "tiny.toml", space)
    out = tmp_path / "results" / "search" / "resume"
    journal = out / "study.journal"
    code = _CHILD.format(space=str(space_file), table=str(table), budget=budget_ms, out=str(out))
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(_complete_numbers(journal)) < 15:
            assert child.poll() is None, child.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the child search never got going"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    before = _complete_numbers(journal)
    assert len(before) >= 15
    # Whether or not the kill landed inside a trial, leave one in flight the way a killed
    # worker does: asked, parameters suggested, never told.
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    zombie = optuna.load_study(study_name="resume", storage=storage).ask()
    zombie_params = {
        "depth": zombie.suggest_int("depth", space.depth_min, space.depth_max),
        "width": zombie.suggest_categorical("width", space.channels),
        "residual": zombie.suggest_categorical("residual", space.residuals),
    }

    target = len(before) + 10
    r = run_search(
        space=load_space_file(space_file), predictor=Predictor.from_table(table), budget_ms=budget_ms, trials=target,
        name="resume", out_dir=out, table_path=table, progress=False,
    )
    after = _complete_numbers(journal)
    assert r.trials_total == len(after) == target and r.trials_run == 10
    # no trial lost: every trial completed before the kill is still there, unchanged
    assert all(after.get(n) == v for n, v in before.items())
    # numbering continues after the killed run's trials; nothing is left RUNNING
    assert min(set(after) - set(before)) > max(before)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="resume", storage=storage)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    retried = {t.user_attrs["oplat.retry_of"]: t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "oplat.retry_of" in t.user_attrs}
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert zombie.number in {t.number for t in failed}
    assert sorted(retried) == sorted(t.number for t in failed)  # each trial killed mid-run was run again
    assert retried[zombie.number].params == zombie_params
    assert r.best_onnx.exists() and r.predicted_ms <= budget_ms


def load_space_file(path: Path) -> SearchSpace:
    from oplat.space import load_space

    return load_space(path)


# ---------------------------------------------------------------------- emission
def _meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def test_emitted_models_check_run_and_carry_metadata(searched, space, budget_ms) -> None:
    arch = searched.arch
    for path, precision in ((searched.best_onnx, "fp32"), (searched.best_int8_onnx, "int8")):
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        from oplat.backends.ort import exact_session

        session = exact_session(str(path))
        (y,) = session.run(None, {"x": calibration_images(arch.in_h, arch.in_w, 1)[0]})
        assert y.shape == (1, 3, space.scale * space.in_h, space.scale * space.in_w)
        meta = _meta(model)
        assert all(key in meta for key in META_KEYS), sorted(meta)
        assert meta["oplat.precision"] == precision
        assert meta["oplat.budget_ms"] == f"{budget_ms:g}"
        assert meta["oplat.table"] == "fake.jsonl" and meta["oplat.device"] == "fake"
        assert ArchSpec(**{**json.loads(meta["oplat.arch"]), "layers": tuple(Layer(**l) for l in json.loads(meta["oplat.arch"])["layers"])}) == arch
        assert float(meta["oplat.quality_proxy"]) == pytest.approx(searched.quality_proxy, abs=1e-6)
    int8_meta = _meta(onnx.load(str(searched.best_int8_onnx)))
    assert float(int8_meta["oplat.predicted_ms"]) == pytest.approx(searched.predicted_int8_ms, rel=1e-5)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(searched.best_int8_onnx)).graph.node)


def test_report_names_the_proxy_and_breaks_down_kernels(searched) -> None:
    text = searched.report.read_text(encoding="utf-8")
    assert QUALITY_PROXY_NAME in text and "not PSNR" in text
    assert searched.description in text
    assert f"{searched.params:,}" in text
    assert "Per-kernel breakdown, `best.int8.onnx`" in text and "Per-kernel breakdown, `best.onnx`" in text
    kernel_rows = [line for line in text.splitlines() if line.startswith("|") and "conv3x3" in line]
    assert kernel_rows and all(" measured " in line for line in kernel_rows)
    assert "uncalibrated" in text
    assert "Not measured (no device given)" in text
    assert "OVER BUDGET" not in text


def test_pareto_csv(searched, budget_ms) -> None:
    with open(searched.pareto_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows
    assert set(rows[0]) == {"trial", "predicted_ms", "quality_proxy", "params", "macs", "measured_share", "feasible", "arch"}
    ms = [float(r["predicted_ms"]) for r in rows]
    q = [float(r["quality_proxy"]) for r in rows]
    assert ms == sorted(ms) and q == sorted(q) and len(set(q)) == len(q)  # a front: slower only if better
    assert all(r["feasible"] == ("yes" if float(r["predicted_ms"]) <= budget_ms else "no") for r in rows)
    assert any(int(r["trial"]) == searched.trial_number for r in rows)


def test_summary_lines(searched) -> None:
    text = searched.summary()
    assert searched.description in text and "capacity proxy (not PSNR)" in text and "uncalibrated" in text


# ---------------------------------------------------------------------- device in the loop
def test_over_budget_takes_the_next_candidate_that_measures_under(tmp_path, space, predictor, budget_ms) -> None:
    from oplat import search
    from oplat.devices import get_device

    calls = []

    def fake_measure(model, device, policy):
        calls.append(model)
        over = len(calls) == 1  # the winner measures over budget, the next candidate under
        ms = budget_ms * (1.5 if over else 0.5)
        return {"median_ms": ms, "p10_ms": ms * 0.9, "p90_ms": ms * 1.1, "noisy": False}

    table = write_table(tmp_path / "fake.jsonl", fake_rows(space))  # complete: nothing to measure per kernel
    r = run_search(
        space=space, predictor=predictor, budget_ms=budget_ms, trials=30, name="o", out_dir=tmp_path / "o",
        device=get_device("cpu"), table_path=table, progress=False, measure=fake_measure,
    )
    assert r.over_budget is False and r.substituted and "rank 2" in r.substituted
    assert r.measured_int8["median_ms"] < budget_ms and r.measured_fp32 is not None
    text = r.report.read_text(encoding="utf-8")
    assert "Measured latency" in text and "p10" in text and "rank 2" in text and "OVER BUDGET" not in text
    # what was measured is on the study too (optuna-dashboard shows study attributes)
    study = optuna.load_study(
        study_name="o", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(r.journal)))
    )
    measured = {k: v for k, v in study.user_attrs.items() if k.startswith("oplat.measured.trial_")}
    emitted = measured.pop(f"oplat.measured.trial_{r.trial_number}")
    assert emitted["within_budget"] is True and emitted["int8"]["median_ms"] == r.measured_int8["median_ms"] and "fp32" in emitted
    assert [v["within_budget"] for v in measured.values()] == [False]

    calls.clear()
    r = run_search(
        space=space, predictor=predictor, budget_ms=budget_ms, trials=30, name="o", out_dir=tmp_path / "o",
        device=get_device("cpu"), table_path=table, progress=False,
        measure=lambda m, d, p: (calls.append(m), {"median_ms": 2 * budget_ms, "p10_ms": 1, "p90_ms": 3})[1],
    )
    assert r.over_budget is True
    assert len(calls) == search.MEASURE_CANDIDATES + 1  # 5 candidates of the budget precision, then the fp32 file
    assert "\nOVER BUDGET" in r.report.read_text(encoding="utf-8")


def test_device_measures_missing_kernels_and_the_winner(tmp_path) -> None:
    from oplat.devices import get_device
    from oplat.table import read_table
    from oplat.timing import TimingPolicy

    device = get_device("cpu")
    if device.available():
        pytest.skip(device.available())
    small = tiny_space(name="dev", scale=2, in_h=8, in_w=8, depth_min=1, depth_max=2, channels=(8, 16), residuals=("anchor",))
    table = tmp_path / "cpu.jsonl"
    r = run_search(
        space=small, predictor=Predictor([]), budget_ms=1000.0, trials=4, name="dev", out_dir=tmp_path / "dev",
        device=device, table_path=table, policy=TimingPolicy.quick(), progress=False,
    )
    rows = [r.to_json() for r in read_table(table).rows]
    assert rows and r.measured_rows == len(rows)
    assert r.measured_share == 1.0  # every kernel of the winner now has its own row
    assert r.over_budget is False
    for m in (r.measured_fp32, r.measured_int8):
        assert m["p10_ms"] <= m["median_ms"] <= m["p90_ms"]
    meta = _meta(onnx.load(str(r.best_int8_onnx)))
    assert meta["oplat.device"] == "cpu" and "oplat.measured_ms" in meta
    # cached: a second search measures nothing new
    again = run_search(
        space=small, predictor=Predictor.from_table(table), budget_ms=1000.0, trials=6, name="dev2",
        out_dir=tmp_path / "dev2", device=device, table_path=table, policy=TimingPolicy.quick(), progress=False,
    )
    assert again.measured_rows == 0 and len([r.to_json() for r in read_table(table).rows]) == len(rows)


# ---------------------------------------------------------------------- throughput
def test_search_loop_throughput_fast(tmp_path, space, predictor, budget_ms) -> None:
    rate = search_throughput(space=space, predictor=predictor, budget_ms=budget_ms, trials=100, out_dir=tmp_path / "tp")
    assert rate > 30  # generous: the machine is shared; the slow test holds the real bar


@pytest.mark.slow
def test_search_throughput_1000_trials(tmp_path, space, predictor, budget_ms) -> None:
    rate = search_throughput(space=space, predictor=predictor, budget_ms=budget_ms, trials=1000, out_dir=tmp_path / "tp")
    assert rate >= 100, f"{rate:.0f} trials/s"


def test_one_search_per_result_folder(tmp_path, space, predictor, budget_ms) -> None:
    from oplat.search import FolderLock

    out = tmp_path / "busy"
    with FolderLock(out, None):
        with pytest.raises(OplatError, match="another oplat search is running in .*several workers on one study: give each the same --storage"):
            run_search(space=space, predictor=predictor, budget_ms=budget_ms, trials=3, name="busy", out_dir=out, progress=False)
    r = run_search(space=space, predictor=predictor, budget_ms=budget_ms, trials=3, name="busy", out_dir=out, progress=False)
    assert r.trials_total == 3


def test_storage_url(tmp_path, space, predictor, budget_ms) -> None:
    pytest.importorskip("sqlalchemy")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    r = run_search(space=space, predictor=predictor, budget_ms=budget_ms, trials=6, name="u", out_dir=tmp_path / "u", storage=url, progress=False)
    assert r.storage == url and r.journal is None and r.trials_total == 6
    assert not (tmp_path / "u" / "study.journal").exists() and r.best_onnx.exists()
    again = run_search(space=space, predictor=predictor, budget_ms=budget_ms, trials=9, name="u", out_dir=tmp_path / "u", storage=url, progress=False)
    assert again.trials_total == 9 and again.trials_run == 3


_WORKER = """
import sys
from oplat.predict import Predictor
from oplat.search import run_search
from oplat.space import load_space
r = run_search(space=load_space({space!r}), predictor=Predictor.from_table({table!r}), budget_ms={budget!r},
               trials={trials}, name="w", out_dir={out!r}, storage={storage!r}, table_path={table!r}, progress=False)
print(r.trials_run, r.trial_number)
"""


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_workers_on_one_storage_run_the_study_total(tmp_path, space, budget_ms, kind) -> None:
    # --trials is the study's total: two workers started together with 60 run 60 between them
    if kind == "sqlite":
        pytest.importorskip("sqlalchemy")
    table = write_table(tmp_path / "fake.jsonl", fake_rows(space))
    space_file = write_space(tmp_path / "tiny.toml", space)
    journal = tmp_path / "shared.journal"
    storage = str(journal) if kind == "journal" else f"sqlite:///{tmp_path / 'studies.db'}"
    out = tmp_path / "results" / "search" / "w"  # one folder for both: emitted files are replaced whole
    code = _WORKER.format(space=str(space_file), table=str(table), budget=budget_ms, trials=60, out=str(out), storage=storage)
    workers = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), [e[-2000:] for _, e in outs]
    ran = [tuple(map(int, o.split())) for o, _ in outs]
    assert sum(r for r, _ in ran) == 60 and len({n for _, n in ran}) == 1  # the same winner for both
    if kind == "journal":
        storage_obj = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    else:
        storage_obj = optuna.storages.RDBStorage(storage)
    trials = optuna.load_study(study_name="w", storage=storage_obj).get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(60)) and all(t.state == TrialState.COMPLETE for t in trials)
    assert (out / "best.int8.onnx").exists() and not [p.name for p in out.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- the CLI
def test_search_cli_emits_and_resumes(tmp_path, space, budget_ms, capsys) -> None:
    from oplat.cli import main

    table = write_table(tmp_path / "fake.jsonl", fake_rows(space))
    space_file = write_space(tmp_path / "tiny.toml", space)
    argv = ["search", "--budget", f"{budget_ms}ms", "--table", str(table), "--space", str(space_file),
            "--trials", "20", "--results", str(tmp_path / "r"), "--name", "cli", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "capacity proxy (not PSNR)" in out and "uncalibrated" in out
    folder = tmp_path / "r" / "search" / "cli"
    for name in ("best.onnx", "best.int8.onnx", "report.md", "pareto.csv"):
        assert (folder / name).exists()
    argv[argv.index("20")] = "30"
    assert main([*argv, "--dashboard"]) == 0
    out = capsys.readouterr().out
    assert "30 trials" in out
    assert f"  open the study: optuna-dashboard {folder / 'study.journal'}\n" in out


@pytest.mark.parametrize(
    "budget, needle",
    [("forty", "is not a duration"), ("-3ms", "budget"), ("0s", "budget"), ("0.001ms", "no network in search space")],
)
def test_search_cli_bad_budgets_are_one_line(tmp_path, space, budget, needle, capsys) -> None:
    from oplat.cli import main

    table = write_table(tmp_path / "fake.jsonl", fake_rows(space))
    space_file = write_space(tmp_path / "tiny.toml", space)
    code = main(["search", f"--budget={budget}", "--table", str(table), "--space", str(space_file),
                 "--results", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


def test_search_cli_refuses_a_table_from_another_device(tmp_path, space, capsys) -> None:
    from oplat.cli import main

    rows = fake_rows(space)
    for row in rows:
        row["device"] = {**row["device"], "name": "openvino", "runtime": "openvino"}
    table = write_table(tmp_path / "ov.jsonl", rows)
    space_file = write_space(tmp_path / "tiny.toml", space)
    code = main(["search", "--budget", "1s", "--table", str(table), "--device", "cpu", "--space", str(space_file),
                 "--results", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "name='openvino'" in err and "--device" in err


def test_best_tflite_is_written_and_checked(searched) -> None:
    pytest.importorskip("ai_edge_litert")
    assert searched.best_tflite is not None and searched.best_tflite.exists()
    assert "against best.int8.onnx in LiteRT: median 0" in searched.tflite_note
    assert "best.tflite" in searched.report.read_text()
