"""Shared helpers: run the CLI in process, write small op sets."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from oplat.cli import main

REPO = Path(__file__).resolve().parent.parent


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys):
    """Run ``oplat ARGS`` in process; returns exit code, stdout, stderr."""

    def run(*argv: str) -> CliResult:
        code = main(list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_python(code: str, *, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run Python code in a fresh interpreter (for import blocking and kill tests)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO
    )


def write_opset(path: Path, body: str, *, hw: str = "[[16, 16]]", precisions: str = '["fp32"]') -> Path:
    path.write_text(f'name = "{path.stem}"\nprecisions = {precisions}\nhw = {hw}\n\n{body}', encoding="utf-8")
    return path


def assert_one_line_error(result: CliResult, *needles: str) -> None:
    """A user error: non-zero exit, one line on stderr, no traceback, names the problem."""
    assert result.code != 0
    lines = [l for l in result.err.strip().splitlines() if not l.startswith("oplat: warning")]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("oplat: error: "), result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@contextlib.contextmanager
def inprocess_agent(token: str, **config):
    """An ``oplat agent`` serving in a thread of this process on 127.0.0.1 (a free port);
    yields the bound server (``server.url``, ``server.server_address``). ``config`` goes
    to :func:`oplat.agent.serve` (device, device_options, limits…)."""
    from oplat.agent import serve

    box: dict = {}
    ready = threading.Event()

    def on_ready(server) -> None:
        box["server"] = server
        ready.set()

    def run() -> None:
        try:
            serve("127.0.0.1", 0, token=token, quiet=True, ready=on_ready, **config)
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60), "the agent did not start"
    if "error" in box:
        raise box["error"]
    server = box["server"]
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=30)


HAVE_TRAIN = all(importlib.util.find_spec(m) is not None for m in ("torch", "skimage"))


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """(train dir, val dir): 240×240 crops of two built-in training photographs and a
    150×150 crop of a validation one, as PNG files (the train extra)."""
    if not HAVE_TRAIN:
        pytest.skip("needs the train extra")
    from PIL import Image

    from oplat.train.data import builtin_dir, read_image

    root = tmp_path_factory.mktemp("data")
    d = builtin_dir()
    (root / "train").mkdir()
    (root / "val").mkdir()
    Image.fromarray(read_image(d / "astronaut.png")[60:300, 150:390]).save(root / "train" / "astronaut.png")
    Image.fromarray(read_image(d / "rocket.jpg")[100:340, 200:440]).save(root / "train" / "rocket.png")
    Image.fromarray(read_image(d / "chelsea.png")[60:210, 150:300]).save(root / "val" / "chelsea.png")
    return root / "train", root / "val"
