"""Device files, transports, parsers and the toolchain runner.

Real tools where this machine has them (OpenVINO ``benchmark_app``, ``litert-benchmark``,
local processes); fake ``adb``/``ssh``/``scp``/``synap``/``synap_cli`` executables on PATH
for the board-side paths, so the argv oplat builds, the retry limit and the whole
compile → push → run → parse → cleanup chain are checked without a board.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap
import time
from pathlib import Path

import pytest

from oplat.errors import OplatError
from oplat.toolchain.devicefile import (
    DeviceFileError,
    list_device_files,
    load_device_file,
    parse_device_file,
    readiness,
    render,
    render_argv,
)
from oplat.toolchain.errors import ParseError, StepTimeout, ToolchainError
from oplat.toolchain.parsers import (
    DeviceTiming,
    get_parser,
    parse_benchmark_app,
    parse_litert_benchmark,
    parse_synap_cli,
    parse_tflite_benchmark_model,
    parser_names,
)
from oplat.toolchain.runner import ToolchainSession
from oplat.toolchain.transport import Adb, Local, Ssh, StepPolicy

PY = sys.executable

# ------------------------------------------------------------------ captured tool output

SYNAP_DOC = """\
Flush/invalidate: yes
Loop period (ms): 0
Network inputs: 1
Network outputs: 1
Input buffer: input_0 size: 150528 : random
Output buffer: output_66 size: 1001

Predict #0: 2.68 ms
Predict #1: 1.81 ms
Predict #2: 1.79 ms
Predict #3: 1.79 ms
Inference timings (ms):  load: 55.91  init: 3.84  min: 1.78  median: 1.82  max: 2.68  stddev: 0.13  mean: 1.85
"""

TFLITE_FULL = """\
INFO: Loaded model /data/local/tmp/model.tflite
INFO: The input model file size (MB): 67.3128
INFO: Initialized session in 5.579ms.
INFO: Replacing 12 out of 12 node(s) with delegate (TfLiteNnapiDelegate) node, yielding 1 partitions.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415

INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
"""

# OpenVINO 2026.4 Python benchmark_app, -hint none -api sync -nthreads 1 (tail of stdout).
BENCHMARK_APP_US = """\
[Step 4/11] Reading model files
[ INFO ] Loading model files
[ INFO ] Read model took 34.17 ms
[Step 7/11] Loading the model to the device
[ INFO ] Compile model took 98.79 ms
[Step 10/11] Measuring performance (Start inference synchronously, limits: 20 iterations)
[ INFO ] Benchmarking in inference only mode (inputs filling are not included in measurement loop).
[ INFO ] First inference took 5.23 ms
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            20 iterations
[ INFO ] Duration:         3.64 ms
[ INFO ] Latency:
[ INFO ]    Median:        46.99 us
[ INFO ]    Average:       156.09 us
[ INFO ]    Min:           44.12 us
[ INFO ]    Max:           1953.49 us
[ INFO ] Throughput:   5498.06 FPS
"""

BENCHMARK_APP_MS = """\
[ INFO ] First inference took 27.26 ms
[Step 11/11] Dumping statistics report
[ INFO ] Performance counts for 0-th infer request
x                    Status.NOT_RUN       layerType: Parameter            execType: unknown_f32          realTime (ms): 0.000      cpuTime (ms): 0.000
y                    Status.EXECUTED      layerType: Convolution          execType: brgconv_avx512_f32   realTime (ms): 0.035      cpuTime (ms): 0.035
Total time:     0.046 milliseconds
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            10 iterations
[ INFO ] Duration:         196.75 ms
[ INFO ] Latency:
[ INFO ]    Median:        18.68 ms
[ INFO ]    Average:       19.03 ms
[ INFO ]    Min:           18.19 ms
[ INFO ]    Max:           20.83 ms
[ INFO ] Throughput:   50.83 FPS
"""

# ai-edge-litert 2.3 litert-benchmark on a one-conv model: stdout, then stderr logging.
LITERT_OUT = """\

========================================
 BENCHMARK RESULTS
========================================
Model initialization:  2.32 ms
Warmup (first):        0.21 ms
Warmup (avg):          0.12 ms (2 runs)
Inference (avg):       0.07 ms (20 runs)
Inference (min):       0.03 ms
Inference (max):       0.20 ms
Inference (median):    0.05 ms
Inference (std):       0.04 ms
Inference (p5):        0.03 ms
Inference (p95):       0.13 ms
Throughput:            464.55 MB/s
Fully accelerated:     True
========================================
2026-11-23 19:08:26 INFO benchmark_litert_model: Model:           conv.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
"""


# ------------------------------------------------------------------------------ parsers


def test_synap_cli_documented_output():
    t = parse_synap_cli(SYNAP_DOC)
    assert t.samples_ms == (2.68, 1.81, 1.79, 1.79)
    assert t.runs == 4
    # The tool's own summary wins over statistics recomputed from the samples.
    assert (t.load_ms, t.init_ms, t.min_ms, t.median_ms, t.max_ms, t.std_ms, t.mean_ms) == (
        55.91, 3.84, 1.78, 1.82, 2.68, 0.13, 1.85)


def test_synap_cli_short_summary_and_warmup_drop():
    t = parse_synap_cli("Predict #0: 13.8 ms\nInference timings: load: 31.22  init: 10.4  mean: 13.8\n")
    assert t.samples_ms == (13.8,) and t.load_ms == 31.22 and t.init_ms == 10.4 and t.mean_ms == 13.8
    dropped = parse_synap_cli(SYNAP_DOC).drop_first(1)
    assert dropped.samples_ms == (1.81, 1.79, 1.79)
    assert dropped.median_ms == 1.79 and dropped.max_ms == 1.81 and dropped.runs == 3
    assert dropped.extra["tool_summary_ms"]["median_ms"] == 1.82
    with pytest.raises(OplatError, match="warm-up"):
        parse_synap_cli(SYNAP_DOC).drop_first(4)


def test_tflite_benchmark_model_summary_line():
    line = "Inference timings in us: Init: 12345, First inference: 2345, Warmup (avg): 2100.5, Inference (avg): 2050.3"
    t = parse_tflite_benchmark_model(line)
    assert t.init_ms == pytest.approx(12.345)
    assert t.mean_ms == pytest.approx(2.0503)
    assert t.extra["first_inference_ms"] == pytest.approx(2.345)
    assert t.extra["warmup_avg_ms"] == pytest.approx(2.1005)
    assert t.samples_ms == ()


def test_tflite_benchmark_model_count_lines():
    t = parse_tflite_benchmark_model(TFLITE_FULL)
    # The timed loop's count line, not the warm-up one; scientific notation read.
    assert t.runs == 50
    assert t.min_ms == pytest.approx(1238.588) and t.max_ms == pytest.approx(1252.566)
    assert t.mean_ms == pytest.approx(1240.27) and t.std_ms == pytest.approx(2.565)
    assert t.median_ms == pytest.approx(1239.807)
    assert t.extra["p95_ms"] == pytest.approx(1247.415)
    assert t.init_ms == pytest.approx(5.579)
    assert (t.extra["delegated_nodes"], t.extra["graph_nodes"], t.extra["delegate"]) == (12, 12, "TfLiteNnapiDelegate")
    assert t.extra["memory_overall_mb"] == pytest.approx(109.832)


def test_benchmark_app_real_output_in_microseconds():
    t = parse_benchmark_app(BENCHMARK_APP_US)
    assert t.runs == 20
    assert t.median_ms == pytest.approx(0.04699)
    assert t.mean_ms == pytest.approx(0.15609)
    assert t.min_ms == pytest.approx(0.04412) and t.max_ms == pytest.approx(1.95349)
    assert t.load_ms == 34.17 and t.init_ms == 98.79
    assert t.extra["first_inference_ms"] == 5.23 and t.extra["throughput_fps"] == 5498.06
    assert t.samples_ms == ()  # benchmark_app keeps no per-iteration latencies


def test_benchmark_app_real_output_in_milliseconds_with_counters():
    t = parse_benchmark_app(BENCHMARK_APP_MS)
    assert (t.runs, t.median_ms, t.mean_ms, t.min_ms, t.max_ms) == (10, 18.68, 19.03, 18.19, 20.83)
    layers = t.extra["layers"]
    assert [layer["layer_type"] for layer in layers] == ["Parameter", "Convolution"]
    assert layers[1]["real_ms"] == 0.035 and layers[1]["status"] == "EXECUTED"
    assert parse_benchmark_app("[ INFO ] Latency: 3.50 ms\n").median_ms == 3.5  # pre-2021 format


def test_litert_benchmark_real_output():
    t = parse_litert_benchmark(LITERT_OUT)
    assert (t.runs, t.mean_ms, t.min_ms, t.max_ms, t.median_ms, t.std_ms, t.init_ms) == (
        20, 0.07, 0.03, 0.20, 0.05, 0.04, 2.32)
    assert t.extra["warmup_runs"] == 2 and t.extra["fully_accelerated"] is True
    assert t.extra["p95_ms"] == 0.13


@pytest.mark.parametrize("name", ["synap_cli", "tflite_benchmark_model", "benchmark_app", "litert_benchmark"])
def test_parser_fed_garbage_quotes_the_tail(name):
    garbage = "HEAD-" + "x" * 2000 + "\nSegmentation fault TAIL-END"
    with pytest.raises(ParseError) as info:
        get_parser(name)(garbage)
    message = str(info.value)
    assert "TAIL-END" in message and "HEAD-" not in message
    assert len(info.value.output_tail) <= 301
    assert "\n" not in message  # one line: the tail is quoted with repr


def test_parser_registry():
    assert set(parser_names()) >= {"synap_cli", "tflite_benchmark_model", "benchmark_app", "litert_benchmark"}
    assert get_parser("oplat.toolchain.parsers:parse_synap_cli") is parse_synap_cli
    with pytest.raises(OplatError, match="unknown parser 'nope'"):
        get_parser("nope")
    with pytest.raises(OplatError, match="cannot be imported"):
        get_parser("no_such_module_xyz:parse")


def test_device_timing_from_samples():
    t = DeviceTiming.from_samples([3.0, 1.0, 2.0], init_ms=5.0)
    assert (t.median_ms, t.mean_ms, t.min_ms, t.max_ms, t.runs, t.init_ms) == (2.0, 2.0, 1.0, 3.0, 3, 5.0)
    assert t.std_ms == pytest.approx(1.0)
    assert t.to_dict()["samples_ms"] == [3.0, 1.0, 2.0]


# ---------------------------------------------------------------------- local transport


def test_local_runs_real_commands():
    local = Local()
    run = local.run([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"], 30)
    assert run.rc == 3 and "out" in run.output and "err" in run.output and not run.ok
    run = local.run([PY, "-c", "import sys; print(sys.argv[1])", "a b; $(echo no)"], 30)
    assert run.rc == 0 and run.output.strip() == "a b; $(echo no)"  # argv, never a shell


def test_local_timeout_kills_the_process_group():
    start = time.monotonic()
    with pytest.raises(StepTimeout) as info:
        # The child's own child (sleep) must die too, or communicate() would hang.
        Local().run(["sh", "-c", "echo started; sleep 30 & wait"], 0.5)
    assert time.monotonic() - start < 5
    assert "timed out after 0.5 s" in str(info.value)
    assert Path(info.value.argv[0]).name == "sh" and "started" in info.value.output_tail


def test_local_files_and_cleanup(tmp_path):
    local = Local(base_dir=tmp_path / "work")
    work = local.mkdtemp()
    assert Path(work).is_dir() and Path(work).name.startswith("oplat-")
    src = tmp_path / "m.bin"
    src.write_bytes(b"abc")
    remote = local.push(src, os.path.join(work, "m.bin"))
    assert local.pull(remote, tmp_path / "back.bin").read_bytes() == b"abc"
    local.cleanup(work)
    assert not Path(work).exists()
    with pytest.raises(OplatError, match="refusing"):
        local.cleanup(str(tmp_path))
    with pytest.raises(ToolchainError, match="no-such-tool-xyz not found"):
        local.run(["no-such-tool-xyz"], 5)


# ---------------------------------------------------------------- fake adb / ssh / scp

FAKE_ADB = """\
#!{py}
# A fake adb: logs its argv, fails the first $FAKE_FAIL_FIRST calls like an offline
# device, and otherwise runs `shell` commands with sh and copies files locally.
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(sys.argv) + "\\n")
counter = os.environ["FAKE_LOG"] + ".n"
n = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, "w").write(str(n + 1))
if n < int(os.environ.get("FAKE_FAIL_FIRST", "0")):
    if os.environ.get("FAKE_FAIL_MODE") == "drop" and "shell" in args:
        print("partial output"); sys.exit(255)
    print("error: device offline", file=sys.stderr); sys.exit(1)
if args[:1] == ["-s"]:
    args = args[2:]
cmd = args[0]
if cmd == "get-state":
    print("device")
elif cmd in ("push", "pull"):
    shutil.copy(args[1], args[2]); print("1 file pushed")
elif cmd == "shell":
    sys.exit(subprocess.run(["sh", "-c", args[1]]).returncode)
else:
    print("unknown", cmd, file=sys.stderr); sys.exit(1)
"""

FAKE_SSH = """\
#!{py}
import json, os, subprocess, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(sys.argv) + "\\n")
sys.exit(subprocess.run(["sh", "-c", sys.argv[-1]]).returncode)
"""

FAKE_SCP = """\
#!{py}
import json, os, shutil, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(sys.argv) + "\\n")
src, dst = (a.split(":", 1)[-1] for a in sys.argv[-2:])
shutil.copy(src, dst)
"""

# synap_cli stand-in: prints what the docs show, one Predict line per -r run.
FAKE_SYNAP_CLI = """\
#!{py}
import sys
runs = int(sys.argv[sys.argv.index("-r") + 1])
assert sys.argv[sys.argv.index("-m") + 1].endswith(".synap"), sys.argv
print("Network inputs: 1")
times = [5.0] + [1.0 + 0.1 * i for i in range(runs - 1)]
for i, t in enumerate(times):
    print(f"Predict #{{i}}: {{t:.2f}} ms")
print("Inference timings (ms):  load: 55.91  init: 3.84  min: 1.00  median: 1.50  max: 5.00  stddev: 0.13  mean: 1.85")
"""

# synap stand-in: `synap convert --model M --meta Y --target T --out-dir D` → D/model.synap.
FAKE_SYNAP = """\
#!{py}
import shutil, sys
a = sys.argv
assert a[1] == "convert", a
out = a[a.index("--out-dir") + 1]
shutil.copy(a[a.index("--meta") + 1], out + "/meta.yaml")
open(out + "/model.synap", "w").write("synap model for " + a[a.index("--target") + 1])
shutil.copy(out + "/meta.yaml", "{keep}/meta.yaml")
"""


def _script(bin_dir: Path, name: str, text: str, **fmt) -> Path:
    path = bin_dir / name
    path.write_text(text.format(py=PY, **fmt))
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """A directory first on PATH holding fake adb, ssh, scp, synap_cli; FAKE_LOG set."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir, "adb", FAKE_ADB)
    _script(bin_dir, "ssh", FAKE_SSH)
    _script(bin_dir, "scp", FAKE_SCP)
    _script(bin_dir, "synap_cli", FAKE_SYNAP_CLI)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("FAKE_FAIL_FIRST", raising=False)
    monkeypatch.delenv("FAKE_FAIL_MODE", raising=False)
    for name in ("OPLAT_TRANSPORT", "OPLAT_ADB_SERIAL", "OPLAT_SSH_HOST", "OPLAT_REMOTE_DIR", "OPLAT_SYNAP_TARGET"):
        monkeypatch.delenv(name, raising=False)
    return bin_dir


def _calls(tmp_path) -> list[list[str]]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_adb_builds_argv_and_keeps_arguments_intact(fake_bin, tmp_path):
    adb = Adb(serial="emulator-5554", remote_dir=str(tmp_path / "device"), retries=0)
    work = adb.mkdtemp()
    assert work.startswith(str(tmp_path / "device") + "/oplat-")
    tricky = "a b; $(touch /tmp/pwned-oplat) 'q'"
    run = adb.run([PY, "-c", "import sys; print(sys.argv[1])", tricky], 30, cwd=work, env={"OPLAT_X": "1 2"})
    assert run.rc == 0 and run.output.strip() == tricky  # the remote shell did not re-split it
    assert "__OPLAT_RC__" not in run.output
    shell_call = _calls(tmp_path)[-1]
    assert shell_call[1:4] == ["-s", "emulator-5554", "shell"] and len(shell_call) == 5
    suffix = "; echo __OPLAT_RC__=$?"  # the sentinel that tells rc from a dropped link
    assert shell_call[4].endswith(suffix)
    words = shlex.split(shell_call[4][: -len(suffix)])
    assert words[:4] == ["cd", work, "&&", "OPLAT_X=1 2"] and words[-1] == tricky
    src = tmp_path / "m.onnx"
    src.write_bytes(b"onnx")
    adb.push(src, f"{work}/m.onnx")
    assert _calls(tmp_path)[-1][1:] == ["-s", "emulator-5554", "push", str(src), f"{work}/m.onnx"]
    assert adb.run(["sh", "-c", "exit 7"], 30).rc == 7  # the command's own status comes back
    adb.cleanup(work)
    assert not Path(work).exists()
    with pytest.raises(OplatError, match="refusing"):
        adb.cleanup(str(tmp_path / "device"))
    with pytest.raises(OplatError, match="not a safe absolute path"):
        adb.push(src, "/data/local/tmp/x; rm -rf /")
    with pytest.raises(OplatError, match="serial"):
        Adb(serial="-H evil")


def test_adb_retries_transient_failures_up_to_the_limit(fake_bin, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_FIRST", "2")
    adb = Adb(remote_dir=str(tmp_path / "device"), retries=2, retry_delay_s=0)
    run = adb.run(["echo", "hello"], 30)
    assert run.output.strip() == "hello" and run.attempts == 3
    assert len(_calls(tmp_path)) == 3

    (tmp_path / "calls.jsonl").unlink()
    (tmp_path / "calls.jsonl.n").unlink()
    monkeypatch.setenv("FAKE_FAIL_FIRST", "10")
    src = tmp_path / "m.onnx"
    src.write_bytes(b"x")
    with pytest.raises(ToolchainError, match=r"3 attempt") as info:
        Adb(remote_dir=str(tmp_path / "device"), retries=2, retry_delay_s=0).push(src, "/data/local/tmp/m.onnx")
    assert len(_calls(tmp_path)) == 3  # 1 try + 2 retries, then it gives up
    assert "device offline" in info.value.output_tail and info.value.argv[-3] == "push"


def test_adb_dropped_connection_is_retried_and_reported(fake_bin, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_FIRST", "10")
    monkeypatch.setenv("FAKE_FAIL_MODE", "drop")
    with pytest.raises(ToolchainError, match="lost the connection"):
        Adb(remote_dir="/data/local/tmp", retries=1, retry_delay_s=0).run(["true"], 30)
    assert len(_calls(tmp_path)) == 2
    # A command that ran and failed is not retried.
    monkeypatch.setenv("FAKE_FAIL_FIRST", "0")
    (tmp_path / "calls.jsonl").unlink()
    assert Adb(retries=3, retry_delay_s=0).run(["false"], 30).rc == 1
    assert len(_calls(tmp_path)) == 1


def test_missing_adb_and_ssh_name_the_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(OplatError, match="adb not found on PATH; install Android platform-tools"):
        Adb().run(["true"], 5)
    assert "platform-tools" in Adb().reachable()
    with pytest.raises(OplatError, match="openssh-client"):
        Ssh("board.local").push(__file__, "/tmp/x")


def test_ssh_builds_argv(fake_bin, tmp_path):
    key = tmp_path / "id_ed25519"
    ssh = Ssh("192.168.1.20", user="root", port=2222, key=str(key), remote_dir=str(tmp_path / "board"),
              options=["StrictHostKeyChecking=accept-new"], steps=StepPolicy(retries=0))
    assert ssh.reachable() is None
    work = ssh.mkdtemp()
    src = tmp_path / "m.synap"
    src.write_bytes(b"m")
    ssh.push(src, f"{work}/m.synap")
    run = ssh.run(["cat", "m.synap"], 30, cwd=work)
    assert run.output == "m"
    scp_call, ssh_call = _calls(tmp_path)[-2:]
    assert Path(ssh_call[0]).name == "ssh" and Path(scp_call[0]).name == "scp"
    for call in (scp_call, ssh_call):
        assert "BatchMode=yes" in call and str(key) in call and "StrictHostKeyChecking=accept-new" in call
    assert ssh_call[ssh_call.index("-p") + 1] == "2222" and ssh_call[-2] == "root@192.168.1.20"
    assert scp_call[scp_call.index("-P") + 1] == "2222"
    assert scp_call[-2:] == [str(src), f"root@192.168.1.20:{work}/m.synap"]
    with pytest.raises(OplatError, match="ssh host"):
        Ssh("-oProxyCommand=evil")


# ------------------------------------------------------------------------- device files

MINIMAL = """\
input_format = "onnx"
parser = "synap_cli"
[run]
argv = ["tool", "{model}", "{runs}"]
warmup = "none"
"""


def _err(text: str, source: str = "bad.toml") -> str:
    with pytest.raises(DeviceFileError) as info:
        parse_device_file(text, source)
    return str(info.value)


def test_device_file_validation_names_file_field_and_problem():
    assert parse_device_file(MINIMAL, "mini.toml").name == "mini"
    assert _err("input_format = 'onnx'\nparser = 'synap_cli'\n").startswith("bad.toml: run: missing table")
    assert "bad.toml: input_format: 'pb' is not one of onnx, tflite" in _err(MINIMAL.replace('"onnx"', '"pb"'))
    assert "bad.toml: parser: unknown parser 'synapse'" in _err(MINIMAL.replace('"synap_cli"', '"synapse"'))
    msg = _err(MINIMAL + "timeout = 5\n")
    assert "bad.toml: run.timeout: unknown key (did you mean 'timeout_s'?)" in msg
    msg = _err(MINIMAL.replace("{runs}", "{rnus}"))
    assert "bad.toml: run.argv[2]: unknown placeholder {rnus}" in msg
    assert "run.argv: must be a list of strings" in _err(MINIMAL.replace('["tool", "{model}", "{runs}"]', '"tool {model}"'))
    assert "run.warmup: is 'flag' but run.argv never uses {warmup}" in _err(MINIMAL.replace('"none"', '"flag"'))
    assert "run.timeout_s: must be > 0" in _err(MINIMAL + "timeout_s = 0\n")
    assert "not valid TOML" in _err("input_format = \n")
    msg = _err(MINIMAL + '[options.target]\ndefault = "X1"\nchoices = ["VS680"]\n')
    assert "options.target.default: 'X1' is not one of the choices VS680" in msg
    msg = _err(MINIMAL + "[precision.fp32]\na = '1'\n[precision.int8]\nb = '2'\n")
    assert "precision.int8: defines ['b'] but other precisions define ['a']" in msg
    assert "options.runs" in _err(MINIMAL + '[options.runs]\ndefault = "1"\n')
    assert "transport.kind" in _err(MINIMAL + '[transport]\nkind = "usb"\n')
    assert "transport.ssh.port: must be a int" in _err(MINIMAL + '[transport]\nkind = "ssh"\n[transport.ssh]\nport = "22"\n')
    assert "compile.argv: uses {meta} but [compile] has no `meta` template" in _err(
        MINIMAL + '[compile]\nargv = ["c", "{meta}"]\noutput = "{out_dir}/m"\n')


def test_templates_keep_yaml_braces_and_drop_empty_arguments():
    assert render("q: {data_type: uint8} {x} {{x}}", {"x": "1"}) == "q: {data_type: uint8} 1 {x}"
    with pytest.raises(OplatError, match="unknown placeholder {y}"):
        render("{y}", {"x": 1})
    assert render_argv(["t", "--name={n}", "--k={k}"], {"n": "", "k": 3}) == ["t", "--k=3"]


def test_builtin_and_user_device_files(tmp_path, monkeypatch):
    names = list_device_files(environ={"OPLAT_CONFIG_DIR": str(tmp_path)})
    assert {"dolphin", "tflite-adb", "openvino-benchmark-app", "litert-benchmark"} <= set(names)
    for name in names:
        load_device_file(name, environ={"OPLAT_CONFIG_DIR": str(tmp_path)})  # all built-ins validate
    user_dir = tmp_path / "devices"
    user_dir.mkdir()
    (user_dir / "dolphin.toml").write_text(MINIMAL.replace("onnx", "tflite"))
    env = {"OPLAT_CONFIG_DIR": str(tmp_path)}
    assert load_device_file("dolphin", env).input_format == "tflite"  # the user file shadows the built-in
    assert load_device_file(str(user_dir / "dolphin.toml")).source == str(user_dir / "dolphin.toml")
    with pytest.raises(OplatError, match="no device file named 'nope'"):
        load_device_file("nope", env)


def test_dolphin_options_precisions_and_transport_overrides():
    dolphin = load_device_file("dolphin", environ={})
    assert dolphin.option_values(environ={})["target"] == "VS680"
    assert dolphin.option_values(environ={"OPLAT_SYNAP_TARGET": "SL1680"})["target"] == "SL1680"
    assert dolphin.option_values({"target": "VS640"}, {"OPLAT_SYNAP_TARGET": "SL1680"})["target"] == "VS640"
    with pytest.raises(OplatError, match="target 'VS999' .* is not one of VS640, VS680, SL1640, SL1680"):
        dolphin.option_values({"target": "VS999"}, {})
    with pytest.raises(OplatError, match="unknown setting"):
        dolphin.option_values({"tagret": "VS680"}, {})
    assert dolphin.precision_placeholders("int8")["quantization"] == (
        "quantization: {data_type: uint8, scheme: default, dataset: [random]}")
    with pytest.raises(OplatError, match="does not support precision 'bf16'"):
        dolphin.precision_placeholders("bf16")
    adb = dolphin.make_transport(environ={"OPLAT_ADB_SERIAL": "abc123"})
    assert isinstance(adb, Adb) and adb.serial == "abc123" and adb.remote_dir == "/data/local/tmp"
    ssh = dolphin.make_transport(environ={"OPLAT_TRANSPORT": "ssh", "OPLAT_SSH_HOST": "astra.local"})
    assert isinstance(ssh, Ssh) and (ssh.host, ssh.user, ssh.remote_dir, ssh.port) == ("astra.local", "root", "/tmp", 22)
    with pytest.raises(OplatError, match="no ssh host; set OPLAT_SSH_HOST"):
        dolphin.make_transport({"transport": "ssh"}, environ={})


def test_dolphin_readiness_here_names_synap_and_adb(monkeypatch):
    monkeypatch.delenv("OPLAT_TRANSPORT", raising=False)
    problems = readiness("dolphin")
    assert any(p.startswith("synap not on PATH") and "ghcr.io/synaptics-synap/toolkit" in p for p in problems)
    assert any("adb" in p for p in problems)


def test_dolphin_readiness_with_a_reachable_board(fake_bin):
    problems = readiness("dolphin")
    assert len(problems) == 1 and problems[0].startswith("synap not on PATH")  # fake synap_cli is "on the board"
    (fake_bin / "synap_cli").unlink()
    problems = readiness("dolphin")
    assert problems[-1].startswith("synap_cli not found on the adb device")


# --------------------------------------------------------------------------- end to end


def test_dolphin_pipeline_with_fake_tools(fake_bin, tmp_path, monkeypatch):
    """compile (fake synap) → push (fake adb) → synap_cli → parse → warm-up dropped → cleanup."""
    keep = tmp_path / "keep"
    keep.mkdir()
    _script(fake_bin, "synap", FAKE_SYNAP, keep=keep)
    monkeypatch.setenv("OPLAT_REMOTE_DIR", str(tmp_path / "board"))
    monkeypatch.setenv("OPLAT_COMPILE_DIR", str(tmp_path / "compile"))
    model = tmp_path / "net.onnx"
    model.write_bytes(b"not really onnx")
    session = ToolchainSession("dolphin", overrides={"target": "SL1680", "serial": "dev1"})
    timing = session.time(model, runs=5, warmup=2, precision="int8")
    assert len(timing.samples_ms) == 5  # 7 runs asked of synap_cli, the first 2 dropped
    assert timing.samples_ms[0] == pytest.approx(1.1) and timing.extra["warmup_dropped"] == 2
    assert timing.load_ms == 55.91 and timing.init_ms == 3.84
    meta = (keep / "meta.yaml").read_text()
    assert "quantization: {data_type: uint8, scheme: default, dataset: [random]}" in meta
    assert "SL1680" in meta and "delegate: npu" in meta
    assert "synap_cli -m" in timing.extra["command"] and "-r 7 random" in timing.extra["command"]
    assert list((tmp_path / "board").iterdir()) == []  # the board's working dir is gone
    assert list((tmp_path / "compile").iterdir()) == []  # and so is the compile workspace
    assert all(call[1:3] == ["-s", "dev1"] for call in _calls(tmp_path))


def _local_device(tmp_path, code: str, timeout_s: float = 30) -> str:
    return textwrap.dedent(f"""\
        input_format = "onnx"
        parser = "synap_cli"
        [transport]
        kind = "local"
        [transport.local]
        base_dir = "{tmp_path / 'work'}"
        [run]
        argv = ["{PY}", "-c", {json.dumps(code)}, "{{model}}", "{{runs}}"]
        timeout_s = {timeout_s}
        warmup = "none"
        """)


def test_runner_errors_carry_command_and_output_and_clean_up(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    failing = parse_device_file(_local_device(tmp_path, "print('loading'); print('E:SyNAP: load failed'); exit(3)"),
                                "failing.toml")
    with pytest.raises(ToolchainError) as info:
        ToolchainSession(failing).time(model, runs=3)
    err = info.value
    assert err.step == "run" and "rc=3" in str(err) and err.argv[0] == PY and err.argv[-1] == "3"
    assert "E:SyNAP: load failed" in err.output_tail and "E:SyNAP: load failed" in str(err)
    assert list((tmp_path / "work").iterdir()) == []

    garbled = parse_device_file(_local_device(tmp_path, "print('no timings here')"), "garbled.toml")
    with pytest.raises(ParseError) as info:
        ToolchainSession(garbled).time(model, runs=3)
    assert info.value.step == "parse" and info.value.argv and "no timings here" in info.value.output_tail

    slow = parse_device_file(_local_device(tmp_path, "import time; time.sleep(30)", timeout_s=0.5), "slow.toml")
    with pytest.raises(StepTimeout):
        ToolchainSession(slow).time(model, runs=3)
    assert list((tmp_path / "work").iterdir()) == []

    wrong = tmp_path / "m.tflite"
    wrong.write_bytes(b"x")
    with pytest.raises(OplatError, match="takes onnx models"):
        ToolchainSession(garbled).time(wrong)


def _conv_onnx(path: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _conv_tflite(path: Path, c: int = 8, hw: int = 32) -> Path:
    """A one-CONV_2D float .tflite written with the flatbuffer schema (no TensorFlow)."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as s

    def buffer(array=None):
        b = s.BufferT()
        if array is not None:
            b.data = np.frombuffer(array.tobytes(), dtype=np.uint8)
        return b

    def tensor(name, shape, buffer_index):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), s.TensorType.FLOAT32, buffer_index
        return t

    rng = np.random.default_rng(0)
    model = s.ModelT()
    model.version = 3
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.CONV_2D
    code.version = 1
    model.operatorCodes = [code]
    model.buffers = [buffer(), buffer(), buffer(rng.standard_normal((c, 3, 3, c)).astype(np.float32)),
                     buffer(np.zeros(c, np.float32)), buffer()]
    options = s.Conv2DOptionsT()
    options.padding = s.Padding.SAME
    options.strideH = options.strideW = options.dilationHFactor = options.dilationWFactor = 1
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.Conv2DOptions, options
    graph = s.SubGraphT()
    graph.name = "main"
    graph.tensors = [tensor("x", (1, hw, hw, c), 1), tensor("w", (c, 3, 3, c), 2), tensor("b", (c,), 3),
                     tensor("y", (1, hw, hw, c), 4)]
    graph.inputs, graph.outputs, graph.operators = [0], [3], [op]
    model.subgraphs = [graph]
    signature = s.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    x, y = s.TensorMapT(), s.TensorMapT()
    x.name, x.tensorIndex, y.name, y.tensorIndex = "x", 0, "y", 3
    signature.inputs, signature.outputs = [x], [y]
    model.signatureDefs = [signature]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
    return path


def test_openvino_benchmark_app_end_to_end(tmp_path):
    pytest.importorskip("openvino")
    model = _conv_onnx(tmp_path / "conv.onnx")
    session = ToolchainSession("openvino-benchmark-app", environ={**os.environ, "OPLAT_LOCAL_DIR": str(tmp_path / "w")})
    assert readiness(session.device) == []
    timing = session.time(model, runs=20, warmup=0, threads=1, precision="fp32")
    assert timing.runs == 20
    assert timing.median_ms > 0 and timing.mean_ms > 0 and timing.min_ms <= timing.median_ms <= timing.max_ms
    assert timing.init_ms > 0 and "-infer_precision f32" in timing.extra["command"]
    assert list((tmp_path / "w").iterdir()) == []


def test_litert_benchmark_end_to_end(tmp_path):
    pytest.importorskip("ai_edge_litert")
    model = _conv_tflite(tmp_path / "conv.tflite")
    timing = ToolchainSession("litert-benchmark").time(model, runs=20, warmup=2, threads=1)
    assert timing.runs == 20 and timing.extra["warmup_runs"] == 2
    assert timing.mean_ms > 0 and timing.median_ms is not None and timing.init_ms > 0
    assert timing.extra["fully_accelerated"] is True


# ---------------------------------------------------------------- device files as oplat devices
def _tiny_opset(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text('name = "tiny"\nprecisions = ["int8"]\nhw = [[16, 16]]\n[[entry]]\nop = "conv+relu"\nkernel = 3\nchannels = [8, 16]\n')
    return path


def test_measure_on_dolphin_through_the_whole_toolchain(fake_bin, tmp_path, monkeypatch, capsys):
    """`oplat measure --device dolphin`: compile, push over adb, synap_cli, parse, table rows."""
    from oplat.cli import main
    from oplat.table import read_table

    keep = tmp_path / "keep"
    keep.mkdir()
    _script(fake_bin, "synap", FAKE_SYNAP, keep=keep)
    monkeypatch.setenv("OPLAT_REMOTE_DIR", str(tmp_path / "board"))
    monkeypatch.setenv("OPLAT_COMPILE_DIR", str(tmp_path / "compile"))
    out = tmp_path / "dolphin.jsonl"
    code = main(["measure", "--device", "dolphin", "--opset", str(_tiny_opset(tmp_path)), "--out", str(out),
                 "--quick-policy", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = [r.to_json() for r in read_table(out).rows]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    for row in rows:
        assert row["device"]["runtime"] == "toolchain:dolphin"
        # samples are synap_cli's per-run "Predict #i" lines (1.0 + 0.1·i ms after warm-up)
        assert 1.0 <= row["median_ms"] < 5.0 and row["rounds"] >= 3
    assert list((tmp_path / "board").iterdir()) == []


def test_board_failing_mid_run_gives_an_error_row_and_the_run_goes_on(fake_bin, tmp_path, monkeypatch):
    from oplat.devices import get_device
    from oplat.measure import measure_specs
    from oplat.opset import load_opset
    from oplat.table import read_table
    from oplat.timing import TimingPolicy

    _script(fake_bin, "synap", FAKE_SYNAP, keep=tmp_path)
    _script(fake_bin, "synap_cli", "#!{py}\nimport sys\nprint('segfault in driver'); sys.exit(139)\n")
    monkeypatch.setenv("OPLAT_REMOTE_DIR", str(tmp_path / "board"))
    out = tmp_path / "d.jsonl"
    summary = measure_specs(load_opset(str(_tiny_opset(tmp_path))).specs, get_device("dolphin"), opset="tiny",
                            out=out, policy=TimingPolicy.quick(), progress=False)
    rows = [r.to_json() for r in read_table(out).rows]
    assert summary.errors == 2 and len(rows) == 2
    for row in rows:
        assert row["status"] == "error" and "run failed" in row["message"]
        assert "synap_cli -m" in row["command"] and "segfault in driver" in row["output_tail"]


def test_dolphin_without_a_board_says_what_is_missing_in_one_line(tmp_path, monkeypatch, capsys):
    from oplat.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no synap, no adb
    code = main(["measure", "--device", "dolphin", "--opset", "quick", "--out", str(tmp_path / "d.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "synap not on PATH" in err and "adb not on PATH" in err
    assert not (tmp_path / "d.jsonl").exists()


def test_openvino_benchmark_app_device_agrees_with_in_process_openvino(tmp_path):
    """The same conv through benchmark_app (toolchain path) and in-process OpenVINO."""
    pytest.importorskip("openvino")
    from oplat.devices import get_device
    from oplat.measure import measure_specs
    from oplat.spec import OpSpec
    from oplat.table import read_table
    from oplat.timing import TimingPolicy

    spec = OpSpec("conv", 32, 128, 128, c_out=32, kernel=3)
    tries = []
    # Two runs timed one after the other: a load spell of the shared host can fall on one
    # of them (seen: 3.45 vs 9.5 ms); a systematic difference shows on every try.
    for attempt in range(3):
        medians = {}
        for name in ("openvino-benchmark-app", "openvino"):
            out = tmp_path / f"{name}-{attempt}.jsonl"
            measure_specs([spec], get_device(name), opset="t", out=out, policy=TimingPolicy.quick(), progress=False)
            row = [r.to_json() for r in read_table(out).rows][0]
            assert row["status"] == "ok", row.get("message")
            medians[name] = row["median_ms"]
        tries.append(medians)
        if 0.5 < medians["openvino-benchmark-app"] / medians["openvino"] < 2.0:
            break
    ratio = medians["openvino-benchmark-app"] / medians["openvino"]
    assert 0.5 < ratio < 2.0, tries  # same runtime, same settings: far closer in practice (see benchmarks)


def test_device_file_session_applies_the_shared_rounds_rule(tmp_path):
    """ToolchainDeviceSession.time() runs the policy's rounds through oplat.timing (one tool
    invocation a round): a slow first round gets an extra round and is the one set aside."""
    from oplat.backends import SelfTimedSession, toolchain
    from oplat.build import model_from_op
    from oplat.spec import OpSpec
    from oplat.timing import TimingPolicy

    counter = tmp_path / "calls"
    # Invocation 0 calibrates, 1-3 are the rounds (2 is a slow spell), 4 is the extra round.
    code = (
        "import pathlib, sys\n"
        f"c = pathlib.Path({str(counter)!r}); n = int(c.read_text()) if c.exists() else 0; c.write_text(str(n + 1))\n"
        "runs = int(sys.argv[2]); t = 2.0 if n == 2 else 1.0\n"
        "for i in range(runs): print('Predict #%d: %.2f ms' % (i, t))\n"  # no braces: they are placeholders
    )
    device = tmp_path / "spell.toml"
    device.write_text(_local_device(tmp_path, code))
    (tmp_path / "work").mkdir()
    policy = TimingPolicy(warmup_s=0, warmup_runs=0, rounds=3, round_s=0.001, min_runs=2, max_runs=2, max_extra_rounds=2)
    with toolchain.open(model_from_op(OpSpec("add", 8, 16, 16)), None, {"device_file": str(device), "threads": 1}) as session:
        assert isinstance(session, SelfTimedSession)
        timing = session.time(policy)
    assert counter.read_text() == "5"
    assert (timing.inner, timing.runs_per_round) == (1, 2)
    assert timing.extra_rounds == 1 and timing.discarded_rounds_ms == [[2.0, 2.0]]
    assert timing.samples_ms == [1.0] * 6 and timing.spread_pct == 0.0
