"""Sampling, shared by every engine: the engine gives next-token logits, this file draws tokens.

`draw` does atomic.py's arithmetic on plain floats (logits / temperature, max-subtracted softmax,
random.choices), so every engine samples the same names from the same weights and seed.

    microgpt sample --out DIR [--num 20] [--temperature 0.5] [--top-k K] [--prompt em] [--seed S]
"""

import math
import random
from dataclasses import replace

from microgpt.errors import UsageError


def draw(logits: list[float], temperature: float, rng: random.Random, top_k: int | None = None) -> int:
    scaled = [l * temperature ** -1 for l in logits]  # what Value's `l / temperature` computes
    keep = range(len(scaled))
    if top_k is not None and top_k < len(scaled):
        kth = sorted(scaled, reverse=True)[top_k - 1]
        keep = [i for i, s in enumerate(scaled) if s >= kth]
    max_val = max(scaled[i] for i in keep)
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


def check_sampling_args(temperature: float, top_k: int | None, prompt: str, block_size: int) -> None:
    if temperature <= 0:
        raise UsageError(f"--temperature must be > 0 (got {temperature}); try 0.5")
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be >= 1 (got {top_k}); leave it out to sample from all tokens")
    if len(prompt) >= block_size:
        raise UsageError(f"--prompt is {len(prompt)} characters but the context holds {block_size} tokens "
                         f"with BOS; use at most {block_size - 1} characters")


def print_samples(engine, tokenizer, block_size, rng, num, temperature, top_k=None, prompt="") -> list[str]:
    out = []
    for i in range(num):
        text = generate(engine, tokenizer, block_size, rng, temperature, top_k, prompt)
        print(f"sample {i + 1:2d}: {text}", flush=True)
        out.append(text)
    return out


# ---- the command line -----------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--out", default="out", help="directory holding the checkpoint (default out)")
    p.add_argument("--num", type=int, default=20, help="how many samples (default 20)")
    p.add_argument("--temperature", type=float, help="sampling temperature, > 0 (default: the run's, 0.5)")
    p.add_argument("--top-k", type=int, help="sample only among the k most likely tokens (default: all)")
    p.add_argument("--prompt", default="", help="the start every sample continues (e.g. 'em')")
    p.add_argument("--seed", type=int, help="random seed (default: continue the run's own random stream, "
                   "which repeats the samples printed after training)")
    p.add_argument("--engine", help="engine to sample with (default: the one that trained it, else scalar)")


def run(args) -> int:
    from microgpt import checkpoint, engines
    from microgpt.data import Tokenizer
    from microgpt.train import _rng_from_json

    ck = checkpoint.load(args.out)
    temperature = ck.train.temperature if args.temperature is None else args.temperature
    check_sampling_args(temperature, args.top_k, args.prompt, ck.model.block_size)
    if args.num < 0:
        raise UsageError(f"--num must be >= 0 (got {args.num})")
    tokenizer = Tokenizer(ck.chars)
    tokenizer.encode(args.prompt)  # a clear error for characters outside the vocabulary
    name = args.engine or (ck.train.engine if engines.is_available(ck.train.engine) else "scalar")
    tcfg = ck.train if name == ck.train.engine else _scalar_safe(ck.train, name)
    tcfg = replace(tcfg, device="auto")  # sample on what is here, whichever device trained it
    engine = engines.get(name)(ck.model, tcfg, ck.params)
    rng = random.Random(args.seed)
    if args.seed is None:
        rng.setstate(_rng_from_json(ck.rng_state))
    print_samples(engine, tokenizer, ck.model.block_size, rng, args.num, temperature, args.top_k, args.prompt)
    return 0


def _scalar_safe(tcfg, engine_name):
    """The run's config for another engine: the scalar engine only computes in float64."""
    return replace(tcfg, engine=engine_name, dtype="float64" if engine_name == "scalar" else tcfg.dtype)
