"""The backend contract (:mod:`oplat.backends.base`), checked on every backend alike.

In the style of Optuna's storage tests: one test class whose tests take a ``backend``
fixture parametrized over every backend oplat has: ``cpu`` (ONNX Runtime), ``openvino``
and ``litert`` (skipped, with the reason, when their extra is missing), ``remote`` (an
in-process ``oplat agent`` on 127.0.0.1 serving the cpu device) and ``toolchain`` (a
device file whose timing tool is a stand-in script printing ``synap_cli`` output, on the
local transport). The built-in ``openvino-benchmark-app`` and ``litert-benchmark`` device
files drive the real tools; they run as ``slow`` cases (``pytest -m slow``).

A backend passes when it declares the contract (``MODEL_FORMATS``, ``available``,
``runtime``, ``fingerprint``, ``open``), opens a one-op model as a context manager giving
exactly one kind of session (plain: ``run()`` timed here; self-timed: ``time(policy)``),
profiles without raising, and ``measure_specs`` on it writes one ok row.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import inprocess_agent
from oplat import wire
from oplat.backends import Backend, KernelProfile, SelfTimedSession, Session
from oplat.build import inputs_for, model_from_op
from oplat.devices import Device, get_device
from oplat.measure import fingerprint_for, measure_specs
from oplat.spec import OpSpec
from oplat.table import read_table
from oplat.timing import Timing, TimingPolicy, time_one

TOKEN = "contract-test-token-0123456789"
QUICK = TimingPolicy.quick()
SPEC = OpSpec("conv", 8, 16, 16, c_out=8, kernel=3)

#: Every backend the contract is checked on (the ``backend`` fixture's parameters).
BACKENDS = [
    "cpu",
    "openvino",
    "litert",
    "remote",
    "toolchain",
    pytest.param("toolchain-openvino-benchmark-app", marks=pytest.mark.slow),
    pytest.param("toolchain-litert-benchmark", marks=pytest.mark.slow),
]

# A stand-in for a board's timing tool: checks the model it is given exists, then prints
# `synap_cli`'s format, one "Predict #i" line per run (0.50–0.52 ms) and the summary.
STANDIN_TOOL = """\
import os, sys
model, runs = sys.argv[1], int(sys.argv[2])
assert os.path.getsize(model) > 0, model
times = [0.5 + 0.01 * (i % 3) for i in range(runs)]
for i, t in enumerate(times):
    print(f"Predict #{i}: {t:.2f} ms")
print("Inference timings (ms):  load: 1.00  init: 0.50  min: 0.50  median: 0.51  max: 0.52  mean: 0.51")
"""


@dataclass
class BackendCase:
    """One backend under test: the device that names it, and its module."""

    name: str
    device: Device

    @property
    def module(self):
        return self.device.module()

    @property
    def options(self) -> dict:
        return self.device.options


@pytest.fixture(scope="module")
def contract_agent():
    """An agent serving the cpu device in this process, on 127.0.0.1; yields its url."""
    with inprocess_agent(TOKEN, device="cpu") as server:
        yield server.url


@pytest.fixture(scope="module")
def standin_device_file(tmp_path_factory) -> Path:
    """A device file whose tool is :data:`STANDIN_TOOL`, run locally."""
    root = tmp_path_factory.mktemp("standin")
    tool = root / "standin_tool.py"
    tool.write_text(STANDIN_TOOL)
    (root / "work").mkdir()
    path = root / "standin.toml"
    path.write_text(textwrap.dedent(f"""\
        description = "a stand-in timing tool (synap_cli output) on this machine"
        input_format = "onnx"
        parser = "synap_cli"
        [transport]
        kind = "local"
        [transport.local]
        base_dir = "{root / 'work'}"
        [run]
        argv = ["{sys.executable}", "{tool}", "{{model}}", "{{runs}}"]
        timeout_s = 60
        warmup = "none"
        """))
    return path


@pytest.fixture(params=BACKENDS)
def backend(request) -> BackendCase:
    name = request.param
    if name == "remote":
        url = request.getfixturevalue("contract_agent")
        device = Device(f"remote:{url.split('//', 1)[1]}", "remote", "in-process agent", {"url": url, "token": TOKEN, "threads": 1, "timeout_s": 60})
    elif name == "toolchain":
        path = request.getfixturevalue("standin_device_file")
        device = Device("standin", "toolchain", "stand-in tool", {"device_file": str(path), "threads": 1})
    elif name.startswith("toolchain-"):
        device = get_device(name[len("toolchain-") :])
    else:
        device = get_device(name)
    case = BackendCase(name, device)
    reason = case.module.available(case.options)
    # The contract for available(): None, or one line saying what is missing.
    assert reason is None or (isinstance(reason, str) and reason.strip() and "\n" not in reason), repr(reason)
    if reason is not None:
        if name in ("cpu", "remote", "toolchain"):
            pytest.fail(f"{name} must be available here: {reason}")
        pytest.skip(f"{name}: {reason}")
    return case


def _model():
    return model_from_op(SPEC)


def _time(session, policy: TimingPolicy = QUICK) -> Timing:
    """The one rule: a SelfTimedSession times itself, anything else is timed here."""
    if isinstance(session, SelfTimedSession):
        return session.time(policy)
    return time_one(session.run, policy)


class TestBackendContract:
    def test_declares_the_contract(self, backend):
        module = backend.module
        assert isinstance(module, Backend)
        formats = module.MODEL_FORMATS
        assert isinstance(formats, tuple) and formats and formats[0] == "onnx"
        assert all(isinstance(f, str) for f in formats) and set(formats) <= set(wire.MODEL_FORMATS)

    def test_available_is_none_once_usable(self, backend):
        assert backend.module.available(backend.options) is None

    def test_runtime_is_name_and_version(self, backend):
        runtime = backend.module.runtime(backend.options)
        assert isinstance(runtime, tuple) and len(runtime) == 2
        assert all(isinstance(part, str) and part for part in runtime)

    def test_fingerprint_hook(self, backend):
        theirs = backend.module.fingerprint(backend.options)
        assert theirs is None or (isinstance(theirs, dict) and theirs.get("runtime"))
        fingerprint = fingerprint_for(backend.device)
        assert fingerprint["name"] == backend.device.name and fingerprint["runtime"]
        if theirs is None:
            assert fingerprint["runtime"] == backend.module.runtime(backend.options)[0]
        else:  # another machine times: its fingerprint is recorded, under this device's name
            assert fingerprint["agent_device"] == theirs["name"] and fingerprint["cpu"] == theirs["cpu"]

    def test_open_gives_one_kind_of_session_as_a_context_manager(self, backend):
        model = _model()
        session = backend.module.open(model, inputs_for(model), backend.options)
        assert isinstance(session, Session) != isinstance(session, SelfTimedSession)
        with session as entered:
            assert entered is session

    def test_session_times_with_the_policy(self, backend):
        model = _model()
        with backend.module.open(model, inputs_for(model), backend.options) as session:
            if isinstance(session, SelfTimedSession):
                timing = session.time(QUICK)
            else:
                session.run()  # a plain session runs on its own, as often as asked
                timing = time_one(session.run, QUICK)
        assert isinstance(timing, Timing)
        assert len(timing.rounds_ms) == QUICK.rounds and all(timing.rounds_ms)
        assert len(timing.discarded_rounds_ms) == timing.extra_rounds <= QUICK.max_extra_rounds
        assert all(s > 0 for s in timing.samples_ms) and timing.inner >= 1 and timing.runs_per_round >= 1
        assert timing.stats()["median_ms"] > 0

    def test_profile_is_a_kernel_profile_or_none(self, backend):
        model = _model()
        with backend.module.open(model, inputs_for(model), backend.options) as session:
            _time(session)
            profile = session.profile(5)
        assert profile is None or isinstance(profile, KernelProfile)
        if profile is not None:
            assert profile.compute_ms >= 0 and profile.layout_ms >= 0 and isinstance(profile.nodes, list)

    def test_measure_specs_writes_one_ok_row(self, backend, tmp_path):
        out = tmp_path / "contract.jsonl"
        summary = measure_specs([SPEC], backend.device, opset="contract", out=out, policy=QUICK, progress=False)
        assert (summary.measured, summary.errors, summary.unsupported) == (1, 0, 0)
        rows = read_table(out).rows
        assert len(rows) == 1
        row = rows[0].to_json()
        assert row["status"] == "ok", row.get("message")
        assert row["key"] == SPEC.key and row["median_ms"] > 0 and row["rounds"] == QUICK.rounds
        assert row["device"]["name"] == backend.device.name
