"""optuna-dashboard shows what oplat found: its JSON API, served on 127.0.0.1 against a
finished study, names the same best trial as ``oplat search`` for a constrained study, and
a ``--pareto`` study's front holds only feasible trials, the points of ``pareto.csv``.

The dashboard picks its best trial and its front from objective values alone (constraints
only grey trials out in its plots), so oplat records an infeasible trial's quality
objective as ``INFEASIBLE_QUALITY`` (see :mod:`oplat.search.study`); these tests hold that
workaround to the dashboard itself. Skipped without optuna-dashboard (the ``dashboard`` extra).
"""

from __future__ import annotations

import csv
import json
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import numpy as np
import optuna
import pytest
from test_search import all_archs, fake_rows, int8_ms, tiny_space

from oplat.predict import Predictor
from oplat.search import SearchConfig, quality_proxy, run_search
from oplat.search.study import INFEASIBLE_QUALITY, metric_names

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install 'oplat[dashboard]')")

optuna.logging.set_verbosity(optuna.logging.ERROR)

# anchor and folded networks compute the same function and score the same Q; without
# folded, no two networks of this space tie at the top, so "the best trial" is one trial
SPACE = tiny_space(residuals=("anchor", "none"))


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class Dashboard:
    """optuna-dashboard's WSGI app on 127.0.0.1 (a free port), in a thread."""

    def __init__(self, storage: str) -> None:
        from optuna_dashboard import wsgi

        self.server = make_server("127.0.0.1", 0, wsgi(storage), handler_class=_Quiet)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Dashboard:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.server.server_port}{path}", timeout=30) as reply:
            return json.loads(reply.read())

    def study(self, name: str) -> dict:
        (summary,) = [s for s in self.get("/api/studies")["study_summaries"] if s["study_name"] == name]
        return self.get(f"/api/studies/{summary['study_id']}")


def _attrs(trial: dict) -> dict[str, str]:
    return {a["key"]: a["value"] for a in trial["user_attrs"]}


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(fake_rows(SPACE), source="fake.jsonl")


@pytest.fixture(scope="module")
def budget_ms() -> float:
    return float(np.median([int8_ms(a) for a in all_archs(SPACE)]))


def test_the_dashboards_best_trial_is_oplats_winner(tmp_path, predictor, budget_ms) -> None:
    config = SearchConfig(space=SPACE, predictor=predictor, budget_ms=budget_ms, trials=50, name="single",
                          out_dir=tmp_path / "single", seed=3, progress=False)
    r = run_search(config)
    feasible = {a: quality_proxy(a) for a in all_archs(SPACE) if int8_ms(a) <= budget_ms}
    assert sorted(feasible.values())[-1] > sorted(feasible.values())[-2]  # one network is the best
    with Dashboard(str(r.journal)) as dash:
        detail = dash.study("single")
    (best,) = detail["best_trials"]
    assert best["number"] == r.trial_number
    assert best["values"] == [pytest.approx(r.quality_proxy)] and _attrs(best)["feasible"] == "True"
    assert detail["objective_names"] == metric_names(config)
    # the dashboard knows every trial's constraint (it greys the infeasible ones)
    trials = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(trials) == 50 and all(len(t["constraints"]) == 1 for t in trials)
    infeasible = [t for t in trials if t["constraints"][0] > 0]
    assert infeasible and all(_attrs(t)["feasible"] == "False" and t["values"] == [INFEASIBLE_QUALITY] for t in infeasible)
    for t in trials:  # the latency and the true proxy are user attributes
        attrs = _attrs(t)
        assert float(attrs["predicted_ms"]) - budget_ms == pytest.approx(t["constraints"][0])
        assert float(attrs["quality_proxy"]) > INFEASIBLE_QUALITY


def test_the_dashboards_pareto_front_is_pareto_csv(tmp_path, predictor, budget_ms) -> None:
    config = SearchConfig(space=SPACE, predictor=predictor, budget_ms=budget_ms, trials=60, name="front",
                          out_dir=tmp_path / "front", seed=2, pareto=True, progress=False)
    r = run_search(config)
    with open(r.pareto_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    want = {(row["predicted_ms"], row["quality_proxy"]) for row in rows if row["feasible"] == "yes"}
    assert want and any(row["feasible"] == "no" for row in rows)  # the front oplat writes crosses the budget
    with Dashboard(str(r.journal)) as dash:
        detail = dash.study("front")
    front = detail["best_trials"]
    assert front and all(t["constraints"] and max(t["constraints"]) <= 0 and _attrs(t)["feasible"] == "True" for t in front)
    assert {(f"{t['values'][0]:.6g}", f"{t['values'][1]:.6f}") for t in front} == want
    assert detail["objective_names"] == metric_names(config) == ["predicted int8 ms", metric_names(config)[1]]
