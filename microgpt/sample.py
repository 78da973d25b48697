"""Sampling, shared by every engine: the engine gives next-token logits, this file draws tokens.

`draw` does atomic.py's arithmetic on plain floats (logits / temperature, max-subtracted softmax,
random.choices), so every engine samples the same names from the same weights and seed; temperature
0 takes the most likely token (greedy). `generate` slides its context as nanoGPT does: past
block_size tokens it keeps the last block_size, and a KV-cache engine recomputes its cache over them.

    microgpt sample --out DIR [--num 20] [--temperature 0.5] [--top-k K] [--prompt em] [--seed S]
                    [--max-new-tokens N]                                                          (cli.py)
"""

import math
import random

from microgpt.errors import UsageError


STREAM_SAMPLE_TOKENS = 500  # new tokens per sample of a stream run (nanoGPT's default)
RULE = "-" * 60             # printed between the samples of a stream run


def draw(logits: list[float], temperature: float, rng: random.Random, top_k: int | None = None) -> int:
    if temperature == 0:  # greedy: the most likely token (the first of equals), no random draw
        return max(range(len(logits)), key=logits.__getitem__)
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


def default_new_tokens(block_size: int, stream: bool, prompt: str = "") -> int:
    """Lines: what fits in the context after BOS and the prompt (a document's length); stream: 500."""
    return STREAM_SAMPLE_TOKENS if stream else block_size - len(prompt)


def start_tokens(tokenizer, prompt: str, stream: bool) -> list[int]:
    """Lines: BOS then the prompt, as every document starts. A stream run never saw BOS: the prompt
    alone, or without one a newline (nanoGPT's start) when the text has newlines."""
    if not stream:
        return [tokenizer.bos] + tokenizer.encode(prompt)
    if prompt:
        return tokenizer.encode(prompt)
    return tokenizer.encode("\n") if "\n" in tokenizer.chars else [tokenizer.bos]


def generate(engine, tokenizer, block_size: int, rng: random.Random, temperature: float,
             top_k: int | None = None, prompt: str = "", max_new_tokens: int | None = None,
             stream: bool = False) -> str:
    """One sample: the prompt and up to max_new_tokens drawn tokens (fewer when BOS is drawn), each
    from the logits of the last block_size tokens."""
    tokens = start_tokens(tokenizer, prompt, stream)
    max_new_tokens = default_new_tokens(block_size, stream, prompt) if max_new_tokens is None else max_new_tokens
    cache, cached = engine.new_cache(), 0  # cached: how many tokens of the window the cache holds
    for _ in range(max_new_tokens):
        window = tokens[-block_size:]
        if len(tokens) > block_size:  # the window slid: its positions changed, so the cache is rebuilt
            cache, cached = engine.new_cache(), 0
        logits = engine.forward_logits(cache, window[cached:], cached)[-1]
        cached = len(window)
        token_id = draw(logits, temperature, rng, top_k)
        if token_id == tokenizer.bos:
            break
        tokens.append(token_id)
    first = 1 if tokens[0] == tokenizer.bos or not prompt else 0  # drop BOS or the implicit newline
    return tokenizer.decode(tokens[first:])


def print_samples(engine, tokenizer, block_size, rng, num, temperature, top_k=None, prompt="",
                  max_new_tokens=None, stream=False) -> list[str]:
    """Lines: `sample  N: text` lines. Stream: each sample as a block of text, then a rule."""
    out = []
    for i in range(num):
        text = generate(engine, tokenizer, block_size, rng, temperature, top_k, prompt, max_new_tokens, stream)
        print(f"{text}\n{RULE}" if stream else f"sample {i + 1:2d}: {text}", flush=True)
        out.append(text)
    return out
