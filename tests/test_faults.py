"""Fault tests: real training processes, real signals, kill -9, two runs on one --out, torn metrics.

    python -m pytest -q tests/test_faults.py
    MICROGPT_KILL_TRIALS=40 python -m pytest -q tests/test_faults.py -k kill -s   # more kill -9 trials

Every run is `python -m microgpt train` with the numpy engine on a tiny model (a step takes about a
millisecond, a checkpoint with its fsyncs about ten), so a test can stop it at any point. "Exact"
means: the final checkpoint's every tensor, its RNG state and every (step, loss, lr, val_loss) of
metrics.jsonl equal those of one uninterrupted run, which the module trains once.
"""

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, default_signals, run_cli
from microgpt import checkpoint
from microgpt.run import Run

pytestmark = pytest.mark.slow  # minutes of subprocesses: scripts/test.sh --fast leaves this module out

STEPS = 150
FLAGS = ["--engine", "numpy", "--n-layer", "1", "--n-embd", "16", "--block-size", "16", "--steps", str(STEPS),
         "--val-docs", "20", "--eval-every", "50", "--samples", "0"]
ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def start(out, *flags) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "microgpt", "train", *FLAGS, "--out", str(out), *flags],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)


def wait_for_step(proc: subprocess.Popen, step: int, timeout: float = 60) -> None:
    """Read the child's output until it prints the line of `step` (its output is line-flushed)."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(deadline - time.monotonic()):
            line = proc.stdout.readline()
            assert line, f"the run ended before step {step}: {proc.stderr.read()[-2000:]}"
            if line.startswith(f"step {step:4d} /"):
                return
    raise AssertionError(f"no step {step} within {timeout} s")


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def temp_files(out) -> list[str]:
    return [f for f in os.listdir(out) if f.endswith(".tmp")]


def saved_step(out) -> int:
    return Run.load(str(out)).step


def metric_rows(out) -> list[tuple]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [(r["step"], r.get("loss"), r.get("lr"), r.get("val_loss")) for r in rows]


def same_run(ours, reference) -> bool:
    """Bit-identical: every tensor, the step, the RNG state, every metric but the step times."""
    a, b = Run.load(str(ours)), Run.load(str(reference))
    return (a.step == b.step and a.rng.getstate() == b.rng.getstate() and a.params == b.params
            and a.state == b.state and metric_rows(ours) == metric_rows(reference))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of the module's settings."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    rc, _, err = finish(start(out))
    assert rc == 0, err
    return out


# ---- signals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_stop_signal_saves_the_step_reached_and_resumes_exactly(tmp_path, reference, signum):
    out = tmp_path / "run"
    proc = start(out, "--save-every", "1000")  # the only save before the end is the one the signal asks for
    wait_for_step(proc, 5)
    proc.send_signal(signum)
    rc, printed, err = finish(proc)
    assert rc == 128 + signum, err
    name = signal.Signals(signum).name
    stop_line = [line for line in printed.splitlines() if line.startswith(f"stopped by {name} after step ")]
    assert len(stop_line) == 1, printed[-500:]
    reached = int(stop_line[0].split("after step ")[1].split(":")[0])
    assert 5 <= reached < STEPS and saved_step(out) == reached
    assert metric_rows(out)[-1][0] == reached and not temp_files(out)

    done = run_cli("train", "--out", out, "--resume", timeout=120)
    assert done.returncode == 0, done.stderr
    assert same_run(out, reference)


@pytest.fixture
def default_handlers():
    """The default action for the stop signals in this process while a test installs its own."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    default_signals()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_second_signal_during_a_save_does_not_abandon_it(default_handlers):
    """In-process, real signals: during a save both are deferred; during a step the second stops at once."""
    from microgpt.train import Stopped, _Interrupt
    with _Interrupt() as interrupt:
        with interrupt.save_in_progress():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)  # neither raises inside the save
            time.sleep(0.01)
        assert interrupt.signum == signal.SIGTERM  # the first one is what the run stops for
        with pytest.raises(Stopped) as stopped:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.01)
        assert stopped.value.signum == signal.SIGHUP
    with _Interrupt(at_once=False) as interrupt:  # under torchrun: each signal arrives twice, both kept
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert interrupt.signum == signal.SIGTERM


def test_ignored_signal_stays_ignored(default_handlers):
    """Under nohup SIGHUP is ignored; the run keeps ignoring it."""
    from microgpt.train import _Interrupt
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with _Interrupt():
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL


def test_signals_at_save_time_leave_a_whole_checkpoint(tmp_path, reference):
    """SIGTERM twice the moment a temp file appears (a periodic save is being written): the run exits
    128 + 15 either way, and the checkpoint it leaves loads and resumes exactly."""
    out = tmp_path / "run"
    proc = start(out, "--save-every", "1")
    wait_for_step(proc, 10)
    while not temp_files(out) and proc.poll() is None:
        pass
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc)
    assert rc == 128 + signal.SIGTERM, err
    assert not temp_files(out) and saved_step(out) >= 10
    done = run_cli("train", "--out", out, "--resume", timeout=120)
    assert done.returncode == 0, done.stderr
    assert same_run(out, reference)


# ---- kill -9 -----------------------------------------------------------------------------------
def test_kill_9_at_random_points_and_during_saves(tmp_path, reference):
    """Half the kills at a random moment, half the moment a checkpoint's temp file appears. Each run is
    then resumed to the end; prints the figures (pytest -s)."""
    trials = int(os.environ.get("MICROGPT_KILL_TRIALS", "8"))
    rng = random.Random(1)
    loadable = exact = mid_save = 0
    failures = []
    for trial in range(trials):
        out = tmp_path / f"kill{trial}"
        proc = start(out, "--save-every", "1")
        wait_for_step(proc, rng.randrange(2, STEPS // 2))  # step 2 is printed after step 1's save
        if trial % 2:  # the moment a save is under way
            while not temp_files(out) and proc.poll() is None:
                pass
        else:
            time.sleep(rng.uniform(0, 0.03))
        proc.kill()
        finish(proc)
        mid_save += bool(temp_files(out))  # the temp file left behind: it died inside a save
        try:
            saved_step(out)
            loadable += 1
        except Exception as e:  # noqa: BLE001 (counted and asserted below)
            failures.append(f"trial {trial}: {e}")
            continue
        done = run_cli("train", "--out", out, "--resume", "--save-every", "1000", timeout=120)
        if done.returncode == 0 and same_run(out, reference) and not temp_files(out):
            exact += 1
        else:
            failures.append(f"trial {trial}: resume exit {done.returncode}, {done.stderr[-500:]}")
    print(f"\nkill -9: {trials} kills ({mid_save} inside a save), checkpoints loadable {loadable} of {trials}, "
          f"resumes exact {exact} of {trials}")
    assert loadable == exact == trials, failures
    assert mid_save >= trials // 4  # most of the targeted half did land inside saves


# ---- one run per --out -------------------------------------------------------------------------
def test_second_run_on_the_same_out_is_refused_and_the_first_is_unharmed(tmp_path, reference):
    out = tmp_path / "run"
    first = start(out, "--save-every", "1")
    wait_for_step(first, 3)
    first.send_signal(signal.SIGSTOP)  # hold it mid-run, lock held, while the others try
    try:
        message = f"microgpt: error: {out} is in use by another training run (pid {first.pid})"
        for extra in ([], ["--resume"]):
            second = run_cli("train", *FLAGS, "--out", out, *extra, timeout=60)
            assert second.returncode == 2 and second.stderr.strip() == message, second.stderr
        for reader in (["sample", "--out", out, "--num", "2"], ["trace", "--out", out, "emma"]):
            read = run_cli(*reader, timeout=120)  # reading a directory being trained is fine
            assert read.returncode == 0, read.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    rc, _, err = finish(first)
    assert rc == 0 and err == "", err
    assert same_run(out, reference)


def test_a_killed_runs_lock_never_blocks(tmp_path, reference):
    out = tmp_path / "run"
    proc = start(out, "--save-every", "1000")
    wait_for_step(proc, 2)
    proc.kill()
    finish(proc)
    assert os.path.exists(out / ".lock") and not checkpoint.exists(out)  # the kernel dropped its flock
    rc, _, err = finish(start(out))  # a fresh run on the same directory
    assert rc == 0, err
    assert same_run(out, reference)


def test_lock_in_process_and_without_fcntl(tmp_path, monkeypatch):
    """flock: a second lock on the directory is refused while the first is held, granted after.
    The fallback (no fcntl, as on Windows): a lock file naming a live pid refuses; a dead pid is stale."""
    from microgpt import lock
    from microgpt.errors import UsageError
    with lock.RunLock(str(tmp_path)):
        with pytest.raises(UsageError, match=rf"in use by another training run \(pid {os.getpid()}\)"):
            lock.RunLock(str(tmp_path)).__enter__()
    with lock.RunLock(str(tmp_path)):
        pass
    with lock.RunLock(str(tmp_path / "new" / "run")):  # a run that fails before writing leaves no directory,
        assert os.listdir(tmp_path / "new" / "run") == [".lock"]   # nor the folders it made above it
    assert not (tmp_path / "new").exists()
    with lock.RunLock(str(tmp_path / "kept" / "run")):
        (tmp_path / "kept" / "user file").write_text("x")   # a folder it made, written meanwhile, stays
    assert os.listdir(tmp_path / "kept") == ["user file"]

    monkeypatch.setattr(lock, "fcntl", None)
    path = tmp_path / "fallback"
    path.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        (path / ".lock").write_text(f"{live.pid}\n")
        with pytest.raises(UsageError, match=rf"in use by another training run \(pid {live.pid}\)"):
            lock.RunLock(str(path)).__enter__()
        (path / ".lock").write_text(f"{dead.pid}\n")
        with lock.RunLock(str(path)):
            assert (path / ".lock").read_text() == f"{os.getpid()}\n"
        assert not (path / ".lock").exists()  # the fallback removes its file on exit
    finally:
        live.kill()
        live.wait()


# ---- torn metrics ------------------------------------------------------------------------------
def test_torn_metrics_line_is_skipped_with_one_warning(tmp_path, reference):
    out = tmp_path / "run"
    rc, _, err = finish(start(out, "--stop-after", "40"))
    assert rc == 0, err
    with open(out / "metrics.jsonl", "ab") as f:  # what a killed writer and a racing one leave
        f.write(b'{"step": 41, "loss": 2.1\x00\x00\x00\n{"step": "x"}\nnot json at all\n\xff\xfe\n{"step": 4')
    done = run_cli("train", "--out", out, "--resume", timeout=120)
    warnings = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 0 and len(warnings) == 1 and "skipped 5 lines of" in warnings[0], done.stderr
    assert same_run(out, reference)  # the garbage is gone and every step is there once

    pytest.importorskip("matplotlib", reason="report draws with matplotlib")
    with open(out / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 9, "lo')
    report = run_cli("report", "--out", out, timeout=120)
    lines = [line for line in report.stderr.splitlines() if line.strip() and not line.startswith("report [")]
    assert report.returncode == 0 and len(lines) == 1 and "skipped 1 line of" in lines[0], report.stderr


# ---- Ctrl-C while the command starts --------------------------------------------------------------------
def test_ctrl_c_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    """The parser imports every command's module before cli.main's handlers were in place: a Ctrl-C in that
    first moment (seconds where torch loads) printed a KeyboardInterrupt traceback."""
    import microgpt
    from microgpt import cli

    class Interrupting:   # a Ctrl-C landing while microgpt.cli is imported
        def find_spec(self, name, path=None, target=None):
            if name == "microgpt.cli":
                raise KeyboardInterrupt
    monkeypatch.delitem(sys.modules, "microgpt.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    assert microgpt.run_cli() == 130
    assert capsys.readouterr().err == "microgpt: interrupted\n"
    monkeypatch.undo()

    def interrupted():   # ... or while the parser imports the commands' modules
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["sample"]) == 130 and capsys.readouterr().err == "microgpt: interrupted\n"


# ---- a closed stdout ------------------------------------------------------------------------------------
def test_a_closed_stdout_stops_the_run_with_its_checkpoint_saved(tmp_path, reference):
    """`train | head`: when the reader goes, the run ended at its next progress line with exit 0, no
    message and no checkpoint. It now stops as at a signal: the checkpoint saved, a line on stderr with the
    command that continues, exit 141 (128 + SIGPIPE, as a shell reports it); continued, it is exact."""
    out = tmp_path / "run"
    proc = start(out)
    for _ in range(5):   # the header, then a step or two
        assert proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    step = saved_step(out)
    assert 0 < step < STEPS
    assert err.strip().splitlines()[-1] == (f"stopped as stdout was closed after step {step}: checkpoint saved in "
                                            f"{out}; continue with: microgpt train --out {out} --resume")
    done = run_cli("train", "--out", out, "--resume", timeout=120)
    assert done.returncode == 0, done.stderr
    assert same_run(out, reference)


# ---- bench ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_stops_bench_at_once(signum):
    """bench's rows are training runs, whose signal handling ended the row in flight early; bench then went on
    to the next row and printed its table, exit 0, with that row's loss from a shortened run. It now stops."""
    proc = subprocess.Popen([sys.executable, "-m", "microgpt", "bench", "--engines", "scalar,numpy", "--steps", "1000000",
                             "--batched-steps", "2", "--rounds", "1", "--scalar-steps", "1", "--json"], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:   # the scalar row's progress line: the numpy row (a million steps) is next
        assert sel.select(deadline - time.monotonic()), "bench printed no progress"
        line = proc.stderr.readline()
        assert line, "bench ended before its first row"
        if "scalar" in line:
            break
    time.sleep(2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum and out == "" and err.strip().splitlines()[-1] == "microgpt: interrupted", \
        (proc.returncode, out[-500:], err[-2000:])


# ---- a full disk -------------------------------------------------------------------------------------
def test_a_full_disk_keeps_the_last_checkpoint_and_says_how_to_go_on(tmp_path, reference, monkeypatch, capsys):
    """ENOSPC in the second save, then in the resumed run's rewrite of metrics.jsonl (the write itself
    fails, inside durable.replace_file, as a full disk makes it): each ends in one line that names what
    could not be written, the checkpoint that is whole and the command to go on with; run once there is
    room, that command ends where an uninterrupted run does. (It was a bare "No space left on device".)"""
    import errno
    import shlex

    from microgpt import cli, durable
    write = durable.replace_file
    full = {"checkpoint.safetensors": [2], "metrics.jsonl": []}   # which call, per file name, finds the disk full
    calls = {name: 0 for name in full}

    def replace_file(path, writer):
        name = os.path.basename(path)
        calls[name] = calls.get(name, 0) + 1
        if calls[name] in full.get(name, []):
            def no_room(f):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write(path, no_room)
        return write(path, writer)
    monkeypatch.setattr(durable, "replace_file", replace_file)
    out = tmp_path / "run"
    assert cli.main(["train", *FLAGS, "--out", str(out), "--save-every", "50"]) == 1
    err = capsys.readouterr().err
    go_on = f"microgpt train --out {shlex.quote(str(out))} --resume"
    assert err == (f"microgpt: error: could not write the checkpoint in {out} at step 100 (No space left on device); "
                   f"the checkpoint there (step 50) is whole; once {out} can be written again, continue with: "
                   f"{go_on}\n")
    assert saved_step(out) == 50 and temp_files(out) == []
    full["metrics.jsonl"], calls["metrics.jsonl"] = [1], 0   # the resume's first write: the log cut to step 50
    assert cli.main(shlex.split(go_on)[1:]) == 1
    assert capsys.readouterr().err == (
        f"microgpt: error: could not write metrics.jsonl in {out} at step 50 (No space left on device); the "
        f"checkpoint there (step 50) is whole; once {out} can be written again, continue with: {go_on}\n")
    monkeypatch.setattr(durable, "replace_file", write)   # room again
    assert cli.main(shlex.split(go_on)[1:]) == 0
    assert same_run(out, reference)


# ---- torchrun ----------------------------------------------------------------------------------
DDP_FLAGS = ["--engine", "torch", "--n-layer", "1", "--n-embd", "16", "--block-size", "16", "--steps", "40",
             "--batch-size", "3", "--samples", "0", "--save-every", "1000"]


def torchrun(out, *flags, wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "microgpt", "train", *DDP_FLAGS, "--out", str(out), *flags]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**ENV, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    if wait:
        rc, _, err = finish(proc, timeout=300)
        assert rc == 0, err[-3000:]
    return proc


def worker_pid(agent_pid: int, rank: int) -> int:
    """The pid of torchrun's worker of this rank: a child of the agent with RANK=<rank> in its environment."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == agent_pid and f"RANK={rank}".encode() in environ:
            return int(entry)
    raise AssertionError(f"no worker of rank {rank} under pid {agent_pid}")


def test_torchrun_signal_to_one_rank_stops_every_rank_at_one_step(tmp_path):
    """SIGTERM to rank 1 alone: rank 0, which prints and saves, stops at the same step (else it would
    wait for rank 1 in the next step's all_reduce and save nothing); the checkpoint resumes exactly."""
    pytest.importorskip("torch", reason="torchrun needs torch: pip install torch")
    if not os.path.isdir("/proc/self"):
        pytest.skip("finding torchrun's workers reads /proc (Linux)")
    reference, out = tmp_path / "reference", tmp_path / "run"
    uninterrupted = torchrun(reference, wait=False)  # side by side: each launch spends seconds importing torch
    agent = torchrun(out, wait=False)
    wait_for_step(agent, 3, timeout=180)
    os.kill(worker_pid(agent.pid, 1), signal.SIGTERM)
    finish(agent, timeout=120)  # torchrun itself reports its worker's 143 as a failure
    reached = saved_step(out)
    assert 3 <= reached < 40 and metric_rows(out)[-1][0] == reached
    torchrun(out, "--resume")
    rc, _, err = finish(uninterrupted, timeout=300)
    assert rc == 0, err[-3000:]
    assert same_run(out, reference)


def test_torchrun_closed_stdout_stops_every_rank_at_one_step(tmp_path):
    """`torchrun ... train | head`: only rank 0 prints, so only it sees the pipe close. It stopped alone (torchrun
    then ended rank 1); now that the ranks leave together (Engine.leave_processes), rank 0 would wait there for
    a rank 1 gone on to its next step, for ever. Every rank stops at the same step instead, the checkpoint saved,
    and only rank 0 says so (torchrun reports the exit status 141 as a failure); the run resumes exactly."""
    pytest.importorskip("torch", reason="torchrun needs torch: pip install torch")
    reference, out = tmp_path / "reference", tmp_path / "run"
    uninterrupted = torchrun(reference, wait=False)
    agent = torchrun(out, wait=False)
    wait_for_step(agent, 3, timeout=180)
    agent.stdout.close()
    try:
        _, _, err = finish(agent, timeout=120)
    except subprocess.TimeoutExpired:
        agent.terminate()   # torchrun sends it on to its workers, and kills them 30 s later
        agent.wait(timeout=60)
        raise AssertionError("the ranks did not stop: one of them waits for the others") from None
    reached = saved_step(out)
    assert 3 <= reached < 40 and metric_rows(out)[-1][0] == reached
    stop = (f"stopped as stdout was closed after step {reached}: checkpoint saved in {out}; continue with: "
            f"microgpt train --out {out} --resume")
    assert err.count(stop) == 1, err[-3000:]
    torchrun(out, "--resume")
    rc, _, err = finish(uninterrupted, timeout=300)
    assert rc == 0, err[-3000:]
    assert same_run(out, reference)
