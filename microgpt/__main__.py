"""`python -m microgpt ...`: the same as the installed `microgpt` command."""

from microgpt import run_cli

raise SystemExit(run_cli())
