"""Every bad input: non-zero exit, one line on stderr naming the problem and the fix, no traceback."""

import pytest

from conftest import run_cli


@pytest.fixture
def files(tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("ann\nbo\ncy\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("  \n\t\n   \n")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.txt").write_bytes("café\nnaïve\n".encode("latin-1"))
    (tmp_path / "bad_ckpt").mkdir()
    (tmp_path / "bad_ckpt" / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    trained = run_cli("train", "--data", docs, "--steps", 2, "--samples", 0, "--out", tmp_path / "ok")
    assert trained.returncode == 0, trained.stderr
    return tmp_path


CASES = {
    "missing file": (["train", "--data", "{d}/nope.txt"], "not found"),
    "empty file": (["train", "--data", "{d}/empty.txt"], "empty"),
    "whitespace-only file": (["train", "--data", "{d}/blank.txt"], "empty"),
    "binary file": (["train", "--data", "{d}/binary.bin"], "binary"),
    "non-UTF-8 file": (["train", "--data", "{d}/latin1.txt"], "UTF-8"),
    "directory as data": (["train", "--data", "{d}"], "directory"),
    "zero steps": (["train", "--data", "{d}/docs.txt", "--steps", "0"], "--steps"),
    "negative steps": (["train", "--data", "{d}/docs.txt", "--steps", "-3"], "--steps"),
    "width not divisible by heads": (["train", "--data", "{d}/docs.txt", "--n-embd", "10", "--n-head", "4"], "divisible"),
    "negative temperature": (["train", "--data", "{d}/docs.txt", "--temperature", "-0.5"], "--temperature"),
    "negative temperature in sample": (["sample", "--out", "{d}/ok", "--temperature", "-1"], "--temperature"),
    "unknown engine": (["train", "--data", "{d}/docs.txt", "--engine", "jax"], "unknown engine"),
    "unknown preset": (["train", "--data", "{d}/docs.txt", "--preset", "huge"], "unknown preset"),
    "missing checkpoint": (["sample", "--out", "{d}/none"], "no checkpoint"),
    "missing checkpoint on resume": (["train", "--out", "{d}/none", "--resume"], "no checkpoint"),
    "corrupt checkpoint": (["sample", "--out", "{d}/bad_ckpt"], "corrupt"),
    "prompt outside vocabulary": (["sample", "--out", "{d}/ok", "--prompt", "zq"], "vocabulary"),
    "prompt longer than the block": (["sample", "--out", "{d}/ok", "--prompt", "a" * 20], "--prompt"),
    "existing checkpoint without --resume": (["train", "--data", "{d}/docs.txt", "--out", "{d}/ok"], "--resume"),
    "changed flag on resume": (["train", "--out", "{d}/ok", "--resume", "--lr", "0.5"], "differs"),
    "zero batch size": (["train", "--data", "{d}/docs.txt", "--batch-size", "0"], "--batch-size"),
    "all documents held out": (["train", "--data", "{d}/docs.txt", "--val-docs", "3"], "--val-docs"),
    "float32 on the scalar engine": (["train", "--data", "{d}/docs.txt", "--dtype", "float32"], "float"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line(files, case):
    args, expected = CASES[case]
    out = run_cli(*[a.format(d=files) for a in args], cwd=files)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("microgpt: error:") and expected in lines[0], lines[0]


def test_long_documents_are_cut_and_counted(tmp_path):
    data = tmp_path / "long.txt"
    data.write_text("short\n" + "x" * 40 + "\n" + "y" * 15 + "\n" + "z" * 16 + "\n")
    out = run_cli("train", "--data", data, "--steps", 2, "--samples", 0, "--out", tmp_path / "r")
    assert out.returncode == 0, out.stderr
    # block 16 holds BOS + 15 characters + BOS: the 40- and 16-character documents lose tokens
    assert "note: 2 documents are longer than the block" in out.stdout


def test_corrupt_checkpoint_is_not_overwritten_by_train(files):
    before = (files / "bad_ckpt" / "checkpoint.safetensors").read_bytes()
    out = run_cli("train", "--data", files / "docs.txt", "--out", files / "bad_ckpt")
    assert out.returncode != 0
    assert (files / "bad_ckpt" / "checkpoint.safetensors").read_bytes() == before
