"""`microgpt vectors` against atomic.py run independently: the vectors (computed by the scalar engine)
must equal, bit for bit, what atomic.py itself computes when it runs as a program
(tests/atomic_dump.py reads its variables while it runs), and the forward intermediates must be the
tensors their names say (recomputed here with NumPy from the initial weights).

The block8 config is checked by default; MICROGPT_SLOW_TESTS=1 adds the non-ASCII config.
"""

import hashlib
import json
import os

import numpy as np
import pytest

from conform_fixtures import atomic_dump
from conftest import run_cli
from microgpt import __version__
from microgpt.checkpoint import read_safetensors
from microgpt.tools import vectors as vec

pytestmark = pytest.mark.slow  # minutes of subprocesses: scripts/test.sh --fast leaves this module out

SLOW = pytest.mark.skipif(not os.environ.get("MICROGPT_SLOW_TESTS"),
                          reason="writes and checks the non-ASCII config (a few minutes); set MICROGPT_SLOW_TESTS=1")


def tensors(folder, name):
    """A safetensors file of the vectors, read with the `safetensors` library when it is installed (an
    independent reader), else with the project's."""
    path = os.path.join(folder, f"{name}.safetensors")
    try:
        from safetensors.numpy import load_file
        return {k: np.asarray(v, dtype=np.float64) for k, v in load_file(path).items()}
    except ImportError:
        return {k: np.array(t.to_floats()).reshape(t.shape) for k, t in read_safetensors(path)[0].items()}


def read_json(folder, name):
    with open(os.path.join(folder, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def check_against_dump(folder, dump_path):
    """Every stage of the vectors in `folder` equals atomic.py's own run, exactly."""
    with open(dump_path, encoding="utf-8") as f:
        dump = json.load(f)
    exact = lambda got, want, what: np.testing.assert_array_equal(np.array(got, dtype=np.float64), want, err_msg=what)
    rng = read_json(folder, "rng")
    for key in ("gauss", "getrandbits", "shuffle", "choices"):
        assert dump[f"rng.{key}"] == rng[key]["values"], key
    assert dump["rng.random"] == rng["random"]
    tokens = read_json(folder, "tokens")
    assert (dump["num_docs"], dump["vocab_size"]) == (tokens["num_docs"], tokens["vocab_size"])
    assert dump["tokens"] == tokens["tokens"]
    assert dump["num_params"] == read_json(folder, "config")["num_params"]
    init, grads, adam, forward = (tensors(folder, n) for n in ("init", "grads", "adam", "forward"))
    assert {k[len("init."):] for k in dump if k.startswith("init.")} == set(init)
    for name in init:
        exact(dump[f"init.{name}"], init[name], f"init {name}")
        exact(dump[f"grad.{name}"], grads[name], f"gradient {name}")
        for which in ("m", "v", "param"):
            exact(dump[f"adam.{which}.{name}"], adam[f"{which}.{name}"], f"adam {which} {name}")
    for name in ("logits", "stress.logits", "stress.probs"):
        exact(dump[f"forward.{name}"], forward[name], name)
    exact(dump["forward.loss"], forward["loss"], "loss")
    losses = read_json(folder, "losses")
    assert dump["losses"] == losses["losses"]
    assert dump["samples"] == read_json(folder, "samples")["samples"]
    assert len(dump["samples"]) == 20


def test_vectors_equal_atomic_run_as_a_program(block8_vectors, atomic_block8_dump):
    check_against_dump(os.path.join(block8_vectors, "block8"), atomic_block8_dump)


def test_manifest_has_version_and_every_files_sha256(block8_vectors):
    with open(os.path.join(block8_vectors, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["microgpt_version"] == __version__
    assert "block8" in manifest["configs"]
    names = {rel.split("/", 1)[1] for rel in manifest["files"] if rel.startswith("block8/")}
    assert names == {"config.json", "rng.json", "tokens.json", "init.safetensors", "forward.safetensors",
                     "grads.safetensors", "adam.safetensors", "losses.json", "samples.json", "final.safetensors"}
    assert set(vec.FILES) == names   # what load() requires of each config is what the writer wrote
    for rel, digest in manifest["files"].items():
        with open(os.path.join(block8_vectors, rel), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, rel


def test_forward_names_are_the_tensors_they_say(block8_vectors):
    """Position by position, recomputed in NumPy from the initial weights and the tokens: the embedding sum,
    its rmsnorm, q, the attention weights of head 0, the block's output and the logits."""
    folder = os.path.join(block8_vectors, "block8")
    init, forward, cfg = tensors(folder, "init"), tensors(folder, "forward"), read_json(folder, "config")
    tokens = read_json(folder, "tokens")["tokens"][0][:cfg["model"]["block_size"] + 1]
    rmsnorm = lambda x: x * (np.mean(x * x) + 1e-5) ** -0.5
    names = [f["name"] for f in cfg["forward"]]
    head_dim = cfg["model"]["n_embd"] // cfg["model"]["n_head"]
    keys = []
    for p in range(len(tokens) - 1):
        e = init["wte"][tokens[p]] + init["wpe"][p]
        np.testing.assert_allclose(forward[f"p{p}.x"], e, rtol=1e-13)
        x = rmsnorm(e)
        np.testing.assert_allclose(forward[f"p{p}.x.1"], x, rtol=1e-12)
        u = rmsnorm(x)
        q, k = init["layer0.attn_wq"] @ u, init["layer0.attn_wk"] @ u
        keys.append(k)
        np.testing.assert_allclose(forward[f"p{p}.l0.q"], q, rtol=1e-10, atol=1e-13)
        scores = np.array([q[:head_dim] @ kk[:head_dim] for kk in keys]) / head_dim ** 0.5
        weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        np.testing.assert_allclose(forward[f"p{p}.l0.h0.attn_weights"], weights, rtol=1e-10)
        last = max((n for n in names if n.startswith(f"p{p}.l0.x.")), key=lambda n: int(n.rsplit(".", 1)[1]))
        np.testing.assert_allclose(forward[f"p{p}.logits"], init["lm_head"] @ forward[last], rtol=1e-10, atol=1e-13)
        np.testing.assert_array_equal(forward[f"p{p}.logits"], forward["logits"][p])
    assert forward["logits"].shape == (len(tokens) - 1, cfg["vocab_size"])


def test_stress_logits_overflow_exp(block8_vectors):
    """The stress test is the initial logits times a power of two, the largest above exp's limit, while
    the reference's probabilities (max subtracted) stay finite and sum to 1."""
    folder = os.path.join(block8_vectors, "block8")
    forward, factor = tensors(folder, "forward"), read_json(folder, "config")["stress_lm_head_factor"]
    assert factor == 2.0 ** round(np.log2(factor))
    np.testing.assert_array_equal(forward["stress.logits"], forward["logits"] * factor)
    assert forward["stress.logits"].max() > np.log(np.finfo(np.float64).max)
    assert np.isfinite(forward["stress.probs"]).all()
    np.testing.assert_allclose(forward["stress.probs"].sum(axis=1), 1.0, rtol=1e-12)


def test_unknown_config_is_one_line(tmp_path):
    result = run_cli("vectors", "--out", tmp_path / "v", "--configs", "default,nope")
    assert result.returncode == 2
    assert result.stderr.strip() == ("microgpt: error: unknown config 'nope'; choose from: default, wide, block8, "
                                     "seed7, unicode")


@SLOW
def test_unicode_config_equals_atomic(tmp_path):
    out = tmp_path / "v"
    result = run_cli("vectors", "--out", out, "--configs", "unicode", timeout=1800)
    assert result.returncode == 0, result.stderr
    folder = out / "unicode"
    text = (folder / "input.txt").read_text(encoding="utf-8")
    assert any(ord(c) > 0xFFFF for c in text) and any(0x7F < ord(c) < 0x800 for c in text)
    work = tmp_path / "run"
    work.mkdir()
    dump = atomic_dump(str(out), work, config="unicode")
    check_against_dump(str(folder), dump)


def test_vectors_never_write_into_a_folder_of_the_users(tmp_path):
    """--out wrote into any folder, over files of the same names (a user's default/rng.json was replaced in
    seconds). A non-empty folder that holds anything but vectors is now refused before any work; an empty one,
    one with our manifest, or one left by a stopped run (config folders of vector files, a killed write's
    .tmp) is still written."""
    mine = tmp_path / "mine"
    (mine / "default").mkdir(parents=True)
    (mine / "default" / "notes.txt").write_text("kept")
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "notes.txt").write_text("kept")
    for folder in (mine, tmp_path / "top"):
        result = run_cli("vectors", "--out", folder, "--configs", "block8")
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        assert result.stderr == (f"microgpt: error: --out {folder} is a non-empty folder that is not microgpt's "
                                 f"vectors; give a new or empty folder, so that nothing of yours is overwritten\n")
    assert [p.name for p in mine.rglob("*")] == ["default", "notes.txt"]
    assert (mine / "default" / "notes.txt").read_text() == "kept"
    stopped = tmp_path / "stopped"
    (stopped / "block8").mkdir(parents=True)
    for name in ("config.json", "rng.json", "init.safetensors.123.ab12cd34.tmp"):
        (stopped / "block8" / name).write_text("")
    assert vec.holds_only_vectors(str(stopped)) and vec.holds_only_vectors(str(tmp_path / "new"))
    (stopped / "block8" / "notes.txt").write_text("")
    assert not vec.holds_only_vectors(str(stopped))
