"""``oplat search --objective psnr``: trials trained and judged by the PSNR of their own
ONNX files, the pruner, the winner trained in full, the emitted files re-measured from
disk, resuming, several workers on one study, and the no-torch path.

Latency comes from the deterministic FAKE table of test_search (the search logic needs
no measurement); everything about quality is real: torch trains tiny networks of a
24×32 ABPN-family space on small crops of the built-in photographs, and ONNX Runtime
runs the emitted files. Needs the ``train`` extra (skipped without it, except the
no-torch test).
"""

from __future__ import annotations

import csv
import subprocess
import sys

import onnx
import optuna
import pytest
from optuna.trial import TrialState

from conftest import HAVE_TRAIN, REPO, assert_one_line_error, run_python
from oplat.errors import OplatError
from oplat.predict import Predictor
from oplat.search import run_search
from oplat.search.trained import PsnrObjective
from test_search import all_archs, fake_rows, int8_ms, tiny_space, write_space, write_table

needs_train = pytest.mark.skipif(not HAVE_TRAIN, reason="needs the train extra: pip install 'oplat[train]'")
optuna.logging.set_verbosity(optuna.logging.WARNING)

TRIALS = 10


def _objective(data, **overrides) -> PsnrObjective:
    train, val = data
    fields = dict(trial_steps=12, steps=30, batch=4, patch=12, reports=4, pruner="halving", data=str(train),
                  val=str(val), threads=1, torch_device="cpu")
    fields.update(overrides)
    return PsnrObjective(**fields)


@pytest.fixture(scope="module")
def space():
    return tiny_space(depth_max=3, channels=(8, 16, 24))


@pytest.fixture(scope="module")
def budget_ms(space):
    """About two thirds of the networks meet it."""
    ms = sorted(int8_ms(a) for a in all_archs(space))
    return ms[int(len(ms) * 0.66)]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, space, budget_ms, small_data):
    out = tmp_path_factory.mktemp("psnr") / "search" / "p"
    predictor = Predictor(fake_rows(space), source="fake.jsonl")
    result = run_search(space=space, predictor=predictor, budget_ms=budget_ms, trials=TRIALS, name="p", out_dir=out,
                        seed=3, progress=False, objective=_objective(small_data))
    return result, predictor


def _study(result):
    return optuna.load_study(study_name=result.name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(result.journal))))


@needs_train
def test_feasible_trials_are_trained_and_judged_by_int8_psnr(searched, budget_ms):
    result, _ = searched
    study = _study(result)
    trials = study.get_trials(deepcopy=False)
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == TRIALS
    trained = 0
    for t in trials:
        ua = t.user_attrs
        if t.state != TrialState.COMPLETE:
            continue
        if ua["predicted_ms"] > budget_ms:  # priced first: an infeasible network is never trained
            assert "int8_psnr" not in ua and "train_steps" not in ua and t.value == 0.0, t.number
        else:
            trained += 1
            assert t.value == ua["int8_psnr"] and 5 < ua["int8_psnr"] < 60
            assert ua["int8_drop_db"] == pytest.approx(ua["fp32_psnr"] - ua["int8_psnr"], abs=1e-12)
            assert ua["train_steps"] == 12 and len(t.intermediate_values) == 4  # every 3 steps
    assert trained >= 2
    # the winner is the feasible trial with the best INT8 PSNR
    best = max((t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs["predicted_ms"] <= budget_ms),
               key=lambda t: (t.user_attrs["int8_psnr"], -t.user_attrs["predicted_ms"], -t.number))
    assert result.trial_number == best.number and result.objective == "psnr"
    assert study.metric_names == ["INT8 PSNR-Y dB after 12 steps"]


@needs_train
def test_the_pruner_prunes(searched):
    """Successive halving stops trials whose monitor PSNR is among the worst at a rung:
    they end PRUNED, with fewer intermediate values than a full trial, untrained to the end."""
    result, _ = searched
    pruned = [t for t in _study(result).get_trials(deepcopy=False) if t.state == TrialState.PRUNED]
    assert pruned, "no trial was pruned"
    for t in pruned:
        assert len(t.intermediate_values) < 4 and "int8_psnr" not in t.user_attrs
    assert result.trials_pruned == len(pruned)
    assert f"{len(pruned)} more stopped by the pruner" in result.report.read_text()


@needs_train
def test_emitted_files_are_trained_and_give_the_reported_psnr(searched, small_data):
    """The winner is trained for the full budget; best.onnx / best.int8.onnx re-measured
    from disk give exactly the PSNRs of the result and the report."""
    from oplat.train.data import ImageSet, image_paths
    from oplat.train.loop import measure_onnx

    result, _ = searched
    q = result.quality
    assert q["steps"] == 30
    val = ImageSet.load(image_paths(small_data[1], what="--val"), 3)
    for key, path in (("fp32", result.best_onnx), ("int8", result.best_int8_onnx)):
        again = measure_onnx(path, val, key)
        assert again.psnr == q[key]["psnr"] and again.ssim == q[key]["ssim"], key
    assert q["int8_drop_db"] == pytest.approx(q["fp32"]["psnr"] - q["int8"]["psnr"], abs=1e-12)
    # trained, not placeholders: the full run beats its own 12-step trial on FP32
    trial = _study(result).trials[result.trial_number].user_attrs
    assert q["fp32"]["psnr"] > trial["fp32_psnr"]
    props = {p.key: p.value for p in onnx.load(str(result.best_int8_onnx)).metadata_props}
    assert props["oplat.objective"] == "psnr" and props["oplat.train"].startswith("30 steps")
    report = result.report.read_text()
    for figure in (q["bicubic"]["psnr"], q["fp32"]["psnr"], q["int8"]["psnr"]):
        assert f"{figure:.2f}" in report
    assert "**trained** 30 steps" in report and "measured from disk" in report
    assert (result.out_dir / "train" / f"trial-{result.trial_number}-30steps" / "checkpoint.pt").exists()
    assert "PSNR-Y FP32" in result.summary()
    below = q["fp32"]["psnr"] < q["bicubic"]["psnr"]
    assert ("below bicubic: train longer (--steps)" in result.summary()) == below


@needs_train
def test_pareto_csv_carries_psnr_and_drop(searched, budget_ms):
    result, _ = searched
    rows = list(csv.DictReader(result.pareto_csv.open(encoding="utf-8")))
    assert rows and list(rows[0]) == [
        "trial", "predicted_ms", "fp32_psnr_db", "int8_psnr_db", "int8_drop_db", "train_steps", "quality_proxy", "params",
        "macs", "measured_share", "feasible", "arch",
    ]
    study = _study(result)
    latencies = [float(r["predicted_ms"]) for r in rows]
    assert latencies == sorted(latencies)
    psnrs = [float(r["int8_psnr_db"]) for r in rows]
    assert psnrs == sorted(psnrs) and len(set(psnrs)) == len(psnrs)  # a front: slower only when better
    for r in rows:
        ua = study.trials[int(r["trial"])].user_attrs
        assert r["feasible"] == "yes" and float(r["predicted_ms"]) <= budget_ms  # only trained networks have a PSNR
        assert float(r["int8_psnr_db"]) == pytest.approx(ua["int8_psnr"], abs=1e-4)
        assert float(r["int8_drop_db"]) == pytest.approx(ua["int8_drop_db"], abs=1e-4)


@needs_train
def test_search_page(searched):
    """report.html: self-contained, the Pareto figure and the winner's breakdown, the
    quality table; the figures also as SVG beside it."""
    result, _ = searched
    assert result.report_html == result.out_dir / "report.html"
    page = result.report_html.read_text(encoding="utf-8")
    assert page.count("<img ") == 2 and page.count("data:image/png;base64,") == 2
    assert "INT8 PSNR-Y dB after 12 steps vs predicted int8 latency" in page
    assert "Quality of the emitted files" in page and f"{result.quality['int8']['psnr']:.2f}" in page
    assert "http://" not in page and "https://" not in page  # opens offline
    assert (result.out_dir / "report-pareto.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


@needs_train
def test_resume_with_other_training_settings_is_refused(searched, space, budget_ms, small_data):
    result, predictor = searched
    common = dict(space=space, predictor=predictor, budget_ms=budget_ms, trials=TRIALS, name="p", out_dir=result.out_dir,
                  seed=3, progress=False)
    with pytest.raises(OplatError, match=r"trained its trials with other settings \(trial_steps: 12 → 20\)"):
        run_search(**common, objective=_objective(small_data, trial_steps=20))
    with pytest.raises(OplatError, match="ranks networks by psnr, not proxy"):
        run_search(**common)
    # the same settings: nothing to run, the same winner (its training found done)
    again = run_search(**common, objective=_objective(small_data))
    assert again.trials_run == 0 and again.trial_number == result.trial_number
    assert again.quality == result.quality


@needs_train
def test_two_workers_share_one_psnr_study(tmp_path, space, budget_ms, small_data):
    """Two `oplat search --objective psnr` processes on one journal: together exactly N
    finished trials, both emit the same trained winner with the same PSNRs."""
    table = write_table(tmp_path / "fake.jsonl", fake_rows(space))
    space_file = write_space(tmp_path / "tiny.toml", space)
    journal = tmp_path / "shared.journal"
    train, val = small_data
    n = 6
    argv = [sys.executable, "-m", "oplat", "search", "--budget", f"{budget_ms}ms", "--table", str(table), "--space",
            str(space_file), "--trials", str(n), "--name", "w", "--storage", str(journal), "--objective", "psnr",
            "--trial-steps", "9", "--steps", "18", "--train-batch", "4", "--patch", "12", "--data", str(train), "--val",
            str(val), "--train-threads", "1", "--torch-device", "cpu", "--no-progress"]
    procs = [subprocess.Popen([*argv, "--results", str(tmp_path / f"r{i}"), "--seed", str(i)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="w", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n
    for i in range(2):
        assert (tmp_path / f"r{i}" / "search" / "w" / "best.int8.onnx").exists()
    firsts = [out.splitlines()[0] for out, _ in outs]
    assert firsts[0] == firsts[1] and firsts[0].startswith("best: ")  # the same network, same trial
    psnr_lines = [out.splitlines()[1] for out, _ in outs]
    assert psnr_lines[0] == psnr_lines[1] and "PSNR-Y FP32" in psnr_lines[0]


def test_training_options_need_the_psnr_objective(cli, tmp_path):
    space = tiny_space()
    table = write_table(tmp_path / "fake.jsonl", fake_rows(space))
    result = cli("search", "--budget", "1s", "--table", str(table), "--trial-steps", "5", "--data", "x",
                 "--results", str(tmp_path))
    assert_one_line_error(result, "--trial-steps, --data: training options need --objective psnr")
    assert not (tmp_path / "search").exists()


def test_psnr_objective_settings_are_checked():
    with pytest.raises(OplatError, match="trial-steps must be a positive integer"):
        PsnrObjective(trial_steps=0)
    with pytest.raises(OplatError, match="pruner must be one of hyperband, halving, none"):
        PsnrObjective(pruner="median")


def test_without_torch_psnr_search_names_the_extra(tmp_path):
    """torch blocked: a psnr search is one line naming the extra, before any study is made."""
    space = tiny_space()
    table = write_table(tmp_path / "fake.jsonl", fake_rows(space))
    space_file = write_space(tmp_path / "tiny.toml", space)
    result = run_python(
        "import sys; sys.modules['torch'] = None\n"
        "from oplat.cli import main\n"
        f"sys.exit(main(['search', '--budget', '1s', '--table', {str(table)!r}, '--space', {str(space_file)!r}, "
        f"'--objective', 'psnr', '--results', {str(tmp_path / 'r')!r}]))"
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oplat: error: oplat search --objective psnr needs PyTorch"), result.stderr
    assert "pip install 'oplat[train]'" in lines[0]
    assert not (tmp_path / "r" / "search").exists() or not any((tmp_path / "r" / "search").rglob("study.journal"))


def test_cli_help_defaults_match_the_objective():
    """The search help's training defaults are PsnrObjective's (the help is written without importing it)."""
    from oplat.cli import _parser

    sub = next(a for a in _parser()._actions if a.dest == "command").choices["search"]
    text = sub.format_help()
    d = PsnrObjective()
    for figure in (f"(default: {d.trial_steps})", f"(default: {d.steps})", f"(default: {d.batch})",
                   f"(default: {d.patch})", f"(default: {d.lr:g})", f"(default: {d.pruner})"):
        assert figure in text, figure


@needs_train
def test_with_a_device_the_trained_files_are_measured(tmp_path, space, budget_ms, small_data):
    """With a device: candidates are measured (untrained: the same graphs) to pick one
    under the budget, then the emitted trained files are measured again and reported."""
    from oplat.devices import get_device
    from oplat.search.emit import PRECISIONS_FILE_ORDER

    calls = []

    def fake_measure(model, device, policy):
        calls.append(model)
        over = len(calls) == 1  # the top-ranked network measures over the budget
        ms = budget_ms * (1.5 if over else 0.5) + len(calls) * 1e-3
        return {"median_ms": ms, "p10_ms": ms * 0.9, "p90_ms": ms * 1.1, "noisy": False}

    table = write_table(tmp_path / "fake.jsonl", fake_rows(space))
    r = run_search(space=space, predictor=Predictor(fake_rows(space), source=str(table)), budget_ms=budget_ms, trials=8,
                   name="d", out_dir=tmp_path / "d", device=get_device("cpu"), table_path=table, progress=False,
                   measure=fake_measure, objective=_objective(small_data, pruner="none"), seed=5)
    assert r.substituted and "rank 2" in r.substituted and r.over_budget is False
    assert len(calls) == 4  # two candidates of the budget precision, then the two trained files
    trained = {prec: calls[2 + i] for i, prec in enumerate(PRECISIONS_FILE_ORDER)}
    assert r.measured_fp32["median_ms"] == pytest.approx(budget_ms * 0.5 + 3e-3)
    assert r.measured_int8["median_ms"] == pytest.approx(budget_ms * 0.5 + 4e-3)
    # what was measured is what was written: the emitted files hold the trained weights
    for prec, path in (("fp32", r.best_onnx), ("int8", r.best_int8_onnx)):
        written = {i.name: i.raw_data for i in onnx.load(str(path)).graph.initializer}
        measured = {i.name: i.raw_data for i in trained[prec].graph.initializer}
        assert written == measured, prec
    assert {i.name: i.raw_data for i in calls[1].graph.initializer} != {
        i.name: i.raw_data for i in trained["int8"].graph.initializer}  # not the placeholder weights
    assert "placeholder weights: the same graphs" in r.report.read_text(encoding="utf-8")


@needs_train
def test_pareto_psnr_search_is_not_pruned(tmp_path, space, budget_ms, small_data):
    """Two objectives (latency, INT8 PSNR) with NSGA-II: Optuna prunes single-objective
    studies only, so every feasible trial is trained to the end, and the report says so."""
    r = run_search(space=space, predictor=Predictor(fake_rows(space), source="fake.jsonl"), budget_ms=budget_ms,
                   trials=5, name="pp", out_dir=tmp_path / "pp", pareto=True, progress=False,
                   objective=_objective(small_data, trial_steps=6, steps=6))
    study = _study(r)
    assert study.metric_names == ["predicted int8 ms", "INT8 PSNR-Y dB after 6 steps"]
    assert not [t for t in study.trials if t.state == TrialState.PRUNED]
    for t in study.trials:
        if t.state == TrialState.COMPLETE and t.user_attrs["feasible"]:
            assert t.values == [t.user_attrs["predicted_ms"], t.user_attrs["int8_psnr"]]
    assert "pruner: none (a Pareto study" in r.report.read_text(encoding="utf-8")
