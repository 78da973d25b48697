"""Presets that shrink with --steps, `train --force`, and README command blocks that run in order.

    python -m pytest -q tests/test_presets.py
"""

import hashlib
import os
import re

import pytest

from microgpt import checkpoint, cli
from microgpt.config import PRESETS, TrainConfig, resolve, scale_preset

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def preset(name, **flags):
    flags = {"steps": None, "warmup_steps": None, "ema": None, **flags}
    _, tcfg = resolve(flags, name)
    return scale_preset(name, flags, tcfg)


def test_a_shorter_run_scales_warmup_and_ema_by_its_share_of_the_preset():
    full = PRESETS["names"]
    tcfg, notes = preset("names", steps=50)
    share = 50 / full["steps"]
    assert tcfg.warmup_steps == round(full["warmup_steps"] * share)  # 200 * 50/6000 = 1.67 -> 2
    # the average spans 1 / (1 - ema) steps: 1000 for the preset, 1000 * 50/6000 = 8.33 here
    assert tcfg.ema == pytest.approx(1 - 1 / (share / (1 - full["ema"])), abs=1e-4)
    assert len(notes) == 1 and "--warmup-steps 200 -> 2" in notes[0] and "--ema 0.999 -> 0.88" in notes[0]


def test_explicit_flags_and_full_length_runs_are_left_alone():
    tcfg, notes = preset("names", steps=50, warmup_steps=10, ema=0.9)
    assert (tcfg.warmup_steps, tcfg.ema, notes) == (10, 0.9, [])
    tcfg, notes = preset("names", steps=PRESETS["names"]["steps"] * 2)
    assert (tcfg.warmup_steps, tcfg.ema, notes) == (PRESETS["names"]["warmup_steps"], PRESETS["names"]["ema"], [])
    assert scale_preset(None, {"steps": 5}, TrainConfig(steps=5)) == (TrainConfig(steps=5), [])


def test_a_short_names_preset_run_trains(tmp_path, capsys):
    pytest.importorskip("torch", reason="the names preset trains with the torch engine")
    out = str(tmp_path / "run")
    assert cli.main(["train", "--preset", "names", "--steps", "3", "--samples", "0", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "note: --steps 3 is shorter than the names preset's 6000" in printed and "val loss" in printed


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_force_starts_over_and_keeps_the_old_run(tmp_path, capsys):
    out = str(tmp_path / "run")
    tiny = ["train", "--n-embd", "8", "--n-head", "2", "--block-size", "8", "--steps", "2", "--samples", "0",
            "--out", out]
    assert cli.main(tiny) == 0
    old = {name: digest(os.path.join(out, name)) for name in ("checkpoint.safetensors", "metrics.jsonl")}
    assert cli.main(tiny + ["--seed", "7"]) == 2 and "--force" in capsys.readouterr().err
    assert cli.main(tiny + ["--seed", "7", "--force"]) == 0
    moved = re.search(r"was moved to (\S+)", capsys.readouterr().out).group(1)
    assert os.path.dirname(moved) == out and os.path.basename(moved).startswith("previous-")
    assert {name: digest(os.path.join(moved, name)) for name in old} == old  # nothing lost
    assert digest(os.path.join(out, "checkpoint.safetensors")) != old["checkpoint.safetensors"]
    assert cli.main(tiny + ["--force", "--resume"]) == 2


def test_a_metrics_file_of_the_users_is_kept_too(tmp_path, capsys):
    """A fresh run replaces --out's metrics.jsonl when no checkpoint is there: a run's log, that of a run
    killed before its first save (test_faults). Any other file of that name is the user's (here the very
    --data): the run asks for --force, which keeps it aside."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("ann\nbo\ncy\ndee\n")
    tiny = ["train", "--engine", "numpy", "--n-embd", "8", "--n-head", "2", "--block-size", "8", "--steps", "2",
            "--samples", "0", "--data", str(out / "metrics.jsonl"), "--out", str(out)]
    assert cli.main(tiny) == 2
    assert "metrics.jsonl is not a training run's metrics" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == "ann\nbo\ncy\ndee\n"
    assert cli.main(tiny + ["--force"]) == 0
    moved = re.search(r"was moved to (\S+)", capsys.readouterr().out).group(1)
    assert open(os.path.join(moved, "metrics.jsonl")).read() == "ann\nbo\ncy\ndee\n"   # nothing lost
    assert os.path.exists(os.path.join(out, "checkpoint.safetensors"))
    (tmp_path / "dir" / "metrics.jsonl").mkdir(parents=True)   # a folder of that name: refused before training
    assert cli.main(tiny[:-1] + [str(tmp_path / "dir")]) == 2
    assert "metrics.jsonl is not a training run's metrics" in capsys.readouterr().err


def test_what_stands_where_a_run_writes_is_named_and_kept(tmp_path, capsys):
    """A folder named checkpoint.safetensors is not a checkpoint (it was reported as one, with --resume
    suggested); a file named tensorboard is not the events' folder (--log tensorboard failed after set-up with
    "Not a directory"). Each is one line before any training, and --force keeps the folder aside."""
    tiny = ["train", "--engine", "numpy", "--n-embd", "8", "--n-head", "2", "--block-size", "8", "--steps", "2",
            "--samples", "0"]
    out = tmp_path / "run"
    (out / "checkpoint.safetensors").mkdir(parents=True)
    (out / "checkpoint.safetensors" / "mine.txt").write_text("kept")
    assert cli.main(tiny + ["--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"microgpt: error: {out / 'checkpoint.safetensors'} is a folder, not a "
                                       f"checkpoint, and a run writes its checkpoint there; move it, or pass --force to "
                                       f"start over (the old run is kept in {out}/previous-<time>/), or choose another "
                                       f"--out\n")
    assert cli.main(tiny + ["--out", str(out), "--force"]) == 0
    moved = re.search(r"was moved to (\S+)", capsys.readouterr().out).group(1)
    assert open(os.path.join(moved, "checkpoint.safetensors", "mine.txt")).read() == "kept"   # nothing lost
    assert checkpoint.load(str(out))["step"] == 2
    board = tmp_path / "board"
    board.mkdir()
    (board / "tensorboard").write_text("mine")
    assert cli.main(tiny + ["--out", str(board), "--log", "tensorboard"]) == 2
    assert capsys.readouterr().err == (f"microgpt: error: --log tensorboard writes into the folder {board / 'tensorboard'}, "
                                       f"but that is a file; move it, or choose another --out\n")
    assert sorted(os.listdir(board)) == ["tensorboard"] and (board / "tensorboard").read_text() == "mine"


@pytest.mark.parametrize("lr, decay", [("0.01", "1e10"), ("0.01", "100"), ("0.5", "2")])
def test_a_weight_decay_that_would_flip_the_weights_is_refused(tmp_path, capsys, lr, decay):
    """Decoupled weight decay scales the weights by 1 - lr x decay each step: at 1 or more they flip sign
    or vanish, and the loss ran to 1e166 and then NaN before the run stopped (blaming --lr alone)."""
    assert cli.main(["train", "--engine", "torch", "--lr", lr, "--weight-decay", decay, "--steps", "2",
                     "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    scale = 1 - float(lr) * float(decay)
    assert err == (f"microgpt: error: --weight-decay {float(decay):g} with --lr {float(lr):g} would scale the weights "
                   f"by 1 - lr x decay = {scale:g} each step, flipping or zeroing them; keep the decay below 1 / lr = "
                   f"{1 / float(lr):g} (0.1 is usual)\n")
    assert not (tmp_path / "run").exists()


def test_a_preset_on_another_engine_leaves_off_what_that_engine_lacks(tmp_path, capsys):
    """--preset names is made for torch (Muon, weight decay, dropout, EMA, float32). With --engine pure, the
    preset's options that pure lacks are off, said in a note, and the rest is the preset's; an option given
    explicitly is still refused, and resuming on an engine without the checkpoint's dtype says which have it."""
    shrink = ["--n-layer", "1", "--n-embd", "8", "--n-head", "2", "--steps", "2", "--samples", "0",
              "--val-docs", "10"]
    out = str(tmp_path / "pure")
    assert cli.main(["train", "--preset", "names", "--engine", "pure", *shrink, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert ("note: --engine pure does not run all of the names preset (made for --engine torch), so: --optimizer "
            "muon -> adam, --weight-decay 0.1 -> off, --dropout 0.05 -> off, --attn-dropout 0.0 -> off, "
            "--dtype float32 -> float64") in printed
    saved = checkpoint.load(out)["train"]
    want = PRESETS["names"]
    assert (saved.engine, saved.dtype, saved.optimizer, saved.weight_decay) == ("pure", "float64", "adam", 0.0)
    assert (saved.batch_size, saved.lr_schedule, saved.lr) == (want["batch_size"], want["lr_schedule"], want["lr"])
    assert cli.main(["train", "--preset", "names", "--engine", "pure", "--weight-decay", "0.1", *shrink,
                     "--out", str(tmp_path / "refused")]) == 2
    assert "--weight-decay is not implemented by --engine pure" in capsys.readouterr().err

    f32 = str(tmp_path / "f32")
    assert cli.main(["train", "--engine", "numpy", "--dtype", "float32", *shrink, "--out", f32]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", "--out", f32, "--engine", "pure", "--steps", "3"]) == 2
    assert capsys.readouterr().err.strip() == (
        "microgpt: error: the checkpoint trained in float32, and --engine pure computes in float64 only; resume "
        "with an engine that has float32: numpy, compiled, torch")


def test_readme_train_commands_each_write_their_own_out():
    """Run in order as written, no `train` block may find its --out already taken (unless it resumes)."""
    with open(README, encoding="utf-8") as f:
        lines, in_block = [], False
        for line in f:
            if line.startswith("```"):
                in_block = not in_block
            elif in_block:
                lines.append(line)
    seen = {}
    for line in lines:
        command = line.split("#")[0]
        if not re.search(r"microgpt train\b", command) or "--help" in command:
            continue
        if "--resume" in command or "--force" in command:
            continue
        found = re.search(r"--out (\S+)", command)
        out = found.group(1) if found else "out"
        assert out not in seen, f"README: {command.strip()!r} reuses --out {out} of {seen[out]!r}"
        seen[out] = command.strip()


def test_a_gpu_preset_on_a_cpu_warns_with_the_time_per_step():
    torch = pytest.importorskip("torch", reason="the GPU presets train with the torch engine")
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has a GPU: the warning is for CPUs")
    from dataclasses import replace
    from microgpt.cost import gpu_preset_warning
    model, tcfg = resolve({}, "shakespeare")
    warning = gpu_preset_warning("shakespeare", replace(model, vocab_size=65), tcfg)
    assert "s per step" in warning and "--preset shakespeare-cpu" in warning
    model, tcfg = resolve({}, "shakespeare-cpu")
    assert gpu_preset_warning("shakespeare-cpu", replace(model, vocab_size=65), tcfg) is None


def test_flops_per_step_matches_torchs_own_count():
    """torch's FlopCounterMode counts the matrix products of a real forward and backward pass."""
    torch = pytest.importorskip("torch", reason="counts the torch module's FLOPs")
    from torch.utils.flop_counter import FlopCounterMode
    from microgpt.config import ModelConfig
    from microgpt.cost import flops_per_step
    from microgpt.engines.torch import GPT
    model = ModelConfig(vocab_size=65, n_layer=2, n_embd=64, n_head=4, block_size=32)
    idx = torch.randint(0, 65, (3, 32))
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):  # attention as plain products
        GPT(model)(idx, targets=idx).backward()
    assert flops_per_step(model, TrainConfig(batch_size=3)) == counter.get_total_flops()
