"""Checkpoint round trip, the safetensors layout, and resume == an uninterrupted run."""

import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest

from conftest import REPO, default_signals, parse_run, run_cli
from microgpt import checkpoint
from microgpt.run import Run
from microgpt.config import TrainConfig
from tiny_run import train

DOCS = "\n".join(["anna", "bob", "carla", "dmitri", "eve", "frances", "gus", "hana", "ivo", "jo"]) + "\n"


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "docs.txt"
    p.write_text(DOCS)
    return str(p)


def quick(steps=12, **kw):
    return TrainConfig(steps=steps, samples=3, save_every=4, **kw)


def model(**kw):
    return {"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 8, **kw}


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_checkpoint_round_trip(tmp_path, data_file):
    out = str(tmp_path / "run")
    train(model(), quick(steps=3), data_file, out)
    ck = Run.load(out)
    assert ck.step == 3 and ck.model.n_embd == 8 and ck.train.steps == 3
    ck.save(str(tmp_path / "copy"))
    again = Run.load(str(tmp_path / "copy"))
    for name, t in ck.params.items():
        assert again.params[name] == t
        assert again.state[f"adam.m.{name}"] == ck.state[f"adam.m.{name}"] and again.state[f"adam.v.{name}"] == ck.state[f"adam.v.{name}"]
    assert again.rng.getstate() == ck.rng.getstate() and again.tokenizer.chars == ck.tokenizer.chars
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_checkpoint_is_plain_safetensors(tmp_path, data_file):
    """Read the file with an independent parser of the published layout: u64 header length, JSON, bytes."""
    out = str(tmp_path / "run")
    train(model(), quick(steps=2), data_file, out)
    raw = open(checkpoint.path_in(out), "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert json.loads(header["__metadata__"]["microgpt"])["step"] == 2
    wte = header["wte"]
    assert wte["dtype"] == "F64" and wte["shape"] == [len(set(DOCS) - {"\n"}) + 1, 8]
    begin, end = wte["data_offsets"]
    first = struct.unpack("<d", raw[8 + n + begin: 8 + n + begin + 8])[0]
    assert first == Run.load(out).params["wte"].to_floats()[0]
    assert {"adam.m.wte", "adam.v.wte", "layer0.mlp_fc2"} <= set(header)


@pytest.mark.parametrize("stop", [1, pytest.param(5, marks=pytest.mark.slow), 8, pytest.param(11, marks=pytest.mark.slow)])
def test_resume_equals_uninterrupted(tmp_path, data_file, stop):
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    full = train(model(), quick(), data_file, whole)
    first = train(model(), quick(), data_file, parts, stop_after=stop)
    assert first["status"] == "stopped"
    second = train(model(), quick(), data_file, parts, resume=True)
    assert second["samples"] == full["samples"]
    losses = lambda d: [(m["step"], m["loss"], m["lr"]) for m in read_metrics(d) if "loss" in m]
    assert losses(parts) == losses(whole)
    a, b = Run.load(whole), Run.load(parts)
    assert a.params == b.params and a.state == b.state and a.rng.getstate() == b.rng.getstate()


@pytest.mark.slow
def test_resume_keeps_validation_metrics(tmp_path, data_file):
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    cfg = quick(val_docs=3, eval_every=3)
    train(model(), cfg, data_file, whole)
    train(model(), cfg, data_file, parts, stop_after=7)
    train(model(), cfg, data_file, parts, resume=True)
    strip = lambda d: [{k: v for k, v in m.items() if k != "dt"} for m in read_metrics(d)]
    assert strip(parts) == strip(whole)
    assert [m["step"] for m in strip(whole) if "val_loss" in m] == [3, 6, 9, 12]


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_finishes_the_same(tmp_path, data_file):
    """A real SIGINT to a running `microgpt train`: exit 130 with a checkpoint, then --resume."""
    whole = run_cli("train", "--data", data_file, "--steps", 60, "--n-embd", 8, "--n-head", 2,
                    "--samples", 5, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-m", "microgpt", "train", "--data", data_file, "--steps", "60",
                             "--n-embd", "8", "--n-head", "2", "--samples", "5", "--out", str(tmp_path / "cut")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)
    for line in proc.stdout:
        if line.startswith("step    3 /"):
            proc.send_signal(signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in rest
    stopped_at = Run.load(str(tmp_path / "cut")).step
    assert 3 <= stopped_at < 60
    resumed = run_cli("train", "--out", tmp_path / "cut", "--resume", "--data", data_file)
    assert resumed.returncode == 0, resumed.stderr
    assert parse_run(resumed.stdout)["samples"] == parse_run(whole.stdout)["samples"]
    assert Run.load(str(tmp_path / "cut")).params == Run.load(str(tmp_path / "whole")).params


@pytest.mark.slow
def test_sample_command_repeats_training_samples(tmp_path, data_file):
    out = run_cli("train", "--data", data_file, "--steps", 5, "--samples", 4, "--out", tmp_path / "r")
    assert out.returncode == 0, out.stderr
    again = run_cli("sample", "--out", tmp_path / "r", "--num", 4)
    assert parse_run(again.stdout)["samples"] == parse_run(out.stdout)["samples"]
    seeded = [run_cli("sample", "--out", tmp_path / "r", "--seed", 9, "--num", 6, "--top-k", 3, "--prompt", "a")
              for _ in range(2)]
    assert seeded[0].stdout == seeded[1].stdout
    assert all(s.startswith("a") for s in parse_run(seeded[0].stdout)["samples"])


def test_a_checkpoint_the_log_does_not_reach_is_warned_about(tmp_path, data_file, capsys):
    """A checkpoint copied in from another run (step 8 of seed 7) beside a log that ends at step 4 resumed
    without a word, leaving a log of two runs with steps 5 to 8 missing. The resume now warns, once."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    train(model(), quick(steps=4), data_file, a)
    train(model(), quick(steps=8, seed=7), data_file, b)
    os.replace(checkpoint.path_in(b), checkpoint.path_in(a))
    capsys.readouterr()
    train(model(), quick(steps=10), data_file, a, resume=True)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert warnings == [f"warning: {a}/metrics.jsonl ends at step 4, but the checkpoint is at step 8: the log lacks "
                        f"steps 5 to 8 (is the checkpoint from another run?)"]
