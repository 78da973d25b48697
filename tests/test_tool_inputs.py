"""Bad input to the tools (trace, conform, check, report): each case must end in the one-line
`microgpt: error: ...` naming the problem and the fix, exit status 2, before any long work and
without a traceback; the reports' skipped lines end in one warning, not a crash.

    python -m pytest -q -p no:cacheprovider tests/test_tool_inputs.py
"""

import pytest

from microgpt.cli import main


def usage_error(args, capsys) -> str:
    """Run `microgpt ARGS` in-process; assert exit status 2, nothing on stdout and one line on stderr;
    return that line."""
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("microgpt: error: "), (out[-500:], err)
    return err.strip()


# ---- trace ------------------------------------------------------------------------------------
@pytest.mark.parametrize("digits", ["18", "100000000", "-1"])
def test_trace_digits_is_bounded(digits, capsys):
    assert usage_error(["trace", "emma", "--digits", digits], capsys) == (
        f"microgpt: error: --digits {digits} is out of range: pick 0 to 17 (a float64 holds about 17 significant "
        "digits; more decimals print nothing but noise)")


def test_trace_help_states_the_digits_bound(capsys):
    with pytest.raises(SystemExit):
        main(["trace", "--help"])
    assert "decimals printed, 0 to 17" in " ".join(capsys.readouterr().out.split())


def test_trace_unknown_param_fails_before_the_trace(capsys):
    line = usage_error(["trace", "emma", "--param", "nosuch"], capsys)
    assert line.startswith("microgpt: error: --param 'nosuch' is not a parameter; use NAME or NAME[row,col] "
                           "with NAME one of: wte, wpe, lm_head, ")


@pytest.mark.parametrize("spec", ["wte[-1,0]", "wte[0,-1]", "wte[27,0]"])
def test_trace_param_index_out_of_range_names_the_shape(spec, capsys):
    assert usage_error(["trace", "emma", "--param", spec], capsys) == (
        f"microgpt: error: --param '{spec}': index out of range; wte has shape (27, 16), "
        "so pick 0 <= row < 27 and 0 <= col < 16")
