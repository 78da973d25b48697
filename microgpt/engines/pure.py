"""The pure engine: atomic.py's model on plain Python floats, with the backward pass written out by
hand, standard library only. It needs nothing installed (so it also runs in the browser, in Pyodide)
and builds no graph of Value objects, so it is much faster than the scalar engine while computing the
same function: in float64 its losses and gradients equal the scalar engine's to round-off.

    microgpt train --engine pure

The forward does the same float operations as atomic.py's Value graph (a / b is a * b ** -1, as
Value's __truediv__ does), so its logits equal the scalar engine's; the backward is derived by hand,
not by autograd, so tests can check it against Value's chain rule as an independent computation.
`forward` keeps what each position computed (attention weights, probabilities, loss), which the
report draws.
"""

import math
from dataclasses import dataclass, field

from microgpt.engines import base
from microgpt.params import param_shapes
from microgpt.tensor import Tensor


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
class Position:
    token_id: int
    pos_id: int
    saved: dict = field(default_factory=dict)   # what the backward pass needs
    logits: list = field(default_factory=list)
    target_id: int | None = None
    probs: list = field(default_factory=list)
    loss_t: float | None = None



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
        """One position: fills the KV cache like gpt() and returns what the backward pass needs."""
        w, n_head = self.w, self.cfg.n_head
        head_dim = self.cfg.n_embd // n_head
        at = Position(token_id, pos_id)
        tok_emb, pos_emb = w["wte"][token_id], w["wpe"][pos_id]
        x = at.saved["x_embed"] = [t + p for t, p in zip(tok_emb, pos_emb)]   # (C,)
        x, _, at.saved["scale_embed"] = rmsnorm(x)

        for li in range(self.cfg.n_layer):
            s = at.saved[li] = {}  # what the backward pass needs from this layer
            # Attention: each head mixes the values of all positions so far, weighted by q.k.
            x_residual = s["x_in"] = x
            x, _, s["scale_attn"] = rmsnorm(x)
            s["x_norm_attn"] = x
            q = s["q"] = linear(x, w[f"layer{li}.attn_wq"])                      # (C,)
            keys[li].append(linear(x, w[f"layer{li}.attn_wk"]))                  # (t + 1, C)
            values[li].append(linear(x, w[f"layer{li}.attn_wv"]))
            s["keys"], s["values"], s["attn_weights"] = keys[li], values[li], []
            x_attn = []
            for h in range(n_head):
                hs = h * head_dim
                q_h = q[hs:hs + head_dim]                                       # (head_dim,)
                attn_logits = [sum(q_h[j] * k_t[hs + j] for j in range(head_dim)) * (head_dim ** 0.5) ** -1
                               for k_t in keys[li]]                              # (t + 1,)
                attn_weights, _ = softmax(attn_logits)
                s["attn_weights"].append(attn_weights)
                x_attn.extend(sum(attn_weights[t] * v_t[hs + j] for t, v_t in enumerate(values[li]))
                              for j in range(head_dim))
            s["x_attn"] = x_attn                                                 # (C,) the heads side by side
            x = linear(x_attn, w[f"layer{li}.attn_wo"])
            x = [a + b for a, b in zip(x, x_residual)]
            # MLP: widen 4x, ReLU, narrow back.
            x_residual = s["x_mid"] = x
            x, _, s["scale_mlp"] = rmsnorm(x)
            s["x_norm_mlp"] = x
            x = s["hidden"] = [max(0, xi) for xi in linear(x, w[f"layer{li}.mlp_fc1"])]   # (4C,)
            x = linear(x, w[f"layer{li}.mlp_fc2"])
            x = [a + b for a, b in zip(x, x_residual)]

        at.saved["x_final"] = x
        at.logits = linear(x, w["lm_head"])                                     # (vocab,)
        return at

    def forward(self, tokens) -> Walk:
        """Every position of one sequence, each predicting the next token; the mean loss, as atomic.py."""
        keys, values = self.new_cache()
        positions, losses = [], []
        for pos_id in range(len(tokens) - 1):
            at = self.step(tokens[pos_id], pos_id, keys, values)
            at.target_id = tokens[pos_id + 1]
            at.probs, _ = softmax(at.logits)
            at.loss_t = -math.log(at.probs[at.target_id])
            positions.append(at)
            losses.append(at.loss_t)
        return Walk(list(tokens), positions, sum(losses) * (1 / len(losses)))

    # ---- the sampling interface of an Engine, so sample.generate can drive this model too -----
    def new_cache(self):
        return [[] for _ in range(self.cfg.n_layer)], [[] for _ in range(self.cfg.n_layer)]

    def logits(self, cache, token_id, pos_id):
        return self.step(token_id, pos_id, *cache).logits

    # ---- backward: the chain rule by hand, last position first ---------------------------------
    def zero_grads(self) -> dict:
        return {name: [[0.0] * cols for _ in range(rows)] for name, (rows, cols) in self.shapes}

    def backward(self, walk: Walk, grads: dict | None = None, n: int | None = None) -> dict:
        """d(loss)/d(param) for every parameter, name -> rows of floats, added into `grads`. The loss is
        the mean over `n` predicted tokens (default: this walk's), so a batch's walks share one n."""
        w, cfg = self.w, self.cfg
        head_dim = cfg.n_embd // cfg.n_head
        grads = self.zero_grads() if grads is None else grads
        n = n or len(walk.positions)
        T = len(walk.positions)
        # d(loss)/d(k) and d(loss)/d(v) of each cached position, filled by the positions that read them
        dkeys = [[[0.0] * cfg.n_embd for _ in range(T)] for _ in range(cfg.n_layer)]
        dvalues = [[[0.0] * cfg.n_embd for _ in range(T)] for _ in range(cfg.n_layer)]
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


class Engine(base.Engine):
    """FloatGPT as an engine: batches of sequences, Adam as atomic.py writes it, float64."""
    name = "pure"

    def __init__(self, model_cfg, train_cfg, params: dict[str, Tensor]):
        self.cfg, self.tcfg = model_cfg, train_cfg
        self.gpt = FloatGPT(model_cfg, params)
        self.shapes = param_shapes(model_cfg)
        self.m = {name: [[0.0] * c for _ in range(r)] for name, (r, c) in self.shapes}
        self.v = {name: [[0.0] * c for _ in range(r)] for name, (r, c) in self.shapes}

    def loss_and_grad_rows(self, seqs):
        """(mean loss over every predicted token of the batch, name -> rows of its gradient)."""
        walks = [self.gpt.forward(tokens) for tokens in seqs]
        n = sum(len(wk.positions) for wk in walks)
        grads = self.gpt.zero_grads()
        for wk in walks:
            self.gpt.backward(wk, grads, n)
        return sum(at.loss_t for wk in walks for at in wk.positions) * (1 / n), grads

    def train_step(self, seqs, step: int, lr: float) -> float:
        loss, grads = self.loss_and_grad_rows(seqs)
        t = self.tcfg
        c1, c2 = 1 - t.beta1 ** (step + 1), 1 - t.beta2 ** (step + 1)
        for name, _ in self.shapes:  # Adam, exactly as in atomic.py
            for p_row, g_row, m_row, v_row in zip(self.gpt.w[name], grads[name], self.m[name], self.v[name]):
                for i, g in enumerate(g_row):
                    m_row[i] = t.beta1 * m_row[i] + (1 - t.beta1) * g
                    v_row[i] = t.beta2 * v_row[i] + (1 - t.beta2) * g ** 2
                    m_hat = m_row[i] / c1
                    v_hat = v_row[i] / c2
                    p_row[i] -= lr * m_hat / (v_hat ** 0.5 + t.eps)
        return loss

    def eval_loss(self, seqs) -> float:
        walks = [self.gpt.forward(tokens) for tokens in seqs]
        losses = [at.loss_t for wk in walks for at in wk.positions]
        return sum(losses) * (1 / len(losses))

    def loss_and_grads(self, seqs):
        loss, grads = self.loss_and_grad_rows(seqs)
        return loss, self._tensors(grads)

    # ---- state -------------------------------------------------------------------------------
    def _tensors(self, rows_by_name) -> dict[str, Tensor]:
        return {name: Tensor.from_floats(shape, [x for row in rows_by_name[name] for x in row])
                for name, shape in self.shapes}

    def weights(self) -> dict[str, Tensor]:
        return self._tensors(self.gpt.w)

    def state(self) -> dict[str, Tensor]:
        return base.adam_state(self._tensors(self.m), self._tensors(self.v))

    def load_state(self, state: dict[str, Tensor]) -> None:
        names = [name for name, _ in self.shapes]
        self.m = {n: t.rows() for n, t in base.take(state, "adam.m.", names).items()}
        self.v = {n: t.rows() for n, t in base.take(state, "adam.v.", names).items()}

    # ---- sampling ----------------------------------------------------------------------------
    def new_cache(self):
        return self.gpt.new_cache()

    def logits(self, cache, token_id: int, pos_id: int) -> list[float]:
        return self.gpt.logits(cache, token_id, pos_id)
