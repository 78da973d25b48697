"""The parameters, defined once for every engine: names, shapes, order and initialization.

Order matters: parameters are drawn from N(0, init_std^2) (0.08 as atomic.py, unless --init-std)
with the seeded `random.Random`, matrix after matrix and row by row, in exactly the order atomic.py
draws them, so every engine starts from the same numbers.
"""

import random

from microgpt.tensor import Tensor
from microgpt.config import ModelConfig



def param_shapes(cfg: ModelConfig) -> list[tuple[str, tuple[int, int]]]:
    """[(name, (rows, cols))] in creation order. Every matrix is (out_features, in_features)."""
    C = cfg.n_embd
    shapes = [("wte", (cfg.vocab_size, C)), ("wpe", (cfg.block_size, C)), ("lm_head", (cfg.vocab_size, C))]
    for i in range(cfg.n_layer):
        shapes += [
            (f"layer{i}.attn_wq", (C, C)),
            (f"layer{i}.attn_wk", (C, C)),
            (f"layer{i}.attn_wv", (C, C)),
            (f"layer{i}.attn_wo", (C, C)),
            (f"layer{i}.mlp_fc1", (4 * C, C)),
            (f"layer{i}.mlp_fc2", (C, 4 * C)),
        ]
    return shapes


def num_params(cfg: ModelConfig) -> int:
    return sum(r * c for _, (r, c) in param_shapes(cfg))


def init_params(cfg: ModelConfig, rng: random.Random) -> dict[str, list[float]]:
    """name -> flat row-major list of floats, drawn from `rng` in the reference order."""
    return {name: [rng.gauss(0, cfg.init_std) for _ in range(r * c)] for name, (r, c) in param_shapes(cfg)}


def init_tensors(cfg: ModelConfig, rng: random.Random) -> dict[str, Tensor]:
    """init_params as checkpoint Tensors (float64), the form every engine is built from."""
    floats = init_params(cfg, rng)
    return {name: Tensor.from_floats(shape, floats[name]) for name, shape in param_shapes(cfg)}
