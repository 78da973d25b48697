"""The training options beyond the reference: off by default, and each what its name says.

    python -m pytest -q tests/test_training_options.py

Standard library only. The engine-side options (weight decay, dropout, clipping, accumulation) are
checked in tests/test_torch_engine.py.
"""

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest

from microgpt import cli
from microgpt.config import PRESETS, ModelConfig, TrainConfig
from microgpt.config import MODEL_FIELDS, lr_at, resolve


def test_the_default_schedule_is_the_reference_exactly():
    t = TrainConfig()
    assert [lr_at(s, t) for s in range(t.steps)] == [t.lr * (1 - s / t.steps) for s in range(t.steps)]


def test_warmup_then_cosine_down_to_min_lr():
    t = TrainConfig(steps=1000, lr=1e-3, min_lr=1e-4, warmup_steps=100, lr_schedule="cosine")
    lrs = [lr_at(s, t) for s in range(t.steps)]
    assert all(a < b for a, b in zip(lrs[:100], lrs[1:101]))  # rising during warmup
    assert lrs[100] == pytest.approx(t.lr, abs=1e-15)  # the peak, right after warmup
    assert all(a > b for a, b in zip(lrs[100:], lrs[101:]))  # then falling
    assert abs(lrs[550] - (t.min_lr + (t.lr - t.min_lr) / 2)) < 1e-12  # half-way: the mean
    assert t.min_lr < lrs[-1] < t.min_lr + 1e-8  # just above min_lr at the last step


def test_linear_decay_to_min_lr():
    t = TrainConfig(steps=10, lr=1.0, min_lr=0.5)
    assert [lr_at(s, t) for s in range(10)] == pytest.approx([1 - 0.05 * s for s in range(10)])


def args(**given):
    names = [*MODEL_FIELDS, *(f.name for f in TrainConfig.__dataclass_fields__.values()), "preset"]
    return SimpleNamespace(**{n: None for n in names} | given)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_name_real_fields_and_flags_override_them(name):
    model, tcfg = resolve(vars(args()), name)
    for key, value in PRESETS[name].items():
        assert getattr(model if hasattr(model, key) else tcfg, key) == value
    model, tcfg = resolve(vars(args(steps=7, n_layer=1)), name)
    assert tcfg.steps == 7 and model.n_layer == 1


def test_no_preset_is_the_reference():
    model, tcfg = resolve(vars(args()))
    assert tcfg == TrainConfig() and model == ModelConfig()


@pytest.mark.parametrize("flags,named", [(["--grad-accum", "0"], "--grad-accum"),
                                         (["--warmup-steps", "5", "--steps", "5"], "--warmup-steps"),
                                         (["--min-lr", "0.1"], "--min-lr"),
                                         (["--preset", "nope"], "preset")])
def test_bad_option_values_are_one_line_errors(flags, named, tmp_path, capsys):
    try:
        code = cli.main(["train", "--out", str(tmp_path), *flags])
    except SystemExit as e:  # argparse's own refusal (a value outside a flag's choices)
        code = e.code
    assert code == 2
    assert named in capsys.readouterr().err
