"""Helpers shared by the tests: a tiny training run, and `train` with the set-up the CLI does.

    from tiny_run import tiny_run, train
    tiny_run(tmp_path / "run")                  # 6 scalar steps of a 2-layer, 8-wide model
    train(model_fields, tcfg, data_path, out)   # Run.fresh (or Run.load with resume=True), then the loop
"""

from dataclasses import replace

from microgpt.config import ModelConfig, TrainConfig
from microgpt.run import Run
from microgpt.train import train as train_loop

TINY = {"n_layer": 2, "n_embd": 8, "n_head": 2, "block_size": 8}


def train(model: dict, tcfg: TrainConfig, data_path, out_dir: str, resume: bool = False, log_every: int = 1,
          stop_after: int | None = None) -> dict:
    """What `microgpt train` does: a fresh run (or, with resume, the saved one, with tcfg's engine and
    output settings), its header, then the loop."""
    if resume:
        run = Run.load(str(out_dir), data_path, with_data=True)
        run.train = replace(run.train, engine=tcfg.engine, dtype=tcfg.dtype if tcfg.engine != run.train.engine
                            else run.train.dtype)
    else:
        run = Run.fresh(ModelConfig(**model), tcfg, data_path)
    print("\n".join(run.header()))
    return train_loop(run, str(out_dir), log_every, stop_after)


def tiny_run(out_dir, engine: str = "scalar", steps: int = 6, stop_after: int | None = None) -> str:
    """Train on the embedded names with 4 held-out documents; returns the directory."""
    tcfg = TrainConfig(steps=steps, val_docs=4, eval_every=3, samples=0, engine=engine)
    train(dict(TINY), tcfg, None, str(out_dir), stop_after=stop_after)
    return str(out_dir)


def samples_by_engine(out_dir, trained_by: str, engines: tuple[str, ...], capsys) -> dict[str, str]:
    """Train the default model 100 steps with `trained_by`, then what `microgpt sample --seed 7 --num 10`
    prints from that checkpoint with each of `engines` (capsys: pytest's fixture, to read the prints)."""
    from microgpt import cli
    train({}, TrainConfig(engine=trained_by, steps=100, samples=0), None, str(out_dir),
          log_every=10**9)
    capsys.readouterr()
    printed = {}
    for engine in engines:
        assert cli.main(["sample", "--out", str(out_dir), "--engine", engine, "--seed", "7", "--num", "10"]) == 0
        printed[engine] = capsys.readouterr().out
    return printed
