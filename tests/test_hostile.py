"""Hostile and clumsy input to measure, tables, predict and the CLI's exit paths.

Each case is one a probe found (issue: "Nothing lost, nothing mixed, no internal errors"):
the bad input gets one line saying what is wrong, a documented non-zero exit and no
traceback, and a table file nothing should have changed is byte-identical afterwards.
The agent's cases live in test_hostile_agent.py, the search's in test_hostile_search.py.
"""

from __future__ import annotations

import json
import os
import re
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_one_line_error, write_opset
from oplat.errors import EXIT_PIPE, EXIT_RUNTIME, EXIT_USAGE, OplatError
from oplat.spec import OpSpec
from oplat.records import Row
from oplat.table import SCHEMA_VERSION, TableWriter, read_table

CPU_TABLE = REPO / "results" / "cpu" / "sr-core.jsonl"


def _tiny_opset(tmp_path: Path, count: int = 4, name: str = "tiny") -> Path:
    channels = ", ".join(str(c) for c in range(1, count + 1))
    return write_opset(tmp_path / f"{name}.toml", f'[[entry]]\nop = "relu"\nc = [{channels}]\n', hw="[[8, 8]]")


def _measure(cli, opset: Path, out: Path, *extra: str):
    return cli("measure", "--opset", str(opset), "--out", str(out), "--quick-policy", "--no-progress", *extra)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _measured_table(cli, tmp_path: Path, count: int = 4) -> Path:
    out = tmp_path / "t.jsonl"
    assert _measure(cli, _tiny_opset(tmp_path, count), out).code == 0
    return out


# ------------------------------------------------------------------ 1. --out never destroys
@pytest.mark.parametrize("text", ["my notes, no newline", "my notes\n", "a,b\n1,2\n"])
def test_out_refuses_a_file_that_is_not_a_table(cli, tmp_path, text):
    notes = tmp_path / "notes.txt"
    notes.write_text(text)
    result = _measure(cli, _tiny_opset(tmp_path), notes)
    assert_one_line_error(result, "is not an oplat latency table", "nothing was changed")
    assert result.code == EXIT_USAGE
    assert notes.read_text() == text


def test_a_valid_last_row_without_newline_is_kept_not_remeasured(cli, tmp_path):
    out = _measured_table(cli, tmp_path)
    before = out.read_bytes()
    out.write_bytes(before.rstrip(b"\n"))  # an editor that strips the final newline
    assert len(read_table(out).rows) == 4  # reading keeps it
    result = _measure(cli, _tiny_opset(tmp_path), out)
    assert result.code == 0 and "0 measured, 4 already there" in result.out
    assert out.read_bytes() == before  # the newline is back, nothing else changed


def test_a_torn_row_is_set_aside_beside_the_table_not_deleted(cli, tmp_path):
    out = _measured_table(cli, tmp_path, count=3)
    rows = _rows(out)
    whole = out.read_bytes()
    kept = whole[: whole.index(b"\n") + 1]  # the first row
    fragment = json.dumps(rows[1], separators=(",", ":"))[:70].encode()
    out.write_bytes(kept + fragment)  # a writer killed mid-line
    result = _measure(cli, _tiny_opset(tmp_path, 3), out)
    assert result.code == 0 and "2 measured, 1 already there" in result.out
    aside = list(tmp_path.glob("t.jsonl.torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == fragment
    assert "moved to" in result.err
    assert sorted(r["key"] for r in _rows(out)) == sorted(r["key"] for r in rows)


# ------------------------------------------------------------------ 2. one writer per table
def _slow_measure_argv(tmp_path: Path, out: Path) -> list[str]:
    channels = ", ".join(str(c) for c in range(4, 124, 2))
    opset = write_opset(tmp_path / "many.toml", f'[[entry]]\nop = "conv+relu"\nkernel = 3\nchannels = [{channels}]\n', hw="[[32, 32]]")
    return [sys.executable, "-m", "oplat", "measure", "--opset", str(opset), "--out", str(out), "--quick-policy", "--batch", "1", "--no-progress"]


def _wait_for_rows(path: Path, n: int, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"measure ended early: {proc.returncode}")
        time.sleep(0.05)
    pytest.fail(f"measure wrote fewer than {n} rows in {timeout_s} s")


def test_a_second_measure_on_one_table_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "t.jsonl"
    argv = _slow_measure_argv(tmp_path, out)
    first = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_rows(out, 1, first)
        second = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert second.returncode == EXIT_RUNTIME
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"being written by process {first.pid}" in lines[0] and "--wait" in lines[0]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_two_measures_with_wait_write_every_key_once(tmp_path):
    out = tmp_path / "t.jsonl"
    argv = _slow_measure_argv(tmp_path, out)
    first = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_rows(out, 1, first)
    second = subprocess.run(argv + ["--wait"], cwd=REPO, capture_output=True, text=True, timeout=300)
    first.wait(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "waiting for process" in second.stderr
    assert "0 measured, 60 already there" in second.stdout
    keys = [r["key"] for r in _rows(out)]
    assert len(keys) == 60 and len(set(keys)) == 60


def test_another_thread_count_is_refused_and_the_table_unchanged(cli, tmp_path):
    out = _measured_table(cli, tmp_path)
    before = out.read_bytes()
    result = _measure(cli, _tiny_opset(tmp_path, 6), out, "--threads", "2")
    assert_one_line_error(result, "threads=1", "threads=2", "--out")
    assert out.read_bytes() == before


def test_the_writer_checks_the_setup_of_every_row(cli, tmp_path):
    out = _measured_table(cli, tmp_path)
    before = out.read_bytes()
    row = _rows(out)[0]
    other = {**row, "device": {**row["device"], "threads": 2}}
    with TableWriter(out) as writer, pytest.raises(OplatError, match="refusing a row measured with threads=2"):
        writer.append(Row.from_json(other))
    assert out.read_bytes() == before


# ------------------------------------------------------------------ 4. size guard
def test_a_huge_conv_is_refused_before_anything_is_built(cli, tmp_path):
    opset = write_opset(tmp_path / "huge.toml", '[[entry]]\nop = "conv"\nc = 3\nc_out = 3\nkernel = 3\n', hw="[[20000, 20000]]")
    out = tmp_path / "t.jsonl"
    result = _measure(cli, opset, out)
    assert_one_line_error(result, "conv3x3 3→3 20000×20000", "GiB", "--max-mem", "nothing was measured")
    assert not out.exists()
    # the limit is the user's to raise or lower
    small = _tiny_opset(tmp_path)
    assert_one_line_error(_measure(cli, small, out, "--max-mem", "1KiB"), "over the limit of 1.0 KiB")
    assert_one_line_error(_measure(cli, small, out, "--max-mem", "lots"), "not a memory size")


def test_a_100000_input_concat_is_refused_at_once(cli, tmp_path):
    opset = write_opset(tmp_path / "wide.toml", '[[entry]]\nop = "concat"\nc = 1\narity = 100000\n', hw="[[8, 8]]")
    start = time.perf_counter()
    result = _measure(cli, opset, tmp_path / "t.jsonl")
    assert_one_line_error(result, "100000 inputs", "over the limit")
    assert time.perf_counter() - start < 30  # the probe's run was still building after 60 s


def test_export_has_the_same_size_guard(cli, tmp_path):
    opset = write_opset(tmp_path / "huge.toml", '[[entry]]\nop = "relu"\nc = 64\n', hw="[[20000, 20000]]")
    result = cli("export", "--opset", str(opset), "--out", str(tmp_path / "x"), "--no-progress")
    assert_one_line_error(result, "relu c64 20000×20000", "--max-mem")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ 5. rows are validated
def _break(row: dict, how: str) -> dict | str:
    row = json.loads(json.dumps(row))
    if how == "nan":
        row["p10_ms"] = float("nan")
    elif how == "inf":
        row["median_ms"] = float("inf")
    elif how == "negative":
        row["p10_ms"] = -1.0
    elif how == "string":
        row["median_ms"] = "12.3 ± 0.4"
    elif how == "missing":
        del row["median_ms"]
    elif how == "device":
        row["device"] = "cpu"
    elif how == "nested":
        return "[" * 100_000 + "]" * 100_000
    elif how == "version":
        row["schema_version"] = 99
    return row


@pytest.mark.parametrize(
    "how, needle",
    [
        ("nan", "p10_ms must be a finite number"),
        ("inf", "median_ms must be a finite number"),
        ("negative", "p10_ms must be a finite number >= 0"),
        ("string", "median_ms must be a finite number"),
        ("missing", "needs median_ms"),
        ("device", "device must be an object"),
        ("nested", "corrupt table line"),
        ("version", "schema_version 99"),
    ],
)
def test_bad_row_values_are_one_line_errors_naming_file_and_line(cli, tmp_path, how, needle):
    out = _measured_table(cli, tmp_path, count=3)
    rows = _rows(out)
    broken = _break(rows[1], how)
    text = json.dumps(rows[0]) + "\n" + (broken if isinstance(broken, str) else json.dumps(broken)) + "\n" + json.dumps(rows[2]) + "\n"
    out.write_text(text)
    for result in (cli("table", str(out)), cli("predict", str(tmp_path / "any.onnx"), "--table", str(out))):
        assert_one_line_error(result, f"{out}:2", needle)
        assert result.code == EXIT_USAGE
    resumed = _measure(cli, _tiny_opset(tmp_path, 3), out)
    assert_one_line_error(resumed, f"{out}:2")
    assert out.read_text() == text


def test_a_table_with_rows_of_two_hosts_is_refused_by_table_and_predict(cli, tmp_path):
    out = _measured_table(cli, tmp_path, count=2)
    rows = _rows(out)
    rows[1]["device"] = {**rows[1]["device"], "cpu": "Another CPU", "cpu_isa": "avx2"}
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for result in (cli("table", str(out)), cli("predict", "x.onnx", "--table", str(out))):
        assert_one_line_error(result, f"{out}:2", "Another CPU", "one setup")


def test_an_empty_table_says_it_is_empty(cli, tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    assert_one_line_error(cli("table", str(empty)), "holds no rows yet", "oplat measure")


# ------------------------------------------------------------------ 6. every exit path
def test_out_dev_null_is_refused(cli, tmp_path):
    assert_one_line_error(_measure(cli, _tiny_opset(tmp_path), Path("/dev/null")), "/dev/null is not a regular file")


def test_a_full_disk_keeps_every_row_written_and_says_so(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past a size (EFBIG), as a full disk
    refuses them (ENOSPC): the same failed write, on a real file."""
    opset = _tiny_opset(tmp_path, 40)
    out = tmp_path / "t.jsonl"
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from oplat.cli import main\n"
        f"sys.exit(main(['measure', '--opset', {str(opset)!r}, '--out', {str(out)!r}, '--quick-policy', '--no-progress']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_RUNTIME, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to" in lines[0] and "every row written before is kept" in lines[0]
    rows = [r.to_json() for r in read_table(out).rows]  # whole: no partial line left behind
    assert 0 < len(rows) < 40 and out.stat().st_size <= 20000
    again = subprocess.run(
        [sys.executable, "-m", "oplat", "measure", "--opset", str(opset), "--out", str(out), "--quick-policy", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 0 and f"{40 - len(rows)} measured, {len(rows)} already there" in again.stdout


@pytest.mark.parametrize(
    "flags, needle",
    [
        (("--agree-pct", "nan"), "argument --agree-pct: expected a finite positive number"),
        (("--agree-pct", "inf"), "argument --agree-pct: expected a finite positive number"),
        (("--agree-pct", "-5"), "argument --agree-pct: expected a finite positive number"),
        (("--rounds", "999999999"), "rounds must be an integer from 1 to 1000"),
    ],
)
def test_timing_flags_out_of_range_are_refused_before_measuring(tmp_path, flags, needle):
    out = tmp_path / "t.jsonl"
    argv = [sys.executable, "-m", "oplat", "measure", "--opset", str(_tiny_opset(tmp_path)), "--out", str(out), "--no-progress", *flags]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_USAGE and "Traceback" not in result.stderr
    assert needle in result.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_a_reader_that_goes_away_gets_quiet_sigpipe(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "oplat", "table", str(CPU_TABLE)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.readline()  # like `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert proc.returncode == EXIT_PIPE
    assert err == ""


def test_an_importerror_is_reported_as_it_is_not_as_not_installed(tmp_path):
    """A runtime that is installed but fails to import (a missing shared library) must not
    be told to `pip install` it again."""
    fake = tmp_path / "site" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("libonnxruntime.so.1: cannot open shared object file")\n')
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{REPO}"}
    result = subprocess.run([sys.executable, "-m", "oplat", "devices"], cwd=REPO, capture_output=True, text=True, env=env, timeout=60)
    assert "installed but cannot be imported" in result.stdout and "libonnxruntime.so.1" in result.stdout
    assert "ONNX Runtime is not installed" not in result.stdout


@pytest.mark.parametrize("delay_s", [0.02, 0.06, 0.1, 0.15, 0.25])
def test_ctrl_c_in_the_first_moments_is_clean(tmp_path, delay_s):
    proc = subprocess.Popen(
        [sys.executable, "-m", "oplat", "table", str(CPU_TABLE), "--format", "csv"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    frames = re.findall(r'File "([^"]+)"', err)
    if "Could not import runpy module" in err or "init_import_site" in err or (frames and not any(f"{os.sep}oplat{os.sep}" in f for f in frames)):
        # The signal came while Python itself was starting (site, runpy, compiling
        # oplat.__main__): no frame of oplat's is on the stack, so no oplat code ran yet.
        return
    assert "Traceback" not in err, err
    assert proc.returncode in (0, 130, -signal.SIGINT), (proc.returncode, err)


# ------------------------------------------------------------------ 7. names are not paths
@pytest.mark.parametrize("name", ["../../outside", "..", ".hidden", "a/b"])
def test_op_set_names_are_plain_names(cli, tmp_path, name):
    opset = tmp_path / "bad.toml"
    opset.write_text(f'name = "{name}"\nhw = [[8, 8]]\n[[entry]]\nop = "relu"\nc = 1\n')
    result = cli("measure", "--opset", str(opset), "--results", str(tmp_path / "results"), "--quick-policy", "--no-progress")
    assert_one_line_error(result, "must be a plain name")
    assert not (tmp_path / "results").exists() and not (tmp_path.parent / "outside.jsonl").exists()


# ------------------------------------------------------------------ 8. the write unit is one entry
def test_rows_are_written_as_entries_finish_not_per_batch(tmp_path):
    """With one batch of 60 entries a kill used to lose the whole batch; rows now land
    as each entry's timing is final, and a rerun writes only the others."""
    out = tmp_path / "t.jsonl"
    argv = _slow_measure_argv(tmp_path, out)
    argv[argv.index("--batch") + 1] = "60"
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_rows(out, 1, proc, timeout_s=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    survived = [r.to_json() for r in read_table(out).rows]
    assert 1 <= len(survived) < 60


# ------------------------------------------------------------------ 9. minor
def test_an_empty_op_list_is_refused(cli, tmp_path):
    opset = tmp_path / "e.toml"
    opset.write_text('name = "e"\nhw = [[8, 8]]\n[[entry]]\nop = []\nc = 1\n')
    assert_one_line_error(_measure(cli, opset, tmp_path / "t.jsonl"), "field op is an empty list")


def test_calibrate_with_too_few_networks_is_refused_before_measuring(cli, tmp_path):
    table = tmp_path / "t.jsonl"
    table.write_bytes(CPU_TABLE.read_bytes())
    result = cli("calibrate", "--table", str(table), "--networks", "1", "--no-progress")
    assert_one_line_error(result, "at least 3 networks", "--networks 1")
    assert not (tmp_path / "t.compose.json").exists()


# ------------------------------------------------------------------ soak: kill -9 at random moments
def _soak(tmp_path: Path, kills: int, seed: int) -> None:
    out = tmp_path / "t.jsonl"
    argv = _slow_measure_argv(tmp_path, out)
    rng = random.Random(seed)
    completed: dict[str, dict] = {}
    for _ in range(kills):
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.5))  # interpreter start-up, the lock, a batch: any moment
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rows = [r.to_json() for r in read_table(out, quiet=True).rows] if out.exists() else []
        keys = [r["key"] for r in rows]
        assert len(keys) == len(set(keys)), "a duplicate key after a kill"
        by_key = {r["key"]: r for r in rows}
        for key, row in completed.items():
            assert by_key.get(key) == row, "a completed row was lost or changed"
        completed = by_key
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [r.to_json() for r in read_table(out).rows]
    keys = [r["key"] for r in rows]
    assert len(keys) == 60 and len(set(keys)) == 60
    assert all({r["key"]: r for r in rows}[k] == row for k, row in completed.items())


def test_two_kills_then_resume_lose_nothing(tmp_path):
    _soak(tmp_path, kills=2, seed=1)


@pytest.mark.slow
def test_soak_twenty_kills_of_measure_lose_nothing(tmp_path):
    _soak(tmp_path, kills=20, seed=20)


def test_spec_bytes_counts_inputs_outputs_and_weights():
    from oplat.limits import spec_bytes

    conv = OpSpec("conv", 3, 10, 10, c_out=8, kernel=3)
    assert spec_bytes(conv) == 4 * (3 * 100 + 8 * 100 + 3 * 8 * 9)
    assert SCHEMA_VERSION == 1


# ------------------------------------------------------------------ drift (a table holds for its days)
def test_appending_to_a_table_whose_rows_moved_is_refused(cli, tmp_path):
    """The rows re-timed before appending now run 2× their recorded p10 (the table was
    edited to claim it): measure stops with the ratios and the two ways on."""
    opset = write_opset(tmp_path / "big.toml", '[[entry]]\nop = "conv"\nkernel = 3\nchannels = [48, 64, 96]\n', hw="[[128, 128]]")
    out = tmp_path / "t.jsonl"
    assert _measure(cli, opset, out).code == 0
    rows = _rows(out)
    assert all(r["p10_ms"] >= 1.0 for r in rows), "the drift check needs rows of at least 1 ms"
    for r in rows:
        for k in ("median_ms", "p10_ms", "p90_ms", "mean_ms"):
            r[k] /= 2
        r["spread_pct"] = 1.0
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = out.read_bytes()
    more = write_opset(tmp_path / "more.toml", '[[entry]]\nop = "conv"\nkernel = 3\nchannels = [48, 64, 96, 16]\n', hw="[[128, 128]]")
    refused = _measure(cli, more, out)
    assert_one_line_error(refused, "re-timed rows moved beyond their recorded noise", "--out NEW", "--accept-drift")
    assert refused.code == EXIT_RUNTIME and out.read_bytes() == before
    accepted = _measure(cli, more, out, "--accept-drift")
    assert accepted.code == 0 and "1 measured, 3 already there" in accepted.out
