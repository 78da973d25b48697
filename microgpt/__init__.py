"""microgpt: a GPT from first principles, exact to one readable file (atomic.py), with faster engines.

The package is the tooling around microgpt/atomic.py: a command line (`python -m microgpt`), data
and tokenizer, one checkpoint format, and engines that all compute the same function.

    from microgpt import load          # the Python API (microgpt/api.py)
    model = load("runs/names")
    model.generate(num=5)
"""

__version__ = "0.1.0"


def load(path: str):
    """A trained model from a run's directory or an exported file: see microgpt/api.py."""
    from microgpt.api import load as load_model  # imported on use: `import microgpt` stays light
    return load_model(path)


def run_cli() -> int:
    """The `microgpt` command and `python -m microgpt`: cli.main, with a Ctrl-C while the command line's modules
    load (before cli.main can catch it) ending as one does at any other time, in one line."""
    try:
        from microgpt.cli import main
    except KeyboardInterrupt:
        import sys
        print("microgpt: interrupted", file=sys.stderr)
        return 130
    return main()
