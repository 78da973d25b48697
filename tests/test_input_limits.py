"""Input at the edges of what the command line reads: a --config file that is a device, a FIFO or too big,
--max-data-mb far past the memory, environment variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK) and
OMP_NUM_THREADS holding no number, flags given an empty value, and negative numbers written 1e-3 style.
Each bad case must end in one line, `microgpt: error: ...` naming the problem and the fix, exit status 2,
and nothing created.

    python -m pytest -q -p no:cacheprovider tests/test_input_limits.py
"""

import os

import pytest

from conftest import run_cli
from microgpt import data
from microgpt.errors import UsageError
from test_catalog import run_limited  # a child under a memory bound and a time limit: a blow-up or hang fails

DOCS = "ann\nbo\ncy\ndee\nemma\nfay\ngus\nhal\nivy\njo\n"
TINY = ["--n-layer", "1", "--n-embd", "8", "--n-head", "2", "--block-size", "8", "--steps", "2", "--samples", "0"]


@pytest.fixture
def docs(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text(DOCS)
    return path


def refused(result, message: str) -> None:
    """The run ended as bad input does: exit status 2 and this one line on stderr, nothing else."""
    assert (result.returncode, result.stderr) == (2, f"microgpt: error: {message}\n"), result.stderr[-2000:]


# ---- --config FILE.toml: a regular file of at most a megabyte ------------------------------------
def test_a_config_on_a_device_or_fifo_is_refused_not_read_forever(tmp_path):
    fifo = tmp_path / "run.toml"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        result, _ = run_limited(["train", "--config", path, "--out", str(tmp_path / "out")], cwd=tmp_path)
        refused(result, f"--config {path} is not a regular file (a pipe, device or socket); save it to a file "
                        f"and give that")
    assert not (tmp_path / "out").exists()


def test_a_config_over_a_megabyte_is_refused(tmp_path):
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(2**20 + 1)
    result, _ = run_limited(["train", "--config", str(big), "--out", str(tmp_path / "out")], cwd=tmp_path)
    refused(result, f"--config {big} is 1.0 MB, over the 1.0 MB a config file may have; a config holds train's "
                    f"flags, a few lines (is it the right file?)")
    assert not (tmp_path / "out").exists()


def test_a_config_that_is_a_directory_or_missing_is_refused(tmp_path):
    refused(run_cli("train", "--config", tmp_path, "--out", tmp_path / "out"),
            f"--config {tmp_path} is a directory; give a TOML file of train's flags")
    refused(run_cli("train", "--config", tmp_path / "none.toml", "--out", tmp_path / "out"),
            f"config file not found: {tmp_path / 'none.toml'} (no such file; check the path given to --config)")
    assert not (tmp_path / "out").exists()


# ---- --max-data-mb: any positive cap; the read takes the file's size ----------------------------
@pytest.mark.parametrize("cap", ["1e300", "1e13", "30000"])
def test_a_cap_past_the_memory_reads_only_the_file(tmp_path, docs, cap):
    """1e300 MB overflowed the read's size, 1e13 MB too, and 30000 MB reserved 30 GB for a 38-byte file."""
    result, _ = run_limited(["train", "--data", str(docs), "--max-data-mb", cap, *TINY, "--out", str(tmp_path / "r")],
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.exists(tmp_path / "r" / "checkpoint.safetensors")


def test_a_config_files_cap_and_traces_cap_read_only_the_file(tmp_path, docs):
    config = tmp_path / "run.toml"
    config.write_text("max_data_mb = 1e300\n")
    result, _ = run_limited(["train", "--config", str(config), "--data", str(docs), *TINY, "--out",
                             str(tmp_path / "r")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    result, _ = run_limited(["trace", "emma", "--data", str(docs), "--max-data-mb", "1e300"], cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_a_small_cap_names_the_sizes_in_bytes(tmp_path, docs):
    """0.001 MB printed "docs.txt is 0.0 MB, over the 0.001 MB limit"."""
    refused(run_cli("train", "--data", docs, "--max-data-mb", "0.00002", "--out", tmp_path / "r"),
            f"--data {docs} is 38 bytes, over the limit of 20 bytes (--max-data-mb 2e-05); raise it with "
            f"--max-data-mb 1")
    assert not (tmp_path / "r").exists()


def test_a_file_that_grew_since_its_stat_is_read_whole_up_to_the_limit(tmp_path, monkeypatch):
    """The read follows the stat's size and then reads on in pieces: a file that grew is read whole while it
    keeps under the limit, and refused past it."""
    path = tmp_path / "grows.txt"
    path.write_bytes(b"x" * 3000)
    real_fstat = os.fstat

    class Shrunk:  # what a stat taken before the file grew says
        def __init__(self, fd):
            info = real_fstat(fd)
            self.st_mode, self.st_size = info.st_mode, 100
    monkeypatch.setattr(os, "fstat", Shrunk)

    def too_big(size):
        return f"{size} bytes"
    assert data.read_regular(str(path), "--data", "data file", "a text file", 5000, too_big) == b"x" * 3000
    with pytest.raises(UsageError) as grew:   # not too_big's "2001 bytes", whose advice would fail again
        data.read_regular(str(path), "--data", "data file", "a text file", 2000, too_big)
    assert str(grew.value) == (f"--data {path} grew past the limit of 2,000 bytes as it was read (its size said 100 "
                               f"bytes: a file still being written, or a pseudo-file such as /proc's); give a "
                               f"finished file")


@pytest.mark.skipif(not os.path.exists("/proc/self/pagemap"), reason="needs Linux's /proc/self/pagemap")
def test_a_pseudo_file_without_end_is_not_given_a_limit_to_raise(tmp_path):
    """/proc/self/pagemap says size 0 and reads on for terabytes: it was "100.0 MB, over the limit ...; raise
    it with --max-data-mb 101", which failed the same way again."""
    refused(run_cli("train", "--data", "/proc/self/pagemap", "--max-data-mb", "0.01", "--out", tmp_path / "r"),
            "--data /proc/self/pagemap grew past the limit of 10,485 bytes as it was read (its size said 0 bytes: "
            "a file still being written, or a pseudo-file such as /proc's); give a finished file")


# ---- torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK ---------------------------------------
TORCHRUN = "torchrun sets it for each process; unset it to train in one process"


@pytest.mark.parametrize("name, value, bounds, engine", [
    ("WORLD_SIZE", "abc", "of at least 1", "numpy"),
    ("WORLD_SIZE", "0", "of at least 1", "numpy"),
    ("RANK", "abc", "from 0 to 0", "numpy"),
    ("RANK", "1", "from 0 to 0", "numpy"),   # a rank past the world
    ("LOCAL_RANK", "x", "of at least 0", "torch"),
])
def test_a_torchrun_variable_that_is_no_rank_is_one_line(tmp_path, docs, name, value, bounds, engine):
    """int() of them was a ValueError traceback (train.rank_and_world, the torch engine's pick_device)."""
    result = run_cli("train", "--engine", engine, "--data", docs, *TINY, "--out", tmp_path / "r", env={name: value})
    refused(result, f"{name} must be a whole number {bounds} (got {value!r}); {TORCHRUN}")
    assert not (tmp_path / "r").exists()


# ---- flags given "" -----------------------------------------------------------------------------
@pytest.mark.parametrize("args, flag, command", [
    (["train", "--config", "", "--out", "{out}"], "--config", "train"),        # ran with no config
    (["trace", "emma", "--json", ""], "--json", "trace"),                       # printed the text
    (["web", "--build", ""], "--build", "web"),                                 # started a server
    (["vectors", "--out", "{out}", "--configs", ""], "--configs", "vectors"),   # wrote every config
    (["train", "--data", "", "--out", "{out}"], "--data", "train"),
    (["train", "--out="], "--out", "train"),
    (["sample", "--out", ""], "--out", "sample"),
])
def test_an_empty_flag_is_refused_naming_it(tmp_path, args, flag, command):
    result, _ = run_limited([a.format(out=tmp_path / "out") for a in args], cwd=tmp_path)
    refused(result, f"{flag} is empty; give it a value, or leave it out for its default (see: microgpt {command} "
                    f"--help)")
    assert os.listdir(tmp_path) == []


def test_an_empty_required_flag_or_config_key_is_refused_naming_it(tmp_path):
    """vectors --out "" was "microgpt: error: No such file or directory", naming neither flag nor fix."""
    refused(run_cli("vectors", "--out", "", cwd=tmp_path), "--out is empty; give it a value (see: microgpt vectors "
                                                           "--help)")
    config = tmp_path / "run.toml"
    config.write_text('data = ""\n')
    refused(run_cli("train", "--config", config, "--out", tmp_path / "r"),
            "--data is empty; give it a value, or leave it out for its default (see: microgpt train --help)")
    assert os.listdir(tmp_path) == ["run.toml"]


# ---- negative numbers in scientific notation ----------------------------------------------------
def test_a_negative_number_in_e_notation_is_a_value_and_gets_the_range_error(tmp_path, docs):
    """argparse took -1e-3 for a flag: "argument --lr: expected one argument", not the flag's own range error."""
    refused(run_cli("train", "--lr", "-1e-3", "--out", tmp_path / "r"),
            "--lr must not be negative (got -0.001); the reference uses 0.01")
    refused(run_cli("train", "--lr", "-.5E+1", "--out", tmp_path / "r"),
            "--lr must not be negative (got -5.0); the reference uses 0.01")
    refused(run_cli("check", "--h", "-1e-5"),
            "--h -1e-05 is out of range: pick 1e-07 to 3e-05 (default 1e-5); outside it the finite differences' "
            "own error exceeds the tolerance, and correct engines would fail")
    assert not (tmp_path / "r").exists()
    trained = run_cli("train", "--data", docs, *TINY, "--out", tmp_path / "run")
    assert trained.returncode == 0, trained.stderr
    refused(run_cli("sample", "--temperature", "-1e-3", "--out", tmp_path / "run"),
            "--temperature must be >= 0 (got -0.001); try 0.5, or 0 for the most likely tokens")


# ---- OMP_NUM_THREADS: checked as NUMBA_NUM_THREADS is ------------------------------------------
@pytest.mark.parametrize("threads", ["abc", "0"])
def test_a_bad_omp_thread_count_is_one_line_before_torch_reads_it(tmp_path, docs, threads):
    """The torch engine said "torch: 2 CPU threads (OMP_NUM_THREADS)" for OMP_NUM_THREADS=abc or 0 (torch,
    after libgomp's warning, had ignored it); now it is refused, in the words NUMBA_NUM_THREADS gets."""
    result = run_cli("train", "--engine", "torch", "--data", docs, *TINY, "--out", tmp_path / "r",
                     env={"OMP_NUM_THREADS": threads})
    refused(result, f"OMP_NUM_THREADS must be a whole number from 1 to 4096 (got {threads!r}); unset it to let "
                    f"the engine choose")
    assert not (tmp_path / "r").exists()
