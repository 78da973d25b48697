"""`microgpt export` and the Python API: a weights-only safetensors file that Hugging Face's reader
loads straight into our torch module, and `microgpt.load`, both sampling what the CLI samples.

    python -m pytest -q tests/test_export.py
"""

import io
import json
import os
from contextlib import redirect_stdout

import pytest

from microgpt import checkpoint, cli, load
from microgpt.config import ModelConfig, TrainConfig
from microgpt.data import Tokenizer
from microgpt.params import param_shapes
from microgpt.sample import generate
from microgpt.tools.export import MODEL_KEYS
from tiny_run import TINY, train

torch = pytest.importorskip("torch", reason="the export test loads into the torch module: pip install torch")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="needs safetensors: pip install safetensors")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny torch run in float32 (its Adam state in the checkpoint), exported: (run dir, weights file)."""
    tmp = tmp_path_factory.mktemp("export")
    with redirect_stdout(io.StringIO()):
        train(dict(TINY), TrainConfig(steps=5, batch_size=4, engine="torch", dtype="float32", samples=0), None,
              str(tmp / "run"))
    weights = str(tmp / "model" / "names.safetensors")
    assert cli.main(["export", "--out", str(tmp / "run"), "--to", weights]) == 0
    return str(tmp / "run"), weights


def cli_samples(run_dir, capsys, *flags):
    capsys.readouterr()
    assert cli.main(["sample", "--out", run_dir, *flags]) == 0
    return [line.split(": ", 1)[1] if ": " in line else "" for line in capsys.readouterr().out.splitlines()]


def test_export_holds_the_weights_alone_with_format_pt(exported):
    run_dir, weights = exported
    with open(weights, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    meta = header.pop("__metadata__")
    assert meta["format"] == "pt"
    config = json.load(open(os.path.join(os.path.dirname(weights), "config.json")))
    names = [name for name, _ in param_shapes(ModelConfig(**{k: config[k] for k in MODEL_KEYS}))]
    assert sorted(header) == sorted(names)  # no adam.* tensors
    assert {h["dtype"] for h in header.values()} == {"F32"}
    assert os.path.getsize(weights) < os.path.getsize(checkpoint.path_in(run_dir)) / 2
    saved, _ = checkpoint.read_safetensors(checkpoint.path_in(run_dir))
    exported_tensors, _ = checkpoint.read_safetensors(weights)
    assert all(exported_tensors[n].to_floats() == saved[n].to_floats() for n in names)


def test_hugging_face_reader_loads_it_into_our_module_and_samples_match_the_cli(exported, capsys):
    from microgpt.engines.torch import GPT
    run_dir, weights = exported
    config = json.load(open(os.path.join(os.path.dirname(weights), "config.json")))
    module = GPT(ModelConfig(**{k: config[k] for k in MODEL_KEYS}))
    missing, unexpected = module.load_state_dict(safetensors_torch.load_file(weights), strict=True)
    assert not missing and not unexpected
    module.eval()
    import random
    tok = Tokenizer(config["chars"])
    ours = [generate(module, tok, config["block_size"], rng, 0.8) for rng in [random.Random(3)] for _ in range(8)]
    assert ours == cli_samples(run_dir, capsys, "--seed", "3", "--num", "8", "--temperature", "0.8")


def test_load_gives_the_cli_samples_from_a_run_or_an_export(exported, capsys):
    run_dir, weights = exported
    expected = cli_samples(run_dir, capsys, "--seed", "5", "--num", "6", "--temperature", "0.7", "--top-k", "6")
    assert load(run_dir).generate(num=6, seed=5, temperature=0.7, top_k=6) == expected
    assert load(weights).generate(num=6, seed=5, temperature=0.7, top_k=6) == expected
    assert set(load(weights).module.state_dict()) == set(safetensors_torch.load_file(weights))


def test_float64_export_and_a_bad_target(exported, tmp_path, capsys):
    run_dir, _ = exported
    assert cli.main(["export", "--out", run_dir, "--to", str(tmp_path / "w64.safetensors"), "--dtype", "float64"]) == 0
    assert {t.dtype for t in checkpoint.read_safetensors(str(tmp_path / "w64.safetensors"))[0].values()} == {"F64"}
    assert cli.main(["export", "--out", run_dir, "--to", str(tmp_path / "w.bin")]) == 2
    assert "--to" in capsys.readouterr().err


def test_an_export_never_replaces_what_it_did_not_write(exported, tmp_path, capsys):
    """A run's checkpoint, a file of the user's, or a config.json of other weights stays as it was; an
    earlier export of the same name is replaced (exporting again after more training)."""
    run_dir, weights = exported

    def refused(to, words):
        before = {p: open(p, "rb").read() for p in (os.path.join(run_dir, checkpoint.FILENAME), *made)}
        assert cli.main(["export", "--out", run_dir, "--to", str(to)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
        assert {p: open(p, "rb").read() for p in before} == before

    made = []
    refused(os.path.join(run_dir, checkpoint.FILENAME), "is the name of a run's checkpoint")
    (tmp_path / "notes.safetensors").write_text("mine")
    made.append(str(tmp_path / "notes.safetensors"))
    refused(tmp_path / "notes.safetensors", "exists and is not an export")
    other = os.path.join(os.path.dirname(weights), "other.safetensors")   # beside the first export's config.json
    refused(other, "config.json describes other weights (names.safetensors)")
    assert not os.path.exists(other)
    (tmp_path / "f").write_text("a file")
    refused(tmp_path / "f" / "x.safetensors", "a file stands where its path needs a folder")
    assert cli.main(["export", "--out", run_dir, "--to", weights]) == 0   # the same export again
    assert load(weights).run.model.n_embd == TINY["n_embd"]
