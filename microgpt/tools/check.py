"""`microgpt check`: is every engine's backward pass right? Each installed engine's gradients are
compared, tensor by tensor in float64, with central finite differences of that engine's own loss and
with the scalar engine (atomic.py's autograd), on a batch of real documents.

    microgpt check                      the default config and a small random one
    microgpt check --seed 7 --docs 3    another random config, init and batch
    microgpt check --n-layer 2 --n-embd 8 --n-head 2 --block-size 5 --engines numpy

Finite differences cost two loss evaluations per entry, so they are taken on --fd-entries entries of
each tensor: the one with the largest gradient and random others. The scalar comparison covers every
entry. Exit status 1 when any error exceeds the tolerance printed above the tables.
"""

import random
from dataclasses import replace

from microgpt import engines
from microgpt.config import MODEL_FIELDS, ModelConfig, TrainConfig
from microgpt.data import add_max_data_argument
from microgpt.errors import UsageError
from microgpt.params import num_params, param_shapes
from microgpt.progress import WorkProgress
from microgpt.run import Run
from microgpt.tensor import Tensor
# an error passes when max|a - b| <= atol + rtol * max|b| over the tensor (b: the reference)
FD_TOL = (1e-8, 1e-6)       # against finite differences: their own truncation and round-off
SCALAR_TOL = (1e-12, 1e-9)  # against the scalar engine: float64 round-off only
# --h's range: below it the differences' round-off, above it their truncation error, exceeds FD_TOL even
# for a correct engine (measured: 1e-8 and 1e-4 already fail on some configs)
H_RANGE = (1e-7, 3e-5)


def random_config(rng: random.Random) -> dict:
    """A small config unlike the default: deeper, other widths, a block that cuts most names."""
    n_head = rng.choice([1, 2, 3, 4])
    return {"n_layer": rng.choice([2, 3]), "n_head": n_head, "n_embd": n_head * rng.choice([2, 3, 4, 5]),
            "block_size": rng.randint(3, 8)}


def fd_entries(grad: list[float], count: int, rng: random.Random) -> list[int]:
    """The entry with the largest |gradient| and count - 1 others at random."""
    largest = max(range(len(grad)), key=lambda i: abs(grad[i]))
    others = [i for i in range(len(grad)) if i != largest]
    return [largest] + sorted(rng.sample(others, min(count - 1, len(others))))


def finite_difference(engine_cls, model_cfg, tcfg, params, seqs, name, index, h) -> float:
    """(loss(p + h) - loss(p - h)) / 2h for one entry, each loss from a fresh engine."""
    losses = []
    for sign in (1, -1):
        flat = params[name].to_floats()
        flat[index] += sign * h
        moved = dict(params, **{name: Tensor.from_floats(params[name].shape, flat)})
        losses.append(float(engine_cls(model_cfg, tcfg, moved).eval_loss(seqs)))
    return (losses[0] - losses[1]) / (2 * h)


def error(a: list[float], b: list[float], tol) -> tuple[float, float, bool]:
    """(max abs error, that over max|b|, within tolerance) of a against the reference b."""
    abs_err = max(abs(x - y) for x, y in zip(a, b))
    scale = max(abs(y) for y in b)
    return abs_err, abs_err / scale if scale else 0.0, abs_err <= tol[0] + tol[1] * scale


def check_config(label, state, seqs, names, fd_count, h, rng, progress) -> bool:
    cfg, tcfg = state.model, replace(state.train, dtype="float64")
    shapes = param_shapes(cfg)
    print(f"== {label}: n_layer {cfg.n_layer}, n_embd {cfg.n_embd}, n_head {cfg.n_head}, "
          f"block_size {cfg.block_size}, vocab {cfg.vocab_size} ({num_params(cfg)} params) ==")
    docs = ", ".join(repr(state.tokenizer.decode(s)) for s in seqs)
    print(f"batch: {docs} ({len(seqs)} sequences, {sum(len(s) - 1 for s in seqs)} predicted tokens)")

    progress(f"{label}: the scalar engine's gradients")
    ref_loss, ref = engines.get("scalar")(cfg, tcfg, state.params).loss_and_grads(seqs)
    ref = {name: ref[name].to_floats() for name, _ in shapes}
    picks = {name: fd_entries(ref[name], fd_count, rng) for name, _ in shapes}
    ok = True
    for engine_name in names:
        progress(f"{label}: engine {engine_name}, {fd_count} finite differences per tensor")
        engine_cls = engines.get(engine_name)
        loss, grads = engine_cls(cfg, tcfg, state.params).loss_and_grads(seqs)
        loss_ok = abs(float(loss) - ref_loss) <= SCALAR_TOL[0] + SCALAR_TOL[1] * abs(ref_loss)
        ok &= loss_ok
        print(f"\nengine {engine_name}: loss {float(loss):.12f} (scalar {ref_loss:.12f}) "
              f"{'ok' if loss_ok else 'FAIL'}")
        print(f"  {'tensor':<18} {'shape':>7} {'fd max abs':>11} {'fd rel':>9} "
              f"{'vs scalar abs':>14} {'rel':>9}")
        for name, (rows, cols) in shapes:
            grad = grads[name].to_floats()
            fd = [finite_difference(engine_cls, cfg, tcfg, state.params, seqs, name, i, h) for i in picks[name]]
            fd_abs, fd_rel, fd_ok = error([grad[i] for i in picks[name]], fd, FD_TOL)
            row = f"  {name:<18} {f'{rows}x{cols}':>7} {fd_abs:11.1e} {fd_rel:9.1e} "
            if engine_name == "scalar":
                sc_ok = True
                row += f"{'(itself)':>14} {'':>9}"
            else:
                sc_abs, sc_rel, sc_ok = error(grad, ref[name], SCALAR_TOL)
                row += f"{sc_abs:14.1e} {sc_rel:9.1e}"
            print(row + ("  ok" if fd_ok and sc_ok else "  FAIL"))
            ok &= fd_ok and sc_ok
    print()
    return ok


# ---- the command line -----------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--engines", help=f"comma-separated engines to check (default: every installed one, "
                   f"of {', '.join(engines.ENGINES)})")
    p.add_argument("--data", help="text file, one document per line (default: the embedded baby names)")
    add_max_data_argument(p)
    p.add_argument("--seed", type=int, default=42, help="seed for the random config, init, batch and "
                   "sampled entries (default 42)")
    p.add_argument("--docs", type=int, default=2, help="documents in the batch (default 2)")
    p.add_argument("--fd-entries", type=int, default=4, help="entries per tensor checked by finite "
                   "differences (default 4)")
    p.add_argument("--h", type=float, default=1e-5, help=f"finite-difference step, {H_RANGE[0]:g} to {H_RANGE[1]:g} "
                   "(default 1e-5)")
    for flag in MODEL_FIELDS:
        p.add_argument(f"--{flag.replace('_', '-')}", type=int,
                       help="check only this config (default: the default and a random small one)")


def run(args) -> int:
    if args.docs < 1 or args.fd_entries < 1:
        raise UsageError("--docs and --fd-entries must be >= 1 (e.g. --docs 2 --fd-entries 4)")
    if not H_RANGE[0] <= args.h <= H_RANGE[1]:
        raise UsageError(f"--h {args.h:g} is out of range: pick {H_RANGE[0]:g} to {H_RANGE[1]:g} (default 1e-5); "
                         "outside it the finite differences' own error exceeds the tolerance, and correct "
                         "engines would fail")
    names = engines.from_flag(args.engines)
    for name in names:
        engines.get(name)  # a clear error for unknown or uninstalled engines
    given = {k: getattr(args, k) for k in MODEL_FIELDS if getattr(args, k) is not None}
    rng = random.Random(args.seed)
    configs = [("config from flags", given)] if given else [
        ("default config", {}), (f"random config (seed {args.seed})", random_config(rng))]
    print(f"checking engines: {', '.join(names)}; float64; finite differences: central, h = {args.h:g}, on "
          f"{args.fd_entries} entries per tensor (the largest gradient and random others)")
    print(f"tolerance: max|a - b| <= {FD_TOL[0]:g} + {FD_TOL[1]:g} * max|b| against finite differences, "
          f"<= {SCALAR_TOL[0]:g} + {SCALAR_TOL[1]:g} * max|b| against scalar; rel = max|a - b| / max|b|\n")
    ok = True
    progress = WorkProgress("check", len(configs) * (1 + len(names)))  # on stderr: the tables keep stdout
    for label, overrides in configs:
        state = Run.fresh(ModelConfig(**overrides), TrainConfig(seed=args.seed), args.data, max_data_mb=args.max_data_mb)
        if args.docs > len(state.docs):
            raise UsageError(f"--docs {args.docs} is more than the {len(state.docs)} documents in the data")
        seqs = [state.encode(d) for d in state.docs[:args.docs]]
        ok &= check_config(label, state, seqs, names, args.fd_entries, args.h, rng, progress)
    progress.close()
    print("check passed: every gradient within tolerance" if ok else
          "check FAILED: errors above the tolerance, in the rows marked FAIL above")
    return 0 if ok else 1

