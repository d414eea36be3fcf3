"""``oplat agent`` and the remote backend against a real agent process on loopback."""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace

import pytest

from oplat.agent import model_format, run_agent
from oplat.backends import Unsupported, remote
from oplat.build import model_from_op
from oplat.errors import OplatError
from oplat.spec import OpSpec
from oplat.timing import Timing, TimingPolicy

from conftest import REPO

TOKEN = "test-token-0123456789"
LIMIT_BYTES = 1 << 20  # the test agent's --max-request-mib 1
MAX_SECONDS = 20.0
QUICK = TimingPolicy.quick()


def _conv_bytes() -> bytes:
    return model_from_op(OpSpec("conv", 8, 16, 16, c_out=8, kernel=3)).SerializeToString()


class Agent:
    def __init__(self, proc: subprocess.Popen, port: int, stderr_path):
        self.proc, self.port, self.stderr_path = proc, port, stderr_path
        self.url = f"http://127.0.0.1:{port}"

    def options(self, **extra) -> dict:
        return {"url": self.url, "token": TOKEN, "timeout_s": 30, **extra}

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _start_agent(tmp_path, **limits) -> Agent:
    kwargs = ", ".join(f"{k}={v!r}" for k, v in limits.items())
    code = (
        "import sys\nfrom oplat.agent import run_agent\n"
        f"sys.exit(run_agent('127.0.0.1', 0, None, 'cpu', {kwargs}))"
    )
    stderr_path = tmp_path / "agent.stderr"
    # The token travels in the environment, never on the command line (`ps` shows it).
    env = {**{k: v for k, v in os.environ.items() if k != "OPLAT_AGENT_TOKEN_FILE"}, "OPLAT_AGENT_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=stderr_path.open("wb"),
        text=True,
        cwd=REPO,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=30)
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"agent printed nothing: {stderr_path.read_text()}") from None
    match = re.fullmatch(r"oplat agent listening on http://127\.0\.0\.1:(\d+) \(device cpu, .*\)\n", line)
    if not match:
        proc.kill()
        raise AssertionError(f"unexpected first line {line!r}; stderr: {stderr_path.read_text()}")
    return Agent(proc, int(match.group(1)), stderr_path)


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    a = _start_agent(
        tmp_path_factory.mktemp("agent"),
        max_request_bytes=LIMIT_BYTES,
        max_seconds=MAX_SECONDS,
        read_timeout_s=1.0,
    )
    yield a
    _stop(a.proc)


# ----------------------------------------------------------------------------- raw HTTP
def _http(agent: Agent, method: str, path: str, body: bytes | None = None, *, token: str | None = TOKEN, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.headers, (json.loads(data) if data else None)
    finally:
        conn.close()


def _measure_body(model: bytes = b"", **fields) -> bytes:
    payload = {"model_b64": base64.b64encode(model or _conv_bytes()).decode(), "policy": asdict(QUICK), **fields}
    return json.dumps(payload).encode()


def _raw_socket_reply(port: int, data: bytes, *, shutdown_write: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def _headers(length: int, path: str = "/v1/measure") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _assert_measures(agent: Agent, policy: TimingPolicy = QUICK) -> Timing:
    with remote.open(model_from_op(OpSpec("conv", 8, 16, 16, c_out=8, kernel=3)), {}, agent.options()) as session:
        timing = session.time(policy)
        profile = session.profile(10)
    assert isinstance(timing, Timing)
    assert len(timing.rounds_ms) == policy.rounds
    assert all(len(r) == timing.runs_per_round for r in timing.rounds_ms)
    assert len(timing.discarded_rounds_ms) == timing.extra_rounds <= policy.max_extra_rounds
    assert all(s > 0 for s in timing.samples_ms) and timing.inner >= 1
    assert timing.stats()["median_ms"] > 0
    assert profile is not None and profile.compute_ms > 0 and profile.runs >= 5
    return timing


# ----------------------------------------------------------------------------- tests
def test_measure_through_remote_backend(agent):
    _assert_measures(agent)


def test_session_is_self_timed_and_profile_optional(agent):
    policy = replace(QUICK, rounds=2)
    with remote.open(model_from_op(OpSpec("add", 8, 16, 16)), None, agent.options(profile_runs=0)) as session:
        with pytest.raises(NotImplementedError, match="timed on the agent"):
            session.run()
        timing = session.time(policy)
        assert session.profile(10) is None
        assert session.fingerprint["runtime"] == "onnxruntime"
    assert len(timing.rounds_ms) == 2 and all(s > 0 for s in timing.samples_ms)


def test_info_and_fingerprint(agent):
    status, _, info = _http(agent, "GET", "/v1/info")
    assert status == 200
    assert info["device"] == "cpu" and info["runtime"] == "onnxruntime" and info["protocol"] == 1
    assert info["oplat_version"] and info["limits"]["max_request_bytes"] == LIMIT_BYTES
    fp = info["fingerprint"]
    assert fp["name"] == "cpu" and fp["threads"] == 1 and fp["cpu"] and fp["runtime_version"]
    assert remote.remote_fingerprint(agent.options()) == fp
    assert remote.runtime(agent.options()) == ("onnxruntime", info["runtime_version"])


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_bad_or_missing_token_is_401(agent, token):
    for method, path, body in (("GET", "/v1/info", None), ("POST", "/v1/measure", _measure_body())):
        status, headers, reply = _http(agent, method, path, body, token=token)
        assert status == 401 and reply["kind"] == "unauthorized"
        assert headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_token_through_client_is_one_line(agent):
    with pytest.raises(OplatError, match="refused the token") as info:
        with remote.open(model_from_op(OpSpec("add", 8, 16, 16)), None, agent.options(token="nope")):
            pass
    assert "\n" not in str(info.value)


def test_oversized_request_is_413(agent):
    big = b"x" * (2 * LIMIT_BYTES)
    # Announced size alone is refused, before any body byte is sent (nothing is read).
    raw = _raw_socket_reply(agent.port, _headers(len(big)), shutdown_write=True)
    assert _status(raw) == 413 and b"too_large" in raw
    # A client that asks first (Expect: 100-continue) is told no before it sends a byte.
    expect = _headers(len(big)).replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
    raw = _raw_socket_reply(agent.port, expect, shutdown_write=True)
    assert _status(raw) == 413
    # A client that sends the whole 2 MiB anyway still reads the 413.
    status, _, reply = _http(agent, "POST", "/v1/measure", big, headers={"Content-Type": "application/json"})
    assert status == 413 and "limit" in reply["error"]


def test_truncated_and_stalled_bodies(agent):
    # Content-Length 1000, 10 bytes, then close: the agent answers 400 (or finds the peer gone).
    raw = _raw_socket_reply(agent.port, _headers(1000) + b"0123456789", shutdown_write=True)
    assert _status(raw) == 400 and b"ended after 10 of 1000" in raw
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(_headers(1000) + b"0123456789")
    # Stalled: the connection stays open; the agent's 1 s read timeout answers 400.
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(_headers(1000) + b"0123456789")
        raw = b""
        while chunk := s.recv(65536):  # the agent closes after its reply
            raw += chunk
    assert _status(raw) == 400 and b"stalled" in raw and time.monotonic() - start < 5
    status, _, _ = _http(agent, "GET", "/v1/info")
    assert status == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"policy": {}}', "missing field 'model_b64'"),
        (b'{"model_b64": "!!!"}', "base64"),
        (json.dumps({"model_b64": "", "extra": 1}).encode(), "unknown field 'extra'"),
        (_measure_body(policy={"rounds": "three"}), "must be an integer"),
        (_measure_body(policy={"bogus": 1}), "unknown policy field 'bogus'"),
        (b'{"model_b64": "AAAA", "policy": {"round_s": NaN}}', "malformed JSON"),
        (_measure_body(profile_runs=-1), "profile_runs"),
    ],
)
def test_malformed_requests_are_400(agent, body, needle):
    status, _, reply = _http(agent, "POST", "/v1/measure", body, headers={"Content-Type": "application/json"})
    assert status == 400 and reply["kind"] == "bad_request"
    assert needle in reply["error"]


def test_unknown_model_format_is_400(agent):
    junk = bytes(range(7, 256)) * 4  # does not start like ONNX nor carry TFL3
    status, _, reply = _http(agent, "POST", "/v1/measure", _measure_body(junk))
    assert status == 400 and "unknown model format" in reply["error"]
    # TFLite is recognised by its identifier, and refused by an ONNX-only device.
    tflite = b"\x1c\x00\x00\x00TFL3" + bytes(64)
    assert model_format(tflite) == "tflite"
    status, _, reply = _http(agent, "POST", "/v1/measure", _measure_body(tflite))
    assert status == 400 and "TFLite" in reply["error"] and "ONNX" in reply["error"]
    # Starts like ONNX but is not a model.
    status, _, reply = _http(agent, "POST", "/v1/measure", _measure_body(b"\x08\x09" + bytes(32)))
    assert status == 400


def test_limits_are_refused_not_clamped(agent):
    too_many = _measure_body(policy={**asdict(QUICK), "max_runs": 100_000})
    status, _, reply = _http(agent, "POST", "/v1/measure", too_many)
    assert status == 400 and reply["kind"] == "over_limit" and "--max-runs" in reply["error"]
    too_long = _measure_body(policy={**asdict(QUICK), "warmup_s": MAX_SECONDS + 1})
    status, _, reply = _http(agent, "POST", "/v1/measure", too_long)
    assert status == 400 and reply["kind"] == "over_limit" and "--max-seconds" in reply["error"]


def test_routes_and_methods(agent):
    assert _http(agent, "GET", "/v1/nope")[0] == 404
    status, headers, _ = _http(agent, "GET", "/v1/measure")
    assert status == 405 and headers["Allow"] == "POST"


def test_one_measurement_at_a_time(agent):
    slow = replace(QUICK, rounds=3, round_s=0.3, max_extra_rounds=0)
    results: list = []
    first = threading.Thread(
        target=lambda: results.append(_http(agent, "POST", "/v1/measure", _measure_body(policy=asdict(slow))))
    )
    first.start()
    try:
        deadline = time.monotonic() + 10
        while not _http(agent, "GET", "/v1/info")[2]["busy"]:
            assert time.monotonic() < deadline, "the agent never reported busy"
            time.sleep(0.02)
        status, headers, reply = _http(agent, "POST", "/v1/measure", _measure_body())
        assert status == 409 and reply["kind"] == "busy" and headers["Retry-After"]
        # The client waits while busy, then measures.
        with remote.open(model_from_op(OpSpec("add", 8, 16, 16)), None, agent.options(profile_runs=0)) as s:
            assert s.time(QUICK).samples_ms
    finally:
        first.join(timeout=30)
    assert results and results[0][0] == 200


def test_still_measures_after_bad_requests(agent):
    _http(agent, "POST", "/v1/measure", b"{broken")
    _http(agent, "GET", "/v1/info", token="wrong")
    _raw_socket_reply(agent.port, _headers(1000) + b"short", shutdown_write=True)
    _raw_socket_reply(agent.port, _headers(10 * LIMIT_BYTES), shutdown_write=True)
    _raw_socket_reply(agent.port, b"GARBAGE\r\n\r\n", shutdown_write=True)
    _assert_measures(agent)
    assert agent.proc.poll() is None


def test_unreachable_agent_is_one_line_with_bounded_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the with ends: nothing listens there
    options = {"url": f"http://127.0.0.1:{port}", "token": TOKEN, "retries": 1, "backoff_s": 0.05}
    start = time.monotonic()
    with pytest.raises(OplatError) as info:
        with remote.open(model_from_op(OpSpec("add", 8, 16, 16)), None, options):
            pass
    message = str(info.value)
    assert time.monotonic() - start < 3
    assert "\n" not in message and "unreachable" in message and "(2 attempts)" in message
    assert "oplat agent --token-file" in message


def test_client_needs_url_and_token(monkeypatch):
    monkeypatch.delenv("OPLAT_AGENT_TOKEN", raising=False)
    monkeypatch.delenv("OPLAT_AGENT_TOKEN_FILE", raising=False)
    monkeypatch.delenv("OPLAT_AGENT_URL", raising=False)
    with pytest.raises(OplatError, match="url"):
        remote.open(b"", None, {"token": "t"})
    with pytest.raises(OplatError, match="token"):
        remote.open(b"", None, {"url": "http://127.0.0.1:1"})
    assert remote.available() is None


def test_agent_refuses_to_start_without_token(monkeypatch):
    monkeypatch.delenv("OPLAT_AGENT_TOKEN", raising=False)
    with pytest.raises(OplatError, match="needs a token"):
        run_agent("127.0.0.1", 0, None, "cpu")


def test_unsupported_op_maps_to_unsupported(agent):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="oplat.test")], "g", [x], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("oplat.test", 1)], ir_version=9
    )
    with remote.open(model, None, agent.options()) as session:
        with pytest.raises((Unsupported, remote.AgentError), match="NoSuchOp"):
            session.time(QUICK)
    # A model the agent cannot make feeds for is the model's fault too (422), not a crash.
    xi = helper.make_tensor_value_info("x", TensorProto.INT64, [1, 4])
    yi = helper.make_tensor_value_info("y", TensorProto.INT64, [1, 4])
    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "g", [xi], [yi])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    status, _, reply = _http(agent, "POST", "/v1/measure", _measure_body(model.SerializeToString()))
    assert status == 422 and reply["kind"] == "model_error" and "INT64" in reply["error"]


def test_sigterm_stops_cleanly(tmp_path):
    a = _start_agent(tmp_path, quiet=True)
    assert _http(a, "GET", "/v1/info")[0] == 200
    assert _stop(a.proc) == 0


def test_cli_agent_and_measure_remote_end_to_end(tmp_path, monkeypatch, capsys):
    """`oplat agent` (real process, CLI) serves `oplat measure --device remote:HOST:PORT`."""
    from oplat.cli import main
    from oplat.table import read_table

    env = {**os.environ, "OPLAT_AGENT_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "oplat", "agent", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line + proc.stderr.read()
        port = match.group(1)
        monkeypatch.setenv("OPLAT_AGENT_TOKEN", TOKEN)
        opset = tmp_path / "tiny.toml"
        opset.write_text('name = "tiny"\nhw = [[16, 16]]\n[[entry]]\nop = "conv+relu"\nkernel = 3\nchannels = [8, 16]\n')
        out = tmp_path / "remote.jsonl"
        code = main(["measure", "--device", f"remote:127.0.0.1:{port}", "--opset", str(opset), "--out", str(out),
                     "--quick-policy", "--no-progress"])
        assert code == 0, capsys.readouterr().err
        rows = [r.to_json() for r in read_table(out).rows]
        assert len(rows) == 2 and all(r["status"] == "ok" and r["median_ms"] > 0 for r in rows)
        assert rows[0]["device"]["name"] == f"remote:127.0.0.1:{port}" and rows[0]["device"]["agent_device"] == "cpu"
        assert rows[0]["device"]["runtime"] == "onnxruntime"
        monkeypatch.setenv("OPLAT_AGENT_TOKEN", "wrong")
        code = main(["measure", "--device", f"remote:127.0.0.1:{port}", "--opset", str(opset),
                     "--out", str(tmp_path / "x.jsonl"), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "token" in err.lower()
    finally:
        _stop(proc)


# ----------------------------------------------------------------------------- the shared wire
def test_reply_on_the_wire_keeps_its_fields(agent):
    """The measure reply's fields and order, as the protocol (oplat.agent's doc) says."""
    status, _, reply = _http(agent, "POST", "/v1/measure", _measure_body(profile_runs=3))
    assert status == 200
    assert list(reply) == ["format", "fingerprint", "policy", "timing", "profile", "elapsed_s"]
    assert reply["format"] == "onnx" and reply["policy"] == asdict(QUICK)
    assert list(reply["timing"]) == ["rounds_ms", "discarded_rounds_ms", "inner", "runs_per_round", "extra_rounds"]
    assert list(reply["profile"]) == ["compute_ms", "layout_ms", "nodes", "runs"] and reply["profile"]["runs"] == 3


def test_agent_and_client_share_one_wire_module():
    from oplat import agent as agent_mod
    from oplat import wire

    assert (wire.PROTOCOL_VERSION, wire.DEFAULT_PORT) == (1, 8765)
    assert (wire.TOKEN_ENV, wire.TOKEN_FILE_ENV) == ("OPLAT_AGENT_TOKEN", "OPLAT_AGENT_TOKEN_FILE")
    for name in ("PROTOCOL_VERSION", "DEFAULT_PORT", "TOKEN_ENV", "TOKEN_FILE_ENV", "model_format", "read_token_file"):
        assert getattr(agent_mod, name) is getattr(wire, name)  # re-exported, not copied
    assert remote.TOKEN_ENV is wire.TOKEN_ENV and remote.TOKEN_FILE_ENV is wire.TOKEN_FILE_ENV
    assert wire.measure_request(b"abc", QUICK, "auto") == {"model_b64": "YWJj", "policy": asdict(QUICK), "profile_runs": "auto"}
    assert wire.ERROR_STATUS[wire.UNSUPPORTED] == wire.ERROR_STATUS[wire.MODEL_ERROR] == 422
    assert wire.ERROR_STATUS[wire.BUSY] == 409 and wire.ERROR_STATUS[wire.OVERLOADED] == 503
    timing = Timing(rounds_ms=[[1.0, 2.0], [1.5]], discarded_rounds_ms=[[9.0]], inner=3, runs_per_round=2, extra_rounds=1)
    reply = {"timing": wire.timing_to_json(timing)}
    assert wire.timing_from_reply(json.loads(json.dumps(reply))) == timing
    with pytest.raises(wire.WireError, match="a malformed timing: KeyError: 'inner'"):
        wire.timing_from_reply({"timing": {"rounds_ms": [[1.0]], "runs_per_round": 1}})
    with pytest.raises(OplatError, match=r"^agent at http://x sent a timing without samples$"):
        remote._timing_from({"timing": {"rounds_ms": [[]], "inner": 1, "runs_per_round": 1}}, "http://x")
    with pytest.raises(OplatError, match=r"^agent at http://x sent a malformed profile: TypeError"):
        remote._profile_from({"profile": {"compute_ms": None, "layout_ms": 0}}, "http://x")
    assert wire.policy_from_json(None) == TimingPolicy() and wire.policy_from_json(asdict(QUICK)) == QUICK
    with pytest.raises(wire.WireError, match="must be an integer"):
        wire.policy_from_json({"rounds": 2.5})
