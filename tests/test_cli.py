"""The command line: happy paths and every bad input the brief lists."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, assert_one_line_error, run_python, write_opset

TINY = '[[entry]]\nop = "conv+relu"\nkernel = 3\nchannels = [4, 8]\n\n[[entry]]\nop = "add"\nc = 4\n'


def test_help_lists_commands(cli, capsys):
    with pytest.raises(SystemExit) as info:
        cli("--help")
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("devices", "measure", "table"):
        assert command in out


def test_measure_then_table_in_every_format(cli, tmp_path):
    opset = write_opset(tmp_path / "tiny.toml", TINY, precisions='["fp32", "int8"]')
    out = tmp_path / "t.jsonl"
    r = cli("measure", "--device", "cpu", "--opset", str(opset), "--out", str(out), "--quick-policy", "--no-progress")
    assert r.code == 0, r.err
    assert "6 measured" in r.out
    r = cli("table", str(out))
    assert r.code == 0 and "Median [ms]" in r.out and "conv3x3+relu →8" in r.out
    r = cli("table", str(out), "--format", "markdown", "--precision", "int8", "--op", "conv*")
    assert r.code == 0 and r.out.count("| conv3x3+relu") == 2 and "fp32" not in r.out.split("\n\n", 1)[1]
    r = cli("table", str(out), "--format", "csv")
    header = r.out.splitlines()[0].split(",")
    assert {"key", "device", "op", "precision", "median_ms", "macs"} <= set(header) and len(r.out.strip().splitlines()) == 7
    r = cli("table", str(out), "--format", "json")
    data = json.loads(r.out)
    assert len(data) == 6 and all(d["median_ms"] > 0 and d["device"] == "cpu" for d in data)
    r = cli("table", str(out), "--format", "html")
    assert r.out.startswith("<!DOCTYPE html>") and "<table" in r.out and r.out.rstrip().endswith("</html>")


def test_a_mostly_noisy_run_says_the_host_was_unsteady(cli, tmp_path):
    """When most rows of a run disagree across rounds, measure keeps them (nothing measured is
    lost) but warns on stderr that the table is not one to predict from yet; a steady run
    (here: an agreement bound no round can miss) says nothing of the kind."""
    opset = write_opset(tmp_path / "tiny.toml", TINY + '\n[[entry]]\nop = "relu"\nc = [4, 8]\n')
    base = ("measure", "--device", "cpu", "--opset", str(opset), "--quick-policy", "--no-progress")
    r = cli(*base, "--out", str(tmp_path / "noisy.jsonl"), "--agree-pct", "0.000001")
    assert r.code == 0, r.err
    assert "5 measured" in r.out and "5 noisy" in r.out
    assert "oplat: warning: 5 of 5 rows are noisy" in r.err and "--retry-noisy" in r.err
    assert len((tmp_path / "noisy.jsonl").read_text().splitlines()) == 5
    r = cli(*base, "--out", str(tmp_path / "steady.jsonl"), "--agree-pct", "1000")
    assert r.code == 0 and "0 noisy" in r.out and "warning" not in r.err


def test_side_by_side_has_ratio_columns(cli, tmp_path):
    opset = write_opset(tmp_path / "tiny.toml", TINY)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path in (a, b):
        assert cli("measure", "--opset", str(opset), "--out", str(path), "--quick-policy", "--no-progress").code == 0
    r = cli("table", str(a), str(b), "--format", "github")
    assert r.code == 0, r.err
    header = next(line for line in r.out.splitlines() if line.startswith("| Op"))
    assert "cpu:a p10 [ms]" in header and "cpu:b/cpu:a" in header  # the statistic in use (--stat p10 by default)
    rows = [line for line in r.out.splitlines() if line.startswith("| conv") or line.startswith("| add")]
    assert len(rows) == 3
    ratios = [float(line.strip("|").split("|")[-1]) for line in rows]
    assert all(0.2 < x < 5 for x in ratios)  # same op, same machine: ratios near 1


def test_devices_lists_cpu_available(cli):
    r = cli("devices")
    assert r.code == 0
    line = next(l for l in r.out.splitlines() if l.startswith("cpu"))
    assert "available" in line


# ---------------------------------------------------------------- bad input
def test_malformed_toml(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[entry]\nop=", encoding="utf-8")
    assert_one_line_error(cli("measure", "--opset", str(bad), "--out", str(tmp_path / "t.jsonl")), "malformed TOML", str(bad))


def test_unknown_op(cli, tmp_path):
    bad = write_opset(tmp_path / "bad.toml", '[[entry]]\nop = "gelu"\nc = 3\n')
    assert_one_line_error(cli("measure", "--opset", str(bad), "--out", str(tmp_path / "t.jsonl")), "unknown op 'gelu'", "entry 1")


def test_unknown_precision(cli, tmp_path):
    assert_one_line_error(cli("measure", "--opset", "quick", "--precision", "int4", "--out", str(tmp_path / "t.jsonl")), "unknown precision int4")


def test_unknown_device(cli):
    assert_one_line_error(cli("measure", "--device", "tpu9000"), "unknown device 'tpu9000'", "cpu")


def test_impossible_shape(cli, tmp_path):
    bad = write_opset(tmp_path / "bad.toml", '[[entry]]\nop = "depth_to_space"\nc = 12\nblock = 3\n')
    assert_one_line_error(cli("measure", "--opset", str(bad), "--out", str(tmp_path / "t.jsonl")), "divisible by 9")


def test_corrupt_table_line_keeps_the_table_intact(cli, tmp_path):
    opset = write_opset(tmp_path / "tiny.toml", TINY)
    out = tmp_path / "t.jsonl"
    assert cli("measure", "--opset", str(opset), "--out", str(out), "--quick-policy", "--no-progress").code == 0
    lines = out.read_text().splitlines(keepends=True)
    lines.insert(1, "{garbage\n")
    out.write_text("".join(lines))
    before = out.read_bytes()
    assert_one_line_error(cli("table", str(out)), f"{out}:2", "corrupt table line")
    assert_one_line_error(cli("measure", "--opset", str(opset), "--out", str(out), "--no-progress"), f"{out}:2")
    assert out.read_bytes() == before  # nothing measured is lost or rewritten


def test_unwritable_output(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_one_line_error(cli("measure", "--opset", "quick", "--out", str(blocker / "t.jsonl")), "cannot write table", "--out")


def test_missing_extra_gives_install_hint():
    result = run_python(
        "import sys; sys.modules['openvino'] = None\n"
        "from oplat.cli import main\n"
        "sys.exit(main(['measure', '--device', 'openvino', '--opset', 'quick']))"
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "pip install 'oplat[openvino]'" in result.stderr and "Traceback" not in result.stderr


def test_help_and_devices_work_without_runtimes():
    """oplat imports and --help runs with onnxruntime and openvino blocked."""
    result = run_python(
        "import sys\n"
        "for name in ('onnxruntime', 'openvino', 'ai_edge_litert'): sys.modules[name] = None\n"
        "import oplat, oplat.cli\n"
        "from oplat.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "sys.exit(main(['devices']))"
    )
    assert result.returncode == 0, result.stderr
    assert "measure" in result.stdout
    assert "pip install onnxruntime" in result.stdout and "pip install 'oplat[openvino]'" in result.stdout
    assert "pip install 'oplat[litert]'" in result.stdout


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "oplat", "--debug", "measure", "--device", "tpu9000"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr


# ---------------------------------------------------------------- kill and resume
def _long_measure(tmp_path):
    """(argv, table path) of an `oplat measure` run of 60 tiny entries, one per batch: after
    the first rows the run still has seconds to go, even when the test process is
    scheduled late on a loaded machine (18 entries once finished before the signal)."""
    channels = ", ".join(str(c) for c in range(4, 124, 2))
    opset = write_opset(tmp_path / "many.toml", f'[[entry]]\nop = "conv+relu"\nkernel = 3\nchannels = [{channels}]\n', hw="[[32, 32]]")
    out = tmp_path / "t.jsonl"
    argv = [sys.executable, "-m", "oplat", "measure", "--opset", str(opset), "--out", str(out), "--quick-policy", "--batch", "1", "--no-progress"]
    return argv, out


def test_killed_measure_resumes_without_loss_or_duplicates(tmp_path):
    """A real `oplat measure` process is SIGKILLed mid-run; the rerun completes the table."""
    argv, out = _long_measure(tmp_path)
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if out.exists() and out.read_text().count("\n") >= 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("measure wrote fewer than 3 rows in 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    survived = [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]
    assert 3 <= len(survived) < 60, "the process should have been killed mid-run"
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    keys = [r["key"] for r in rows]
    assert len(keys) == 60 and len(set(keys)) == 60
    # the rows finished before the kill are still there, byte for byte the same data
    by_key = {r["key"]: r for r in rows}
    for row in survived:
        assert by_key[row["key"]] == row


def test_interrupt_says_how_to_continue(tmp_path):
    """SIGINT (Ctrl-C) ends measure with 130 and a one-line hint; finished rows stay."""
    argv, out = _long_measure(tmp_path)
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Run the same command again to continue" in err and "Traceback" not in err
    assert len(out.read_text().splitlines()) >= 2


def test_export_writes_onnx_and_tflite_that_run(cli, tmp_path):
    import onnx

    opset = write_opset(tmp_path / "tiny.toml", TINY, precisions='["fp32", "int8"]')
    out = tmp_path / "models"
    assert_one_line_error(cli("export", "--opset", str(opset), "--format", "pb", "--out", str(out)), "unknown format pb")
    r = cli("export", "--opset", str(opset), "--format", "onnx,tflite", "--out", str(out), "--no-progress")
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:  # without the extra: one line that says how to get it
        assert_one_line_error(r, "pip install 'oplat[litert]'")
        return
    assert r.code == 0, r.err
    index = json.loads((out / "index.json").read_text())
    assert len(index) == 6 and all(len(e["files"]) == 2 for e in index)
    for entry in index:
        onnx.checker.check_model(onnx.load(out / entry["files"][0]), full_check=True)
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    for entry in index:
        interp = litert.Interpreter(model_path=str(out / entry["files"][1]))
        interp.allocate_tensors()
        interp.invoke()
