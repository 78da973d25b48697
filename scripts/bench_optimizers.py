"""Side by side: a names-preset training step of the torch engine with AdamW versus with Muon.

    python scripts/bench_optimizers.py [--threads 2] [--steps 300]

Two engines, the names preset's model and settings but for --optimizer, take turns on the same
batches, so both see the same machine; prints ms/step for each (the whole train_step: forward,
backward, the optimizer and the EMA) and the ratio. Reads ../shared/data/names.txt when present,
else the embedded names.
"""

import os
import random
import sys
from dataclasses import replace

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from microgpt.config import PRESETS, ModelConfig, TrainConfig  # noqa: E402
from microgpt.data import DocumentData, Tokenizer  # noqa: E402
from microgpt.engines.torch import Engine  # noqa: E402
from microgpt.model import init_tensors  # noqa: E402
from microgpt.train import MODEL_FIELDS  # noqa: E402
from side_by_side import parse_args, print_ms_per_step, seconds_per_step, shuffled_names  # noqa: E402

OPTIMIZERS = ("adam", "muon")


def main() -> None:
    args = parse_args()
    docs = shuffled_names()
    tokenizer = Tokenizer.from_docs(docs)
    preset = PRESETS["names"]
    model_cfg = ModelConfig(vocab_size=tokenizer.vocab_size, **{k: preset[k] for k in MODEL_FIELDS})
    data = DocumentData(docs, tokenizer, model_cfg.block_size, preset["val_docs"])
    train_cfg = TrainConfig(**{k: v for k, v in preset.items() if k not in MODEL_FIELDS})
    engines = {opt: Engine(model_cfg, replace(train_cfg, optimizer=opt),
                           init_tensors(model_cfg, random.Random(42))) for opt in OPTIMIZERS}

    def step_with(engine):
        return lambda step: engine.train_step(data.batch(step, train_cfg.batch_size), step, train_cfg.lr)

    seconds = seconds_per_step(args.steps, {opt: step_with(engine) for opt, engine in engines.items()})
    print_ms_per_step(seconds)
    print(f"a muon step takes {seconds['muon'] / seconds['adam']:.2f}x an adam step ({args.threads} threads)")


if __name__ == "__main__":
    main()
