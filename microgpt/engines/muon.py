"""Muon, the optimizer `--optimizer muon` gives the transformer blocks' matrices (torch engine).

    microgpt train --engine torch --optimizer muon ...

Muon (Keller Jordan, 2024) keeps a momentum of each weight matrix's gradient and steps along that
momentum orthogonalized: U S V^T -> roughly U V^T, computed by a few Newton-Schulz iterations instead
of an SVD, so every direction of the update moves about as far. The learning rate of a rows x cols
matrix is lr * 0.2 * sqrt(max(rows, cols)), the rule of Moonshot's "Muon is Scalable for LLM
Training" (2025) that gives the update the RMS of an AdamW update, so AdamW's lr and weight decay
carry over. The embeddings and lm_head stay with AdamW, as Muon's authors advise.

This is torch.optim.Muon's update (nesterov momentum 0.95, 5 iterations, its coefficients), computed
in the parameters' dtype with every matrix of one shape in one batched iteration, where
torch.optim.Muon goes one matrix at a time in bfloat16, slower on a CPU (tests/test_muon.py checks
the two agree; scripts/bench_optimizers.py times a whole names-preset step against AdamW's).
"""

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the quintic iteration's a, b, c (Keller Jordan's)
NS_STEPS = 5
MOMENTUM = 0.95
LR_SCALE = 2.0  # Muon's lr is --lr (after the schedule) times this: the best of 1, 2 and 3 on names


def orthogonalize(G: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """Newton-Schulz on a stack of matrices (n, rows, cols): each about U V^T of its SVD U S V^T
    (the singular values land in roughly 0.5..1.5 rather than at 1, which is all Muon needs)."""
    a, b, c = NS_COEFFICIENTS
    tall = G.size(-2) > G.size(-1)
    X = G.mT if tall else G  # (n, r, c) with r <= c: the Gram matrix X X^T is the small one
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)  # spectral norm <= Frobenius norm = 1
    for _ in range(steps):
        A = X @ X.mT  # (n, r, r)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # (n, r, r): b A + c A A, in one fused call
        X = torch.baddbmm(X, B, X, beta=a)  # (n, r, c): a X + B X
    return X.mT if tall else X


class Muon:
    """Muon over named matrices; step(lr) after the gradients are in, as an optimizer's step()."""

    def __init__(self, params: dict[str, torch.Tensor], weight_decay: float):
        self.params, self.weight_decay = params, weight_decay
        self.by_shape: dict[tuple, list[str]] = {}  # matrices of one shape are orthogonalized together
        for name, p in params.items():
            self.by_shape.setdefault(tuple(p.shape), []).append(name)
        self.stacked = {shape: torch.zeros((len(names), *shape), dtype=params[names[0]].dtype,
                                           device=params[names[0]].device)
                        for shape, names in self.by_shape.items()}  # (n, rows, cols): one shape's momenta
        self.momentum = {name: self.stacked[tuple(p.shape)][self.by_shape[tuple(p.shape)].index(name)]
                         for name, p in params.items()}  # by name, in params' order: views into those stacks

    @torch.no_grad()
    def step(self, lr: float) -> None:
        for shape, names in self.by_shape.items():
            params = [self.params[n] for n in names]
            grads = torch.stack([p.grad for p in params])  # (n, rows, cols)
            momentum = self.stacked[shape].lerp_(grads, 1 - MOMENTUM)  # m = 0.95 m + 0.05 g
            update = orthogonalize(grads.lerp_(momentum, MOMENTUM))  # (n, rows, cols), of nesterov's 0.05 g + 0.95 m
            torch._foreach_mul_(params, 1 - lr * self.weight_decay)  # decoupled weight decay, as AdamW
            torch._foreach_add_(params, list(update.unbind(0)), alpha=-lr * 0.2 * max(shape) ** 0.5)
