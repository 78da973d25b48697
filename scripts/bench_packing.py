"""Side by side: a names training step of the torch model on padded rows versus packed rows.

    python scripts/bench_packing.py [--threads 2] [--steps 300]

Each step's batch of names goes to the same model (the names preset's model, dropout and batch)
both ways, alternately, so both see the same machine; prints ms/step for each and the ratio. Reads
../shared/data/names.txt when present, else the embedded names.
"""

import argparse
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from microgpt.config import PRESETS, ModelConfig  # noqa: E402
from microgpt.data import DocumentData, Tokenizer, read_text, split_docs  # noqa: E402
from microgpt.engines.torch import GPT, pack  # noqa: E402

SHARED_NAMES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "names.txt")


def padded(seqs: list[list[int]]) -> dict:
    """One document per row, right-padded: what the engine did before packing."""
    T = max(len(s) for s in seqs) - 1
    idx = torch.zeros((len(seqs), T), dtype=torch.long)  # (B, T)
    targets = torch.full((len(seqs), T), -1, dtype=torch.long)  # (B, T), -1 = padding
    for b, s in enumerate(seqs):
        idx[b, :len(s) - 1] = torch.tensor(s[:-1])
        targets[b, :len(s) - 1] = torch.tensor(s[1:])
    return {"idx": idx, "targets": targets}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    docs = split_docs(read_text(SHARED_NAMES if os.path.exists(SHARED_NAMES) else None))
    random.Random(42).shuffle(docs)
    preset = PRESETS["names"]  # its model, dropout and batch
    cfg = ModelConfig(vocab_size=27, **{k: preset[k] for k in ("n_layer", "n_embd", "n_head", "block_size")})
    data = DocumentData(docs, Tokenizer.from_docs(docs), cfg.block_size, 1000)
    model = GPT(cfg, preset["dropout"], preset.get("attn_dropout"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    layouts = {"padded": padded, "packed": lambda seqs: pack(seqs, cfg.block_size)}
    seconds = dict.fromkeys(layouts, 0.0)
    warmup = 20
    for step in range(args.steps):
        seqs = data.batch(step, preset["batch_size"])
        tokens = sum(len(s) - 1 for s in seqs)
        for name, layout in layouts.items():
            t0 = time.perf_counter()
            (model(**layout(seqs)) / tokens).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step >= warmup:
                seconds[name] += time.perf_counter() - t0
    n = args.steps - warmup
    for name, s in seconds.items():
        print(f"{name}: {s / n * 1e3:.1f} ms/step")
    print(f"packed is {seconds['padded'] / seconds['packed']:.2f}x faster ({args.threads} threads)")


if __name__ == "__main__":
    main()
