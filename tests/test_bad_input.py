"""Odd but usable input and what it must not do: the bad-input cases themselves (exit code, one line,
no traceback, bounded time and memory) are the catalog in tests/test_catalog.py.

    python -m pytest -q tests/test_bad_input.py
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, parse_run, run_cli
from microgpt import checkpoint
from microgpt.data import read_text, split_docs


@pytest.fixture
def files(tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("ann\nbo\ncy\n")
    (tmp_path / "bad_ckpt").mkdir()
    (tmp_path / "bad_ckpt" / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    trained = run_cli("train", "--data", docs, "--steps", 2, "--samples", 0, "--out", tmp_path / "ok")
    assert trained.returncode == 0, trained.stderr
    return tmp_path


def test_long_documents_are_cut_and_counted(tmp_path):
    data = tmp_path / "long.txt"
    data.write_text("short\n" + "x" * 40 + "\n" + "y" * 15 + "\n" + "z" * 16 + "\n")
    out = run_cli("train", "--data", data, "--steps", 2, "--samples", 0, "--out", tmp_path / "r")
    assert out.returncode == 0, out.stderr
    # block 16 holds BOS + 15 characters + BOS: the 40- and 16-character documents lose tokens
    assert "note: 2 documents are longer than the block (16 tokens after BOS) and were cut to fit" in out.stdout
    data.write_text("short\n" + "x" * 40 + "\n")
    out = run_cli("train", "--data", data, "--steps", 2, "--samples", 0, "--out", tmp_path / "one")
    assert "note: 1 document is longer than the block (16 tokens after BOS) and was cut to fit; raise " \
           "--block-size to keep it whole" in out.stdout


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_utf16_file_is_named_as_such(tmp_path, encoding):
    """It got "looks binary (it has NUL bytes)", though re-saving it as UTF-8 is all it needs."""
    data = tmp_path / "names.txt"
    data.write_bytes(("\ufeff" if encoding == "utf-16-be" else "").encode(encoding) + "ann\nbo\n".encode(encoding))
    out = run_cli("train", "--data", data, "--steps", 2, "--out", tmp_path / "r")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == f"microgpt: error: {data} is UTF-16 text; re-save it as UTF-8\n"


def test_corrupt_checkpoint_is_not_overwritten_by_train(files):
    before = (files / "bad_ckpt" / "checkpoint.safetensors").read_bytes()
    out = run_cli("train", "--data", files / "docs.txt", "--out", files / "bad_ckpt")
    assert out.returncode != 0
    assert (files / "bad_ckpt" / "checkpoint.safetensors").read_bytes() == before


def atomic_counts(text_bytes: bytes, tmp_path) -> tuple[int, int]:
    """(num docs, vocab size) as atomic.py prints them for input.txt holding these bytes: the first two
    lines of its output, read before it trains (then it is stopped)."""
    work = tmp_path / "atomic"
    work.mkdir()
    (work / "input.txt").write_bytes(text_bytes)
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "microgpt", "atomic.py")], cwd=work,
                            stdout=subprocess.PIPE, text=True)
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()
    return int(first.split(":")[1]), int(second.split(":")[1])


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_line_ends_split_documents_as_atomic_py_reads_them(tmp_path, ending):
    raw = ending.join(["ann", "bo ", "", "cy", "dee"]).encode()
    path = tmp_path / "docs.txt"
    path.write_bytes(raw)
    docs = split_docs(read_text(str(path)))
    assert docs == ["ann", "bo", "cy", "dee"]
    assert (len(docs), len(set("".join(docs))) + 1) == atomic_counts(raw, tmp_path)


def test_a_byte_order_mark_is_not_a_character(tmp_path):
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_text("ann\nbo\ncy\n", encoding="utf-8")
    bom.write_text("ann\nbo\ncy\n", encoding="utf-8-sig")  # Python's own writer puts the BOM first
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    runs = [run_cli("train", "--data", p, "--steps", 3, "--samples", 2, "--out", tmp_path / p.stem)
            for p in (plain, bom)]
    assert all(r.returncode == 0 for r in runs), runs[1].stderr
    assert parse_run(runs[0].stdout) == parse_run(runs[1].stdout)  # same vocabulary, losses and samples
    assert parse_run(runs[1].stdout)["vocab_size"] == len(set("annbocy")) + 1


def test_a_tiny_temperature_samples_the_argmax(files):
    """1e-320 overflows 1 / temperature; 1e-300 does not, and its softmax is already one-hot on the
    largest logit. Both are greedy decoding: every sample the same, and the same in both."""
    tiny = run_cli("sample", "--out", files / "ok", "--num", 3, "--temperature", "1e-320")
    small = run_cli("sample", "--out", files / "ok", "--num", 3, "--temperature", "1e-300")
    assert tiny.returncode == 0 and small.returncode == 0, tiny.stderr + small.stderr
    assert "Warning" not in tiny.stderr
    samples = parse_run(tiny.stdout)["samples"]
    assert len(samples) == 3 and len(set(samples)) == 1
    assert samples == parse_run(small.stdout)["samples"]


def test_the_checkpoint_records_the_data_name_and_hash_not_its_path(files):
    _, metadata = checkpoint.read_safetensors(checkpoint.path_in(str(files / "ok")))
    data = json.loads(metadata["microgpt"])["data"]
    assert data["name"] == "docs.txt" and "path" not in data
    assert data["sha256"] == hashlib.sha256((files / "docs.txt").read_bytes()).hexdigest()
    assert str(files) not in metadata["microgpt"]


def test_report_never_opens_a_path_taken_from_the_checkpoint(files):
    """A checkpoint in the old layout, whose data record names a file by absolute path (and its true
    hash): report reads the run's documents only from --data."""
    pytest.importorskip("matplotlib", reason="report needs matplotlib: pip install matplotlib")
    tensors, metadata = checkpoint.read_safetensors(checkpoint.path_in(str(files / "ok")))
    meta = json.loads(metadata["microgpt"])
    meta["data"] = {"path": str(files / "docs.txt"), "sha256": meta["data"]["sha256"], "mode": "documents",
                    "world": 1}
    os.makedirs(files / "crafted")
    checkpoint.write_safetensors(checkpoint.path_in(str(files / "crafted")), tensors, {"microgpt": json.dumps(meta)})
    blind = run_cli("report", "--out", files / "crafted", "--samples", 2)
    assert blind.returncode == 0, blind.stderr
    assert 'id="loss-by-position"' not in (files / "crafted" / "report.html").read_text()  # no documents read
    given = run_cli("report", "--out", files / "crafted", "--samples", 2, "--data", files / "docs.txt")
    assert given.returncode == 0, given.stderr
    assert 'id="loss-by-position"' in (files / "crafted" / "report.html").read_text()


def test_resume_with_the_data_given_again_finishes_the_run(files, tmp_path):
    run_cli("train", "--data", files / "docs.txt", "--steps", 4, "--stop-after", 2, "--samples", 0,
            "--out", tmp_path / "r")
    out = run_cli("train", "--out", tmp_path / "r", "--resume", "--data", files / "docs.txt", "--samples", 0)
    assert out.returncode == 0, out.stderr
    assert parse_run(out.stdout)["losses"] and "step    4 /" in out.stdout
