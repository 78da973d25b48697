"""atomic.py's gpt() on plain Python floats, keeping every intermediate under its atomic.py name,
with the backward pass and Adam written out by hand. `microgpt trace` prints what it records and
`microgpt report` draws it (attention weights, next-token probabilities, loss by position).

It works from the engine-neutral checkpoint tensors, so it reads checkpoints from every engine. The
forward does the same float operations as atomic.py's Value graph (a / b is a * b ** -1, as Value's
__truediv__ does), so its logits equal the scalar engine's; the backward is derived by hand, not by
autograd, so tests can check it against Value's chain rule as an independent computation.

    from microgpt.floatgpt import FloatGPT
    gpt = FloatGPT(model_cfg, params)            # params: name -> checkpoint.Tensor
    walk = gpt.forward(tokens)                   # [BOS] + chars + [BOS], cut to block_size + 1
    grads = gpt.backward(walk)                   # name -> rows of floats, d(loss)/d(param)
"""

import math
from dataclasses import dataclass, field

from microgpt.model import param_shapes


# ---- the building blocks, each as atomic.py computes it ---------------------------------------
def linear(x, w):  # y = W x, with W of shape (nout, nin)
    return [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]


def linear_t(dy, w):  # x's gradient of y = W x: W^T dy, (nin,)
    dx = [0.0] * len(w[0])
    for dyo, wo in zip(dy, w):
        for i, wi in enumerate(wo):
            dx[i] += dyo * wi
    return dx


def add_outer(dw, dy, x):  # W's gradient of y = W x: dW += dy x^T, (nout, nin)
    for dwo, dyo in zip(dw, dy):
        for i, xi in enumerate(x):
            dwo[i] += dyo * xi


def softmax(logits):
    """(probs, max_val): the max is subtracted before exp() so that it cannot overflow."""
    max_val = max(logits)
    exps = [math.exp(val - max_val) for val in logits]
    total = sum(exps)
    return [e * total ** -1 for e in exps], max_val


def softmax_back(p, dp):  # dlogit_i = p_i (dp_i - sum_j p_j dp_j)
    dot = sum(pi * dpi for pi, dpi in zip(p, dp))
    return [pi * (dpi - dot) for pi, dpi in zip(p, dp)]


def rmsnorm(x):
    """(x * scale, ms, scale) with ms = mean(x^2) and scale = (ms + 1e-5) ** -0.5."""
    ms = sum(xi * xi for xi in x) * len(x) ** -1
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x], ms, scale


def rmsnorm_back(x, scale, dy):  # y_i = x_i s: dx_i = s dy_i - s^3 x_i (sum_j dy_j x_j) / n
    dot = sum(d * xi for d, xi in zip(dy, x))
    return [scale * d - scale ** 3 * xi * dot / len(x) for d, xi in zip(dy, x)]


# ---- what one call of gpt() leaves behind ------------------------------------------------------
@dataclass
class Line:
    """One named intermediate: `name` is atomic.py's variable, `code` the expression that made it."""
    name: str
    code: str
    value: object            # a float, a vector, or a list of vectors (the cache)
    layer: int | None = None
    head: int | None = None


@dataclass
class Position:
    token_id: int
    pos_id: int
    lines: list = field(default_factory=list)   # every intermediate, in atomic.py's order
    saved: dict = field(default_factory=dict)   # what the backward pass needs
    logits: list = field(default_factory=list)
    target_id: int | None = None
    probs: list = field(default_factory=list)
    loss_t: float | None = None

    def emit(self, name, code, value, layer=None, head=None):
        self.lines.append(Line(name, code, value, layer, head))
        return value

    def get(self, name, layer=None, head=None):
        """The last value recorded under `name` (at that layer and head)."""
        for line in reversed(self.lines):
            if line.name == name and line.layer == layer and line.head == head:
                return line.value
        raise KeyError(name)


@dataclass
class Walk:
    tokens: list
    positions: list
    loss: float


class FloatGPT:
    def __init__(self, model_cfg, params):
        self.cfg = model_cfg
        self.shapes = param_shapes(model_cfg)
        self.w = {}  # name -> rows of floats, as atomic.py's state_dict holds rows of Values
        for name, (rows, cols) in self.shapes:
            flat = params[name].to_floats()
            self.w[name] = [flat[r * cols:(r + 1) * cols] for r in range(rows)]

    # ---- forward: atomic.py's gpt(), line by line ----------------------------------------------
    def step(self, token_id, pos_id, keys, values) -> Position:
        """One position: fills the KV cache like gpt() and returns everything it computed."""
        w, n_head = self.w, self.cfg.n_head
        head_dim = self.cfg.n_embd // n_head
        at = Position(token_id, pos_id)

        def norm(x, li=None):  # rmsnorm, showing its mean square and scale
            y, ms, scale = rmsnorm(x)
            at.emit("ms", "sum(xi * xi for xi in x) / len(x)", ms, li)
            at.emit("scale", "(ms + 1e-5) ** -0.5", scale, li)
            return at.emit("x", "rmsnorm(x)", y, li), scale

        def lin(name, x, x_name, weight, li, note=""):  # linear, named as atomic.py writes it
            return at.emit(name, f"linear({x_name}, state_dict['{weight}']){note}", linear(x, w[weight]), li)

        tok_emb = at.emit("tok_emb", "state_dict['wte'][token_id]", w["wte"][token_id])
        pos_emb = at.emit("pos_emb", "state_dict['wpe'][pos_id]", w["wpe"][pos_id])
        x = at.emit("x", "[t + p for t, p in zip(tok_emb, pos_emb)]", [t + p for t, p in zip(tok_emb, pos_emb)])
        at.saved["x_embed"] = x
        x, at.saved["scale_embed"] = norm(x)

        for li in range(self.cfg.n_layer):
            s = at.saved[li] = {}  # what the backward pass needs from this layer
            # Attention: each head mixes the values of all positions so far, weighted by q.k.
            x_residual = s["x_in"] = at.emit("x_residual", "x", x, li)
            x, s["scale_attn"] = norm(x, li)
            s["x_norm_attn"] = x
            q = s["q"] = lin("q", x, "x", f"layer{li}.attn_wq", li)
            k = lin("k", x, "x", f"layer{li}.attn_wk", li)
            v = lin("v", x, "x", f"layer{li}.attn_wv", li)
            keys[li].append(k)
            values[li].append(v)
            at.emit("keys", f"keys[{li}] after keys[{li}].append(k)", [list(ki) for ki in keys[li]], li)
            at.emit("values", f"values[{li}] after values[{li}].append(v)", [list(vi) for vi in values[li]], li)
            s["keys"], s["values"], s["attn_weights"] = keys[li], values[li], []
            x_attn = []
            for h in range(n_head):
                hs = h * head_dim
                q_h = at.emit("q_h", "q[hs:hs + head_dim]", q[hs:hs + head_dim], li, h)
                k_h = at.emit("k_h", "[ki[hs:hs + head_dim] for ki in keys[li]]",
                              [ki[hs:hs + head_dim] for ki in keys[li]], li, h)
                v_h = at.emit("v_h", "[vi[hs:hs + head_dim] for vi in values[li]]",
                              [vi[hs:hs + head_dim] for vi in values[li]], li, h)
                attn_logits = at.emit("attn_logits", "[q_h . k_h[t] / head_dim ** 0.5 for t]",
                                      [sum(q_h[j] * k_h[t][j] for j in range(head_dim)) * (head_dim ** 0.5) ** -1
                                       for t in range(len(k_h))], li, h)
                attn_weights, max_val = softmax(attn_logits)
                at.emit("max_val", "max(attn_logits): subtracted before exp() in softmax", max_val, li, h)
                s["attn_weights"].append(at.emit("attn_weights", "softmax(attn_logits)", attn_weights, li, h))
                head_out = at.emit("head_out", "[sum(attn_weights[t] * v_h[t][j] for t) for j]",
                                   [sum(attn_weights[t] * v_h[t][j] for t in range(len(v_h))) for j in range(head_dim)],
                                   li, h)
                x_attn.extend(head_out)
            s["x_attn"] = at.emit("x_attn", "the heads' outputs, side by side", x_attn, li)
            x = lin("x", x_attn, "x_attn", f"layer{li}.attn_wo", li)
            x = at.emit("x", "[a + b for a, b in zip(x, x_residual)]", [a + b for a, b in zip(x, x_residual)], li)
            # MLP: widen 4x, ReLU, narrow back.
            x_residual = s["x_mid"] = at.emit("x_residual", "x", x, li)
            x, s["scale_mlp"] = norm(x, li)
            s["x_norm_mlp"] = x
            x = lin("x", x, "x", f"layer{li}.mlp_fc1", li, "  (before ReLU)")
            x = s["hidden"] = at.emit("x", "[xi.relu() for xi in x]", [max(0, xi) for xi in x], li)
            x = lin("x", x, "x", f"layer{li}.mlp_fc2", li)
            x = at.emit("x", "[a + b for a, b in zip(x, x_residual)]", [a + b for a, b in zip(x, x_residual)], li)

        at.saved["x_final"] = x
        at.logits = lin("logits", x, "x", "lm_head", None)
        return at

    def forward(self, tokens) -> Walk:
        """Every position of one sequence, each predicting the next token; the mean loss, as atomic.py."""
        keys, values = self.new_cache()
        positions, losses = [], []
        for pos_id in range(len(tokens) - 1):
            at = self.step(tokens[pos_id], pos_id, keys, values)
            at.target_id = tokens[pos_id + 1]
            at.probs, max_val = softmax(at.logits)
            at.emit("max_val", "max(logits): subtracted before exp() in softmax", max_val)
            at.emit("probs", "softmax(logits)", at.probs)
            at.loss_t = at.emit("loss_t", "-probs[target_id].log()", -math.log(at.probs[at.target_id]))
            positions.append(at)
            losses.append(at.loss_t)
        return Walk(list(tokens), positions, sum(losses) * (1 / len(losses)))

    # ---- the sampling interface of an Engine, so sample.generate can drive this model too -----
    def new_cache(self):
        return [[] for _ in range(self.cfg.n_layer)], [[] for _ in range(self.cfg.n_layer)]

    def logits(self, cache, token_id, pos_id):
        return self.step(token_id, pos_id, *cache).logits

    # ---- backward: the chain rule by hand, last position first ---------------------------------
    def backward(self, walk: Walk) -> dict:
        """d(loss)/d(param) for every parameter, name -> rows of floats."""
        w, cfg = self.w, self.cfg
        head_dim = cfg.n_embd // cfg.n_head
        grads = {name: [[0.0] * cols for _ in range(rows)] for name, (rows, cols) in self.shapes}
        n = len(walk.positions)
        # d(loss)/d(k) and d(loss)/d(v) of each cached position, filled by the positions that read them
        dkeys = [[[0.0] * cfg.n_embd for _ in range(n)] for _ in range(cfg.n_layer)]
        dvalues = [[[0.0] * cfg.n_embd for _ in range(n)] for _ in range(cfg.n_layer)]
        for at in reversed(walk.positions):
            p = at.pos_id
            # loss = mean of -log softmax(logits)[target]: dlogits = (probs - onehot(target)) / n
            dlogits = [(pi - (i == at.target_id)) / n for i, pi in enumerate(at.probs)]
            add_outer(grads["lm_head"], dlogits, at.saved["x_final"])
            dx = linear_t(dlogits, w["lm_head"])
            for li in reversed(range(cfg.n_layer)):
                s = at.saved[li]
                # MLP block: x = fc2(relu(fc1(rmsnorm(x_mid)))) + x_mid
                add_outer(grads[f"layer{li}.mlp_fc2"], dx, s["hidden"])
                dhidden = linear_t(dx, w[f"layer{li}.mlp_fc2"])
                dhidden = [d if h > 0 else 0.0 for d, h in zip(dhidden, s["hidden"])]  # ReLU's gate
                add_outer(grads[f"layer{li}.mlp_fc1"], dhidden, s["x_norm_mlp"])
                dnorm = linear_t(dhidden, w[f"layer{li}.mlp_fc1"])
                dx = [a + b for a, b in zip(dx, rmsnorm_back(s["x_mid"], s["scale_mlp"], dnorm))]
                # Attention block: x_mid = wo(x_attn) + x_in
                add_outer(grads[f"layer{li}.attn_wo"], dx, s["x_attn"])
                dx_attn = linear_t(dx, w[f"layer{li}.attn_wo"])
                dq = [0.0] * cfg.n_embd
                for h in range(cfg.n_head):
                    hs = h * head_dim
                    weights = s["attn_weights"][h]
                    dhead = dx_attn[hs:hs + head_dim]
                    dweights = []
                    for t, wt in enumerate(weights):  # head_out = sum_t weights[t] v_h[t]
                        v_t = s["values"][t][hs:hs + head_dim]
                        dweights.append(sum(d * vj for d, vj in zip(dhead, v_t)))
                        for j in range(head_dim):
                            dvalues[li][t][hs + j] += wt * dhead[j]
                    dattn_logits = softmax_back(weights, dweights)
                    c = (head_dim ** 0.5) ** -1  # attn_logits[t] = c q_h . k_h[t]
                    for t, dl in enumerate(dattn_logits):
                        k_t = s["keys"][t]
                        for j in range(head_dim):
                            dq[hs + j] += c * dl * k_t[hs + j]
                            dkeys[li][t][hs + j] += c * dl * s["q"][hs + j]
                # every later position has already added its share to this position's k and v
                dk, dv = dkeys[li][p], dvalues[li][p]
                x_norm = s["x_norm_attn"]
                dnorm = [0.0] * cfg.n_embd
                for name, d in (("attn_wq", dq), ("attn_wk", dk), ("attn_wv", dv)):
                    add_outer(grads[f"layer{li}.{name}"], d, x_norm)
                    dnorm = [a + b for a, b in zip(dnorm, linear_t(d, w[f"layer{li}.{name}"]))]
                dx = [a + b for a, b in zip(dx, rmsnorm_back(s["x_in"], s["scale_attn"], dnorm))]
            # x = rmsnorm(tok_emb + pos_emb)
            dembed = rmsnorm_back(at.saved["x_embed"], at.saved["scale_embed"], dx)
            for row, index in ((grads["wte"], at.token_id), (grads["wpe"], p)):
                row[index] = [a + b for a, b in zip(row[index], dembed)]
        return grads


def adam(params, grads, m, v, step, lr, tcfg):
    """One Adam step on flat lists, as atomic.py writes it; returns new params, m, v and every
    intermediate (m_hat, v_hat, update) so that a trace can show them. `step` is 0-based."""
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
