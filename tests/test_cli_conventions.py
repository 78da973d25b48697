"""The command line's conventions: --version, train's grouped --help, choices on every enumerated flag
(from config.py's allowed values), --config FILE.toml, --log tensorboard, and what train says about
resuming and where the checkpoint went.

    python -m pytest -q tests/test_cli_conventions.py
"""

import json
import os
import re
import shlex
import struct

import pytest

from conftest import run_cli
from microgpt import __version__, cli
from microgpt.config import DATA_MODES, DEVICES, DTYPES, ENGINE_DTYPES, LR_SCHEDULES, OPTIMIZERS, PRESETS
from microgpt.explog import LOGS
from microgpt.install import DISTRIBUTION
from tiny_run import TINY

TINY_FLAGS = [w for k, v in TINY.items() for w in (f"--{k.replace('_', '-')}", str(v))]


def train_parser():
    return cli.build_parser().commands["train"]


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"microgpt {__version__} ({DISTRIBUTION})"


def test_train_help_is_grouped():
    text = train_parser().format_help()
    headings = re.findall(r"^(\w+):$", text, re.M)
    assert headings[-6:] == ["data", "model", "optimization", "evaluation", "output", "engine"]
    section = lambda name: text.split(f"\n{name}:\n")[1].split("\n\n")[0]
    assert "--n-layer" in section("model") and "--lr-schedule" in section("optimization")
    assert "--threads" in section("engine") and "--out" in section("output") and "--data-mode" in section("data")


def test_every_enumerated_flag_has_choices_from_config():
    choices = {a.option_strings[-1]: tuple(a.choices) for a in train_parser()._actions if a.choices}
    assert choices == {"--preset": tuple(PRESETS), "--data-mode": DATA_MODES, "--lr-schedule": LR_SCHEDULES,
                       "--optimizer": OPTIMIZERS, "--log": LOGS, "--engine": tuple(ENGINE_DTYPES),
                       "--dtype": DTYPES, "--device": DEVICES}
    assert set(DTYPES) == {d for dtypes in ENGINE_DTYPES.values() for d in dtypes}
    sample = cli.build_parser().commands["sample"]
    assert [tuple(a.choices) for a in sample._actions if a.dest == "engine"] == [tuple(ENGINE_DTYPES)]


@pytest.mark.parametrize("flag, value", [("--engine", "jax"), ("--dtype", "float16"), ("--device", "tpu"),
                                         ("--lr-schedule", "step"), ("--log", "wandb")])
def test_a_value_outside_the_choices_is_one_line(flag, value):
    out = run_cli("train", flag, value, "--out", "unused")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and flag in out.stderr and "invalid choice" in out.stderr


# ---- --config FILE.toml ------------------------------------------------------------------------
def test_config_file_sets_flags_and_explicit_flags_override_it(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('seed = 7\nsamples = 0\n[model]\nn_layer = 2\nn-embd = 8\nn_head = 2\nblock_size = 8\n'
                      '[optimization]\nsteps = 6\nlr_schedule = "cosine"\nmin_lr = 0.001\n')
    from_file = run_cli("train", "--config", config, "--steps", 4, "--out", tmp_path / "a")
    assert from_file.returncode == 0, from_file.stderr
    by_flags = run_cli("train", "--seed", 7, "--samples", 0, *TINY_FLAGS, "--steps", 4, "--lr-schedule", "cosine",
                       "--min-lr", 0.001, "--out", tmp_path / "b")
    assert by_flags.returncode == 0, by_flags.stderr
    steps = lambda out: [line for line in out.stdout.splitlines() if line.startswith("step")]
    assert len(steps(from_file)) == 4 and steps(from_file) == steps(by_flags)  # the same run, 4 steps not 6


def test_config_file_overrides_the_preset(tmp_path):
    """defaults < --preset < --config < explicit flags: the file's `steps` beats the preset's."""
    config = tmp_path / "run.toml"
    config.write_text('preset = "names"\nsteps = 2\nwarmup_steps = 0\nsamples = 0\n[engine]\nengine = "numpy"\n'
                      'dtype = "float32"\n')
    parser = cli.build_parser()
    words = cli.config_argv(str(config), parser.commands["train"])
    args = parser.parse_args(["train", *words, "--eval-every", "1"])
    assert (args.preset, args.steps, args.engine, args.dtype, args.eval_every) == ("names", 2, "numpy", "float32", 1)


@pytest.mark.parametrize("text, message", [
    ("foo = 1\n", "unknown key foo"),
    ("[mdl]\nn_layer = 1\n", "unknown table [mdl]"),
    ("[model]\nsteps = 1\n", "unknown key [model] steps (a flag of another group)"),
    ("n_layer = 1.5\n", "n_layer must be an integer"),
    ("lr = \"big\"\n", "lr must be a number"),
    ("compile = 1\n", "compile must be true or false"),
    ("engine = \"jax\"\n", f"engine must be one of {', '.join(ENGINE_DTYPES)}"),
    ("n_layer =\n", "is not valid TOML"),
    ("config = \"other.toml\"\n", "unknown key config"),
    ("steps = 2\n[optimization]\nsteps = 3\n", "[optimization] steps sets --steps again (also top-level steps)"),
    ("n_layer = 1\nn-layer = 2\n", "n-layer sets --n-layer again (also top-level n_layer)"),
])
def test_a_bad_config_file_is_one_line(tmp_path, text, message):
    config = tmp_path / "run.toml"
    config.write_text(text)
    out = run_cli("train", "--config", config, "--out", tmp_path / "out")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"microgpt: error: --config {config}") and message in out.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_config_file_is_one_line(tmp_path):
    out = run_cli("train", "--config", tmp_path / "none.toml")
    assert out.returncode == 2 and "no such file" in out.stderr and out.stderr.count("\n") == 1


# ---- what train says ---------------------------------------------------------------------------
def test_train_says_where_the_checkpoint_is_and_resume_says_where_it_starts(tmp_path):
    out_dir = tmp_path / "run"
    first = run_cli("train", *TINY_FLAGS, "--steps", 6, "--stop-after", 4, "--samples", 0, "--out", out_dir)
    assert first.returncode == 0, first.stderr
    assert "resuming" not in first.stdout and "checkpoint:" not in first.stdout  # stopped early: its own message
    second = run_cli("train", "--out", out_dir, "--resume")
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert "resuming from step 4 of 6" in lines
    assert lines.index("resuming from step 4 of 6") < min(i for i, line in enumerate(lines) if line.startswith("step"))
    assert lines[-1] == f"checkpoint: {os.path.join(str(out_dir), 'checkpoint.safetensors')}"
    assert os.path.exists(lines[-1].split(": ", 1)[1])


def test_the_printed_continue_command_works_from_anywhere(tmp_path):
    """A stopped run's 'continue with:' command names --data and --out by their absolute paths (given
    relative, here) and quotes what needs it, so that pasted as printed in another folder it resumes the run."""
    (tmp_path / "my data").mkdir()
    (tmp_path / "my data" / "docs.txt").write_text("ann\nbo\ncy\ndee\nemma\nfay\n")
    first = run_cli("train", *TINY_FLAGS, "--steps", 4, "--stop-after", 2, "--samples", 0,
                    "--data", os.path.join("my data", "docs.txt"), "--out", "a run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    command = shlex.split(first.stdout.split("continue with: ", 1)[1].strip())
    assert command[:2] == ["microgpt", "train"]
    (tmp_path / "elsewhere").mkdir()
    second = run_cli(*command[1:], cwd=tmp_path / "elsewhere")
    assert second.returncode == 0, second.stderr
    assert "resuming from step 2 of 4" in second.stdout


# ---- --log tensorboard -------------------------------------------------------------------------
def read_event_scalars(folder) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from TensorBoard event files: TFRecords (length, crc, Event proto, crc)."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2", reason="needs tensorboardX: pip install tensorboardX")
    scalars: dict[str, dict[int, float]] = {}
    for name in sorted(os.listdir(folder)):
        data = open(os.path.join(folder, name), "rb").read()
        at = 0
        while at < len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


@pytest.mark.slow
def test_log_tensorboard_writes_the_metrics(tmp_path):
    pytest.importorskip("tensorboardX", reason="--log tensorboard needs tensorboardX: pip install tensorboardX")
    out_dir = tmp_path / "run"
    out = run_cli("train", *TINY_FLAGS, "--steps", 6, "--val-docs", 4, "--eval-every", 3, "--samples", 0,
                  "--log", "tensorboard", "--out", out_dir)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in open(out_dir / "metrics.jsonl")]
    scalars = read_event_scalars(out_dir / "tensorboard")
    expect = lambda key: {r["step"]: pytest.approx(r[key], rel=1e-6) for r in rows if key in r}  # float32 in events
    assert scalars["train/loss"] == expect("loss") and len(scalars["train/loss"]) == 6
    assert scalars["train/lr"] == expect("lr")
    assert scalars["val/loss"] == expect("val_loss") and sorted(scalars["val/loss"]) == [3, 6]


def test_characters_the_terminal_cannot_show_print_as_escapes(tmp_path):
    """With an ASCII stdout (PYTHONIOENCODING=ascii, or LANG=C without UTF-8 coercion), sample, trace and
    train died with a UnicodeEncodeError traceback on a run whose vocabulary has accented letters."""
    data = tmp_path / "names.txt"
    data.write_text("émile\nzoë\nrené\nchloé\nnoël\n", encoding="utf-8")
    out = tmp_path / "run"
    assert cli.main(["train", "--engine", "numpy", "--data", str(data), "--out", str(out), "--steps", "2",
                     "--n-embd", "8", "--n-head", "2", "--samples", "0"]) == 0
    ascii_out = {"PYTHONIOENCODING": "ascii"}
    sample = run_cli("sample", "--out", out, "--num", "2", "--prompt", "é", env=ascii_out, timeout=120)
    assert sample.returncode == 0 and sample.stderr == "", sample.stderr
    assert [line.split(": ", 1)[1][:4] for line in sample.stdout.splitlines()] == ["\\xe9", "\\xe9"]
    trace = run_cli("trace", "ë", "--out", out, env=ascii_out, timeout=120)
    assert trace.returncode == 0 and "'\\xeb'" in trace.stdout and trace.stderr == "", trace.stderr
