"""Bad input to the tools (trace, conform, check, report): each case must end in the one-line
`microgpt: error: ...` naming the problem and the fix, exit status 2, before any long work and
without a traceback; the reports' skipped lines end in one warning, not a crash.

    python -m pytest -q -p no:cacheprovider tests/test_tool_inputs.py
"""

import os
import shutil

import pytest

from microgpt.cli import main


def usage_error(args, capsys) -> str:
    """Run `microgpt ARGS` in-process; assert exit status 2, nothing on stdout and one line on stderr;
    return that line."""
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("microgpt: error: "), (out[-500:], err)
    return err.strip()


@pytest.mark.parametrize("command, words", [("trace", "--digits DIGITS decimals printed, 0 to 17 (default 4)"),
                                            ("check", "--h H finite-difference step, 1e-07 to 3e-05 (default 1e-5)")])
def test_help_states_the_bounds(command, words, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert words in " ".join(capsys.readouterr().out.split())


# ---- trace ------------------------------------------------------------------------------------
@pytest.mark.parametrize("digits", ["18", "100000000", "-1"])
def test_trace_digits_is_bounded(digits, capsys):
    assert usage_error(["trace", "emma", "--digits", digits], capsys) == (
        f"microgpt: error: --digits {digits} is out of range: pick 0 to 17 (a float64 holds about 17 significant "
        "digits; more decimals print nothing but noise)")


def test_trace_unknown_param_fails_before_the_trace(capsys):
    line = usage_error(["trace", "emma", "--param", "nosuch"], capsys)
    assert line.startswith("microgpt: error: --param 'nosuch' is not a parameter; use NAME or NAME[row,col] "
                           "with NAME one of: wte, wpe, lm_head, ")


@pytest.mark.parametrize("spec", ["wte[-1,0]", "wte[0,-1]", "wte[27,0]"])
def test_trace_param_index_out_of_range_names_the_shape(spec, capsys):
    assert usage_error(["trace", "emma", "--param", spec], capsys) == (
        f"microgpt: error: --param '{spec}': index out of range; wte has shape (27, 16), "
        "so pick 0 <= row < 27 and 0 <= col < 16")


def test_trace_json_never_replaces_what_it_did_not_write(tiny, tmp_path, capsys):
    """--json wrote over any file in place, the run's checkpoint included (sample then called it corrupt), and
    a Ctrl-C or a full disk mid-write left half a JSON file. It now refuses the checkpoint's name and any file
    that is not a trace's JSON before tracing, and writes a temp file that it renames; tracing again into its
    own file replaces it."""
    import json
    run = tmp_path / "run"
    shutil.copytree(tiny, run)
    before = (run / "checkpoint.safetensors").read_bytes()
    assert usage_error(["trace", "emma", "--out", str(run), "--json", str(run / "checkpoint.safetensors")], capsys) == (
        f"microgpt: error: --json {run / 'checkpoint.safetensors'}: checkpoint.safetensors is the name of a run's "
        f"checkpoint, which the trace would replace; choose another name, e.g. --json trace.json")
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": 1}')
    assert usage_error(["trace", "emma", "--out", str(run), "--json", str(mine)], capsys) == (
        f"microgpt: error: --json {mine} exists and is not a trace's JSON; choose another file (nothing was written)")
    assert (run / "checkpoint.safetensors").read_bytes() == before and mine.read_text() == '{"mine": 1}'
    trace = tmp_path / "trace.json"
    for doc in ("emma", "ava"):   # the second replaces the first: a file the trace wrote
        assert main(["trace", doc, "--out", str(run), "--json", str(trace)]) == 0
        assert json.loads(trace.read_text())["doc"] == doc
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json", "run", "trace.json"]   # no temp file


# ---- conform --dump ---------------------------------------------------------------------------
NUMBERS = "a number or non-empty lists of numbers nested as its shape"


@pytest.mark.parametrize("text, problem", [
    ('[1,2]', " holds a JSON list; a dump is a JSON object of named entries (README, 'Porting microgpt')"),
    ('{"config":"block8","num_docs":"x"}', f": 'num_docs' must be {NUMBERS}, not a string"),
    ('{"config":"block8","adam.m.wte":{"a":1}}', f": 'adam.m.wte' must be {NUMBERS}, not an object"),
    ('{"config":"block8","losses":[]}', f": 'losses' must be {NUMBERS}, not an empty list"),
    ('{"config":"block8","init.wte":[]}', f": 'init.wte' must be {NUMBERS}, not an empty list"),
    ('{"init.wte":[[1,2],[3]]}', f": 'init.wte' must be {NUMBERS}, not lists of unequal shapes"),
    ('{"init.wte":[[1,"a"]]}', f": 'init.wte' must be {NUMBERS}, not a list holding a list holding a string"),
    ('{"num_params":true}', f": 'num_params' must be {NUMBERS}, not true or false"),
    ('{"tokens":[[0,2.5,0]]}', ": 'tokens' must be a list of documents, each a list of token ids [BOS, ids..., BOS], "
                               "not a document holding the number 2.5"),
    ('{"samples":["ann",1]}', ": 'samples' must be a list of strings, not a list holding the number 1"),
    ('{"config":3}', ": 'config' must be a config name (default, wide, block8, seed7, unicode), not the number 3"),
    ('{"a":' + "[" * 900 + "]" * 900 + "}", " nests its lists too deeply for any tensor"),
])
def test_conform_malformed_dump_names_the_entry(text, problem, tmp_path, capsys):
    dump = tmp_path / "dump.json"
    dump.write_text(text)
    line = usage_error(["conform", "--dump", dump, "--vectors", tmp_path / "vectors"], capsys)
    assert line.startswith(f"microgpt: error: --dump {dump}{problem}")
    assert not (tmp_path / "vectors").exists()  # refused before any vectors are written


def test_conform_safetensors_dump_with_malformed_samples(tmp_path, capsys):
    from microgpt.checkpoint import write_safetensors
    from microgpt.tensor import Tensor
    dump = tmp_path / "dump.safetensors"
    write_safetensors(str(dump), {"losses": Tensor.from_floats((1,), [3.3])}, {"config": "block8", "samples": "[1"})
    assert usage_error(["conform", "--dump", dump, "--vectors", tmp_path / "vectors"], capsys) == (
        f"microgpt: error: --dump {dump}: 'samples' must be a list of strings, not a string; "
        "see README, 'Porting microgpt'")


# ---- conform --vectors ------------------------------------------------------------------------
@pytest.mark.parametrize("manifest, problem", [
    ('{"configs": ["block8"', "is damaged (not valid JSON: Expecting ',' delimiter: line 2 column 1 (char 22)); "
                              "write the vectors again with: microgpt vectors --out {v}"),
    ('{"configs": "block8", "files": {}}', "is damaged (not a JSON object with a list of 'configs' and a 'files' "
                                           "object of SHA-256s); write the vectors again with: microgpt vectors --out {v}"),
    ('{"configs": ["block8"], "files": {}}', "lists no block8/config.json: the vectors are incomplete; write them "
                                             "again with: microgpt vectors --out {v} --configs block8"),
])
def test_conform_damaged_vectors_folder_says_to_write_them_again(manifest, problem, tmp_path, capsys):
    vectors, dump = tmp_path / "vectors", tmp_path / "dump.json"
    (vectors / "block8").mkdir(parents=True)
    (vectors / "manifest.json").write_text(manifest + "\n")
    dump.write_text('{"config": "block8", "losses": [3.3]}')
    assert usage_error(["conform", "--dump", dump, "--vectors", vectors], capsys) == (
        f"microgpt: error: {vectors / 'manifest.json'} " + problem.format(v=vectors))


# ---- check --h --------------------------------------------------------------------------------
@pytest.mark.parametrize("h, shown", [("1e10", "1e+10"), ("1e300", "1e+300"), ("1", "1"), ("1e-12", "1e-12"),
                                      ("1e-320", "9.99989e-321"), ("1e-4", "0.0001"), ("1e-8", "1e-08")])
def test_check_h_outside_the_working_range_is_refused(h, shown, capsys):
    assert usage_error(["check", "--engines", "scalar", "--h", h], capsys) == (
        f"microgpt: error: --h {shown} is out of range: pick 1e-07 to 3e-05 (default 1e-5); outside it the finite "
        "differences' own error exceeds the tolerance, and correct engines would fail")


# ---- report -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A finished 6-step scalar run of a tiny model (tests/tiny_run.py), trained once for this module."""
    from tiny_run import tiny_run
    return tiny_run(tmp_path_factory.mktemp("tiny") / "run")


def test_report_skips_metrics_lines_missing_a_key_with_one_warning(tiny, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="report draws with matplotlib")
    run = tmp_path / "run"
    shutil.copytree(tiny, run)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:  # no "lr"; no "loss" nor "val_loss"
        f.write('{"step": 7, "loss": 3.0}\n{"step": 8, "lr": 0.01, "dt": 0.1}\n')
    capsys.readouterr()
    assert main(["report", "--out", run, "--samples", "1", "--loss-docs", "1"]) == 0
    out, err = capsys.readouterr()
    assert out == f"wrote {run / 'report.html'}\n" and (run / "report.html").is_file()
    assert [line for line in err.splitlines() if not line.startswith("report [")] == [
        f"warning: skipped 2 lines of {run / 'metrics.jsonl'} that are not a metrics row (torn by a killed run, or "
        f"written by something else)"]


def test_report_checks_docs_before_any_chart(tiny, capsys):
    pytest.importorskip("matplotlib", reason="report draws with matplotlib")
    assert usage_error(["report", "--out", tiny, "--docs", "emma,Zz!"], capsys) == (
        "microgpt: error: characters not in the model's vocabulary: '!Z'; use only these: "
        "'abcdefghijklmnopqrstuvwxyz'")


def test_report_checks_it_can_write_before_any_chart(tiny, monkeypatch, capsys):
    pytest.importorskip("matplotlib", reason="report draws with matplotlib")
    import microgpt.run

    def refuse(*args, **kwargs):  # what a folder without write permission does to a non-root user
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(microgpt.run.tempfile, "mkstemp", refuse)
    assert usage_error(["report", "--out", tiny], capsys) == (   # report.html goes in the run's own folder
        f"microgpt: error: cannot write to --out {tiny} (Permission denied); copy the run's folder where you can "
        f"write, and give that --out")
    fresh = os.path.join(os.path.dirname(tiny), "fresh")   # train's --out is the user's choice: another will do
    assert usage_error(["train", "--steps", "1", "--out", str(fresh)], capsys) == (
        f"microgpt: error: cannot write to --out {fresh} (Permission denied); choose a directory you can write")
    assert not os.path.exists(fresh)


def test_a_folder_named_report_html_is_named_before_any_chart_and_kept(tiny, tmp_path, capsys):
    """It failed at the very end, after every chart, with "Is a directory: .../report.html.tmp", and left
    that temp file behind."""
    pytest.importorskip("matplotlib", reason="report draws with matplotlib")
    run = tmp_path / "run"
    shutil.copytree(tiny, run)
    (run / "report.html").mkdir()
    (run / "report.html" / "mine.txt").write_text("kept")
    assert usage_error(["report", "--out", str(run)], capsys) == (
        f"microgpt: error: {run / 'report.html'} is a folder, and the report is written there; move it")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.safetensors", "metrics.jsonl", "report.html"]
    assert (run / "report.html" / "mine.txt").read_text() == "kept"


def test_a_full_disk_under_any_command_says_to_free_space(tiny, tmp_path, monkeypatch, capsys):
    """A write that finds the disk full (inside durable.replace_file) ends in one line that says so and what to
    do, and leaves the target as it was: export's own message, and report's through the command line's
    handler of any failed write."""
    import errno
    import os

    from microgpt import durable
    write = durable.replace_file

    def no_room(path, writer):
        def fail(f):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(path, fail)
    monkeypatch.setattr(durable, "replace_file", no_room)
    target = tmp_path / "export" / "model.safetensors"
    assert usage_error(["export", "--out", tiny, "--to", str(target)], capsys) == (
        f"microgpt: error: cannot write --to {target}: No space left on device; free some space, or choose another "
        f"folder (nothing was replaced)")
    assert os.listdir(target.parent) == []
    pytest.importorskip("matplotlib", reason="report draws with matplotlib")
    run = tmp_path / "run"
    shutil.copytree(tiny, run)
    assert main(["report", "--out", str(run), "--samples", "1", "--loss-docs", "1"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("report [")]
    assert err == ["microgpt: error: No space left on device; free some space, then run it again"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.safetensors", "metrics.jsonl"]


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "broken link"])
def test_a_metrics_file_that_is_no_file_is_one_line_not_a_hang(tiny, tmp_path, kind, capsys):
    """metrics.jsonl as a FIFO blocked a resume forever, and as a link to /dev/zero read until memory ran out
    (then blamed the model's size); report read it too."""
    import os
    run = tmp_path / "run"
    shutil.copytree(tiny, run)
    metrics = run / "metrics.jsonl"
    metrics.unlink()
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this system")
        os.mkfifo(metrics)
    elif kind == "device":
        if not os.path.exists("/dev/zero"):
            pytest.skip("no /dev/zero on this system")
        metrics.symlink_to("/dev/zero")
    elif kind == "folder":
        metrics.mkdir()
    else:
        metrics.symlink_to(tmp_path / "nowhere")
    want = (f"microgpt: error: {metrics} is not a regular file (a folder, pipe, device or broken link), so it is "
            f"no run's metrics; move it aside and run again")
    assert usage_error(["train", "--out", str(run), "--resume", "--steps", "7"], capsys) == want
    pytest.importorskip("matplotlib", reason="report draws with matplotlib")
    assert usage_error(["report", "--out", str(run)], capsys) == want


def test_export_refuses_weights_float32_cannot_hold(tiny, tmp_path, capsys):
    """A float64 weight past float32's range (1e300) was exported as inf without a word; the checkpoint
    loader refuses inf, so the export made a file microgpt itself would not load."""
    from microgpt.run import Run
    from microgpt.tensor import Tensor
    run_dir = tmp_path / "run"
    shutil.copytree(tiny, run_dir)
    run = Run.load(str(run_dir))
    wte = run.params["wte"]
    run.params["wte"] = Tensor.from_floats(wte.shape, [1e300] + wte.to_floats()[1:], wte.dtype)
    run.save(str(run_dir))
    to = tmp_path / "export" / "model.safetensors"
    assert usage_error(["export", "--out", str(run_dir), "--to", str(to)], capsys) == (
        "microgpt: error: wte holds values beyond float32's range, which the export would write as inf; export "
        "with --dtype float64 (nothing was written)")
    assert not to.parent.exists()
    assert main(["export", "--out", str(run_dir), "--to", str(to), "--dtype", "float64"]) == 0


@pytest.mark.parametrize("command", ["train", "sample", "trace", "export", "vectors", "web"])
@pytest.mark.parametrize("link", ["loop", "dangling"])
def test_an_out_that_is_a_link_to_nowhere_is_named(tmp_path, command, link, capsys):
    """sample said "no checkpoint; train one first with: microgpt train --out LINK", and that train then
    failed with "File exists"; vectors and web --build said only "File exists"."""
    out = tmp_path / "lA"
    if link == "loop":
        out.symlink_to(tmp_path / "lB")
        (tmp_path / "lB").symlink_to(out)
    else:
        out.symlink_to(tmp_path / "gone")
    more = {"train": ["--steps", "2"], "trace": ["emma"], "export": ["--to", str(tmp_path / "x.safetensors")]}
    flag = "--build" if command == "web" else "--out"
    assert usage_error([command, flag, str(out), *more.get(command, [])], capsys) == (
        f"microgpt: error: {flag} {out} is a symbolic link that leads nowhere (a loop, or a missing target); remove "
        f"or mend the link, or choose another {flag}")
    if command in ("train", "vectors", "web"):   # a folder on the way: "File exists", or only the loop's errno
        inside = out / "run"
        assert usage_error([command, flag, str(inside), *more.get(command, [])], capsys) == (
            f"microgpt: error: {flag} {inside}: {out} is a symbolic link that leads nowhere (a loop, or a missing "
            f"target); remove or mend the link, or choose another {flag}")


@pytest.mark.parametrize("command", ["export", "trace"])
def test_an_output_file_whose_folder_is_a_link_to_nowhere_is_named(tiny, tmp_path, command, capsys):
    """export --to said "a file stands where its path needs a folder"."""
    run_dir = str(tiny)
    (tmp_path / "lA").symlink_to(tmp_path / "lB")
    (tmp_path / "lB").symlink_to(tmp_path / "lA")
    flag, name = ("--to", "w.safetensors") if command == "export" else ("--json", "t.json")
    target = tmp_path / "lA" / name
    args = ["export", "--out", run_dir, "--to", str(target)] if command == "export" else \
        ["trace", "--out", run_dir, "emma", "--json", str(target)]
    assert usage_error(args, capsys) == (
        f"microgpt: error: {flag} {target}: {tmp_path / 'lA'} is a symbolic link that leads nowhere (a loop, or a "
        f"missing target); remove or mend the link, or choose another {flag}")
