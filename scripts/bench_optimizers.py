"""Side by side: a names-preset training step of the torch engine with AdamW versus with Muon.

    python scripts/bench_optimizers.py [--threads 2] [--steps 300]

Two engines, the names preset's model and settings but for --optimizer, take turns on the same
batches, so both see the same machine; prints ms/step for each (the whole train_step: forward,
backward, the optimizer and the EMA) and the ratio. Reads ../shared/data/names.txt when present,
else the embedded names.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from side_by_side import names_preset_run, parse_args, print_ms_per_step, seconds_per_step  # noqa: E402

OPTIMIZERS = ("adam", "muon")


def main() -> None:
    args = parse_args()
    run = names_preset_run()
    data, train_cfg = run.data, run.train
    engines = {opt: run.engine(optimizer=opt) for opt in OPTIMIZERS}

    def step_with(engine):
        return lambda step: engine.train_step(data.batch(step, train_cfg.batch_size), step, train_cfg.lr)

    seconds = seconds_per_step(args.steps, {opt: step_with(engine) for opt, engine in engines.items()})
    print_ms_per_step(seconds)
    print(f"a muon step takes {seconds['muon'] / seconds['adam']:.2f}x an adam step ({args.threads} threads)")


if __name__ == "__main__":
    main()
