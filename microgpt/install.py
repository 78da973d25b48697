"""How to install what an optional feature needs: the one hint every missing-dependency error prints.

    from microgpt.install import DISTRIBUTION, hint
    hint("numpy", "numpy")   # "pip install numpy (from a clone: pip install -e '.[numpy]'; ...)"

The import name and the command are `microgpt`; the distribution is `microgpt-atomic`, because the
name `microgpt` on PyPI belongs to an unrelated project. Until ours is published there, the
distribution installs from a clone of the repository.
"""

DISTRIBUTION = "microgpt-atomic"  # pyproject.toml's [project] name


def hint(extra: str, packages: str) -> str:
    """What to run so that `packages` (the extra `extra` of our distribution) are importable."""
    return (f"pip install {packages} (from a clone: pip install -e '.[{extra}]'; "
            f"once published: pip install '{DISTRIBUTION}[{extra}]')")
