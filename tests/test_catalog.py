"""The bad-input catalog: each way a careless or hostile user can misuse microgpt, one case each.

Every case runs `python -m microgpt ARGS` in a child process whose address space is capped with
resource.setrlimit (MEMORY_LIMIT), and asserts the exit code, one to three lines on stderr, the
expected words in them, no traceback, and an end within TIME_LIMIT seconds (a hang fails). The
cases are grouped by class; the crafted checkpoints are written here with the tool's own writer
(checkpoint.write_safetensors) from a real tiny run, then corrupted.

    python -m pytest -q tests/test_catalog.py            # all of it, about a minute
    python -m pytest -q tests/test_catalog.py -k checkpoint
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

from conftest import REPO
from microgpt import checkpoint
from microgpt.config import ModelConfig
from microgpt.params import param_shapes
from microgpt.tensor import Tensor

pytestmark = pytest.mark.slow  # minutes of subprocesses: scripts/test.sh --fast leaves this module out

resource = pytest.importorskip("resource", reason="the memory bound needs resource.setrlimit (POSIX)")

MEMORY_LIMIT = 2**30  # bytes of address space for each child: far below what a blow-up would take
TIME_LIMIT = 60       # seconds; generous for a busy machine, far below a hang
DOCS = "ann\nbo\ncy\ndee\nemma\nfay\ngus\nhal\nivy\njo\n"


def run_limited(args, cwd):
    """`python -m microgpt ARGS` with the memory bound set in the child; (result, seconds)."""
    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = dict(os.environ, PYTHONPATH=REPO, OPENBLAS_NUM_THREADS="1")
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "microgpt", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=TIME_LIMIT, preexec_fn=limit_memory)
    return result, time.monotonic() - start


# ---- the files the cases use -------------------------------------------------------------------
def craft(d, name, tensors, meta) -> None:
    """d/name/checkpoint.safetensors holding these tensors and metadata, as checkpoint.save writes them."""
    os.makedirs(d / name, exist_ok=True)
    checkpoint.write_safetensors(checkpoint.path_in(str(d / name)), tensors, {"microgpt": json.dumps(meta)})


def craft_header(d, name, source, change) -> None:
    """A copy of the checkpoint in source whose JSON header `change(header)` edited (offsets, dtypes...)."""
    raw = open(checkpoint.path_in(str(source)), "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    head = change(header)
    head = head if isinstance(head, bytes) else json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    os.makedirs(d / name, exist_ok=True)
    with open(checkpoint.path_in(str(d / name)), "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + raw[8 + n:])


def write_raw(d, name, data: bytes) -> None:
    os.makedirs(d / name, exist_ok=True)
    with open(checkpoint.path_in(str(d / name)), "wb") as f:
        f.write(data)


def craft_sparse(d, name, meta) -> None:
    """A checkpoint of the model meta describes, laid out as the writer lays it out, whose tensors' bytes
    are a hole in a sparse file: sizes and offsets all consistent, the bytes never written."""
    header, offset = {"__metadata__": {"microgpt": json.dumps(meta)}}, 0
    for pname, shape in param_shapes(ModelConfig(**meta["model"])):
        size = shape[0] * shape[1] * 8
        header[pname] = {"dtype": "F64", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    os.makedirs(d / name)
    with open(checkpoint.path_in(str(d / name)), "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        f.truncate(8 + len(head) + offset)


def set_entry(name, key, value):
    def change(header):
        header[name][key] = value
    return change


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("catalog")
    (d / "docs.txt").write_text(DOCS)
    (d / "other.txt").write_text(DOCS.upper())
    (d / "empty.txt").write_text("")
    (d / "blank.txt").write_text("  \n\t\n   \n")
    (d / "bom_only.txt").write_bytes(b"\xef\xbb\xbf\r\n")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (d / "latin1.txt").write_bytes("café\nnaïve\n".encode("latin-1"))
    (d / "two_mb.txt").write_text("abcdefg\n" * (2**18 + 1))
    with open(d / "sparse_200mb.txt", "wb") as f:  # over the default cap; sparse, so it costs no disk
        f.truncate(200 * 2**20)
    os.mkfifo(d / "fifo.txt")
    os.symlink(d / "loop", d / "loop")
    (d / "a_file").write_text("not a directory")
    os.makedirs(d / "lock_link")
    os.symlink(d / "a_file", d / "lock_link" / ".lock")   # the pid must not land in a_file
    ok = subprocess.run([sys.executable, "-m", "microgpt", "train", "--data", str(d / "docs.txt"), "--steps", "4",
                         "--stop-after", "2", "--n-layer", "1", "--n-embd", "8", "--n-head", "2", "--block-size", "8",
                         "--samples", "0", "--out", str(d / "ok")],
                        cwd=d, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr

    tensors, metadata = checkpoint.read_safetensors(checkpoint.path_in(str(d / "ok")))
    meta = json.loads(metadata["microgpt"])

    def with_meta(**changes):
        out = json.loads(json.dumps(meta))
        for path, value in changes.items():
            *keys, last = path.split("__")
            target = out
            for k in keys:
                target = target[k]
            target[last] = value
        return out

    weights = {n: t for n, t in tensors.items() if "." not in n or n.startswith("layer")}
    craft(d, "no_adam", weights, meta)
    wte = tensors["adam.m.wte"]
    craft(d, "misshapen_adam", {**tensors, "adam.m.wte": Tensor((wte.shape[0] - 1, wte.shape[1]), wte.dtype,
                                                              wte.data[:-8 * wte.shape[1]])}, meta)
    craft(d, "no_wte", {n: t for n, t in tensors.items() if n != "wte"}, meta)
    for bad in ("nan", "inf"):
        craft(d, f"{bad}_weight", {**tensors, "lm_head": Tensor.from_floats(tensors["lm_head"].shape, [float(bad)] *
                                                                           len(tensors["lm_head"].to_floats()))}, meta)
    craft(d, "huge_n_layer", tensors, with_meta(model__n_layer=1000))  # 6000 tensors the file lacks
    craft(d, "n_layer_1e9", tensors, with_meta(model__n_layer=10**9))
    craft(d, "block_1e8", tensors, with_meta(model__block_size=10**8))
    craft(d, "heads_not_dividing", tensors, with_meta(model__n_head=3))
    craft(d, "n_layer_string", tensors, with_meta(model__n_layer="1"))
    craft(d, "lr_nan", tensors, with_meta(train__lr=float("nan")))  # json.dumps writes NaN
    craft(d, "vocab_mismatch", tensors, with_meta(chars=meta["chars"][:-1]))
    craft(d, "duplicate_chars", tensors, with_meta(chars=[meta["chars"][0]] * len(meta["chars"])))
    craft(d, "negative_step", tensors, with_meta(step=-1))
    craft(d, "step_past_steps", tensors, with_meta(step=10**6))
    craft(d, "step_string", tensors, with_meta(step="2"))
    craft(d, "short_rng", tensors, with_meta(rng_state=[3, meta["rng_state"][1][:10], None]))
    craft(d, "huge_rng_words", tensors, with_meta(rng_state=[3, [2**80] * 625, None]))
    craft(d, "zero_rng", tensors, with_meta(rng_state=[3, [0] * 624 + [624], None]))   # it loaded, and drew only 0
    craft(d, "embedded_names", tensors, with_meta(data__name=None))   # as a run on the embedded names says
    craft(d, "no_sha", tensors, with_meta(data={"name": "docs.txt", "world": 1}))
    craft(d, "future_format", tensors, with_meta(format_version=99))
    craft(d, "no_step", tensors, {k: v for k, v in meta.items() if k != "step"})
    craft_sparse(d, "six_gb_of_weights", with_meta(model__n_layer=4, model__n_embd=4096, model__n_head=4))
    os.makedirs(d / "no_metadata")
    checkpoint.write_safetensors(checkpoint.path_in(str(d / "no_metadata")), tensors, {})
    os.makedirs(d / "metadata_not_json")
    checkpoint.write_safetensors(checkpoint.path_in(str(d / "metadata_not_json")), tensors, {"microgpt": "{oops"})

    ok = d / "ok"
    raw = open(checkpoint.path_in(str(ok)), "rb").read()
    write_raw(d, "not_json", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    write_raw(d, "seven_bytes", raw[:7])
    write_raw(d, "header_past_end", struct.pack("<Q", len(raw)) + raw[8:])
    write_raw(d, "header_2_63", struct.pack("<Q", 2**63) + raw[8:])
    write_raw(d, "truncated", raw[:len(raw) // 2])
    craft_header(d, "negative_offset", ok, set_entry("wte", "data_offsets", [-8, 0]))
    craft_header(d, "offset_past_end", ok, lambda h: h["wte"].__setitem__("data_offsets", [
        10**12, 10**12 + h["wte"]["data_offsets"][1] - h["wte"]["data_offsets"][0]]))
    craft_header(d, "range_not_shape", ok, set_entry("wpe", "shape", [9, 8]))
    craft_header(d, "swapped_shape", ok, lambda h: h["wte"].__setitem__("shape", h["wte"]["shape"][::-1]))
    craft_header(d, "overlapping", ok, lambda h: h["wpe"].__setitem__("data_offsets", h["wte"]["data_offsets"]
                                                                      [:1] + [h["wte"]["data_offsets"][0] + 512]))
    craft_header(d, "dtype_f16", ok, set_entry("wte", "dtype", "F16"))
    craft_header(d, "dtype_object", ok, set_entry("wte", "dtype", {"evil": 1}))
    craft_header(d, "shape_negative", ok, set_entry("wte", "shape", [-27, -8]))
    craft_header(d, "duplicate_name", ok, lambda h: json.dumps(h).replace('"wpe":', '"wte":', 1).encode())
    craft_header(d, "deep_json", ok, lambda h: b'{"x": ' + b"[" * 100000 + b"]" * 100000 + b"}")
    craft_header(d, "header_is_list", ok, lambda h: b"[1, 2, 3]")
    os.makedirs(d / "fifo_ckpt")
    os.mkfifo(checkpoint.path_in(str(d / "fifo_ckpt")))
    os.makedirs(d / "dir_ckpt" / checkpoint.FILENAME)
    shutil.copytree(ok, d / "too_big")
    with open(checkpoint.path_in(str(d / "too_big")), "r+b") as f:  # sparse: past the cap, no disk used
        f.truncate(checkpoint.MAX_BYTES + 1)
    return d


# ---- the cases: class -> {name: (args, words expected in the error[, exit code, else 2])} ----------
T = ["train", "--data", "{d}/docs.txt", "--out", "{d}/new", "--steps", "2", "--samples", "0"]  # a valid train
S = ["sample", "--num", "2", "--out"]
CATALOG = {
    "data": {
        "missing file": (["train", "--data", "{d}/nope.txt", "--out", "{d}/new"], "not found"),
        "empty path": (["train", "--data", "", "--out", "{d}/new"], "--data is empty"),
        "directory": (["train", "--data", "{d}", "--out", "{d}/new"], "directory"),
        "FIFO": (["train", "--data", "{d}/fifo.txt", "--out", "{d}/new"], "not a regular file"),
        "/dev/zero": (["train", "--data", "/dev/zero", "--out", "{d}/new"], "not a regular file"),
        "/dev/null": (["train", "--data", "/dev/null", "--out", "{d}/new"], "not a regular file"),
        "symlink loop": (["train", "--data", "{d}/loop", "--out", "{d}/new"], "cannot read"),
        "over the default cap": (["train", "--data", "{d}/sparse_200mb.txt", "--out", "{d}/new"], "--max-data-mb"),
        "over a lowered cap": (["train", "--data", "{d}/two_mb.txt", "--max-data-mb", "1", "--out", "{d}/new"],
                               "--max-data-mb 3"),
        "cap not a number": (["train", "--max-data-mb", "nan", "--out", "{d}/new"], "--max-data-mb"),
        "cap zero": (["train", "--max-data-mb", "0", "--out", "{d}/new"], "--max-data-mb"),
        "empty file": (["train", "--data", "{d}/empty.txt", "--out", "{d}/new"], "empty"),
        "whitespace only": (["train", "--data", "{d}/blank.txt", "--out", "{d}/new"], "empty"),
        "a BOM and a CR only": (["train", "--data", "{d}/bom_only.txt", "--out", "{d}/new"], "empty"),
        "binary": (["train", "--data", "{d}/binary.bin", "--out", "{d}/new"], "binary"),
        "not UTF-8": (["train", "--data", "{d}/latin1.txt", "--out", "{d}/new"], "UTF-8"),
        "all documents held out": ([*T, "--val-docs", "10"], "--val-docs"),
        "stream text shorter than the block": ([*T, "--data-mode", "stream", "--block-size", "64"], "--block-size"),
        "check on a FIFO": (["check", "--data", "{d}/fifo.txt"], "not a regular file"),
        "trace on /dev/zero": (["trace", "emma", "--data", "/dev/zero"], "not a regular file"),
    },
    "flags": {
        "lr nan": ([*T, "--lr", "nan"], "--lr must be a finite number"),
        "lr inf": ([*T, "--lr", "inf"], "--lr must be a finite number"),
        "lr -inf": ([*T, "--lr=-inf"], "--lr must be a finite number"),
        "temperature nan": ([*T, "--temperature", "nan"], "--temperature must be a finite number"),
        "temperature inf": ([*T, "--temperature", "inf"], "--temperature must be a finite number"),
        "dropout nan": ([*T, "--dropout", "nan"], "--dropout must be a finite number"),
        "attn dropout inf": ([*T, "--attn-dropout", "inf"], "--attn-dropout must be a finite number"),
        "weight decay nan": ([*T, "--weight-decay", "nan"], "--weight-decay must be a finite number"),
        "grad clip inf": ([*T, "--grad-clip", "inf"], "--grad-clip must be a finite number"),
        "ema nan": ([*T, "--ema", "nan"], "--ema must be a finite number"),
        "min lr nan": ([*T, "--min-lr", "nan"], "--min-lr must be a finite number"),
        "init std inf": ([*T, "--init-std", "inf"], "--init-std must be a finite number"),
        "check h nan": (["check", "--h", "nan"], "--h"),
        "check h inf": (["check", "--h", "inf"], "--h"),
        "negative temperature": ([*T, "--temperature", "-0.5"], "--temperature"),
        "zero steps": ([*T, "--steps", "0"], "--steps"),
        "negative steps": ([*T, "--steps", "-3"], "--steps"),
        "width not divisible by heads": ([*T, "--n-embd", "10", "--n-head", "4"], "divisible"),
        "unknown engine": ([*T, "--engine", "jax"], "--engine: invalid choice"),
        "unknown preset": ([*T, "--preset", "huge"], "--preset: invalid choice"),
        "float32 on the scalar engine": ([*T, "--dtype", "float32"], "float"),
        "zero batch size": ([*T, "--batch-size", "0"], "--batch-size"),
        "warmup as long as the run": ([*T, "--warmup-steps", "2"], "--warmup-steps"),
        "stop after zero steps": ([*T, "--stop-after", "0"], "--stop-after"),
        "log every zero steps": ([*T, "--log-every", "0"], "--log-every must be a positive"),
        "dropout on the scalar engine": ([*T, "--dropout", "0.1"], "--dropout"),
    },
    "sizes": {
        "block size 1e8": ([*T, "--block-size", "100000000"], "--block-size"),
        "a million layers": ([*T, "--n-layer", "1000000"], "--n-layer"),
        "width past the bound": ([*T, "--n-embd", "10000000", "--n-head", "1"], "--n-embd"),
        "a billion sequences per step": ([*T, "--batch-size", "1000000000"], "--batch-size"),
        "accumulation past the bound": ([*T, "--batch-size", "64", "--grad-accum", "100000"], "--grad-accum"),
        "too large for memory": ([*T, "--n-layer", "64", "--n-embd", "4096", "--n-head", "4"], "parameters"),
        "too large for memory, wide context": ([*T, "--block-size", "1000000", "--n-embd", "4096"], "GB"),
    },
    "out": {
        "empty": ([*T[:3], "--out", ""], "--out is empty"),
        "an existing file": ([*T[:3], "--out", "{d}/a_file"], "is a file"),
        "not writable": ([*T[:3], "--out", "/proc/microgpt-catalog"], "cannot write"),
        "holds a checkpoint, no --resume": ([*T[:3], "--out", "{d}/ok"], "--resume"),
        "sample from an empty --out": ([*S, ""], "--out is empty"),
        "its lock a symbolic link": ([*T[:3], "--out", "{d}/lock_link"], "is a symbolic link, not a run's lock"),
    },
    "checkpoint": {
        "missing": ([*S, "{d}/none"], "no checkpoint"),
        "the checkpoint file as --out": ([*S, "{d}/ok/checkpoint.safetensors"], "is a file; give the run's directory"),
        "header not JSON": ([*S, "{d}/not_json"], "corrupt"),
        "seven bytes": ([*S, "{d}/seven_bytes"], "corrupt"),
        "header length past the end": ([*S, "{d}/header_past_end"], "header claims"),
        "header length 2**63": ([*S, "{d}/header_2_63"], "header claims"),
        "truncated": ([*S, "{d}/truncated"], "corrupt"),
        "negative offset": ([*S, "{d}/negative_offset"], "corrupt"),
        "offset past the end": ([*S, "{d}/offset_past_end"], "end of the file"),
        "byte range not the shape's": ([*S, "{d}/range_not_shape"], "corrupt"),
        "overlapping tensors": ([*S, "{d}/overlapping"], "overlap"),
        "shape swapped": ([*S, "{d}/swapped_shape"], "misshapen"),
        "dtype F16": ([*S, "{d}/dtype_f16"], "dtype"),
        "dtype an object": ([*S, "{d}/dtype_object"], "dtype"),
        "negative shape": ([*S, "{d}/shape_negative"], "shape"),
        "duplicate name": ([*S, "{d}/duplicate_name"], "duplicate"),
        "JSON nested 100000 deep": ([*S, "{d}/deep_json"], "corrupt"),
        "header a list": ([*S, "{d}/header_is_list"], "corrupt"),
        "nan weights": ([*S, "{d}/nan_weight"], "nan or inf"),
        "inf weights in report": (["report", "--out", "{d}/inf_weight"], "nan or inf"),
        "a weight missing": ([*S, "{d}/no_wte"], "wte"),
        "n_layer 1000 in a small file": ([*S, "{d}/huge_n_layer"], "missing"),
        "n_layer 1e9": ([*S, "{d}/n_layer_1e9"], "--n-layer"),
        "block_size 1e8": ([*S, "{d}/block_1e8"], "--block-size"),
        "heads not dividing the width": ([*S, "{d}/heads_not_dividing"], "divisible"),
        "n_layer a string": ([*S, "{d}/n_layer_string"], "integer"),
        "lr NaN": ([*S, "{d}/lr_nan"], "finite"),
        "characters and vocab disagree": ([*S, "{d}/vocab_mismatch"], "vocab_size"),
        "duplicate characters": ([*S, "{d}/duplicate_chars"], "distinct"),
        "negative step": ([*S, "{d}/negative_step"], "step"),
        "step past the run": ([*S, "{d}/step_past_steps"], "step"),
        "step a string": ([*S, "{d}/step_string"], "step"),
        "RNG state too short": ([*S, "{d}/short_rng"], "RNG"),
        "RNG words past 32 bits": ([*S, "{d}/huge_rng_words"], "RNG"),
        "RNG state all zeros": ([*S, "{d}/zero_rng"], "RNG state is all zeros"),
        "no data hash": ([*S, "{d}/no_sha"], "sha256"),
        "format 99": ([*S, "{d}/future_format"], "format_version"),
        "metadata without a step": ([*S, "{d}/no_step"], "lacks"),
        "no metadata": ([*S, "{d}/no_metadata"], "lacks"),
        "metadata not JSON": ([*S, "{d}/metadata_not_json"], "corrupt"),
        "a FIFO": ([*S, "{d}/fifo_ckpt"], "not a regular file"),
        "a directory": ([*S, "{d}/dir_ckpt"], "not a regular file"),
        "6 GB of weights under a 1 GB limit": ([*S, "{d}/six_gb_of_weights"], "bytes of memory here"),
        "over the size cap": ([*S, "{d}/too_big"], "limit on a checkpoint"),
        "resume without Adam's moments": (["train", "--out", "{d}/no_adam", "--resume", "--data", "{d}/docs.txt"],
                                          "lacks adam.m"),
        "resume with a misshapen moment": (["train", "--out", "{d}/misshapen_adam", "--resume", "--data",
                                            "{d}/docs.txt"], "optimizer tensor"),
        "report on a FIFO": (["report", "--out", "{d}/fifo_ckpt"], "not a regular file"),
        "trace on a crafted header": (["trace", "emma", "--out", "{d}/duplicate_name"], "duplicate"),
    },
    "resume": {
        "missing checkpoint": (["train", "--out", "{d}/none", "--resume"], "no checkpoint"),
        "without the run's --data": (["train", "--out", "{d}/ok", "--resume"], "give that file with --data"),
        "with other data": (["train", "--out", "{d}/ok", "--resume", "--data", "{d}/other.txt"], "SHA-256"),
        "a run on the embedded names, with --data": (["train", "--out", "{d}/embedded_names", "--resume", "--data",
                                                      "{d}/other.txt"], "drop --data to resume it"),
        "changed flag": (["train", "--out", "{d}/ok", "--resume", "--data", "{d}/docs.txt", "--lr", "0.5"],
                         "differs"),
        "temperature nan on resume": (["train", "--out", "{d}/ok", "--resume", "--data", "{d}/docs.txt",
                                       "--temperature", "nan"], "finite"),
        "report with other data": (["report", "--out", "{d}/ok", "--data", "{d}/other.txt"], "SHA-256"),
    },
    "sample": {
        "temperature nan": ([*S, "{d}/ok", "--temperature", "nan"], "--temperature"),
        "temperature -1": ([*S, "{d}/ok", "--temperature", "-1"], "--temperature"),
        "prompt outside the vocabulary": ([*S, "{d}/ok", "--prompt", "zq"], "vocabulary"),
        "prompt longer than the block": ([*S, "{d}/ok", "--prompt", "a" * 20], "--prompt"),
        "negative count": ([*S, "{d}/ok", "--num", "-1"], "--num"),
        "top-k zero": ([*S, "{d}/ok", "--top-k", "0"], "--top-k"),
    },
    "argparse": {
        "unknown flag": (["train", "--bogus"], "microgpt train --help"),
        "not an integer": (["train", "--steps", "x"], "microgpt train --help"),
        "not a number": (["sample", "--temperature", "warm"], "microgpt sample --help"),
        "flag without its value": (["train", "--data"], "microgpt train --help"),
        "bad choice": (["train", "--data-mode", "chunks"], "microgpt train --help"),
        "unknown command": (["fly"], "microgpt --help"),
        "no command": ([], "microgpt --help"),
    },
    "tools": {
        "check with empty --engines": (["check", "--engines", ""], "--engines is empty"),
        "check with --engines ,": (["check", "--engines", ","], "--engines is empty"),
        "bench with empty --engines": (["bench", "--engines", ""], "--engines is empty"),
        "bench with an unknown engine": (["bench", "--engines", "jax"], "unknown engine"),
        "bench with --peak nan": (["bench", "--engines", "numpy", "--peak", "nan"], "--peak takes"),
        "bench with an unknown dtype": (["bench", "--engines", "numpy", "--dtype", "float16"], "unknown dtype"),
        "bench with a dtype no engine runs": (["bench", "--engines", "pure", "--dtype", "float32"], "pure runs float64"),
        "check with zero docs": (["check", "--docs", "0"], "--docs"),
        "trace a missing checkpoint": (["trace", "emma", "--out", "{d}/none"], "no checkpoint"),
        "report a missing checkpoint": (["report", "--out", "{d}/none"], "no checkpoint"),
        "export onto the run's checkpoint": (["export", "--out", "{d}/ok", "--to", "{d}/ok/checkpoint.safetensors"],
                                             "is the name of a run's checkpoint"),
        "trace --json into a missing folder": (["trace", "emma", "--json", "{d}/no_folder/t.json"],
                                               "t.json: No such file or directory; choose a folder that exists"),
        "trace --json onto a directory": (["trace", "emma", "--json", "{d}"], "exists and is not a trace's JSON"),
    },
    "divergence": {
        "scalar engine": ([*T, "--lr", "1e5", "--steps", "20"], "diverged"),
        "pure engine": ([*T, "--lr", "1e5", "--steps", "20", "--engine", "pure"], "diverged"),
        "numpy engine": ([*T, "--lr", "1e5", "--steps", "20", "--engine", "numpy"], "nan"),
    },
}
CASES = [pytest.param(cls, name, id=f"{cls}: {name}") for cls, cases in CATALOG.items() for name in cases]


@pytest.mark.parametrize("cls, name", CASES)
def test_bad_input_is_one_clear_line(files, cls, name):
    args, words, *code = CATALOG[cls][name]
    args = [a.format(d=files) for a in args]
    out = args[args.index("--out") + 1] if "--out" in args else None
    fresh = args[:1] == ["train"] and out and not os.path.exists(out) and cls != "divergence"   # (which trains)
    result, seconds = run_limited(args, cwd=files)
    assert seconds < TIME_LIMIT
    assert result.returncode == (code or [2])[0], (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3, result.stderr
    assert lines[-1].startswith("microgpt: error:") and words in lines[-1], lines
    if fresh:
        assert not os.path.exists(out), f"a refused start left its --out behind: {os.listdir(out)}"
    assert open(os.path.join(files, "a_file")).read() == "not a directory"   # no case writes through a link


def test_the_catalog_covers_every_class_with_60_cases():
    counts = {cls: len(cases) for cls, cases in CATALOG.items()}
    assert sum(counts.values()) >= 60 and min(counts.values()) >= 3, counts
