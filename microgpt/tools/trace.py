"""`microgpt trace "emma"`: one training step on one document, every number atomic.py computes,
printed position by position beside the line of atomic.py that computed it, each with its gradient
d(loss)/d(that number); then every parameter's gradient and Adam's update of one parameter.

    microgpt trace emma                       a fresh init (--seed 42, the embedded names)
    microgpt trace emma --out out             the checkpoint in out/, at the step it reached
    microgpt trace emma --pos 2 --layer 0 --head 1 --param layer0.attn_wq[3,5]
    microgpt trace emma --json trace.json     everything, for other programs (--json - : to stdout)

Nothing here restates the model: the numbers are those of atomic.py's own gpt(), rmsnorm() and
softmax() running on Value objects, watched line by line by tools/recorder.py; the names are the
variables they bind and the code column is atomic.py's source. A checkpoint of any engine traces the
same way, since every engine saves the same weights.
"""

import json
import math
import os
import re
import sys

from microgpt import checkpoint, durable
from microgpt.atomic import Value, gpt, softmax
from microgpt.config import MODEL_FIELDS, ModelConfig, TrainConfig, flag, lr_at, to_dict
from microgpt.data import add_max_data_argument
from microgpt.errors import UsageError
from microgpt.params import param_shapes
from microgpt.run import Run
from microgpt.tools.recorder import Recorder, find_line

MAX_DIGITS = 17  # --digits' bound: a float64 means at most 17 significant digits


def walk_step(state, doc: str) -> dict:
    """Forward, backward and Adam on `doc`, as atomic.py's training loop does them, recorded."""
    tokens = state.encode(doc)
    cfg = state.model
    state_dict = {name: [[Value(x) for x in row] for row in state.params[name].rows()]
                  for name, _ in param_shapes(cfg)}
    n = len(tokens) - 1
    keys, values = [[] for _ in range(cfg.n_layer)], [[] for _ in range(cfg.n_layer)]
    losses, positions = [], []
    with Recorder() as rec:
        for pos_id in range(n):  # atomic.py's forward, one position at a time
            rec.position = pos_id
            token_id, target_id = tokens[pos_id], tokens[pos_id + 1]
            logits = gpt(token_id, pos_id, keys, values, state_dict, cfg.n_layer, cfg.n_head)
            rec.add("logits", find_line("logits = gpt(token_id, pos_id, keys, values"), logits)
            probs = softmax(logits)
            rec.add("probs", find_line("probs = softmax(logits)"), probs)
            losses.append(-probs[target_id].log())
            rec.add("loss_t", find_line("losses.append(-probs[target_id].log())"), losses[-1])
            positions.append({"pos_id": pos_id, "token_id": token_id, "target_id": target_id, "probs": probs})
    loss = (1 / n) * sum(losses)
    loss.backward()  # every recorded Value now holds d(loss)/d(itself)

    grads = {name: [[p.grad for p in row] for row in rows] for name, rows in state_dict.items()}
    flat = lambda rows_by_name: [x for name, _ in param_shapes(cfg) for row in rows_by_name[name] for x in row]
    weights = {name: [[p.data for p in row] for row in rows] for name, rows in state_dict.items()}
    moments = [[state.state[f"adam.{which}.{name}"].to_floats() if f"adam.{which}.{name}" in state.state
                else [0.0] * (r * c) for name, (r, c) in param_shapes(cfg)] for which in ("m", "v")]
    m, v = ([x for chunk in ms for x in chunk] for ms in moments)
    lr = lr_at(state.step, state.train)
    step = adam(flat(weights), flat(grads), m, v, state.step, lr, state.train)
    return {"tokens": tokens, "records": rec.records, "positions": positions, "loss": loss.data, "grads": grads,
            "lr": lr, "adam": step, "adam_before": {"params": flat(weights), "m": m, "v": v}}


def adam(params, grads, m, v, step, lr, tcfg):
    """atomic.py's Adam loop on flat lists; returns the new params, m and v and every intermediate
    (m_hat, v_hat, update), so that the trace can show them. `step` is 0-based."""
    out = {"params": [], "m": [], "v": [], "m_hat": [], "v_hat": [], "update": []}
    for p, g, mi, vi in zip(params, grads, m, v):
        mi = tcfg.beta1 * mi + (1 - tcfg.beta1) * g
        vi = tcfg.beta2 * vi + (1 - tcfg.beta2) * g ** 2
        m_hat = mi / (1 - tcfg.beta1 ** (step + 1))
        v_hat = vi / (1 - tcfg.beta2 ** (step + 1))
        update = lr * m_hat / (v_hat ** 0.5 + tcfg.eps)
        for key, val in (("params", p - update), ("m", mi), ("v", vi), ("m_hat", m_hat), ("v_hat", v_hat),
                         ("update", update)):
            out[key].append(val)
    return out


def data_of(value):
    """A recorded value's numbers: Value -> its data, lists -> lists (floats stay floats)."""
    if isinstance(value, list):
        return [data_of(v) for v in value]
    return value.data if isinstance(value, Value) else value


def grad_of(value):
    """d(loss)/d(value), the same shape; None where the value is a plain float (no gradient flows)."""
    if isinstance(value, list):
        return [grad_of(v) for v in value]
    return float(value.grad) if isinstance(value, Value) else None


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


def parse_param(cfg, spec: str | None) -> tuple[str | None, int | None, int | None]:
    """--param checked against the model's tensors, before any tracing: (name, row, col), with row and col
    None for a bare NAME and all three None for no --param."""
    if spec is None:
        return None, None, None
    shapes = dict(param_shapes(cfg))
    m = re.fullmatch(r"([\w.]+)(?:\[(-?\d+),\s*(-?\d+)\])?", spec)
    if not m or m.group(1) not in shapes:
        raise UsageError(f"--param {spec!r} is not a parameter; use NAME or NAME[row,col] with NAME one of: "
                         f"{', '.join(shapes)}")
    name = m.group(1)
    if m.group(2) is None:
        return name, None, None
    r, c = int(m.group(2)), int(m.group(3))
    rows, cols = shapes[name]
    if not (0 <= r < rows and 0 <= c < cols):
        raise UsageError(f"--param {spec!r}: index out of range; {name} has shape ({rows}, {cols}), "
                         f"so pick 0 <= row < {rows} and 0 <= col < {cols}")
    return name, r, c


def pick_param(state, grads, spec: str | None) -> tuple[str, int, int]:
    """NAME[r,c], or NAME (its largest gradient), or None (the largest gradient of all)."""
    name, r, c = parse_param(state.model, spec)
    if name is None:
        name = max(grads, key=lambda n: abs(largest(grads[n], 1)[0][2]))
    if r is None:
        r, c, _ = largest(grads[name], 1)[0]
    return name, r, c


# ---- printing ---------------------------------------------------------------------------------
def fmt(x, digits=4) -> str:
    return f"{x:+.{digits}f}"


def fmt_vec(v, digits=4, per_line=12, indent=0) -> str:
    chunks = [" ".join(fmt(x, digits) for x in v[i:i + per_line]) for i in range(0, len(v), per_line)]
    return ("\n" + " " * (indent + 1)).join(chunks).join("[]") if chunks else "[]"


def token_name(tokenizer, t) -> str:
    return "<BOS>" if t == tokenizer.bos else repr(tokenizer.chars[t])


def print_record(rec, indent, digits, out) -> None:
    """atomic.py's line that made it (`name = ...`, or `name: keys[li].append(k)`), then its data and
    its gradient."""
    pad = " " * indent
    binds = re.match(rf"{re.escape(rec.name)}\s*=[^=]", rec.code)  # else it grows a list, e.g. keys[li].append(k)
    print(f"{pad}{rec.code if binds else rec.name + ': ' + rec.code}  (atomic.py:{rec.lineno})", file=out)
    data, grad = data_of(rec.value), grad_of(rec.value)
    if not isinstance(data, list):
        print(f"{pad}    data {fmt(data, digits)}" + (f"   grad {fmt(grad, digits)}" if grad is not None else ""),
              file=out)
    elif data and isinstance(data[0], list):  # the cache, or a head's slice of it: one row per position
        for t, (row, grow) in enumerate(zip(data, grad)):
            print(f"{pad}    [t={t}] data {fmt_vec(row, digits, indent=indent + 15)}", file=out)
            print(f"{pad}          grad {fmt_vec(grow, digits, indent=indent + 15)}", file=out)
    else:
        print(f"{pad}    data {fmt_vec(data, digits, indent=indent + 9)}", file=out)
        if grad and grad[0] is not None:
            print(f"{pad}    grad {fmt_vec(grad, digits, indent=indent + 9)}", file=out)


def print_trace(state, doc, result, args, out=None) -> None:
    out = out or sys.stdout
    cfg, tok, d = state.model, state.tokenizer, args.digits
    print(f'trace: one training step on "{doc}", from {state.source}', file=out)
    print(f"model: n_layer {cfg.n_layer}, n_embd {cfg.n_embd}, n_head {cfg.n_head} (head_dim {cfg.head_dim}), "
          f"block_size {cfg.block_size}, vocab {cfg.vocab_size}", file=out)
    names = ", ".join(token_name(tok, t) for t in result["tokens"])
    print(f"tokens = [BOS] + chars + [BOS], cut to block_size + 1 = {result['tokens']}  ({names})", file=out)
    done = " (the run is finished: lr has decayed to 0, so Adam's update is 0)" if state.step >= state.train.steps else ""
    print(f"n = {len(result['positions'])} positions; step = {state.step}, lr_t = {result['lr']:.6g}{done}", file=out)
    print("each line: atomic.py's variable = the line that computed it; data = its value, grad = d(loss)/d(it)",
          file=out)
    for at in result["positions"]:
        if args.pos is not None and at["pos_id"] != args.pos:
            continue
        print(f"\n=== position {at['pos_id']}: token_id {at['token_id']} {token_name(tok, at['token_id'])} "
              f"-> target_id {at['target_id']} {token_name(tok, at['target_id'])} ===", file=out)
        layer_shown = head_shown = None
        for rec in result["records"]:
            if rec.pos_id != at["pos_id"]:
                continue
            if args.layer is not None and rec.layer not in (None, args.layer):
                continue
            if args.head is not None and rec.head not in (None, args.head):
                continue
            if rec.layer != layer_shown and rec.layer is not None:
                print(f"  --- layer {rec.layer} ---", file=out)
            if rec.head != head_shown and rec.head is not None:
                print(f"    --- head {rec.head} (q, k, v columns {rec.head * cfg.head_dim}"
                      f"..{(rec.head + 1) * cfg.head_dim - 1}) ---", file=out)
            layer_shown, head_shown = rec.layer, rec.head
            print_record(rec, 2 * (rec.layer is not None) + 2 * (rec.head is not None), d, out)
        probs = [p.data for p in at["probs"]]
        ranked = sorted(range(len(probs)), key=lambda i: -probs[i])[:5]
        print(f"probs[target_id] = {probs[at['target_id']]:.{d}f}; most likely: "
              + ", ".join(f"{token_name(tok, i)} {probs[i]:.{d}f}" for i in ranked), file=out)
    print(f"\nloss = (1 / n) * sum(losses)  ->  {result['loss']:.{d}f}", file=out)

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
    if state.train.optimizer != "adam" or state.train.ema:
        print(f"(this run trained with --optimizer {state.train.optimizer}"
              f"{' and --ema' if state.train.ema else ''}: below is the reference's Adam step, not the run's)", file=out)
    rows = [  # (atomic.py's name, its line, the same with numbers, the value)
        ("p.grad", "d(loss)/d(p), from the backward pass", "", g),
        ("m[i]", "m[i] = beta1 * m[i] + (1 - beta1) * p.grad",
         f"{t.beta1} * {before['m'][i]:.6g} + {1 - t.beta1:.2f} * {g:.6g}", a["m"][i]),
        ("v[i]", "v[i] = beta2 * v[i] + (1 - beta2) * p.grad ** 2",
         f"{t.beta2} * {before['v'][i]:.6g} + {1 - t.beta2:.2f} * ({g:.6g}) ** 2", a["v"][i]),
        ("m_hat", "m_hat = m[i] / (1 - beta1 ** (step + 1))", f"{a['m'][i]:.6g} / {1 - t.beta1 ** (s + 1):.6g}",
         a["m_hat"][i]),
        ("v_hat", "v_hat = v[i] / (1 - beta2 ** (step + 1))", f"{a['v'][i]:.6g} / {1 - t.beta2 ** (s + 1):.6g}",
         a["v_hat"][i]),
        ("update", "p.data -= lr_t * m_hat / (v_hat ** 0.5 + eps_adam)",
         f"{result['lr']:.6g} * {a['m_hat'][i]:.6g} / ({a['v_hat'][i]:.6g} ** 0.5 + {t.eps:g})", a["update"][i]),
    ]
    for label, code, numbers, value in rows:
        where = f"  (atomic.py:{find_line(code)})" if label != "p.grad" else ""
        print(f"{label:<7} = {code.split(' = ', 1)[-1] if label != 'update' else 'lr_t * m_hat / (v_hat ** 0.5 + eps_adam)'}{where}", file=out)
        print(f"{'':<7} = {numbers + '  ->  ' if numbers else ''}{value:+.8g}", file=out)
    print(f"p.data -= update: {before['params'][i]:+.8g} -> {a['params'][i]:+.8g}", file=out)


JSON_START = b'{"doc": '   # how a trace's JSON file begins: json.dump keeps to_json's order, "doc" first


def is_trace_json(path: str) -> bool:
    """Whether the file at `path` begins as a trace's JSON does (a regular file only: never a FIFO's read)."""
    try:
        with checkpoint.open_regular(path) as f:
            return f.read(len(JSON_START)) == JSON_START
    except (UsageError, OSError):
        return False


def to_json(state, doc, result, args) -> dict:
    shapes = param_shapes(state.model)
    name, r, c = pick_param(state, result["grads"], args.param)
    i = flat_index(state, name, r, c)
    per_tensor, offset = {}, 0
    for n, (rows, cols) in shapes:
        per_tensor[n] = {key: [result["adam"][key][offset + k * cols:offset + (k + 1) * cols] for k in range(rows)]
                         for key in ("m", "v", "m_hat", "v_hat", "update", "params")}
        offset += rows * cols
    line = lambda rec: {"name": rec.name, "code": rec.code, "lineno": rec.lineno, "layer": rec.layer,
                        "head": rec.head, "value": data_of(rec.value), "grad": grad_of(rec.value)}
    return {
        "doc": doc, "source": state.source, "model": to_dict(state.model), "chars": state.tokenizer.chars,
        "tokens": result["tokens"], "step": state.step, "lr": result["lr"], "loss": result["loss"],
        "positions": [{"pos_id": at["pos_id"], "token_id": at["token_id"], "target_id": at["target_id"],
                       "loss_t": -math.log(at["probs"][at["target_id"]].data),
                       "lines": [line(rec) for rec in result["records"] if rec.pos_id == at["pos_id"]]}
                      for at in result["positions"]],
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
    add_max_data_argument(p)
    for k in MODEL_FIELDS:
        p.add_argument(flag(k), type=int, help=f"fresh init's {k} (default {getattr(m, k)})")
    p.add_argument("--pos", type=int, help="show only this position (default: all)")
    p.add_argument("--layer", type=int, help="show only this layer (default: all)")
    p.add_argument("--head", type=int, help="show only this attention head (default: all)")
    p.add_argument("--param", help="parameter for the Adam step: NAME or NAME[row,col], e.g. layer0.attn_wq[3,5] "
                   "(default: the largest gradient)")
    p.add_argument("--top", type=int, default=3, help="largest gradient entries shown per tensor (default 3)")
    p.add_argument("--digits", type=int, default=4, help=f"decimals printed, 0 to {MAX_DIGITS} (default 4)")
    p.add_argument("--json", help="write everything as JSON to this file ('-' for stdout, instead of the text)")


def run(args) -> int:
    if args.top < 1:
        raise UsageError(f"--top {args.top}: must be >= 1")
    if not 0 <= args.digits <= MAX_DIGITS:
        raise UsageError(f"--digits {args.digits} is out of range: pick 0 to {MAX_DIGITS} (a float64 holds about "
                         f"{MAX_DIGITS} significant digits; more decimals print nothing but noise)")
    if args.json and args.json != "-":
        checkpoint.check_output_name(args.json, "--json", "the trace", "a trace's JSON", is_trace_json, "trace.json")
    model_flags = {k: getattr(args, k) for k in MODEL_FIELDS if getattr(args, k) is not None}
    if args.out:
        if model_flags or args.data:
            raise UsageError("--out traces a checkpoint, whose config and vocabulary are fixed; drop the model "
                             "and --data flags, or drop --out to trace a fresh init")
        state = Run.load(args.out, with_state=False)
    else:
        state = Run.fresh(ModelConfig(**model_flags), TrainConfig(seed=args.seed), args.data, max_data_mb=args.max_data_mb)
    parse_param(state.model, args.param)  # a bad --param fails before the trace, not after it is printed
    result = walk_step(state, args.doc)
    cfg, n = state.model, len(result["positions"])
    for name, value, limit, what in (("--pos", args.pos, n, "positions"),
                                     ("--layer", args.layer, cfg.n_layer, "layers"),
                                     ("--head", args.head, cfg.n_head, "heads")):
        if value is not None and not 0 <= value < limit:
            raise UsageError(f"{name} {value} is out of range: this trace has {limit} {what} (0 to {limit - 1})")
    if args.json:
        data = to_json(state, args.doc, result, args)
        if args.json == "-":
            json.dump(data, sys.stdout)
            print()
            return 0
        text = json.dumps(data).encode("utf-8")
        try:
            durable.replace_file(args.json, lambda f: f.write(text))   # a temp file, renamed: never half a file
        except OSError as e:
            raise durable.cannot_write("--json", args.json, e) from None
    print_trace(state, args.doc, result, args)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0
