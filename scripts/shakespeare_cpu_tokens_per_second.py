"""Tokens per second on the shakespeare-cpu settings: microgpt's torch engine beside a plain-PyTorch
baseline written in the manner of nanoGPT's training step.

    python scripts/shakespeare_cpu_tokens_per_second.py [--rounds 5] [--steps 40] [--threads N]

The baseline is NOT nanoGPT's code (none of it is copied here): it is a small, independent GPT of
the kind nanoGPT trains (LayerNorm without bias, fused q/k/v projection, GELU MLP, final LayerNorm,
lm_head tied to the token embedding, F.scaled_dot_product_attention), with nanoGPT's training step
for its CPU settings: float32, no compile, AdamW (weight decay 0.1 on matrices), gradient clipping
at 1.0, random windows of the first 90% of the text. Both train on the same settings (4 layers,
4 heads, width 128, block 64, batch 12). They run in alternating rounds so that other load on the
machine falls on both alike; the figure reported for each is its median round.
"""

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from microgpt.config import lr_at, resolve  # noqa: E402
from microgpt.run import Run  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "shakespeare.txt")


class BaselineBlock(nn.Module):
    def __init__(self, C, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(C, bias=False), nn.LayerNorm(C, bias=False)
        self.qkv = nn.Linear(C, 3 * C, bias=False)
        self.proj = nn.Linear(C, C, bias=False)
        self.fc, self.out = nn.Linear(C, 4 * C, bias=False), nn.Linear(4 * C, C, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)  # (B, T, C)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))  # (B, T, C)


class BaselineGPT(nn.Module):
    def __init__(self, vocab, block, C, n_head, n_layer):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, C), nn.Embedding(block, C)
        self.blocks = nn.ModuleList(BaselineBlock(C, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(C, bias=False)
        self.lm_head = nn.Linear(C, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds, the two taking turns (default 5)")
    ap.add_argument("--steps", type=int, default=40, help="training steps per round (default 40)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch's CPU threads, for both (default 0: the torch engine's choice, as train's)")
    args = ap.parse_args()
    for flag, least in (("rounds", 1), ("steps", 1), ("threads", 0)):
        if getattr(args, flag) < least:
            print(f"error: --{flag} must be {least} or more (got {getattr(args, flag)})", file=sys.stderr)
            sys.exit(2)
    if not os.path.exists(DATA):
        sys.exit(f"needs {DATA} (tiny shakespeare; see shared/data/README.md)")

    model_cfg, train_cfg = resolve({}, "shakespeare-cpu")   # what `microgpt train --preset shakespeare-cpu` starts from
    run = Run.fresh(model_cfg, replace(train_cfg, threads=args.threads), DATA)
    cfg, tcfg, data, tok = run.model, run.train, run.data, run.tokenizer
    ours = run.engine()   # sets torch's threads (engines/torch.py choose_threads), which the baseline runs on too
    print(ours.note)

    torch.manual_seed(1337)
    base = BaselineGPT(tok.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer)
    decay = [p for p in base.parameters() if p.dim() >= 2]
    other = [p for p in base.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2))
    train_ids = torch.tensor(data.train)

    def baseline_step(step):
        ix = torch.randint(len(train_ids) - cfg.block_size, (tcfg.batch_size,))
        x = torch.stack([train_ids[i:i + cfg.block_size] for i in ix])  # (B, T)
        y = torch.stack([train_ids[i + 1:i + 1 + cfg.block_size] for i in ix])  # (B, T)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tcfg)
        loss = base(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(base.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    def our_step(step):
        return ours.train_step(data.batch(step, tcfg.batch_size), step, lr_at(step, tcfg))

    tokens = tcfg.batch_size * cfg.block_size
    rates = {"microgpt torch engine": [], "nanoGPT-style baseline": []}
    steps = {name: 0 for name in rates}
    fns = {"microgpt torch engine": our_step, "nanoGPT-style baseline": baseline_step}
    for name, fn in fns.items():  # warm up both
        for _ in range(5):
            fn(steps[name]); steps[name] += 1
    for r in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loss = fn(steps[name]); steps[name] += 1
            rates[name].append(args.steps * tokens / (time.perf_counter() - t0))
            print(f"round {r + 1}: {name:24s} {rates[name][-1]:8.0f} tokens/s (loss {loss:.3f})", flush=True)
    ours_rate, base_rate = (statistics.median(v) for v in rates.values())
    print(f"\nparams: microgpt {sum(p.numel() for p in ours.params.values()):,}, "
          f"baseline {sum(p.numel() for p in base.parameters()):,}; torch threads {torch.get_num_threads()}")
    print(f"median tokens/s: microgpt {ours_rate:.0f}, baseline {base_rate:.0f}; ratio {ours_rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
