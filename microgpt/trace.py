"""`microgpt trace "emma"`: one training step on one document, every number atomic.py computes,
printed position by position under the names of atomic.py's own variables, then the backward pass
(each parameter's gradient) and Adam's update of one parameter. Read it beside atomic.py.

    microgpt trace emma                       a fresh init (--seed 42, the embedded names)
    microgpt trace emma --out out             the checkpoint in out/, at the step it reached
    microgpt trace emma --pos 2 --layer 0 --head 1 --param layer0.attn_wq[3,5]
    microgpt trace emma --json trace.json     everything, for other programs (--json - : to stdout)

The numbers come from microgpt/floatgpt.py, atomic.py's gpt() on plain floats, so a checkpoint
from any engine traces the same way.
"""

import json
import math
import re
import sys

from microgpt.config import ModelConfig, to_dict
from microgpt.errors import UsageError
from microgpt.floatgpt import FloatGPT, adam
from microgpt.model import param_shapes
from microgpt.runstate import fresh, saved
from microgpt.train import MODEL_FIELDS, lr_at


def walk_step(state, doc: str) -> dict:
    """Forward, backward and Adam on `doc`: everything the trace shows, as plain data."""
    tokens = state.encode(doc)
    gpt = FloatGPT(state.model, state.params)
    walk = gpt.forward(tokens)
    grads = gpt.backward(walk)
    shapes = param_shapes(state.model)
    flat = lambda rows_by_name: [x for name, _ in shapes for row in rows_by_name[name] for x in row]
    zeros = {name: [[0.0] * c for _ in range(r)] for name, (r, c) in shapes}
    moments = [{name: _rows(t) for name, t in d.items()} if d else zeros for d in (state.adam_m, state.adam_v)]
    lr = lr_at(state.step, state.train)
    step = adam(flat(gpt.w), flat(grads), flat(moments[0]), flat(moments[1]), state.step, lr, state.train)
    return {"tokens": tokens, "walk": walk, "grads": grads, "lr": lr, "adam": step,
            "adam_before": {"params": flat(gpt.w), "m": flat(moments[0]), "v": flat(moments[1])}}


def _rows(tensor):
    rows, cols = tensor.shape
    flat = tensor.to_floats()
    return [flat[r * cols:(r + 1) * cols] for r in range(rows)]


def norm(rows) -> float:
    return math.sqrt(sum(x * x for row in rows for x in row))


def largest(rows, count):
    """[(r, c, value)] of the `count` entries with the largest magnitude."""
    entries = [(r, c, x) for r, row in enumerate(rows) for c, x in enumerate(row)]
    return sorted(entries, key=lambda e: -abs(e[2]))[:count]


def flat_index(state, name, r, c) -> int:
    """Where entry [r, c] of `name` sits in atomic.py's `params` list."""
    offset = 0
    for n, (rows, cols) in param_shapes(state.model):
        if n == name:
            return offset + r * cols + c
        offset += rows * cols
    raise KeyError(name)


def pick_param(state, grads, spec: str | None) -> tuple[str, int, int]:
    """NAME[r,c], or NAME (its largest gradient), or None (the largest gradient of all)."""
    shapes = dict(param_shapes(state.model))
    if spec is None:
        spec = max(shapes, key=lambda n: abs(largest(grads[n], 1)[0][2]))
    m = re.fullmatch(r"([\w.]+)(?:\[(\d+),\s*(\d+)\])?", spec)
    if not m or m.group(1) not in shapes:
        raise UsageError(f"--param {spec!r} is not a parameter; use NAME or NAME[row,col] with NAME one of: "
                         f"{', '.join(shapes)}")
    name = m.group(1)
    if m.group(2) is None:
        r, c, _ = largest(grads[name], 1)[0]
        return name, r, c
    r, c = int(m.group(2)), int(m.group(3))
    rows, cols = shapes[name]
    if r >= rows or c >= cols:
        raise UsageError(f"--param {spec}: {name} has shape ({rows}, {cols}); pick row < {rows} and col < {cols}")
    return name, r, c


# ---- printing ---------------------------------------------------------------------------------
def fmt(x, digits=4) -> str:
    return f"{x:+.{digits}f}"


def fmt_vec(v, digits=4, per_line=12, indent=0) -> str:
    chunks = [" ".join(fmt(x, digits) for x in v[i:i + per_line]) for i in range(0, len(v), per_line)]
    return ("\n" + " " * (indent + 1)).join(chunks).join("[]") if chunks else "[]"


def token_name(tokenizer, t) -> str:
    return "<BOS>" if t == tokenizer.bos else repr(tokenizer.chars[t])


def print_line(line, indent, digits, out) -> None:
    pad = " " * indent
    head = f"{pad}{line.name} = {line.code}"
    value = line.value
    if isinstance(value, (int, float)):
        print(f"{head}  ->  {fmt(value, digits)}", file=out)
    elif value and isinstance(value[0], list):  # the cache, or a head's slice of it: one row per position
        print(head, file=out)
        for t, row in enumerate(value):
            print(f"{pad}    [t={t}] {fmt_vec(row, digits, indent=indent + 10)}", file=out)
    else:
        print(f"{head}\n{pad}    {fmt_vec(value, digits, indent=indent + 4)}", file=out)


def print_trace(state, doc, result, args, out=None) -> None:
    out = out or sys.stdout
    cfg, tok, walk, d = state.model, state.tokenizer, result["walk"], args.digits
    print(f'trace: one training step on "{doc}", from {state.source}', file=out)
    print(f"model: n_layer {cfg.n_layer}, n_embd {cfg.n_embd}, n_head {cfg.n_head} (head_dim {cfg.head_dim}), "
          f"block_size {cfg.block_size}, vocab {cfg.vocab_size}", file=out)
    names = ", ".join(token_name(tok, t) for t in result["tokens"])
    print(f"tokens = [BOS] + chars + [BOS], cut to block_size + 1 = {result['tokens']}  ({names})", file=out)
    done = " (the run is finished: lr has decayed to 0, so Adam's update is 0)" if state.step >= state.train.steps else ""
    print(f"n = {len(walk.positions)} positions; step = {state.step}, lr_t = {result['lr']:.6g}{done}", file=out)
    for at in walk.positions:
        if args.pos is not None and at.pos_id != args.pos:
            continue
        print(f"\n=== position {at.pos_id}: token_id {at.token_id} {token_name(tok, at.token_id)} "
              f"-> target_id {at.target_id} {token_name(tok, at.target_id)} ===", file=out)
        layer_shown = head_shown = None
        for line in at.lines:
            if args.layer is not None and line.layer not in (None, args.layer):
                continue
            if args.head is not None and line.head not in (None, args.head):
                continue
            if line.layer != layer_shown and line.layer is not None:
                print(f"  --- layer {line.layer} ---", file=out)
            if line.head != head_shown and line.head is not None:
                print(f"    --- head {line.head} (q, k, v columns {line.head * cfg.head_dim}"
                      f"..{(line.head + 1) * cfg.head_dim - 1}) ---", file=out)
            layer_shown, head_shown = line.layer, line.head
            indent = 2 * (line.layer is not None) + 2 * (line.head is not None)
            print_line(line, indent, d, out)
        ranked = sorted(range(len(at.probs)), key=lambda i: -at.probs[i])[:5]
        print(f"probs[target_id] = {at.probs[at.target_id]:.{d}f}; most likely: "
              + ", ".join(f"{token_name(tok, i)} {at.probs[i]:.{d}f}" for i in ranked), file=out)
    print(f"\nloss = (1 / n) * sum(losses)  ->  {walk.loss:.{d}f}", file=out)

    print("\n=== backward: loss.backward() gives every parameter p.grad = d(loss)/d(p) ===", file=out)
    print(f"{'tensor':<18} {'shape':>7} {'norm':>10}   largest entries", file=out)
    for name, (rows, cols) in param_shapes(cfg):
        g = result["grads"][name]
        top = "  ".join(f"[{r},{c}] {fmt(x, d)}" for r, c, x in largest(g, args.top))
        print(f"{name:<18} {f'{rows}x{cols}':>7} {norm(g):10.{d}f}   {top}", file=out)

    name, r, c = pick_param(state, result["grads"], args.param)
    i = flat_index(state, name, r, c)
    a, before, t, s = result["adam"], result["adam_before"], state.train, state.step
    g = result["grads"][name][r][c]
    print(f"\n=== Adam on {name}[{r},{c}] (params[{i}]), step = {s}: atomic.py's last loop ===", file=out)
    rows = [  # (atomic.py's name, its expression, the same with numbers, the value)
        ("p.grad", "d(loss)/d(p), from the backward pass", "", g),
        ("m[i]", "beta1 * m[i] + (1 - beta1) * p.grad", f"{t.beta1} * {before['m'][i]:.6g} + {1 - t.beta1:.2f} * {g:.6g}",
         a["m"][i]),
        ("v[i]", "beta2 * v[i] + (1 - beta2) * p.grad ** 2",
         f"{t.beta2} * {before['v'][i]:.6g} + {1 - t.beta2:.2f} * ({g:.6g}) ** 2", a["v"][i]),
        ("m_hat", "m[i] / (1 - beta1 ** (step + 1))", f"{a['m'][i]:.6g} / {1 - t.beta1 ** (s + 1):.6g}", a["m_hat"][i]),
        ("v_hat", "v[i] / (1 - beta2 ** (step + 1))", f"{a['v'][i]:.6g} / {1 - t.beta2 ** (s + 1):.6g}", a["v_hat"][i]),
        ("update", "lr_t * m_hat / (v_hat ** 0.5 + eps_adam)",
         f"{result['lr']:.6g} * {a['m_hat'][i]:.6g} / ({a['v_hat'][i]:.6g} ** 0.5 + {t.eps:g})", a["update"][i]),
    ]
    for label, code, numbers, value in rows:
        print(f"{label:<7} = {code}", file=out)
        print(f"{'':<7} = {numbers + '  ->  ' if numbers else ''}{value:+.8g}", file=out)
    print(f"p.data -= update: {before['params'][i]:+.8g} -> {a['params'][i]:+.8g}", file=out)


def to_json(state, doc, result, args) -> dict:
    walk = result["walk"]
    shapes = param_shapes(state.model)
    name, r, c = pick_param(state, result["grads"], args.param)
    i = flat_index(state, name, r, c)
    per_tensor, offset = {}, 0
    for n, (rows, cols) in shapes:
        size = rows * cols
        per_tensor[n] = {key: [result["adam"][key][offset + k * cols:offset + (k + 1) * cols] for k in range(rows)]
                         for key in ("m", "v", "m_hat", "v_hat", "update", "params")}
        offset += size
    return {
        "doc": doc, "source": state.source, "model": to_dict(state.model), "chars": state.tokenizer.chars,
        "tokens": result["tokens"], "step": state.step, "lr": result["lr"], "loss": walk.loss,
        "positions": [{"pos_id": at.pos_id, "token_id": at.token_id, "target_id": at.target_id, "loss_t": at.loss_t,
                       "lines": [vars(line) for line in at.lines]} for at in walk.positions],
        "grads": {n: {"shape": [rows, cols], "norm": norm(g), "value": g,
                      "largest": [{"index": [rr, cc], "value": x} for rr, cc, x in largest(g, args.top)]}
                  for n, (rows, cols) in shapes for g in [result["grads"][n]]},
        "adam": {"param": name, "index": [r, c], "flat_index": i, "beta1": state.train.beta1,
                 "beta2": state.train.beta2, "eps": state.train.eps,
                 **{f"{k}_before": result["adam_before"][k][i] for k in ("params", "m", "v")},
                 "grad": result["grads"][name][r][c],
                 **{k: result["adam"][k][i] for k in ("m", "v", "m_hat", "v_hat", "update")},
                 "params_after": result["adam"]["params"][i], "tensors": per_tensor},
    }


# ---- the command line -----------------------------------------------------------------------
def add_arguments(p) -> None:
    m = ModelConfig()
    p.add_argument("doc", help='the document to trace, e.g. "emma" (its characters must be in the vocabulary)')
    p.add_argument("--out", help="trace the checkpoint in this directory (default: a fresh init)")
    p.add_argument("--seed", type=int, default=42, help="seed of the fresh init (default 42)")
    p.add_argument("--data", help="data file for the fresh init's vocabulary (default: the embedded names)")
    for k in MODEL_FIELDS:
        p.add_argument(f"--{k.replace('_', '-')}", type=int, help=f"fresh init's {k} (default {getattr(m, k)})")
    p.add_argument("--pos", type=int, help="show only this position (default: all)")
    p.add_argument("--layer", type=int, help="show only this layer (default: all)")
    p.add_argument("--head", type=int, help="show only this attention head (default: all)")
    p.add_argument("--param", help="parameter for the Adam step: NAME or NAME[row,col], e.g. layer0.attn_wq[3,5] "
                   "(default: the largest gradient)")
    p.add_argument("--top", type=int, default=3, help="largest gradient entries shown per tensor (default 3)")
    p.add_argument("--digits", type=int, default=4, help="decimals printed (default 4)")
    p.add_argument("--json", help="write everything as JSON to this file ('-' for stdout, instead of the text)")


def run(args) -> int:
    model_flags = {k: getattr(args, k) for k in MODEL_FIELDS if getattr(args, k) is not None}
    if args.out:
        if model_flags or args.data:
            raise UsageError("--out traces a checkpoint, whose config and vocabulary are fixed; drop the model "
                             "and --data flags, or drop --out to trace a fresh init")
        state = saved(args.out)
    else:
        state = fresh(args.data, args.seed, {**{k: getattr(ModelConfig(), k) for k in MODEL_FIELDS}, **model_flags})
    result = walk_step(state, args.doc)
    cfg, n = state.model, len(result["walk"].positions)
    for flag, value, limit, what in (("--pos", args.pos, n, "positions"),
                                     ("--layer", args.layer, cfg.n_layer, "layers"),
                                     ("--head", args.head, cfg.n_head, "heads")):
        if value is not None and not 0 <= value < limit:
            raise UsageError(f"{flag} {value} is out of range: this trace has {limit} {what} (0 to {limit - 1})")
    if args.top < 1 or args.digits < 0:
        raise UsageError("--top must be >= 1 and --digits >= 0")
    if args.json:
        data = to_json(state, args.doc, result, args)
        if args.json == "-":
            json.dump(data, sys.stdout)
            print()
            return 0
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f)
    print_trace(state, args.doc, result, args)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0
