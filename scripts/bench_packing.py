"""Side by side: a names training step of the torch model on padded rows versus packed rows.

    python scripts/bench_packing.py [--threads 2] [--steps 300]

Each step's batch of names goes to the same model (the names preset's model, dropout and batch)
both ways, alternately, so both see the same machine; prints ms/step for each and the ratio. Reads
../shared/data/names.txt when present, else the embedded names.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from microgpt.engines.torch import GPT, pack  # noqa: E402
from side_by_side import names_preset_run, parse_args, print_ms_per_step, seconds_per_step  # noqa: E402


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
    args = parse_args()
    run = names_preset_run()  # its model, dropout and batch
    cfg, tcfg, data = run.model, run.train, run.data
    model = GPT(cfg, tcfg.dropout, tcfg.attn_dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    layouts = {"padded": padded, "packed": lambda seqs: pack(seqs, cfg.block_size)}

    def step_with(layout):
        def run(step: int) -> None:
            seqs = data.batch(step, tcfg.batch_size)
            (model(**layout(seqs)) / sum(len(s) - 1 for s in seqs)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    seconds = seconds_per_step(args.steps, {name: step_with(layout) for name, layout in layouts.items()})
    print_ms_per_step(seconds)
    print(f"packed is {seconds['padded'] / seconds['packed']:.2f}x faster ({args.threads} threads)")


if __name__ == "__main__":
    main()
