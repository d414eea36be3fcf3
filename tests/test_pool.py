"""Several boards of one kind share one `measure` run (`--device remote:A:P,remote:B:P`).

The boards are real `oplat agent`s serving the cpu device in this process on 127.0.0.1.
"""

from __future__ import annotations

import contextlib

from conftest import assert_one_line_error, inprocess_agent, write_opset
from oplat.table import read_table

TOKEN = "pool-test-token-0123456789"


@contextlib.contextmanager
def _agents(*threads: int):
    """Agents on 127.0.0.1 (one per entry, serving cpu with that many threads); yields their device names."""
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(inprocess_agent(TOKEN, device="cpu", device_options={"threads": n})) for n in threads]
        yield [f"remote:127.0.0.1:{s.server_address[1]}" for s in servers]


def test_a_pool_shards_one_table_over_two_boards_and_resumes(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OPLAT_AGENT_TOKEN", TOKEN)
    channels = ", ".join(str(c) for c in range(1, 13))
    opset = write_opset(tmp_path / "p.toml", f'[[entry]]\nop = "relu"\nc = [{channels}]\n', hw="[[8, 8]]")
    out = tmp_path / "pool.jsonl"
    with _agents(1, 1) as boards:
        r = cli("measure", "--device", ",".join(boards), "--opset", str(opset), "--out", str(out),
                "--quick-policy", "--batch", "2", "--no-progress")
        assert r.code == 0, r.err
        assert "12 measured on 2 boards" in r.out
        rows = [r.to_json() for r in read_table(out).rows]
        assert len({r["key"] for r in rows}) == len(rows) == 12
        assert {r["board"] for r in rows} == set(boards)  # both boards took work
        assert {r["device"]["name"] for r in rows} == {"remote-pool"}
        again = cli("measure", "--device", ",".join(boards), "--opset", str(opset), "--out", str(out),
                    "--quick-policy", "--no-progress")
        assert again.code == 0 and "0 measured on 2 boards, 12 already there" in again.out


def test_boards_of_another_setup_are_refused(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OPLAT_AGENT_TOKEN", TOKEN)
    opset = write_opset(tmp_path / "p.toml", '[[entry]]\nop = "relu"\nc = 1\n', hw="[[8, 8]]")
    out = tmp_path / "pool.jsonl"
    with _agents(1, 2) as boards:
        r = cli("measure", "--device", ",".join(boards), "--opset", str(opset), "--out", str(out), "--quick-policy", "--no-progress")
        assert_one_line_error(r, f"board {boards[1]}", "threads=2", "a pool shares one setup")
    assert not out.exists() or not out.read_text()


def test_a_pool_of_local_devices_is_refused(cli, tmp_path):
    r = cli("measure", "--device", "cpu,cpu", "--opset", "quick", "--out", str(tmp_path / "t.jsonl"))
    assert_one_line_error(r, "a pool shards over boards")
