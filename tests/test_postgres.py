"""``oplat search`` on PostgreSQL: several workers on one study, and no password anywhere.

A real PostgreSQL server is started in a temporary folder for this module (``initdb`` and
``pg_ctl``; as the ``postgres`` user when the tests run as root) on a free port of
127.0.0.1, with a password, and stopped afterwards; the tests skip, saying why, when the
server binaries or the ``psycopg`` driver are missing or the server cannot start. Searches
run on the committed table ``results/cpu/sr-core.jsonl`` (read only) over ``abpn`` at
180×320 (as tests/test_hostile_search.py), with results under ``tmp_path``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from oplat.search import Prices, arch_from_values, dashboard_command, mask_password
from oplat.search.storage import sqlalchemy_url

optuna.logging.set_verbosity(optuna.logging.ERROR)

REPO = Path(__file__).resolve().parent.parent
TABLE = REPO / "results" / "cpu" / "sr-core.jsonl"
BUDGET = "30ms"
INPUT = "180x320"


# ---------------------------------------------------------------------- a throwaway server
def _pg_bindir() -> Path | None:
    """The folder of ``initdb`` / ``pg_ctl``: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A PostgreSQL server in a temporary folder, on 127.0.0.1, user ``oplat`` with a
    random password (``start`` raises RuntimeError saying why it cannot run)."""

    USER = "oplat"

    def __init__(self) -> None:
        self.password = "pw-" + secrets.token_hex(12)
        self.root: Path | None = None
        self.port = 0
        self._as: list[str] = []
        self._bin: Path | None = None

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as, *argv], capture_output=True, text=True, timeout=timeout)

    def start(self) -> PostgresServer:
        self._bin = _pg_bindir()
        if self._bin is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")
        self.root = Path(tempfile.mkdtemp(prefix="oplat-pg-"))
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
            import pwd

            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no postgres user to run the server as") from None
            runuser = shutil.which("runuser")
            if runuser is None:
                raise RuntimeError("running as root and runuser is missing")
            self._as = [runuser, "-u", "postgres", "--"]
            for path in (self.root, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(pwfile, 0o600)
        data = self.root / "data"
        r = self._run(
            str(self._bin / "initdb"), "-D", str(data), "-U", self.USER, f"--pwfile={pwfile}", "-E", "UTF8",
            "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync",
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {(r.stdout + r.stderr).strip()[-800:]}")
        self.port = _free_port()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        r = self._run(str(self._bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o", options, "start")
        if r.returncode != 0:
            log = (self.root / "log").read_text(errors="replace") if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {(r.stdout + r.stderr + log).strip()[-800:]}")
        return self

    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        auth = f"{self.USER}:{self.password}" if password else self.USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.USER, password=self.password, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.root is None:
            return
        if self._bin is not None and (self.root / "data" / "postmaster.pid").exists():
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


@pytest.fixture(scope="module")
def postgres():
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg 3) is not installed")
    server = PostgresServer()
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        pytest.skip(f"cannot start a PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------- helpers
def _argv(results: Path, name: str, trials: int, storage: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "oplat", "search", "--budget", BUDGET, "--input", INPUT, "--table", str(TABLE),
        "--results", str(results), "--name", name, "--trials", str(trials), "--storage", storage, "--no-progress", *extra,
    ]


def _space():
    from oplat.space import load_space

    return replace(load_space("abpn"), in_h=180, in_w=320)


def _study(url: str, name: str):
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(sqlalchemy_url(url)))


def _assert_no_secret(secret: str, *texts: str, folder: Path | None = None) -> None:
    for text in texts:
        assert secret not in text, text[-2000:]
    if folder is not None:
        for path in folder.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


_BEST = re.compile(r"^best: (.*) \(trial (\d+)\)$", re.MULTILINE)
_RAN = re.compile(r"(\d+) trials \((\d+) feasible, (\d+) this run")


# ---------------------------------------------------------------------- masking (no server)
def test_mask_password_hides_every_form_of_a_password() -> None:
    url = "postgresql://oplat:s3cr%40t-pw@db.example:5432/studies"
    assert mask_password(url) == "postgresql://oplat:***@db.example:5432/studies"
    assert mask_password(f"cannot open the study storage `{url}`: boom") == (
        "cannot open the study storage `postgresql://oplat:***@db.example:5432/studies`: boom"
    )
    # a driver's DSN and the password on its own, as written and %-decoded
    assert mask_password("host=db password=s3cr@t-pw user=oplat") == "host=db password=*** user=oplat"
    assert mask_password("auth failed for s3cr@t-pw and s3cr%40t-pw", url) == "auth failed for *** and ***"
    # nothing else is touched
    for text in ("sqlite:///tmp/studies.db", "postgresql://oplat@db:5432/studies", "postgresql://db:5432/studies", ""):
        assert mask_password(text) == text


def test_postgresql_urls_name_psycopg_3_and_the_dashboard_command_masks_the_password(tmp_path) -> None:
    pytest.importorskip("psycopg")
    assert sqlalchemy_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sqlalchemy_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"
    assert dashboard_command("postgresql://u:pw-secret@h:5/db", tmp_path) == "optuna-dashboard 'postgresql+psycopg://u:***@h:5/db'"
    assert dashboard_command(None, tmp_path / "s") == f"optuna-dashboard {tmp_path / 's' / 'study.journal'}"


# ---------------------------------------------------------------------- the server
def test_two_workers_share_one_study_with_exactly_n_trials(postgres, tmp_path) -> None:
    n = 40
    url = postgres.create_database("two_workers")
    results = tmp_path / "r"
    argv = _argv(results, "shared", n, url, "--dashboard")
    workers = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=240) for w in workers]
    for w, (out, err) in zip(workers, outs):
        assert w.returncode == 0, err[-3000:]
    # together: exactly n finished trials, numbered 0..n-1, none lost, none left running
    study = _study(url, "shared")
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    ran = [_RAN.search(out) for out, _ in outs]
    assert all(ran) and all(int(m[1]) == n for m in ran) and sum(int(m[3]) for m in ran) == n
    # both emitted the same winner: the study's best feasible trial
    bests = {_BEST.search(out).groups() for out, _ in outs}
    assert len(bests) == 1
    (description, number), = bests
    best = study.trials[int(number)]
    assert best.user_attrs["feasible"] is True and best.user_attrs["arch"] == description
    feasible = [t for t in trials if t.user_attrs["feasible"]]
    assert best.user_attrs["quality_proxy"] == max(t.user_attrs["quality_proxy"] for t in feasible)
    # ... priced as a single worker prices it: the same table, the same predictor
    from oplat.predict import Predictor

    prices = Prices(Predictor.from_table(TABLE), device=None, table_path=None, policy=None, opset="")
    arch = arch_from_values(_space(), best.params)
    assert prices.price(arch, "int8").predicted_ms == pytest.approx(best.user_attrs["predicted_ms"], rel=1e-9)
    # a single-worker rerun finds the study complete and reports the same winner
    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _BEST.search(again.stdout).groups() == (description, number)
    assert f"{n} trials" in again.stdout and "0 this run" in again.stdout
    # the dashboard command names psycopg 3 and hides the password; nothing else shows it
    assert f"open the study: optuna-dashboard 'postgresql+psycopg://oplat:***@127.0.0.1:{postgres.port}/two_workers'" in again.stdout
    report = (results / "search" / "shared" / "report.md").read_text(encoding="utf-8")
    assert f"postgresql://oplat:***@127.0.0.1:{postgres.port}/two_workers" in report
    _assert_no_secret(postgres.password, again.stdout, again.stderr, *(o + e for o, e in outs), folder=results)
    # optuna-dashboard, opened on the URL that command names, shows the same best trial
    from importlib.util import find_spec

    if find_spec("optuna_dashboard") is not None:
        from test_dashboard import Dashboard

        with Dashboard(sqlalchemy_url(url)) as dash:
            (shown,) = dash.study("shared")["best_trials"]
        assert shown["number"] == int(number)


_OPEN = "import sys; from pathlib import Path; from oplat.search.storage import open_storage; open_storage(sys.argv[1], Path(sys.argv[2]), name='x').close()"


def test_workers_starting_together_on_a_fresh_database_create_the_tables_once(postgres, tmp_path) -> None:
    # Optuna's RDBStorage alone, four at once on an empty database: most fail on duplicate
    # CREATE TABLE / CREATE TYPE (12 of 16 here); under oplat's advisory lock none does.
    for i in range(2):
        url = postgres.create_database(f"fresh_{i}")
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN, url, str(tmp_path)], cwd=REPO, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), [e[-1500:] for e in errors if e]


def test_a_wrong_password_is_one_line_without_the_password(postgres, tmp_path) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    url = postgres.url("postgres").replace(postgres.password, wrong)
    r = subprocess.run(_argv(tmp_path / "r", "w", 3, url), cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("oplat: error: cannot open the study storage"), r.stderr
    assert "postgresql://oplat:***@127.0.0.1" in lines[0]
    _assert_no_secret(wrong, r.stdout, r.stderr, folder=tmp_path)


def test_the_password_can_stay_out_of_the_url(postgres, tmp_path) -> None:
    # libpq reads PGPASSWORD (or ~/.pgpass): the URL on the command line holds no secret
    url = postgres.url("postgres", password=False)
    env = {**os.environ, "PGPASSWORD": postgres.password}
    r = subprocess.run(_argv(tmp_path / "r", "nopw", 4, url, "--dashboard"), cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"open the study: optuna-dashboard postgresql+psycopg://oplat@127.0.0.1:{postgres.port}/postgres\n" in r.stdout
    assert "4 trials" in r.stdout
