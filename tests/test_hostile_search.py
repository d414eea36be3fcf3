"""``oplat search`` against a hostile user: Ctrl-C at any moment, ``kill -9``, study names
that are paths, ``--storage`` pointing at the wrong file or nowhere.

Every bad input is one ``oplat: error:`` (or ``oplat: interrupted``) line on stderr, a
non-zero status and no traceback, and nothing already finished is lost. Searches run on the
committed table ``results/cpu/sr-core.jsonl`` (read only) over the built-in ``abpn`` space
at a 180×320 input (measured in that table; small networks, so emission takes about a
second), with results under ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from oplat.cli import main

optuna.logging.set_verbosity(optuna.logging.ERROR)

REPO = Path(__file__).resolve().parent.parent
TABLE = REPO / "results" / "cpu" / "sr-core.jsonl"
BUDGET = "30ms"  # at 180×320 the fastest abpn network is predicted at ~27 ms: most trials are infeasible
INPUT = "180x320"


def _argv(results: Path, name: str, trials: int, *extra: str) -> list[str]:
    return [
        "search", "--budget", BUDGET, "--input", INPUT, "--table", str(TABLE), "--results", str(results),
        "--name", name, "--trials", str(trials), "--no-progress", *extra,
    ]


def _oplat(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "oplat", *argv]


def _load(journal: Path, name: str):
    """The study in ``journal`` read with Optuna's own journal backend (None before it exists)."""
    if not journal.exists():
        return None
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _states(journal: Path, name: str) -> dict[str, int]:
    study = _load(journal, name)
    out = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False) if study else []:
        out[t.state.name] += 1
    return out


def _complete(journal: Path, name: str) -> dict[int, float]:
    """Number → value of every COMPLETE trial; also checks the numbering has no duplicate or gap."""
    study = _load(journal, name)
    if study is None:
        return {}
    numbers = [t.number for t in study.get_trials(deepcopy=False)]
    assert sorted(numbers) == list(range(len(numbers))), "duplicate or missing trial numbers"
    return {t.number: t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def _wait_for(journal: Path, name: str, n: int, child: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(_complete(journal, name)) < n:
        assert child.poll() is None, f"the search ended early: {child.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the search never got going"
        time.sleep(0.05)


def _assert_interrupted(proc: subprocess.CompletedProcess | subprocess.Popen, err: str) -> None:
    """Ctrl-C: status 130, oplat's one line, no traceback and no Optuna log of a failed trial."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "[W " not in err and "failed" not in err, err
    assert len(lines) <= 2 and sum(line.startswith("oplat: interrupted") for line in lines) == 1, err


def _assert_one_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("oplat: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


# ---------------------------------------------------------------------- 1. Ctrl-C
def test_ctrl_c_in_the_search_loop_is_one_line_and_the_next_run_resumes(tmp_path) -> None:
    results = tmp_path / "r"
    journal = results / "search" / "loop" / "study.journal"
    child = subprocess.Popen(
        _oplat(_argv(results, "loop", 100_000)), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(journal, "loop", 20, child)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    _assert_interrupted(child, err)
    before = _complete(journal, "loop")
    assert len(before) >= 20
    assert _states(journal, "loop")["RUNNING"] == 0  # the trial in flight was told (FAIL at worst)

    target = len(before) + 5
    again = subprocess.run(_oplat(_argv(results, "loop", target)), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    after = _complete(journal, "loop")
    assert len(after) == target and f"{target} trials" in again.stdout
    assert all(after.get(n) == v for n, v in before.items())  # every finished trial kept, unchanged


# A real SIGINT at a chosen moment: the child wraps one function so that its n-th call
# sends SIGINT to its own process, then runs the CLI.
_HOOKED = r"""
import os, signal, sys
import onnx
from optuna.storages import JournalStorage
import oplat.search.proxy as proxy

phase, at = sys.argv[1], int(sys.argv[2])
calls = [0]

def hit():
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), signal.SIGINT)

if phase == "objective":  # inside the objective (pricing a trial)
    inner_q = proxy.quality_proxy
    def quality_proxy(arch):
        hit()
        return inner_q(arch)
    proxy.quality_proxy = quality_proxy
elif phase == "tell":  # inside Optuna's bookkeeping: a trial's result being recorded
    inner_s = JournalStorage.set_trial_state_values
    def set_trial_state_values(self, *args, **kwargs):
        hit()
        return inner_s(self, *args, **kwargs)
    JournalStorage.set_trial_state_values = set_trial_state_values
elif phase == "emission":  # while best.int8.onnx is being written
    inner_save = onnx.save
    def save(model, path, *args, **kwargs):
        inner_save(model, path, *args, **kwargs)
        if "best.int8" in os.path.basename(str(path)):  # not the quantizer's own saves
            hit()
    onnx.save = save

from oplat.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _hooked(phase: str, at: int, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _HOOKED, phase, str(at), *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_ctrl_c_inside_the_objective_optunas_bookkeeping_and_emission(tmp_path) -> None:
    results = tmp_path / "r"
    folder = results / "search" / "h"
    journal = folder / "study.journal"

    # Inside the objective of the 10th trial: that trial fails (never COMPLETE) and is queued again.
    r = _hooked("objective", 10, _argv(results, "h", 40))
    _assert_interrupted(r, r.stderr)
    first = _complete(journal, "h")
    states = _states(journal, "h")
    assert len(first) == 9 and states["FAIL"] == 1 and states["RUNNING"] == 0 and states["WAITING"] == 1
    study = _load(journal, "h")
    (failed,) = study.get_trials(states=(TrialState.FAIL,))
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert queued.user_attrs["oplat.retry_of"] == failed.number == 9

    # Inside Optuna's recording of a trial's result: the trial is recorded, no other starts.
    r = _hooked("tell", 20, _argv(results, "h", 40))
    _assert_interrupted(r, r.stderr)
    second = _complete(journal, "h")
    states = _states(journal, "h")
    assert len(second) >= len(first) + 18 and all(second[n] == v for n, v in first.items())
    assert states["FAIL"] == 1 and states["RUNNING"] == 0 and states["WAITING"] == 0

    r = subprocess.run(_oplat(_argv(results, "h", 40)), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(_complete(journal, "h")) == 40
    fp32, int8 = folder / "best.onnx", folder / "best.int8.onnx"
    fp32_ino = fp32.stat().st_ino
    kept = (int8.stat().st_ino, hashlib.sha256(int8.read_bytes()).hexdigest())

    # While best.int8.onnx is written (best.onnx already replaced): the last best.int8.onnx
    # stays whole, no temporary file is left.
    r = _hooked("emission", 1, _argv(results, "h", 45))
    _assert_interrupted(r, r.stderr)
    assert fp32.stat().st_ino != fp32_ino
    assert (int8.stat().st_ino, hashlib.sha256(int8.read_bytes()).hexdigest()) == kept
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert len(_complete(journal, "h")) == 45  # the trials finished before emission are kept

    r = subprocess.run(_oplat(_argv(results, "h", 45)), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "45 trials" in r.stdout and "0 this run" in r.stdout
    assert int8.stat().st_ino != kept[0]


# ---------------------------------------------------------------------- 2. study names
@pytest.mark.parametrize("name", ["..", ".", ".hidden", "../escape", "a/b", "/abs", "", "x" * 101, "bad name"])
def test_a_study_name_is_a_plain_name(tmp_path, capsys, name) -> None:
    results = tmp_path / "r"
    code = main(_argv(results, name, 3))
    _assert_one_error(code, capsys.readouterr().err, "study name", "not a plain name", "letters, digits")
    assert not results.exists() and _files(tmp_path) == set()


def test_the_default_name_from_a_space_file_stays_one_folder(tmp_path, capsys) -> None:
    text = (REPO / "search" / "abpn.toml").read_text(encoding="utf-8")
    space = tmp_path / "evil.toml"
    space.write_text(text.replace('name = "abpn"', 'name = "../../../escape"'), encoding="utf-8")
    results = tmp_path / "r"
    argv = ["search", "--budget", BUDGET, "--input", INPUT, "--table", str(TABLE), "--results", str(results),
            "--space", str(space), "--trials", "3", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    assert not (tmp_path / "escape").exists() and not (results / "escape").exists()
    (folder,) = (results / "search").iterdir()
    assert not folder.name.startswith(".") and "/" not in folder.name
    assert (folder / "best.onnx").exists() and {p.name for p in tmp_path.iterdir()} == {"evil.toml", "r"}


# ---------------------------------------------------------------------- 3. --storage: not a journal
def _not_journals(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.txt"
    text.write_text("my notes\nline two\n", encoding="utf-8")
    word = tmp_path / "word"  # one line without a newline: Optuna alone would append to it
    word.write_bytes(b"hello")
    table = tmp_path / "sr-core.jsonl"
    shutil.copyfile(TABLE, table)  # a latency table (a copy: the committed one is never at risk)
    db = tmp_path / "studies.db"
    with sqlite3.connect(db) as con:
        con.execute("create table t (x)")
    return {"text": text, "word": word, "table": table, "sqlite": db}


@pytest.mark.parametrize("kind", ["text", "word", "table", "sqlite"])
def test_storage_that_is_not_a_journal_is_refused_untouched(tmp_path, capsys, kind) -> None:
    path = _not_journals(tmp_path)[kind]
    before = path.read_bytes()
    listing = _files(tmp_path)
    results = tmp_path / "r"
    code = main(_argv(results, "s", 3, "--storage", str(path)))
    err = capsys.readouterr().err
    if kind == "sqlite":
        _assert_one_error(code, err, str(path), "SQLite database, not an Optuna journal file", "sqlite:///")
    else:
        _assert_one_error(code, err, str(path), "is not an Optuna journal file", "give a new path or a database URL")
    assert path.read_bytes() == before
    assert _files(tmp_path) == listing  # no results folder, no lock file next to it


def test_storage_that_is_a_folder_is_refused(tmp_path, capsys) -> None:
    code = main(_argv(tmp_path / "r", "s", 3, "--storage", str(tmp_path)))
    _assert_one_error(code, capsys.readouterr().err, "is a folder, not an Optuna journal file")
    assert _files(tmp_path) == set()


# ---------------------------------------------------------------------- 4. --storage: no folder
def test_storage_in_a_missing_folder_is_refused_and_nothing_is_created(tmp_path, capsys) -> None:
    journal = tmp_path / "no" / "such" / "dir" / "j.log"
    code = main(_argv(tmp_path / "r", "s", 3, "--storage", str(journal)))
    _assert_one_error(code, capsys.readouterr().err, str(journal.parent), "does not exist", "create the folder first")
    assert _files(tmp_path) == set()


def test_storage_journal_in_an_existing_folder_works_and_resumes(tmp_path, capsys) -> None:
    journal = tmp_path / "j.log"
    results = tmp_path / "r"
    assert main(_argv(results, "s", 4, "--storage", str(journal))) == 0, capsys.readouterr().err
    assert main(_argv(results, "s", 6, "--storage", str(journal))) == 0, capsys.readouterr().err
    assert "6 trials" in capsys.readouterr().out and len(_complete(journal, "s")) == 6


# ---------------------------------------------------------------------- 5. kill -9
def _soak(tmp_path: Path, *, kills: int, seed: int, step: tuple[int, int], delay: tuple[float, float], progress: int = 0) -> None:
    """``kills`` SIGKILLs of ``python -m oplat search``, resuming after each, then a run to the
    end. Each run asks for a random number of trials more than the study has (``step``), so
    some reach it and emit before their kill and others die in the loop; the kill comes after
    a random ``delay`` (any moment: start, study setup, loop, emission), or with ``progress``
    only once that many more trials completed (so it lands in the loop)."""
    rng = random.Random(seed)
    results = tmp_path / "r"
    journal = results / "search" / "soak" / "study.journal"
    before: dict[int, float] = {}
    for i in range(kills):
        target = len(before) + rng.randint(*step)
        child = subprocess.Popen(
            _oplat(_argv(results, "soak", target)), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            if progress:
                deadline = time.monotonic() + 60
                while len(_complete(journal, "soak")) < len(before) + progress and child.poll() is None:
                    assert time.monotonic() < deadline, "the search never got going"
                    time.sleep(0.02)
            time.sleep(rng.uniform(*delay))
        finally:
            child.kill()
            child.wait(timeout=30)
        now = _complete(journal, "soak")  # parses with Optuna's own backend; numbers unique
        lost = sorted(n for n, v in before.items() if now.get(n) != v)
        assert not lost, f"kill {i + 1}: finished trials lost: {lost}"
        before = now
    total = len(before) + 10
    final = subprocess.run(_oplat(_argv(results, "soak", total)), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    after = _complete(journal, "soak")
    assert len(after) == total and all(after.get(n) == v for n, v in before.items())
    assert _states(journal, "soak")["RUNNING"] == 0
    assert (results / "search" / "soak" / "best.int8.onnx").exists()


def test_a_record_torn_by_a_kill_is_cut_and_the_journal_stays_readable(tmp_path, capsys) -> None:
    # A kill inside a write (or a power cut) can leave the journal's last line without its
    # newline; the next run must not glue its records onto it.
    results = tmp_path / "r"
    journal = results / "search" / "torn" / "study.journal"
    assert main(_argv(results, "torn", 5)) == 0, capsys.readouterr().err
    capsys.readouterr()
    before = _complete(journal, "torn")
    with open(journal, "ab") as f:
        f.write(b'{"op_code":6,"worker_id":"killed","trial_id":3,"sta')
    assert main(_argv(results, "torn", 8)) == 0, capsys.readouterr().err
    assert "ended in a torn record" in capsys.readouterr().err
    after = _complete(journal, "torn")  # Optuna's own backend reads the whole file
    assert len(after) == 8 and all(after[n] == v for n, v in before.items())
    assert journal.read_bytes().endswith(b"\n")


def test_a_journal_lock_left_by_a_killed_writer_is_removed(tmp_path, capsys) -> None:
    # Optuna's journal lock is a file (<journal>.lock); a writer killed while holding it
    # leaves it behind. With no other worker running, the next run removes it at once
    # instead of waiting out Optuna's 30 s grace period.
    results = tmp_path / "r"
    journal = results / "search" / "stale" / "study.journal"
    assert main(_argv(results, "stale", 3)) == 0, capsys.readouterr().err
    capsys.readouterr()
    Path(str(journal) + ".lock").touch()
    start = time.monotonic()
    assert main(_argv(results, "stale", 5)) == 0, capsys.readouterr().err
    assert time.monotonic() - start < 20
    assert "removed the journal lock" in capsys.readouterr().err
    assert not Path(str(journal) + ".lock").exists() and len(_complete(journal, "stale")) == 5


def test_a_study_setup_cut_short_by_a_kill_is_finished_by_the_next_run(tmp_path, capsys) -> None:
    # Killed after the first trial was queued and some attributes written, before the
    # fingerprint (written last): the next run finishes the setup instead of refusing the study.
    results = tmp_path / "r"
    journal = results / "search" / "cut" / "study.journal"
    journal.parent.mkdir(parents=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="cut", storage=storage, direction="maximize")
    study.enqueue_trial({"depth": 2, "width": 8, "residual": "anchor"}, user_attrs={"oplat.seeded": "fastest"})
    study.set_user_attr("oplat.space", "abpn")
    assert main(_argv(results, "cut", 6)) == 0, capsys.readouterr().err
    assert "6 trials" in capsys.readouterr().out
    study = _load(journal, "cut")
    assert "oplat.space_fingerprint" in study.user_attrs and study.trials[0].params == {"depth": 2, "width": 8, "residual": "anchor"}


def test_kill_9_twice_mid_search_loses_nothing(tmp_path) -> None:
    _soak(tmp_path, kills=2, seed=1, step=(150, 250), delay=(0.0, 0.1), progress=10)


@pytest.mark.slow
def test_kill_9_soak_20_kills_at_random_moments(tmp_path) -> None:
    _soak(tmp_path, kills=20, seed=20, step=(20, 300), delay=(0.2, 3.5))
