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
