"""microgpt: a GPT from first principles, exact to one readable file (atomic.py), with faster engines.

The package is the tooling around microgpt/atomic.py: a command line (`python -m microgpt`), data
and tokenizer, one checkpoint format, and engines that all compute the same function.
"""

__version__ = "0.1.0"
