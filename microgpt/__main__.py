"""`python -m microgpt ...`: the same as the installed `microgpt` command."""

from microgpt.cli import main

raise SystemExit(main())
