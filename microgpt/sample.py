"""Sampling, shared by every engine: the engine gives next-token logits, this file draws tokens.

`draw` does atomic.py's arithmetic on plain floats (logits / temperature, max-subtracted softmax,
random.choices), so every engine samples the same names from the same weights and seed.

    microgpt sample --out DIR [--num 20] [--temperature 0.5] [--top-k K] [--prompt em] [--seed S]   (cli.py)
"""

import math
import random

from microgpt.errors import UsageError


def draw(logits: list[float], temperature: float, rng: random.Random, top_k: int | None = None) -> int:
    try:
        inverse = temperature ** -1
    except OverflowError:  # a temperature so small that 1 / temperature is past the largest float
        inverse = math.inf
    scaled = [l * inverse for l in logits]  # what Value's `l / temperature` computes
    keep = range(len(scaled))
    if top_k is not None and top_k < len(scaled):
        kth = sorted(scaled, reverse=True)[top_k - 1]
        keep = [i for i, s in enumerate(scaled) if s >= kth]
    max_val = max(scaled[i] for i in keep)
    if any(math.isnan(logits[i]) for i in keep):
        raise UsageError("the model's logits are not finite numbers (its weights hold nan or inf); "
                         "the checkpoint is corrupt: retrain or restore it")
    if not math.isfinite(max_val):  # the logits overflowed: softmax's limit as temperature -> 0, the argmax
        best = max(logits[i] for i in keep)
        return rng.choice([i for i in keep if logits[i] == best])
    exps = [0.0] * len(scaled)
    for i in keep:
        exps[i] = math.exp(scaled[i] - max_val)
    total = sum(exps[i] for i in keep)
    probs = [e * total ** -1 for e in exps]  # what Value's `e / total` computes
    return rng.choices(range(len(probs)), weights=probs)[0]


def generate(engine, tokenizer, block_size: int, rng: random.Random, temperature: float,
             top_k: int | None = None, prompt: str = "") -> str:
    """One sample: BOS, then the prompt, then drawn characters until BOS or the block is full."""
    tokens = [tokenizer.bos] + tokenizer.encode(prompt)
    cache = engine.new_cache()
    for pos_id in range(block_size):
        logits = engine.logits(cache, tokens[pos_id], pos_id)
        if pos_id + 1 < len(tokens):
            continue  # still reading the prompt
        token_id = draw(logits, temperature, rng, top_k)
        if token_id == tokenizer.bos:
            break
        tokens.append(token_id)
    return tokenizer.decode(tokens[1:])


def print_samples(engine, tokenizer, block_size, rng, num, temperature, top_k=None, prompt="") -> list[str]:
    out = []
    for i in range(num):
        text = generate(engine, tokenizer, block_size, rng, temperature, top_k, prompt)
        print(f"sample {i + 1:2d}: {text}", flush=True)
        out.append(text)
    return out
