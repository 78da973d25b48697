"""`microgpt conform` against real ports and mutants: atomic.py, every engine and the C port pass; edited
copies of atomic.py (one known variant each, made here by text substitution) are caught at the right
stage with the right cause.

- Dump mode: tests/atomic_dump.py runs a (mutated) copy of atomic.py, set to the vectors' `block8`
  config, and dumps every stage; conform compares the dump with the vectors.
- Streaming mode: the port runs in a temporary folder on a small file (SMALL, 1000 steps) as the
  original program does; conform reads its output as it streams and stops it at the first divergence.
  The C port and the fast engines run by default (the vectors of SMALL cost one 1000-step scalar run,
  shared); MICROGPT_SLOW_TESTS=1 adds the full runs of atomic.py and the scalar engine, and the C
  port and atomic.py on the embedded names (the default config).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conform_fixtures import ATOMIC, atomic_dump, edited_atomic
from conftest import REPO, run_cli
from microgpt import engines
from microgpt.checkpoint import write_safetensors
from microgpt.tensor import Tensor
from microgpt.tools.vectors import flatten, shape_of

pytestmark = pytest.mark.slow  # minutes of subprocesses: scripts/test.sh --fast leaves this module out

C_SOURCE = os.path.join(REPO, "ports", "c", "microgpt.c")
SLOW = pytest.mark.skipif(not os.environ.get("MICROGPT_SLOW_TESTS"),
                          reason="a full 1000-step run of a Python port (about a minute, or the default config's "
                          "several); set MICROGPT_SLOW_TESTS=1")
SMALL = "ana\nbo\nzoé\nlu\nmia\nél\nkai\nyu\n"  # short documents: 1000 steps of atomic.py take seconds

# name -> (substitutions on atomic.py, the stage that must fail first, a word of the cause it must name)
MUTANTS = {
    "beta2": ([("0.01, 0.85, 0.99, 1e-8", "0.01, 0.85, 0.95, 1e-8")], "adam", "beta2 = 0.95"),
    "init_std": ([("random.gauss(0, 0.08)", "random.gauss(0, 0.02)")], "init", "init std 0.02"),
    "tied_head": ([(",\n                  'lm_head': matrix(vocab_size, n_embd)}", "}"),
                   ("return linear(x, state_dict['lm_head'])", "return linear(x, state_dict['wte'])")],
                  "init", "tied lm_head"),
    "shuffle": ([("random.shuffle(docs)", "for i in reversed(range(1, len(docs))): "
                  "j = int(random.random() * (i + 1)); docs[i], docs[j] = docs[j], docs[i]")],
                "tokenizer", "different shuffle"),
    "squared_relu": ([("x = [xi.relu() for xi in x]", "x = [xi.relu() ** 2 for xi in x]")], "forward", "squared ReLU"),
    "max_subtract": ([("exps = [(val - max_val).exp() for val in logits]", "exps = [val.exp() for val in logits]")],
                     "forward", "without the max-subtract"),
    "lr_decay": ([("(1 - step / num_steps)", "(1 - (step + 1) / num_steps)")], "adam", "off-by-one lr decay"),
    "bos_stop": ([("            if token_id == BOS:\n                break", "            if token_id == BOS:\n"
                   "                continue")], "samples", "does not stop at BOS"),
}


def conform(block8_vectors, *args, cwd=None):
    result = run_cli("conform", "--vectors", block8_vectors, "--json", *args, cwd=cwd, timeout=1800)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] == (result.returncode == 0)
    return report


def stages(report):
    return {s["stage"]: s["status"] for s in report["stages"]}


def test_atomic_passes_every_stage_of_its_dump(block8_vectors, atomic_block8_dump):
    report = conform(block8_vectors, "--dump", atomic_block8_dump)
    assert report["ok"], report
    assert set(stages(report).values()) == {"pass"}
    assert report["first_divergence"] is None


@pytest.mark.parametrize("mutant", MUTANTS)
def test_mutant_is_caught_at_its_stage_with_its_cause(block8_vectors, tmp_path, mutant):
    substitutions, stage, cause = MUTANTS[mutant]
    steps = None if stage == "samples" else 2
    report = conform(block8_vectors, "--dump", atomic_dump(block8_vectors, tmp_path, substitutions, steps))
    assert not report["ok"]
    first = report["first_divergence"]
    assert first["stage"] == stage, report
    assert first["expected"] != first["got"]
    assert report["likely_cause"] and cause in report["likely_cause"], report
    order = [s["stage"] for s in report["stages"]]
    assert all(stages(report)[s] == "pass" for s in order[:order.index(stage)]), report


def test_a_safetensors_dump_reads_as_its_json(block8_vectors, atomic_block8_dump, tmp_path):
    """The same dump as a safetensors file: tensors under the same names (tokens concatenated), the config
    and the samples in its metadata."""
    with open(atomic_block8_dump, encoding="utf-8") as f:
        dump = json.load(f)
    tensors = {}
    for name, value in dump.items():
        if name == "tokens":
            value = [t for seq in value for t in seq]
        if name not in ("config", "samples"):
            tensors[name] = Tensor.from_floats(shape_of(value), flatten(value))
    path = tmp_path / "dump.safetensors"
    write_safetensors(str(path), tensors, {"config": dump["config"], "samples": json.dumps(dump["samples"])})
    report = conform(block8_vectors, "--dump", path)
    assert report["ok"], report
    assert set(stages(report).values()) == {"pass"}


def test_text_report_names_the_divergence(block8_vectors, tmp_path):
    dump = atomic_dump(block8_vectors, tmp_path, MUTANTS["beta2"][0], steps=1)
    result = run_cli("conform", "--vectors", block8_vectors, "--dump", dump)
    assert result.returncode == 1
    assert "first divergence: adam, tensor adam.v." in result.stdout
    assert "likely cause: beta2 = 0.95" in result.stdout
    assert result.stdout.rstrip().endswith("result: FAIL")


# ---- streaming: the port runs as the original program ---------------------------------------------
@pytest.fixture(scope="session")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text(SMALL, encoding="utf-8")
    return str(path)


def stream(block8_vectors, data, *cmd):
    return conform(block8_vectors, *(["--data", data] if data else []), "--", *cmd)


@SLOW
def test_atomic_passes_streaming(block8_vectors, small_file):
    report = stream(block8_vectors, small_file, sys.executable, ATOMIC)
    assert report["ok"], report
    assert {s: stages(report)[s] for s in ("tokenizer", "init", "losses", "samples")} == \
        dict.fromkeys(("tokenizer", "init", "losses", "samples"), "pass")


@pytest.mark.parametrize("engine", [pytest.param(e, marks=SLOW) if e == "scalar" else e for e in engines.available()])
def test_every_engine_passes_streaming(block8_vectors, small_file, engine):
    report = stream(block8_vectors, small_file, sys.executable, "-m", "microgpt", "train", "--engine", engine,
                    "--data", "input.txt", "--out", "out")
    assert report["ok"], report


@pytest.mark.parametrize("mutant", ["beta2", "tied_head", "bos_stop"])
def test_streaming_stops_a_mutant_at_its_first_divergence(block8_vectors, small_file, tmp_path, mutant):
    substitutions, _, cause = MUTANTS[mutant]
    report = stream(block8_vectors, small_file, sys.executable, edited_atomic(tmp_path / "mutant.py", substitutions))
    first = report["first_divergence"]
    assert first["stage"] == {"beta2": "losses", "tied_head": "init", "bos_stop": "samples"}[mutant], report
    assert report["likely_cause"] and cause in report["likely_cause"], report


def c_port(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler: neither `cc` nor `gcc` is on PATH, so the C port cannot be built")
    exe = tmp_path_factory.mktemp("cport") / "microgpt"
    out = subprocess.run([cc, "-O2", "-o", str(exe), C_SOURCE, "-lm"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return str(exe)


def test_c_port_passes_streaming(block8_vectors, small_file, tmp_path_factory):
    report = stream(block8_vectors, small_file, c_port(tmp_path_factory))
    assert report["ok"], report


@SLOW
def test_c_port_and_atomic_pass_on_the_embedded_names(block8_vectors, tmp_path_factory):
    exe = c_port(tmp_path_factory)
    for cmd in ([exe], [sys.executable, ATOMIC]):
        report = stream(block8_vectors, None, *cmd)
        assert report["ok"], (cmd, report)


def test_bad_input_is_one_line(block8_vectors, tmp_path):
    for args, words in ((["--dump", tmp_path / "missing.json"], "no such file"),
                        (["--", str(tmp_path / "no-such-port")], "cannot run"),
                        ([], "nothing to check")):
        result = run_cli("conform", "--vectors", block8_vectors, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("microgpt: error:") and words in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
