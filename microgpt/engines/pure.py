"""The pure engine: atomic.py's model on plain Python floats, with the backward pass written out by
hand, standard library only. It needs nothing installed (so it also runs in the browser, in Pyodide)
and builds no graph of Value objects, so it is many times faster than the scalar engine while
computing the same function: in float64 its losses and gradients equal the scalar engine's to round-off.

    microgpt train --engine pure

The forward goes position by position, as atomic.py's gpt() does, with the same float operations
(a / b is a * b ** -1, as Value's __truediv__ does), so on Python 3.11 its logits equal the scalar
engine's to the last bit (from 3.12, math.sumprod and sum() round sums more exactly than Value's
one-by-one additions, so they agree to round-off). It keeps
what each position computed (attention weights, probabilities, loss), which the backward pass and the
report read. The backward is derived by hand, not by autograd, so tests can check it against Value's
chain rule as an independent computation. It goes layer by layer, last first, over every position of
the batch at once: each linear layer y = W x is then one matrix product forward and two backward.

Speed in CPython comes from doing the inner loops in C: a dot product is one call (math.sumprod, or
sum(map(mul, a, b)) before Python 3.12), a transpose is `zip(*rows)`, every weight matrix is kept both
as rows (forward) and as columns (backward), and Adam runs over flat lists of all parameters.
"""

import math
from dataclasses import dataclass, field
from itertools import chain
from operator import add, mul

from microgpt.engines import base
from microgpt.params import param_shapes
from microgpt.tensor import Tensor


# ---- the building blocks, each as atomic.py computes it ---------------------------------------
try:
    from math import sumprod as dot  # Python 3.12+ (Pyodide too): a dot product in one call, in C
except ImportError:
    def dot(a, b):  # sum_i a_i b_i, its loop in C: map() multiplies, sum() adds
        return sum(map(mul, a, b))


def linear(x, w):  # y = W x, with W of shape (nout, nin): (nout,)
    return [dot(w_row, x) for w_row in w]


def transpose(rows):  # (n, m) -> (m, n), rows as tuples
    return list(zip(*rows))


def matmul(a, b_t):  # A B, given A (n, k) and B's transpose (m, k): (n, m), row by row
    return [linear(a_row, b_t) for a_row in a]


def linear_back(dy, x, w_t):
    """Both gradients of y = W x at N positions, from dy (N, nout), the inputs x (N, nin) and W^T:
    (dx = dy W, (N, nin); dW = dy^T x summed over the positions, (nout, nin))."""
    return matmul(dy, w_t), matmul(transpose(dy), transpose(x))


def softmax(logits):
    """(probs, max_val): the max is subtracted before exp() so that it cannot overflow."""
    max_val = max(logits)
    exps = [math.exp(val - max_val) for val in logits]
    inv_total = sum(exps) ** -1  # e / total, as Value divides: e * total ** -1
    return [e * inv_total for e in exps], max_val


def softmax_back(p, dp):  # dlogit_i = p_i (dp_i - sum_j p_j dp_j)
    p_dot_dp = dot(p, dp)
    return [pi * (dpi - p_dot_dp) for pi, dpi in zip(p, dp)]


def rmsnorm(x):
    """(x * scale, scale) with scale = (mean(x^2) + 1e-5) ** -0.5."""
    ms = dot(x, x) * len(x) ** -1
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x], scale


def rmsnorm_back(x, scale, dy):  # y_i = x_i s: dx_i = s dy_i - s^3 x_i (sum_j dy_j x_j) / n
    c = scale ** 3 * dot(dy, x) / len(x)
    return [scale * d - c * xi for d, xi in zip(dy, x)]


# ---- what one call of gpt() leaves behind ------------------------------------------------------
@dataclass
class Position:
    token_id: int
    pos_id: int
    saved: dict = field(default_factory=dict)   # what the backward pass needs; saved[li]: layer li's part
    logits: list = field(default_factory=list)
    target_id: int | None = None
    probs: list = field(default_factory=list)
    loss_t: float | None = None


@dataclass
class Walk:
    tokens: list
    positions: list
    loss: float
    keys: list = field(default_factory=list)    # the KV cache: keys[li][h][t], (head_dim,)
    values: list = field(default_factory=list)


class FloatGPT:
    def __init__(self, model_cfg, params):
        self.cfg = model_cfg
        self.shapes = param_shapes(model_cfg)
        self.load([x for name, _ in self.shapes for x in params[name].to_floats()])

    def load(self, flat):
        """Take every parameter from one flat list, in params.py's order: as rows of floats (name -> rows,
        as atomic.py's state_dict holds rows of Values) for the forward, as columns for the backward."""
        self.w, self.w_t, i = {}, {}, 0
        for name, (rows, cols) in self.shapes:
            self.w[name] = [flat[i + r * cols:i + (r + 1) * cols] for r in range(rows)]   # (rows, cols)
            self.w_t[name] = transpose(self.w[name])                                     # (cols, rows)
            i += rows * cols

    # ---- forward: atomic.py's gpt(), line by line ----------------------------------------------
    def step(self, token_id, pos_id, keys, values) -> Position:
        """One position: fills the KV cache like gpt() and returns what the backward pass needs."""
        w, n_embd = self.w, self.cfg.n_embd
        head_dim = n_embd // self.cfg.n_head
        inv_sqrt_hd = (head_dim ** 0.5) ** -1  # attn_logits / head_dim ** 0.5, as Value divides
        at = Position(token_id, pos_id)
        tok_emb, pos_emb = w["wte"][token_id], w["wpe"][pos_id]
        x = at.saved["x_embed"] = list(map(add, tok_emb, pos_emb))           # (C,)
        x, at.saved["scale_embed"] = rmsnorm(x)

        for li in range(self.cfg.n_layer):
            s = at.saved[li] = {}  # what the backward pass needs from this layer
            # Attention: each head mixes the values of all positions so far, weighted by q.k.
            x_residual = s["x_in"] = x
            x, s["scale_attn"] = rmsnorm(x)
            s["x_norm_attn"] = x
            q = s["q"] = linear(x, w[f"layer{li}.attn_wq"])                      # (C,)
            k = linear(x, w[f"layer{li}.attn_wk"])
            v = linear(x, w[f"layer{li}.attn_wv"])
            s["attn_weights"], x_attn = [], []
            for h, hs in enumerate(range(0, n_embd, head_dim)):
                k_h, v_h = keys[li][h], values[li][h]    # this head's slice of every cached k and v
                k_h.append(k[hs:hs + head_dim])                                  # (t + 1, head_dim)
                v_h.append(v[hs:hs + head_dim])
                q_h = q[hs:hs + head_dim]                                        # (head_dim,)
                attn_logits = [dot(q_h, k_t) * inv_sqrt_hd for k_t in k_h]   # (t + 1,)
                attn_weights, _ = softmax(attn_logits)
                s["attn_weights"].append(attn_weights)
                x_attn += [dot(attn_weights, v_j) for v_j in zip(*v_h)]      # head_out, (head_dim,)
            s["x_attn"] = x_attn                                                 # (C,) the heads side by side
            x = linear(x_attn, w[f"layer{li}.attn_wo"])
            x = list(map(add, x, x_residual))
            # MLP: widen 4x, ReLU, narrow back.
            x_residual = s["x_mid"] = x
            x, s["scale_mlp"] = rmsnorm(x)
            s["x_norm_mlp"] = x
            x = s["hidden"] = [xi if xi > 0 else 0.0 for xi in linear(x, w[f"layer{li}.mlp_fc1"])]   # (4C,)
            x = linear(x, w[f"layer{li}.mlp_fc2"])                               # (C,)
            x = list(map(add, x, x_residual))

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
        return Walk(list(tokens), positions, sum(losses) * (1 / len(losses)), keys, values)

    # ---- the sampling interface of an Engine, so sample.generate can drive this model too -----
    def new_cache(self):
        """(keys, values): per layer, per head, the list of each position's (head_dim,) slice."""
        layers, heads = range(self.cfg.n_layer), range(self.cfg.n_head)
        return [[[] for _ in heads] for _ in layers], [[[] for _ in heads] for _ in layers]

    def logits(self, cache, token_id, pos_id):
        return self.step(token_id, pos_id, *cache).logits

    # ---- backward: the chain rule by hand, last layer first, every position at once -------------
    def backward(self, *walks: Walk, n: int | None = None) -> dict:
        """d(loss)/d(param) for every parameter, name -> rows of floats. The loss is the mean over `n`
        predicted tokens (default: all of the walks'), so the walks of a batch share one n."""
        w_t, cfg = self.w_t, self.cfg
        positions = [at for walk in walks for at in walk.positions]   # every position of the batch: N
        n = n or len(positions)
        grads = {}
        # loss = mean of -log softmax(logits)[target]: dlogits = (probs - onehot(target)) / n
        dlogits = []                                                              # (N, vocab)
        for at in positions:
            d = [p / n for p in at.probs]
            d[at.target_id] = (at.probs[at.target_id] - 1) / n
            dlogits.append(d)
        x_final = [at.saved["x_final"] for at in positions]
        dx, grads["lm_head"] = linear_back(dlogits, x_final, w_t["lm_head"])      # (N, C)
        for li in reversed(range(cfg.n_layer)):
            layer = f"layer{li}."
            s = [at.saved[li] for at in positions]
            # MLP block: x = fc2(relu(fc1(rmsnorm(x_mid)))) + x_mid
            hidden = [si["hidden"] for si in s]                                   # (N, 4C)
            dhidden, grads[layer + "mlp_fc2"] = linear_back(dx, hidden, w_t[layer + "mlp_fc2"])
            dhidden = [[d if h > 0 else 0.0 for d, h in zip(d_row, h_row)]        # ReLU's gate
                       for d_row, h_row in zip(dhidden, hidden)]
            x_norm = [si["x_norm_mlp"] for si in s]
            dnorm, grads[layer + "mlp_fc1"] = linear_back(dhidden, x_norm, w_t[layer + "mlp_fc1"])
            dx = [list(map(add, d, rmsnorm_back(si["x_mid"], si["scale_mlp"], dn)))
                  for d, si, dn in zip(dx, s, dnorm)]
            # Attention block: x_mid = wo(attention(wq x, wk x, wv x)) + x_in, with x = rmsnorm(x_in)
            x_attn = [si["x_attn"] for si in s]
            dx_attn, grads[layer + "attn_wo"] = linear_back(dx, x_attn, w_t[layer + "attn_wo"])
            dq, dk, dv = [], [], []                                               # (N, C) each
            start = 0
            for walk in walks:
                end = start + len(walk.positions)
                for rows, part in zip((dq, dk, dv), self.attention_back(walk, li, dx_attn[start:end])):
                    rows += part
                start = end
            x_norm = [si["x_norm_attn"] for si in s]
            dnorm_q, grads[layer + "attn_wq"] = linear_back(dq, x_norm, w_t[layer + "attn_wq"])
            dnorm_k, grads[layer + "attn_wk"] = linear_back(dk, x_norm, w_t[layer + "attn_wk"])
            dnorm_v, grads[layer + "attn_wv"] = linear_back(dv, x_norm, w_t[layer + "attn_wv"])
            dnorm = [[a + b + c for a, b, c in zip(*rows)] for rows in zip(dnorm_q, dnorm_k, dnorm_v)]
            dx = [list(map(add, d, rmsnorm_back(si["x_in"], si["scale_attn"], dn)))
                  for d, si, dn in zip(dx, s, dnorm)]
        # x = rmsnorm(tok_emb + pos_emb): both embeddings get d(x_embed), in the rows that were read
        grads["wte"] = [[0.0] * cfg.n_embd for _ in range(cfg.vocab_size)]
        grads["wpe"] = [[0.0] * cfg.n_embd for _ in range(cfg.block_size)]
        for at, d in zip(positions, dx):
            dembed = rmsnorm_back(at.saved["x_embed"], at.saved["scale_embed"], d)   # (C,)
            for rows, index in ((grads["wte"], at.token_id), (grads["wpe"], at.pos_id)):
                rows[index] = list(map(add, rows[index], dembed))
        return grads

    def attention_back(self, walk: Walk, li: int, dx_attn):
        """(dq, dk, dv), (T, C) each, of layer li at the T positions of one walk, from d(x_attn) (T, C).
        Position p's head h computed attn_weights = softmax(q_h[p] . k_h[t] / sqrt(head_dim), t <= p)
        and head_out = sum_t attn_weights[t] v_h[t]; written as (T, T) matrices, zero where t > p."""
        n_embd, T = self.cfg.n_embd, len(walk.positions)
        head_dim = n_embd // self.cfg.n_head
        inv_sqrt_hd = (head_dim ** 0.5) ** -1
        s = [at.saved[li] for at in walk.positions]
        dq, dk, dv = [[] for _ in range(T)], [[] for _ in range(T)], [[] for _ in range(T)]  # grown head by head
        for h, hs in enumerate(range(0, n_embd, head_dim)):
            k_h, v_h = walk.keys[li][h], walk.values[li][h]                       # (T, head_dim)
            q_h = [si["q"][hs:hs + head_dim] for si in s]                         # (T, head_dim)
            dhead = [row[hs:hs + head_dim] for row in dx_attn]                    # (T, head_dim) d(head_out)
            weights, dlogits = [], []                                             # (T, T) each
            for p, si in enumerate(s):
                attn_weights = si["attn_weights"][h]                              # (p + 1,)
                dweights = [dot(dhead[p], v_t) for v_t in v_h[:p + 1]]  # d(attn_weights[t]) = dhead . v_t
                dattn = softmax_back(attn_weights, dweights)                      # d(attn_logits)
                zeros = [0.0] * (T - p - 1)
                weights.append(attn_weights + zeros)
                dlogits.append([d * inv_sqrt_hd for d in dattn] + zeros)           # d(q_h . k_t)
            for rows, part in ((dv, matmul(transpose(weights), transpose(dhead))),  # dv_t = sum_p w_p[t] dhead_p
                               (dq, matmul(dlogits, transpose(k_h))),               # dq_p = sum_t dl_p[t] k_t
                               (dk, matmul(transpose(dlogits), transpose(q_h)))):   # dk_t = sum_p dl_p[t] q_p
                for row, part_row in zip(rows, part):
                    row += part_row
        return dq, dk, dv


class Engine(base.Engine):
    """FloatGPT as an engine: batches of sequences, Adam as atomic.py writes it over flat lists, float64."""
    name = "pure"

    def __init__(self, model_cfg, train_cfg, params: dict[str, Tensor]):
        self.cfg, self.tcfg = model_cfg, train_cfg
        self.gpt = FloatGPT(model_cfg, params)
        self.shapes = param_shapes(model_cfg)
        self.params = [x for name, _ in self.shapes for x in params[name].to_floats()]  # every parameter, flat
        self.m = [0.0] * len(self.params)
        self.v = [0.0] * len(self.params)

    def loss_and_flat_grads(self, seqs):
        """(mean loss over every predicted token of the batch, its gradient as one flat list)."""
        walks = [self.gpt.forward(tokens) for tokens in seqs]
        n = sum(len(walk.positions) for walk in walks)
        grads = self.gpt.backward(*walks, n=n)
        flat = list(chain.from_iterable(row for name, _ in self.shapes for row in grads[name]))
        return sum(at.loss_t for walk in walks for at in walk.positions) * (1 / n), flat

    def train_step(self, seqs, step: int, lr: float) -> float:
        loss, grads = self.loss_and_flat_grads(seqs)
        t = self.tcfg
        beta1, beta2, eps = t.beta1, t.beta2, t.eps
        c1, c2 = 1 - beta1 ** (step + 1), 1 - beta2 ** (step + 1)
        a1, a2 = 1 - beta1, 1 - beta2
        # Adam, exactly as in atomic.py, one list comprehension per line of its loop
        self.m = [beta1 * m + a1 * g for m, g in zip(self.m, grads)]
        self.v = [beta2 * v + a2 * g ** 2 for v, g in zip(self.v, grads)]
        self.params = [p - lr * (m / c1) / ((v / c2) ** 0.5 + eps) for p, m, v in zip(self.params, self.m, self.v)]
        self.gpt.load(self.params)
        return loss

    def eval_loss(self, seqs) -> float:
        losses = [at.loss_t for tokens in seqs for at in self.gpt.forward(tokens).positions]
        return sum(losses) * (1 / len(losses))

    def loss_and_grads(self, seqs):
        loss, grads = self.loss_and_flat_grads(seqs)
        return loss, self._tensors(grads)

    # ---- state -------------------------------------------------------------------------------
    def _tensors(self, flat) -> dict[str, Tensor]:
        out, i = {}, 0
        for name, (rows, cols) in self.shapes:
            out[name] = Tensor.from_floats((rows, cols), flat[i:i + rows * cols])
            i += rows * cols
        return out

    def weights(self) -> dict[str, Tensor]:
        return self._tensors(self.params)

    def state(self) -> dict[str, Tensor]:
        return base.adam_state(self._tensors(self.m), self._tensors(self.v))

    def load_state(self, state: dict[str, Tensor]) -> None:
        names = [name for name, _ in self.shapes]
        m, v = base.take(state, "adam.m.", names), base.take(state, "adam.v.", names)
        self.m = [x for name in names for x in m[name].to_floats()]
        self.v = [x for name in names for x in v[name].to_floats()]

    # ---- sampling ----------------------------------------------------------------------------
    def new_cache(self):
        return self.gpt.new_cache()

    def logits(self, cache, token_id: int, pos_id: int) -> list[float]:
        return self.gpt.logits(cache, token_id, pos_id)
