"""oplat.space: loading search spaces, validation, Optuna trials."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest

from oplat.arch import ABPN, ArchSpec, Layer
from oplat.errors import OplatError
from oplat.space import (
    SearchSpace,
    arch_from_trial,
    builtin_spaces,
    load_space,
    sample_arch,
    trial_params,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parent.parent
GOOD = """\
name = "tiny"
scale = 2
in_h = 24
in_w = 32
depth_min = 1
depth_max = 3
channels = [8, 16, 24]
channel_align = 8
"""


def _write(tmp_path: Path, text: str, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------- loading
def test_abpn_by_name_and_path() -> None:
    assert "abpn" in builtin_spaces()
    by_name = load_space("abpn")
    by_path = load_space(REPO / "search" / "abpn.toml")
    by_str = load_space(str(REPO / "search" / "abpn.toml"))
    assert by_name == by_path == by_str
    assert by_name.fingerprint == by_path.fingerprint
    assert (by_name.name, by_name.scale, by_name.in_h, by_name.in_w) == ("abpn", 3, 360, 640)
    assert "built-in" in by_name.source and by_path.source.endswith("abpn.toml")


def test_every_builtin_loads_and_holds_abpn() -> None:
    for name in builtin_spaces():
        space = load_space(name)
        assert space.name == name
        assert arch_from_trial(optuna.trial.FixedTrial(trial_params(space, ABPN)), space) == ABPN


def test_defaults_and_name_from_file(tmp_path: Path) -> None:
    space = load_space(_write(tmp_path, GOOD.replace('name = "tiny"\n', ""), "mine.toml"))
    assert space.name == "mine"
    assert (space.widths, space.kernel, space.tail, space.residuals, space.clip) == (
        "uniform",
        3,
        ("relu", "none"),
        ("anchor",),
        True,
    )


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ('name = "x"\nscale = [3\n', "malformed TOML"),
        (GOOD + "chanels = [8]\n", r"unknown field\(s\) 'chanels'"),
        (GOOD.replace("[8, 16, 24]", "[8, 12, 24]"), r"'channels': 12 is not a multiple of channel_align = 8"),
        (GOOD.replace("depth_max = 3", "depth_max = 0"), r"'depth_min'/'depth_max': range is inverted"),
        (GOOD.replace("in_w = 32\n", ""), r"missing field\(s\) 'in_w'"),
        (GOOD.replace("scale = 2", "scale = 5"), "'scale': must be one of 2, 3, 4"),
        (GOOD + 'widths = "random"\n', "'widths': must be one of uniform, per-layer"),
        (GOOD + 'residuals = ["anchor", "skip"]\n', "'residuals': unknown mode 'skip'"),
        (GOOD + "kernel = 4\n", "'kernel': must be an odd"),
        (GOOD.replace("[8, 16, 24]", "[16, 8]"), "ascending"),
        (GOOD.replace("in_h = 24", 'in_h = "24"'), "'in_h': must be a positive integer"),
    ],
    ids=["malformed", "unknown-field", "unaligned", "inverted", "missing", "scale", "widths", "residual", "kernel", "order", "type"],
)
def test_bad_files(tmp_path: Path, text: str, expect: str) -> None:
    path = _write(tmp_path, text, "bad.toml")
    with pytest.raises(OplatError, match=expect) as info:
        load_space(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_unknown_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OplatError, match="unknown search space 'nope'.*abpn"):
        load_space("nope")
    with pytest.raises(OplatError, match="no such search-space file"):
        load_space(tmp_path / "missing.toml")


def test_fingerprint(tmp_path: Path) -> None:
    base = load_space(_write(tmp_path, GOOD))
    renamed = load_space(_write(tmp_path, GOOD.replace('"tiny"', '"other"') + 'description = "x"\n', "b.toml"))
    assert renamed.fingerprint == base.fingerprint  # same networks
    wider = load_space(_write(tmp_path, GOOD.replace("[8, 16, 24]", "[8, 16, 24, 32]"), "c.toml"))
    assert wider.fingerprint != base.fingerprint
    assert replace(base, residuals=("anchor", "folded")).fingerprint != base.fingerprint
    assert len(base.fingerprint) == 16 and base.fingerprint == replace(base).fingerprint


def test_direct_construction_validates() -> None:
    with pytest.raises(OplatError, match="search space 'x': field 'channels'"):
        SearchSpace("x", 3, 8, 8, 1, 2, (6, 12), channel_align=4)


# ---------------------------------------------------------------------- trials
def _check_in_space(arch: ArchSpec, space: SearchSpace) -> None:
    assert (arch.scale, arch.in_h, arch.in_w, arch.clip) == (space.scale, space.in_h, space.in_w, space.clip)
    body = arch.layers[: -len(space.tail)]
    assert space.depth_min <= len(body) - 1 <= space.depth_max
    assert all(layer.c_out in space.channels and layer.act == "relu" for layer in body)
    assert arch.residual in space.residuals
    if space.widths == "uniform":
        assert len({layer.c_out for layer in body}) == 1


@pytest.mark.parametrize("widths", ["uniform", "per-layer"])
def test_arch_from_real_study(tmp_path: Path, widths: str) -> None:
    text = GOOD + f'widths = "{widths}"\nresiduals = ["anchor", "folded", "none"]\n'
    space = load_space(_write(tmp_path, text))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        arch = arch_from_trial(trial, space)
        _check_in_space(arch, space)
        seen.add(arch)
        # The trial's parameters rebuild the same network, and trial_params inverts it.
        assert arch_from_trial(optuna.trial.FixedTrial(trial.params), space) == arch
        assert trial_params(space, arch) == trial.params
        study.tell(trial, float(len(arch.layers)))
    assert len(seen) > 3


def test_abpn_expressible() -> None:
    space = load_space("abpn")
    fixed = optuna.trial.FixedTrial({"depth": 4, "width": 28, "residual": "anchor"})
    assert arch_from_trial(fixed, space) == ABPN
    folded = arch_from_trial(optuna.trial.FixedTrial({"depth": 4, "width": 28, "residual": "folded"}), space)
    assert folded == replace(ABPN, residual="folded")


def test_enqueue_abpn() -> None:
    space = load_space("abpn")
    study = optuna.create_study()
    study.enqueue_trial(trial_params(space, ABPN))
    assert arch_from_trial(study.ask(), space) == ABPN


def test_trial_params_rejects_outsiders() -> None:
    space = load_space("abpn")
    with pytest.raises(OplatError, match="width 30 is not in channels"):
        trial_params(space, ArchSpec(3, 360, 640, (Layer(30),) * 5 + (Layer(27), Layer(27, act="none"))))
    with pytest.raises(OplatError, match="in_h"):
        trial_params(space, ABPN.with_input(24, 32))
    with pytest.raises(OplatError, match="residual 'none'"):
        trial_params(space, replace(ABPN, residual="none"))


def test_sample_arch() -> None:
    space = load_space("abpn-per-layer")
    a = [sample_arch(space, np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1] == sample_arch(space, 3)
    for seed in range(20):
        _check_in_space(sample_arch(space, seed), space)
    _check_in_space(sample_arch(space, random.Random(1)), space)
    assert len({sample_arch(space, s) for s in range(20)}) > 10
