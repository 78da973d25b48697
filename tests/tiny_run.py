"""A tiny training run in a directory, shared by the tests of check, trace and report.

    from tiny_run import tiny_run
    tiny_run(tmp_path / "run")                  # 6 scalar steps of a 2-layer, 8-wide model
"""

from microgpt.config import TrainConfig
from microgpt.train import train

TINY = {"n_layer": 2, "n_embd": 8, "n_head": 2, "block_size": 8}


def tiny_run(out_dir, engine: str = "scalar", steps: int = 6, stop_after: int | None = None) -> str:
    """Train on the embedded names with 4 held-out documents; returns the directory."""
    tcfg = TrainConfig(steps=steps, val_docs=4, eval_every=3, samples=0, engine=engine)
    train(dict(TINY), tcfg, None, str(out_dir), stop_after=stop_after)
    return str(out_dir)
