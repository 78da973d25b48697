"""One process's numbers from the compiled engine, for test_compiled_engine.py's test of where kernels come from.

    NUMBA_CACHE_DIR=DIR python tests/compiled_probe.py serial-first|parallel-first

Trains the default model (float64) for 20 steps of one document, evaluates a batch of 64 documents before
and after, and prints every loss (as float.hex) and a hash of the final parameters and Adam's moments as
JSON. The order names which compiled entry point the process calls first: step_serial (one document) or
step_parallel (a batch). The numbers are the same either way.
"""

import hashlib
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from microgpt.config import ModelConfig, TrainConfig  # noqa: E402
from microgpt.engines import compiled  # noqa: E402
from microgpt.params import init_tensors  # noqa: E402


def main(order: str) -> dict:
    cfg = ModelConfig(vocab_size=27)
    engine = compiled.Engine(cfg, TrainConfig(engine="compiled", dtype="float64"), init_tensors(cfg, random.Random(0)))
    rng = random.Random(1)
    docs = [[rng.randrange(cfg.vocab_size) for _ in range(rng.randrange(2, cfg.block_size + 2))] for _ in range(84)]
    batch, singles = docs[:64], docs[64:]
    out = {}
    calls = [("single", lambda: engine.eval_loss(singles[:1])), ("batch", lambda: engine.eval_loss(batch))]
    for name, call in calls if order == "serial-first" else calls[::-1]:
        out[name + "_before"] = call().hex()
    out["train"] = [engine.train_step([doc], step, 0.01).hex() for step, doc in enumerate(singles)]
    out["batch_after"] = engine.eval_loss(batch).hex()
    out["state"] = hashlib.sha256(engine.flat[:3].tobytes()).hexdigest()
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("serial-first", "parallel-first"):
        sys.exit("usage: python tests/compiled_probe.py serial-first|parallel-first")
    print(json.dumps(main(sys.argv[1])))
