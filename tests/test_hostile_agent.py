"""``oplat agent`` against hostile or careless clients: what a probe found, kept fixed.

Agents run in process (:func:`oplat.agent.serve` in a thread) on 127.0.0.1, except where
the command line itself is under test. Every loop is bounded; no test sleeps longer than
it needs.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import queue
import re
import select
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from oplat.backends import remote
from oplat.build import model_from_op
from oplat.cli import main
from oplat.errors import OplatError
from oplat.spec import OpSpec
from oplat.timing import TimingPolicy

from conftest import REPO, inprocess_agent

TOKEN = "hostile-test-token-0123456789"
QUICK = TimingPolicy.quick()


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _agent(**config):
    """An agent serving in this process; yields the bound server."""
    with inprocess_agent(TOKEN, **config) as server:
        yield server


def _port(server) -> int:
    return server.server_address[1]


def _http(port: int, method: str, path: str, body: bytes | None = None, *, token: str = TOKEN, timeout_s: float = 30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.headers, (json.loads(data) if data else None)
    finally:
        conn.close()


def _body(model, policy: TimingPolicy = QUICK, **fields) -> bytes:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    payload = {"model_b64": base64.b64encode(data).decode(), "policy": asdict(policy), "profile_runs": 0, **fields}
    return json.dumps(payload).encode()


def _graph_model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _value(name: str, shape) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _one_line_error(reply: dict) -> str:
    message = reply["error"]
    assert isinstance(message, str) and message and "\n" not in message
    return message


class _CountingBackend:
    """The device's real backend, counting how often it opens and runs a model (every
    call goes through to it: nothing is faked)."""

    def __init__(self, module):
        self._module = module
        self.opens = 0
        self.runs = 0

    def __getattr__(self, name):
        return getattr(self._module, name)

    def open(self, model, feeds, options):
        self.opens += 1
        return _CountingSession(self._module.open(model, feeds, options), self)


class _CountingSession:
    def __init__(self, inner, counter: _CountingBackend):
        self._inner, self._counter = inner, counter

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)

    def run(self) -> None:
        self._counter.runs += 1
        self._inner.run()

    def profile(self, runs: int):
        return self._inner.profile(runs)


# ----------------------------------------------------------------------------- 1: memory, nodes, inputs
def test_model_over_memory_limit_is_refused_before_loading():
    # 1×4×2048×2048 float in and out: 128 MiB of tensors from a ~200-byte request.
    relu = model_from_op(OpSpec("relu", 4, 2048, 2048))
    assert len(relu.SerializeToString()) < 1000
    with _agent(max_mem_bytes=64 << 20) as server:
        counter = server.module = _CountingBackend(server.module)
        status, _, reply = _http(_port(server), "POST", "/v1/measure", _body(relu))
        assert status == 400 and reply["kind"] == "over_limit"
        message = _one_line_error(reply)
        assert "128.0 MiB" in message and "64.0 MiB" in message
        assert counter.opens == 0  # refused before any feed was made or the runtime loaded it
        status, _, info = _http(_port(server), "GET", "/v1/info")
        assert info["limits"]["max_mem_bytes"] == 64 << 20 and not info["busy"]
        # A model under the limit still measures.
        small = model_from_op(OpSpec("relu", 4, 16, 16))
        status, _, reply = _http(_port(server), "POST", "/v1/measure", _body(small))
        assert status == 200 and reply["timing"]["rounds_ms"]


def test_the_probes_relu_is_refused_by_the_default_limits():
    """The probe's own request (Relu 1×4×8192×8192, ~200 bytes) took 3.27 GB; with the
    agent's default limits it is refused before anything is allocated."""
    relu = model_from_op(OpSpec("relu", 4, 8192, 8192))
    with _agent() as server:
        counter = server.module = _CountingBackend(server.module)
        status, _, reply = _http(_port(server), "POST", "/v1/measure", _body(relu))
        assert status == 400 and reply["kind"] == "over_limit" and "2.0 GiB" in _one_line_error(reply)
        assert counter.opens == 0
        assert server.config.max_mem_bytes <= 1 << 30


def test_too_many_nodes_or_inputs_are_refused():
    chain = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(20)]
    many_nodes = _graph_model(chain, [_value("t0", [1, 4])], [_value("t20", [1, 4])])
    names = [f"x{i}" for i in range(6)]
    many_inputs = _graph_model(
        [helper.make_node("Sum", names, ["y"])], [_value(n, [1, 4]) for n in names], [_value("y", [1, 4])]
    )
    with _agent(max_nodes=16, max_inputs=4) as server:
        counter = server.module = _CountingBackend(server.module)
        status, _, reply = _http(_port(server), "POST", "/v1/measure", _body(many_nodes))
        assert status == 400 and reply["kind"] == "over_limit" and "20 nodes" in _one_line_error(reply)
        status, _, reply = _http(_port(server), "POST", "/v1/measure", _body(many_inputs))
        assert status == 400 and reply["kind"] == "over_limit" and "6 inputs" in _one_line_error(reply)
        assert counter.opens == 0


def test_cli_max_mem_is_a_size(monkeypatch, capsys):
    monkeypatch.setenv("OPLAT_AGENT_TOKEN", TOKEN)
    assert main(["agent", "--port", "0", "--max-mem", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "4GiB" in err


# ----------------------------------------------------------------------------- 2: time bounded before running
def test_time_floor_refuses_before_any_run():
    # 2.4 GMAC per run; 100 rounds of 100 runs cannot fit 2 s on any CPU.
    conv = model_from_op(OpSpec("conv", 64, 256, 256, c_out=64, kernel=3))
    policy = TimingPolicy(rounds=100, min_runs=100, max_runs=100, max_extra_rounds=0)
    with _agent(max_seconds=2.0) as server:
        counter = server.module = _CountingBackend(server.module)
        start = time.monotonic()
        status, _, reply = _http(_port(server), "POST", "/v1/measure", _body(conv, policy))
        assert time.monotonic() - start < 10
        assert status == 400 and reply["kind"] == "over_limit"
        message = _one_line_error(reply)
        assert "before running" in message and "--max-seconds" in message and "MACs" in message
        assert counter.opens == 0 and counter.runs == 0


def test_slow_first_run_is_refused_without_a_second_run():
    # The floor from shapes (128 MiB of tensors at the assumed bandwidth, 4 runs) is a few
    # ms and passes a 10 ms limit, but making the feeds and the runtime's load plus first
    # run take longer than that anywhere: refused right after the open, no probe run.
    relu = model_from_op(OpSpec("relu", 4, 2048, 2048))
    minimal = TimingPolicy(
        warmup_s=0, warmup_runs=0, rounds=1, round_s=0, min_runs=1, max_runs=1, min_sample_s=0, max_extra_rounds=0
    )
    with _agent(max_seconds=0.01) as server:
        counter = server.module = _CountingBackend(server.module)
        status, _, reply = _http(_port(server), "POST", "/v1/measure", _body(relu, minimal))
        assert status == 400 and reply["kind"] == "over_limit"
        assert "load and first run" in _one_line_error(reply)
        assert counter.opens == 1 and counter.runs == 0


def test_probe_run_is_single_and_checked():
    # 2000 runs of a 16 MiB relu: the floor (~0.7 s) passes 3 s; one probe run shows the
    # real runs are several times slower, and nothing more runs.
    relu = model_from_op(OpSpec("relu", 1, 2048, 2048))
    policy = TimingPolicy(warmup_s=0, warmup_runs=0, rounds=1, round_s=0, min_runs=2000, max_runs=2000,
                          min_sample_s=0, max_extra_rounds=0)
    with _agent(max_seconds=3.0) as server:
        counter = server.module = _CountingBackend(server.module)
        status, _, reply = _http(_port(server), "POST", "/v1/measure", _body(relu, policy))
        assert status == 400 and reply["kind"] == "over_limit"
        assert "probe run" in _one_line_error(reply)
        assert counter.opens == 1 and counter.runs == 1


# ----------------------------------------------------------------------------- 3: whole-request deadline
def _trickle(port: int, head: bytes, drip: bytes, *, every_s: float = 0.2, give_up_s: float = 8.0):
    """Send ``head``, then ``drip`` one byte every ``every_s``; return (seconds until the
    agent closed the connection or None if it never did within ``give_up_s``, reply bytes)."""
    start = time.monotonic()
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            if head:
                s.sendall(head)
            for byte in drip:
                if time.monotonic() - start > give_up_s:
                    return None, reply
                s.sendall(bytes([byte]))
                readable, _, _ = select.select([s], [], [], every_s)
                if readable:
                    chunk = s.recv(65536)
                    if not chunk:
                        return time.monotonic() - start, reply
                    reply += chunk
                    s.settimeout(max(0.1, give_up_s - (time.monotonic() - start)))
                    while chunk := s.recv(65536):  # the rest of the reply, then the close
                        reply += chunk
                    return time.monotonic() - start, reply
        except OSError:  # reset or broken pipe: the agent dropped us
            return time.monotonic() - start, reply
    return None, reply


def test_trickled_headers_hit_the_whole_request_deadline():
    drip = b"GET /v1/info HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
    with _agent(read_timeout_s=1.0) as server:
        port = _port(server)
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(lambda _: _trickle(port, b"", drip), range(12)))
        for closed_s, reply in results:
            assert closed_s is not None and closed_s < 5, "a trickling client outlived the 1 s deadline"
            assert reply == b"" or reply.startswith(b"HTTP/1.1 408")
        assert any(b'"kind": "timeout"' in reply for _, reply in results)
        assert _http(port, "GET", "/v1/info")[0] == 200  # and the agent still serves


def test_trickled_body_hits_the_whole_request_deadline():
    head = (
        f"POST /v1/measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with _agent(read_timeout_s=1.0) as server:
        closed_s, reply = _trickle(_port(server), head, b"{" + b" " * 998 + b"}")
        assert closed_s is not None and closed_s < 5, "a 5 B/s body was never cut off"
        assert reply.startswith(b"HTTP/1.1 400") and b"stalled" in reply
        assert _http(_port(server), "GET", "/v1/info")[0] == 200


# ----------------------------------------------------------------------------- 4: bursts get answers
def test_burst_during_measurement_gets_409_not_resets():
    conv = model_from_op(OpSpec("conv", 8, 16, 16, c_out=8, kernel=3))
    slow = replace(QUICK, rounds=3, round_s=2.0, max_runs=10_000, max_extra_rounds=0)  # ~6 s: outlasts a burst on a loaded host
    small = _body(model_from_op(OpSpec("add", 8, 16, 16)))
    with _agent() as server:
        port = _port(server)
        first: queue.Queue = queue.Queue()
        runner = threading.Thread(target=lambda: first.put(_http(port, "POST", "/v1/measure", _body(conv, slow))))
        runner.start()
        try:
            deadline = time.monotonic() + 20
            while not _http(port, "GET", "/v1/info")[2]["busy"]:
                assert time.monotonic() < deadline, "the agent never reported busy"
                time.sleep(0.02)
            gate = threading.Barrier(40)

            def post(_):
                gate.wait(timeout=20)
                try:
                    status, headers, reply = _http(port, "POST", "/v1/measure", small)
                except OSError as exc:
                    return repr(exc)
                return status, headers.get("Retry-After"), (reply or {}).get("kind")

            with ThreadPoolExecutor(max_workers=40) as pool:
                answers = list(pool.map(post, range(40)))
            assert server.measure_lock.locked(), "the burst outlived the measurement; make it longer"
        finally:
            runner.join(timeout=60)
        failures = [a for a in answers if not isinstance(a, tuple)]
        assert not failures, f"{len(failures)} of 40 got no HTTP answer: {failures[:3]}"
        assert all(a == (409, "1", "busy") for a in answers), answers
        assert first.get_nowait()[0] == 200


def test_over_max_connections_is_503():
    with _agent(max_connections=2, read_timeout_s=3.0) as server:
        port = _port(server)
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        try:
            status, headers, reply = _http(port, "GET", "/v1/info", timeout_s=10)
            assert status == 503 and reply["kind"] == "overloaded" and headers["Retry-After"]
        finally:
            for s in idle:
                s.close()
        deadline = time.monotonic() + 5  # the idle connections' threads end once closed
        while (status := _http(port, "GET", "/v1/info")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == 200


# ----------------------------------------------------------------------------- 5: external data, paths
def _external_model(location: str, *, in_constant: bool = False):
    w = numpy_helper.from_array(np.ones((1, 4), np.float32), "w")
    set_external_data(w, location=location, offset=0, length=16)
    w.ClearField("raw_data")
    x, y = _value("x", [1, 4]), _value("y", [1, 4])
    if in_constant:
        nodes = [helper.make_node("Constant", [], ["w"], value=w), helper.make_node("Add", ["x", "w"], ["y"])]
        return _graph_model(nodes, [x], [y])
    return _graph_model([helper.make_node("Add", ["x", "w"], ["y"])], [x], [y], [w])


def test_external_data_is_refused_without_echoing_paths(tmp_path, monkeypatch):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    monkeypatch.chdir(tmp_path)  # the agent's working directory holds the file the model names
    cases = [
        _external_model("secret.bin"),
        _external_model(str(secret)),
        _external_model("../" + tmp_path.name + "/secret.bin"),
        _external_model("secret.bin", in_constant=True),
    ]
    with _agent() as server:
        counter = server.module = _CountingBackend(server.module)
        for model in cases:
            status, _, reply = _http(_port(server), "POST", "/v1/measure", _body(model))
            assert status == 400 and reply["kind"] == "bad_request"
            message = _one_line_error(reply)
            assert "external" in message
            assert "secret" not in message and str(tmp_path) not in message
        assert counter.opens == 0


def test_model_errors_carry_no_absolute_paths():
    from oplat.agent import _redact

    # ORT names the file it looked for, under the agent's working directory.
    leak = f'External data path does not exist: "{os.getcwd()}/secret.bin" (tensorprotoutils.cc:619)'
    assert os.getcwd() not in _redact(leak) and "/secret.bin" not in _redact(leak)
    assert _redact("ratio 1/2, see a/b") == "ratio 1/2, see a/b"
    # A model ORT rejects, naming absolute source paths in its message: 422, no path.
    import onnxruntime

    w = numpy_helper.from_array(np.ones((1, 4), np.float32), "w")
    w.raw_data = w.raw_data[:8]  # 8 bytes for a 16-byte tensor
    bad = _graph_model([helper.make_node("Add", ["x", "w"], ["y"])], [_value("x", [1, 4])], [_value("y", [1, 4])], [w])
    absolute = re.compile(r"(^|[\s'\"(=:,\[])/\w")
    with pytest.raises(Exception) as raw:  # what ORT itself says
        onnxruntime.InferenceSession(bad.SerializeToString(), providers=["CPUExecutionProvider"])
    with _agent() as server:
        status, _, reply = _http(_port(server), "POST", "/v1/measure", _body(bad))
    assert status == 422 and reply["kind"] == "model_error"
    message = _one_line_error(reply)
    assert not absolute.search(message) and os.getcwd() not in message, message
    if absolute.search(str(raw.value).splitlines()[0]):
        assert "<path>" in message  # redacted, not dropped


# ----------------------------------------------------------------------------- 6: the token off argv
def test_token_on_the_command_line_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("OPLAT_AGENT_TOKEN", raising=False)
    # (--port 70000 too: were --token taken, the agent would fail to bind, not serve.)
    assert main(["agent", "--token", "s3cret-on-argv", "--port", "70000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--token-file" in err and "OPLAT_AGENT_TOKEN" in err and "s3cret-on-argv" not in err


def test_bad_token_files_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPLAT_AGENT_TOKEN", raising=False)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    two = tmp_path / "two"
    two.write_text("one two\n")
    for path in (tmp_path / "missing", empty, two):
        assert main(["agent", "--port", "0", "--token-file", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "token file" in err
    monkeypatch.setenv("OPLAT_AGENT_TOKEN_FILE", str(empty))  # the agent reads this one too
    assert main(["agent", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "OPLAT_AGENT_TOKEN_FILE" in err


def test_token_file_agent_and_host_token_file(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPLAT_AGENT_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "oplat", "agent", "--port", "0", "--quiet", "--token-file", str(token_file),
         "--max-mem", "1GiB"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            raise AssertionError("the agent printed nothing") from None
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        port = int(match.group(1))
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert TOKEN.encode() not in f.read()  # `ps` cannot show it
        status, _, info = _http(port, "GET", "/v1/info")
        assert status == 200 and info["limits"]["max_mem_bytes"] == 1 << 30
        assert _http(port, "GET", "/v1/info", token="wrong")[0] == 401
        # The host reads the token from a file too.
        monkeypatch.delenv("OPLAT_AGENT_TOKEN", raising=False)
        monkeypatch.setenv("OPLAT_AGENT_TOKEN_FILE", str(token_file))
        assert remote.runtime({"url": f"http://127.0.0.1:{port}"})[0] == "onnxruntime"
        monkeypatch.setenv("OPLAT_AGENT_TOKEN_FILE", str(tmp_path / "nope"))
        with pytest.raises(OplatError, match="token file"):
            remote.runtime({"url": f"http://127.0.0.1:{port}"})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- 7: ports and binding
def test_bad_port_and_busy_address_are_one_line(monkeypatch, capsys):
    monkeypatch.setenv("OPLAT_AGENT_TOKEN", TOKEN)
    for port in ("70000", "-1"):
        assert main(["agent", "--port", port]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "port must be 0–65535" in err and "internal" not in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["agent", "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"cannot listen on 127.0.0.1:{port}" in err
    assert main(["agent", "--host", "192.0.2.1", "--port", "0"]) == 2  # TEST-NET: not this machine
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot listen on 192.0.2.1" in err
