"""Benchmark of several search workers on one study: trials per second for 1, 2 and 4
worker processes on PostgreSQL and on a journal file (prints; asserts nothing).

Each worker is a process running :func:`oplat.search.search_throughput` (the search loop
of ``oplat search``: TPE with the latency constraint, priced from the table, no emission)
on one shared study with ``--trials`` as the study's total. The workers load everything
first and start their loops together; the rate is the study's trials over the wall time
from its first trial's start to its last trial's end, read from the study itself.

    python benchmarks/search_workers.py                                  # results/cpu/sr-core.jsonl, abpn, 300 trials
    python benchmarks/search_workers.py --workers 1,2,4,8 --trials 500
    python benchmarks/search_workers.py --postgres postgresql://oplat@db-host/postgres   # a server of yours

Without ``--postgres`` a throwaway PostgreSQL server is started in a temporary folder
(as tests/test_postgres.py does: initdb and pg_ctl, as the ``postgres`` user when run as
root); each run gets a fresh database on it (the URL's user must be allowed to create one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_WORKER = r"""
import sys, time
from pathlib import Path
from oplat.predict import Predictor
from oplat.search import search_throughput
from oplat.space import load_space
from dataclasses import replace
space = load_space({space!r})
if {input!r}:
    h, w = map(int, {input!r}.split("x"))
    space = replace(space, in_h=h, in_w=w)
predictor = Predictor.from_table({table!r})
Path({ready!r}).touch()
while not Path({go!r}).exists():
    time.sleep(0.005)
rate = search_throughput(space=space, predictor=predictor, budget_ms={budget!r}, trials={trials}, name="bench",
                         out_dir=Path({out!r}), storage={storage!r}, seed={seed}, progress=False)
print(rate)
"""


def _study_rate(storage_obj) -> tuple[float, int]:
    import optuna

    study = optuna.load_study(study_name="bench", storage=storage_obj)
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    return len(trials) / (end - start).total_seconds(), len(trials)


def run_workers(k: int, storage: str, args, budget: float, tmp: Path) -> tuple[float, int]:
    ready = [tmp / f"ready-{i}" for i in range(k)]
    go = tmp / "go"
    procs = []
    for i in range(k):
        code = _WORKER.format(
            space=args.space, input=args.input or "", table=str(args.table), ready=str(ready[i]), go=str(go),
            budget=budget, trials=args.trials, out=str(tmp / "out"), storage=storage, seed=i,
        )
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in ready):
        if any(proc.poll() is not None for proc in procs) or time.monotonic() > deadline:
            for proc in procs:
                proc.kill()
            raise SystemExit(f"a worker did not start: {procs[0].communicate()[1][-2000:]}")
        time.sleep(0.01)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed: {err[-2000:]}")
    import optuna

    if "://" in storage:
        from oplat.search.storage import sqlalchemy_url

        storage_obj = optuna.storages.RDBStorage(sqlalchemy_url(storage))
    else:
        storage_obj = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    return _study_rate(storage_obj)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=REPO / "results" / "cpu" / "sr-core.jsonl")
    ap.add_argument("--space", default="abpn")
    ap.add_argument("--input", default="", help="LR input HxW (default: the space's)")
    ap.add_argument("--trials", type=int, default=300, help="the study's total (default 300)")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--budget-ms", type=float, help="default: the median predicted int8 latency of 64 random networks")
    ap.add_argument("--postgres", help="a PostgreSQL URL whose user may create databases (default: a throwaway server)")
    ap.add_argument("--skip", default="", help="comma list of storages to leave out: postgres, journal")
    args = ap.parse_args(argv)

    import optuna

    from oplat.predict import Predictor
    from oplat.search import Prices
    from oplat.space import load_space, sample_arch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    if args.input:
        from dataclasses import replace

        h, w = map(int, args.input.split("x"))
        space = replace(space, in_h=h, in_w=w)
    budget = args.budget_ms
    if budget is None:
        prices = Prices(Predictor.from_table(args.table), device=None, table_path=None, policy=None, opset="")
        budget = statistics.median(prices.price(sample_arch(space, i), "int8").predicted_ms for i in range(64))
    workers = [int(w) for w in args.workers.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    print(f"space {space.name} ({space.in_h}×{space.in_w}), table {args.table}, budget {budget:.4g} ms int8, "
          f"{args.trials} trials per study, TPE, {os.cpu_count()} CPUs")

    server = None
    if "postgres" not in skip and not args.postgres:
        sys.path.insert(0, str(REPO / "tests"))
        from test_postgres import PostgresServer  # the tests' throwaway server

        server = PostgresServer()
        try:
            server.start()
        except (RuntimeError, OSError) as exc:
            print(f"postgres: skipped ({exc})")
            server.stop()
            server, skip = None, skip | {"postgres"}
    try:
        for kind in ("postgres", "journal"):
            if kind in skip:
                continue
            for k in workers:
                with tempfile.TemporaryDirectory(prefix="oplat-workers-") as tmp:
                    if kind == "journal":
                        storage = str(Path(tmp) / "study.journal")
                    else:
                        db = f"bench_{k}_{os.getpid()}_{int(time.time())}"
                        storage = _create_database(server.url() if server else args.postgres, db)
                    rate, n = run_workers(k, storage, args, budget, Path(tmp))
                print(f"  {kind:8s} {k} worker{'s' if k > 1 else ' '}: {rate:6.1f} trials/s ({n} trials)")
    finally:
        if server is not None:
            server.stop()
    return 0


def _create_database(url: str, name: str) -> str:
    import sqlalchemy

    from oplat.search.storage import sqlalchemy_url

    engine = sqlalchemy.create_engine(sqlalchemy_url(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


if __name__ == "__main__":
    sys.exit(main())
