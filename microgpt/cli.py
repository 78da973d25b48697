"""The command line: `microgpt <command> ...` (installed) or `python -m microgpt <command> ...`.

Each command lives in its own module, which provides `add_arguments(parser)` and `run(args) -> int`.
Bad input raises UsageError and is printed as one line, `microgpt: error: ...`, with exit status 2.
"""

import argparse
import importlib
import sys

from microgpt.errors import UsageError

# command -> (module, one-line help)
COMMANDS = {
    "train": ("microgpt.train", "train a GPT on a text file (default: the embedded names) and print samples"),
    "sample": ("microgpt.sample", "print samples from a trained checkpoint"),
    "check": ("microgpt.check", "compare every engine's gradients with finite differences and the scalar engine"),
    "trace": ("microgpt.trace", "print every intermediate of one training step on one document, by atomic.py's names"),
    "report": ("microgpt.report", "write DIR/report.html: loss curves, attention maps, embeddings, samples"),
    "bench": ("microgpt.bench", "time the installed engines side by side on the default job"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microgpt", description="Train and sample a GPT from first principles.")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return importlib.import_module(COMMANDS[args.command][0]).run(args)
    except UsageError as e:
        print(f"microgpt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("microgpt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
