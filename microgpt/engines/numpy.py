"""The numpy engine: atomic.py's GPT on arrays, with the backward pass written out by hand.

    microgpt train --engine numpy [--batch-size 256] [--dtype float32]

Every layer is a pair of functions in the manner of llm.c's train_gpt2.c: `<layer>_forward` fills
buffers the caller owns and keeps what the backward needs; `<layer>_backward` turns the gradient of
the layer's output into the gradients of its input and weights. The matrix calculus is in plain sight.

Layout. A batch is sorted by document length and packed into one stream of N rows, N = the number of
predicted tokens of the batch, with no padding: activations are (N, C). Only attention looks across
rows; it runs per group of equal-length documents, each group a dense (n, H, T, T) block under a
causal mask. That is atomic.py's KV-cache loop with all positions at once, and with batch 1 it is
one document in one pass. The loss is the mean over all N predicted tokens, as the scalar engine's.

Speed. Parameters, gradients and Adam's moments are each one flat array, the per-matrix arrays being
views into it, so Adam is a handful of vector operations. Buffers are allocated once, grown to the
largest batch, and reused; every matrix product writes into its destination (`out=`), the weight
gradients straight into the flat gradient. With tiny matrices the cost is mostly numpy's per-call
overhead, so the code keeps the number of calls low: `scripts/bench_numpy.py --profile` shows where
the time goes, `microgpt bench` compares the engines.
"""

import functools
import itertools
import math
import os
import sys

if "numpy" not in sys.modules:
    # One BLAS thread: these matrices are tiny, and OpenBLAS's extra threads cost more than they give
    # (4x slower at batch 256 on a busy 2-core machine). Set OPENBLAS_NUM_THREADS yourself to override.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402  (after the thread setting, which numpy reads when it loads)

from microgpt.engines import base
from microgpt.errors import UsageError
from microgpt.params import param_shapes
from microgpt.tensor import Tensor

# A diverging run overflows: the loop reports its non-finite loss in one message (train.py), so numpy's
# RuntimeWarnings about the same overflow are kept from the user.
QUIET_FLOATS = np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")
DTYPES = {"float64": (np.float64, "F64"), "float32": (np.float32, "F32")}
RMS_EPS = 1e-5  # as atomic.py's rmsnorm


# ---- layers: forward and backward --------------------------------------------------------------
# Shapes: N rows (predicted tokens of the batch), C = n_embd, V = vocab_size, H heads of D = C / H.
# numpy reduces short rows slowly (a sum over 16 numbers costs more than a product), so sums along
# a row are products with a column of ones, and the logits are kept as (V, N), one column per token.

@functools.cache
def ones(n, dtype, value=1.0):
    """A (n, 1) column of ones, for row sums: a (.., m, n) @ ones -> (.., m, 1). With value 1 / n,
    the product gives row means."""
    return np.full((n, 1), value, dtype)


def row_means(out, a):
    """out (N, 1) = the mean of each row of a (N, C)."""
    C = a.shape[1]
    np.dot(a, ones(C, a.dtype, 1 / C), out=out)


def embedding_forward(out, wte_wpe, onehot):
    """out (N, C) = wte[token] + wpe[position], as one product: onehot (N, V + block_size) has in each
    row a 1 at the token's column and a 1 at V + the position's; wte_wpe (V + block_size, C) is wte
    with wpe below it. (Adding zeros changes nothing, so the sum is exactly wte[token] + wpe[pos].)"""
    np.dot(onehot, wte_wpe, out=out)


def embedding_backward(dwte_wpe, dout, onehot):
    """Each row's gradient added into its token's row of wte and its position's row of wpe, which is
    the same product transposed: d[wte; wpe] (V + block_size, C) = onehot^T @ dout (N, C)."""
    np.dot(onehot.T, dout, out=dwte_wpe)


def rmsnorm_forward(out, scale, inp, tmp):
    """out (N, C) = inp * scale, scale (N, 1) = (mean(inp^2) + eps)^-1/2, kept for the backward."""
    np.multiply(inp, inp, out=tmp)
    row_means(scale, tmp)
    scale += RMS_EPS
    np.power(scale, -0.5, out=scale)
    np.multiply(inp, scale, out=out)


def rmsnorm_backward(dinp, dout, out, scale, tmp, rowbuf, accumulate):
    """d(inp) = scale * (dout - out * mean(dout * out)): y = x s with s = (mean(x^2) + eps)^-1/2, so
    dy/dx gives s * dout, and ds/dx = -s^3 x / C gives -s * y * mean(dout * y). The residual stream
    adds it to dinp (N, C) when `accumulate`, else dinp is overwritten."""
    np.multiply(dout, out, out=tmp)
    row_means(rowbuf, tmp)                                   # (N, 1)
    np.multiply(out, rowbuf, out=tmp)
    np.subtract(dout, tmp, out=tmp)
    if accumulate:
        tmp *= scale
        dinp += tmp
    else:
        np.multiply(tmp, scale, out=dinp)


def matmul_forward(out, inp, weight):
    """out (N, OC) = inp (N, IC) @ weight^T, weight (OC, IC) as params.py stores it (no bias)."""
    np.dot(inp, weight.T, out=out)


def matmul_backward(dinp, dweight, dout, inp, weight):
    """dweight (OC, IC) = dout^T (OC, N) @ inp (N, IC); dinp (N, IC) = dout (N, OC) @ weight."""
    np.dot(dout.T, inp, out=dweight)
    np.dot(dout, weight, out=dinp)


def relu_forward(out):
    """In place: out = max(out, 0)."""
    np.maximum(out, 0, out=out)


def relu_backward(dout, out):
    """In place: the gradient passes where the output is positive (where the input was)."""
    dout *= out > 0


def attention_softmax(att):
    """In place, softmax over each row of att (..., T, T'), the scores of one query against the keys.
    Subtracting the same number from a row changes nothing but keeps exp() from overflowing. In
    float64 we subtract the largest score of each (document, head) block, >= each row's max, because
    numpy takes one max over a block much faster than T maxes over rows of T; a row could then only
    underflow to all zeros if its scores sat 700 below the block's largest, which they never approach.
    In float32 that margin is 87, which a sharp head can reach, so there each row uses its own max."""
    per_row = att.dtype == np.float32
    att -= att.max(axis=-1 if per_row else (-2, -1), keepdims=True)
    np.exp(att, out=att)
    att /= att @ ones(att.shape[-1], att.dtype)       # (..., T, 1) row sums


def attention_forward(kvT, qkv, groups, head_dim):
    """Causal self-attention over qkv (N, 3C), per group of n documents of equal length T. First q
    is scaled in place by 1 / sqrt(D), so that q . k is the score. For each group: q, k, v (n, H, T, D)
    are views of qkv, kT, vT (n, H, D, T) views of kvT (2C, N), a transposed copy of k and v (numpy
    multiplies transposed views of strided arrays slowly); att (n, H, T, T) keeps the softmax weights
    for the backward; out (n, H, T, D) is a view of the output buffer (N, C)."""
    C = qkv.shape[1] // 3
    qkv[:, :C] *= 1 / head_dim ** 0.5                     # q / sqrt(D)
    np.copyto(kvT, qkv[:, C:].T)                          # (2C, N): k^T and v^T
    for g in groups:
        att = g.att
        np.matmul(g.q, g.kT, out=att)                     # (n, H, T, T): q . k / sqrt(D), every pair
        att += g.mask                                     # -inf above the diagonal: no peeking ahead
        attention_softmax(att)
        np.matmul(att, g.v, out=g.out)                    # (n, H, T, D): weighted sum of values


def attention_backward(dqkv, groups, head_dim):
    """From dout (n, H, T, D) of each group, dq, dk, dv (n, H, T, D), views of dqkv (N, 3C).
    datt, dpre (n, H, T, T) are scratch. q in the forward's qkv is already divided by sqrt(D)."""
    for g in groups:
        att, datt, dpre = g.att, g.datt, g.dpre
        np.matmul(g.dout, g.vT, out=datt)                    # d(att) = dout . v^T
        np.matmul(att.swapaxes(-1, -2), g.dout, out=g.dv)    # dv = att^T . dout
        # softmax backward, row by row: d(pre) = att * (d(att) - sum(att * d(att)))
        np.multiply(att, datt, out=dpre)
        datt -= dpre @ ones(att.shape[-1], att.dtype)        # (n, H, T, 1) row sums
        np.multiply(att, datt, out=dpre)                     # zero above the diagonal, as att is
        # pre = (q / sqrt(D)) . k^T
        np.matmul(dpre, g.k, out=g.dq)
        np.matmul(dpre.swapaxes(-1, -2), g.q, out=g.dk)
    C = dqkv.shape[1] // 3
    dqkv[:, :C] *= 1 / head_dim ** 0.5                    # from d(q / sqrt(D)) to dq


def softmax_columns(probs, logits):
    """probs (V, N) = softmax of each column of logits (V, N), max-subtracted as atomic.py's."""
    np.subtract(logits, logits.max(axis=0, keepdims=True), out=probs)
    np.exp(probs, out=probs)
    probs /= ones(probs.shape[0], probs.dtype).T @ probs     # (1, N) column sums


def crossentropy_forward(probs, logits, tgt_flat):
    """probs (V, N) = softmax(logits (V, N)); returns the summed loss -sum(log probs[target]).
    tgt_flat (N,): the flat index target * N + column of each token's target in probs."""
    softmax_columns(probs, logits)
    return -float(np.log(probs.take(tgt_flat)).sum())


def crossentropy_backward(probs, tgt_flat, n):
    """In place, turns probs (V, N) into d(mean loss over n tokens)/d(logits) = (probs - onehot) / n."""
    probs.ravel()[tgt_flat] -= 1
    probs *= 1 / n


# ---- buffers for one batch layout ---------------------------------------------------------------
class _Arena:
    """Named scratch arrays, grown to the largest batch seen and reused by every later batch."""

    def __init__(self, dtype):
        self.dtype, self.store = dtype, {}

    def get(self, name, shape, offset=0, dtype=None):
        size = math.prod(shape)
        buf = self.store.get(name)
        if buf is None or buf.size < offset + size:
            buf = self.store[name] = np.empty(max(offset + size, 2 * (0 if buf is None else buf.size)),
                                              dtype or self.dtype)
        return buf[offset:offset + size].reshape(shape)


class _Rows:
    """The buffers of a batch of N predicted tokens, one row per token (the logits one column per
    token); shared by every batch with the same N."""

    def __init__(self, N, cfg, arena):
        C, V, a = cfg.n_embd, cfg.vocab_size, arena.get
        self.n = N
        self.columns = np.arange(N, dtype=np.intp)                       # (N,)
        # forward activations
        self.emb, self.x0, self.s0 = a("emb", (N, C)), a("x0", (N, C)), a("s0", (N, 1))
        self.logits, self.probs = a("logits", (V, N)), a("probs", (V, N))
        # backward and scratch, shared by the layers
        self.dx, self.dxn, self.dy = a("dx", (N, C)), a("dxn", (N, C)), a("dy", (N, C))
        self.dqkv, self.dh = a("dqkv", (N, 3 * C)), a("dh", (N, 4 * C))
        self.tmp, self.row = a("tmp", (N, C)), a("row", (N, 1))
        self.layers = []
        for l in range(cfg.n_layer):
            L = _LayerActs()
            L.xn1, L.s1, L.qkv = a(f"xn1.{l}", (N, C)), a(f"s1.{l}", (N, 1)), a(f"qkv.{l}", (N, 3 * C))
            L.kvT, L.y, L.xmid = a(f"kvT.{l}", (2 * C, N)), a(f"y.{l}", (N, C)), a(f"xmid.{l}", (N, C))
            L.xn2, L.s2, L.h = a(f"xn2.{l}", (N, C)), a(f"s2.{l}", (N, 1)), a(f"h.{l}", (N, 4 * C))
            L.xout = a(f"xout.{l}", (N, C))
            self.layers.append(L)


class _LayerActs:
    """One layer's activations for a batch (attributes set by _Rows)."""


class _Group:
    """n documents of T predicted tokens each, rows [r0, r0 + n T) of the stream, seen per head:
    q, k, v, out (n, H, T, D) are views of the layer's qkv and y, kT, vT (n, H, D, T) of its kvT."""

    def __init__(self, r0, n, T, H, D, mask, L, rows, att, datt, dpre):
        r1 = r0 + n * T
        split = (n, T, 3, H, D)
        self.q, self.k, self.v = L.qkv[r0:r1].reshape(split).transpose(2, 0, 3, 1, 4)
        self.kT, self.vT = L.kvT[:, r0:r1].reshape(2, H, D, n, T).transpose(0, 3, 1, 2, 4)
        self.out = L.y[r0:r1].reshape(n, T, H, D).transpose(0, 2, 1, 3)
        self.dq, self.dk, self.dv = rows.dqkv[r0:r1].reshape(split).transpose(2, 0, 3, 1, 4)
        self.dout = rows.dy[r0:r1].reshape(n, T, H, D).transpose(0, 2, 1, 3)
        self.mask, self.att, self.datt, self.dpre = mask, att, datt, dpre    # (T, T), (n, H, T, T) x 3


class _Plan:
    """What a batch layout adds to its _Rows: the inputs and targets, positions, and the attention
    groups with their buffers. `lengths`: the predicted tokens of each document, sorted (a numpy
    array). Built once per layout and cached (at batch 1 there are only block_size layouts)."""

    def __init__(self, lengths, rows, arena, cfg, eye_pos, masks):
        self.rows = rows
        N, B, V, H = rows.n, len(lengths), cfg.vocab_size, cfg.n_head
        # the documents arrive as one stream of tokens (N + B,); doc b's inputs are its tokens but
        # the last, its targets its tokens but the first
        self.stream = arena.get("stream", (N + B,), dtype=np.intp)
        doc = np.repeat(np.arange(B, dtype=np.intp), lengths)           # (N,) each row's document
        if B == 1:  # inputs and targets are views of the stream: no copying
            self.inp, self.tgt, self.inp_idx = self.stream[:-1], self.stream[1:], None
        else:
            self.inp, self.tgt = arena.get("inp", (N,), dtype=np.intp), arena.get("tgt", (N,), dtype=np.intp)
            self.inp_idx = rows.columns + doc                           # (N,) the inputs' places in the stream
            self.tgt_idx = self.inp_idx + 1
        self.tgt_flat = arena.get("tgt_flat", (N,), dtype=np.intp)     # (N,) target * N + column, in (V, N)
        starts = np.cumsum(lengths) - lengths
        self.pos = rows.columns - starts[doc]                           # (N,) position in its document
        # the embedding's one-hot rows [token | position] (N, V + block_size), filled by Engine._plan;
        # a single document's layout keeps its own, so its positions are written only once
        if B == 1:
            self.onehot = np.zeros((N, V + len(eye_pos)), eye_pos.dtype)
            eye_pos.take(self.pos, axis=0, out=self.onehot[:, V:])
            self.pos = None
        else:
            self.onehot = arena.get("onehot", (N, V + len(eye_pos)))
        Ts, counts = np.unique(lengths, return_counts=True)             # the runs of equal length
        C = rows.emb.shape[1]
        self.groups = []  # per layer
        for l, L in enumerate(rows.layers):
            groups, r0, off = [], 0, 0
            for T, n in zip(Ts.tolist(), counts.tolist()):
                shape = (n, H, T, T)
                att, datt, dpre = (arena.get(name, shape, off) for name in (f"att.{l}", "datt", "dpre"))
                groups.append(_Group(r0, n, T, H, C // H, masks(T), L, rows, att, datt, dpre))
                r0, off = r0 + n * T, off + n * H * T * T
            self.groups.append(groups)


class _Weights:
    """The model's matrices (or their gradients) as views into one flat array, in params.py's order."""

    def __init__(self, flat, cfg):
        self.by_name, start, i = {}, {}, 0
        for name, (rows, cols) in param_shapes(cfg):
            self.by_name[name], start[name] = flat[i:i + rows * cols].reshape(rows, cols), i
            i += rows * cols
        self.wte, self.wpe, self.lm_head = (self.by_name[k] for k in ("wte", "wpe", "lm_head"))
        # wpe follows wte in params.py's order, so [wte; wpe] is one (V + block_size, C) view
        assert start["wte"] == 0 and start["wpe"] == self.wte.size, "params.py must keep wte, wpe first"
        self.wte_wpe = flat[:self.wte.size + self.wpe.size].reshape(-1, cfg.n_embd)
        self.layers = []
        for l in range(cfg.n_layer):
            # q, k and v are consecutive in params.py's order, so one (3C, C) view computes all three
            # in one product (and takes all three gradients in one)
            C, i = cfg.n_embd, start[f"layer{l}.attn_wq"]
            assert start[f"layer{l}.attn_wv"] == i + 2 * C * C, "params.py must keep attn_wq, wk, wv together"
            lw = _LayerWeights()
            lw.qkv = flat[i:i + 3 * C * C].reshape(3 * C, C)
            lw.o, lw.fc1, lw.fc2 = (self.by_name[f"layer{l}.{k}"] for k in ("attn_wo", "mlp_fc1", "mlp_fc2"))
            self.layers.append(lw)


class _LayerWeights:
    """One layer's matrices (attributes set by _Weights): qkv (3C, C), o (C, C), fc1 (4C, C), fc2 (C, 4C)."""


# ---- the engine -------------------------------------------------------------------------------
class Engine(base.Engine):
    name = "numpy"
    _seen = None  # while attention_weights() runs: each layer's attention weights, position by position

    def __init__(self, model_cfg, train_cfg, params: dict[str, Tensor]):
        self.cfg, self.tcfg = model_cfg, train_cfg
        self.dtype, self.tensor_dtype = DTYPES[train_cfg.dtype]
        self.shapes = param_shapes(model_cfg)
        size = sum(r * c for _, (r, c) in self.shapes)
        self.flat = np.empty(size, self.dtype)       # every parameter, in params.py's order
        # Adam works on (2, P) pairs: the moments [m; v] and the gradient with its square [g; g^2]
        self.moments = np.zeros((2, size), self.dtype)
        self.m, self.v = self.moments
        self.grads = np.zeros((2, size), self.dtype)
        self.grad = self.grads[0]                    # d(loss)/d(flat)
        self.betas = np.array([[train_cfg.beta1], [train_cfg.beta2]], self.dtype)             # (2, 1)
        self.one_minus_betas = np.array([[1 - train_cfg.beta1], [1 - train_cfg.beta2]], self.dtype)
        self.adam_tmp = np.empty((2, size), self.dtype)
        self.w, self.dw = _Weights(self.flat, model_cfg), _Weights(self.grad, model_cfg)
        self._load(self.w.by_name, params)
        self.head_dim = model_cfg.n_embd // model_cfg.n_head
        self.eye = np.eye(model_cfg.vocab_size, dtype=self.dtype)   # rows: one-hot tokens
        self.eye_pos = np.eye(model_cfg.block_size, dtype=self.dtype)   # rows: one-hot positions
        self._masks, self._plans, self._rows = {}, {}, {}
        self._arena = _Arena(self.dtype)

    # ---- forward and backward ----------------------------------------------------------------
    def _causal_mask(self, T):
        if T not in self._masks:
            self._masks[T] = np.triu(np.full((T, T), -np.inf, self.dtype), k=1)   # (T, T)
        return self._masks[T]

    def _plan(self, seqs) -> _Plan:
        """The buffers for this batch, its documents sorted by length, with the inputs filled in."""
        if len(seqs) > 1:
            seqs = sorted(seqs, key=len)
        key = tuple(map(len, seqs))
        p = self._plans.get(key)
        if p is None:
            lengths = np.array(key, dtype=np.intp) - 1                  # predicted tokens per document
            if lengths[0] < 1:
                raise UsageError("every sequence needs at least 2 tokens (BOS, then the next token)")
            N = int(lengths.sum())
            if N not in self._rows:
                self._rows[N] = _Rows(N, self.cfg, self._arena)
            if len(self._plans) > 64:  # batches of many documents rarely repeat a layout
                self._plans.clear()
            p = self._plans[key] = _Plan(lengths, self._rows[N], self._arena, self.cfg, self.eye_pos,
                                         self._causal_mask)
        if len(seqs) == 1:
            p.stream[:] = seqs[0]
        else:
            p.stream[:] = np.fromiter(itertools.chain.from_iterable(seqs), np.intp, p.stream.size)
            p.stream.take(p.inp_idx, out=p.inp)
            p.stream.take(p.tgt_idx, out=p.tgt)
        V = self.cfg.vocab_size
        self.eye.take(p.inp, axis=0, out=p.onehot[:, :V])
        if p.pos is not None:
            self.eye_pos.take(p.pos, axis=0, out=p.onehot[:, V:])
        np.multiply(p.tgt, p.rows.n, out=p.tgt_flat)
        p.tgt_flat += p.rows.columns
        return p

    def _forward(self, p: _Plan) -> float:
        """The mean loss over the batch's predicted tokens; keeps the activations in p."""
        w, r = self.w, p.rows
        embedding_forward(r.emb, w.wte_wpe, p.onehot)
        rmsnorm_forward(r.x0, r.s0, r.emb, r.tmp)            # the residual stream starts normalized
        x = r.x0                                              # (N, C)
        for lw, a, groups in zip(w.layers, r.layers, p.groups):
            rmsnorm_forward(a.xn1, a.s1, x, r.tmp)
            matmul_forward(a.qkv, a.xn1, lw.qkv)              # (N, 3C)
            attention_forward(a.kvT, a.qkv, groups, self.head_dim)   # fills a.y (N, C)
            matmul_forward(a.xmid, a.y, lw.o)
            a.xmid += x                                       # residual
            rmsnorm_forward(a.xn2, a.s2, a.xmid, r.tmp)
            matmul_forward(a.h, a.xn2, lw.fc1)                # (N, 4C)
            relu_forward(a.h)
            matmul_forward(a.xout, a.h, lw.fc2)
            a.xout += a.xmid                                  # residual
            x = a.xout
        np.dot(w.lm_head, x.T, out=r.logits)                  # (V, N) = lm_head (V, C) @ x^T
        return crossentropy_forward(r.probs, r.logits, p.tgt_flat) / r.n

    def _backward(self, p: _Plan) -> None:
        """Fills self.grad with d(mean loss)/d(parameters), from the activations _forward kept."""
        w, dw, r = self.w, self.dw, p.rows
        crossentropy_backward(r.probs, p.tgt_flat, r.n)      # r.probs is now dlogits (V, N)
        x = r.layers[-1].xout if r.layers else r.x0
        matmul_backward(r.dx, dw.lm_head, r.probs.T, x, w.lm_head)
        for l in reversed(range(len(r.layers))):
            lw, g, a = w.layers[l], dw.layers[l], r.layers[l]
            # MLP block: xout = xmid + fc2(relu(fc1(rmsnorm(xmid)))); dx flows on through the residual
            matmul_backward(r.dh, g.fc2, r.dx, a.h, lw.fc2)
            relu_backward(r.dh, a.h)
            matmul_backward(r.dxn, g.fc1, r.dh, a.xn2, lw.fc1)
            rmsnorm_backward(r.dx, r.dxn, a.xn2, a.s2, r.tmp, r.row, accumulate=True)
            # attention block: xmid = x + o(attention(qkv(rmsnorm(x))))
            matmul_backward(r.dy, g.o, r.dx, a.y, lw.o)
            attention_backward(r.dqkv, p.groups[l], self.head_dim)   # r.dy -> r.dqkv
            matmul_backward(r.dxn, g.qkv, r.dqkv, a.xn1, lw.qkv)
            rmsnorm_backward(r.dx, r.dxn, a.xn1, a.s1, r.tmp, r.row, accumulate=True)
        rmsnorm_backward(r.emb, r.dx, r.x0, r.s0, r.tmp, r.row, accumulate=False)   # r.emb: now d(emb)
        embedding_backward(dw.wte_wpe, r.emb, p.onehot)

    def _adam(self, step: int, lr: float) -> None:
        """atomic.py's Adam, on the flat arrays: a few vector operations for every parameter."""
        t, tmp = self.tcfg, self.adam_tmp
        np.multiply(self.grad, self.grad, out=self.grads[1])
        self.moments *= self.betas
        np.multiply(self.grads, self.one_minus_betas, out=tmp)
        self.moments += tmp                           # [m; v] = betas [m; v] + (1 - betas) [g; g^2]
        # lr m_hat / (sqrt(v_hat) + eps) with m_hat = m / c1, v_hat = v / c2, written as
        # (lr sqrt(c2) / c1) m / (sqrt(v) + eps sqrt(c2)): the same number, one pass fewer
        c1, c2 = 1 - t.beta1 ** (step + 1), 1 - t.beta2 ** (step + 1)
        u = tmp[0]
        np.sqrt(self.v, out=u)
        u += t.eps * c2 ** 0.5
        np.divide(self.m, u, out=u)
        u *= lr * c2 ** 0.5 / c1
        self.flat -= u

    @QUIET_FLOATS
    def train_step(self, seqs, step: int, lr: float) -> float:
        p = self._plan(seqs)
        loss = self._forward(p)
        self._backward(p)
        self._adam(step, lr)
        return loss

    @QUIET_FLOATS
    def eval_loss(self, seqs) -> float:
        return self._forward(self._plan(seqs))

    @QUIET_FLOATS
    def loss_and_grads(self, seqs):
        p = self._plan(seqs)
        loss = self._forward(p)
        self._backward(p)
        return loss, self._tensors(self.dw.by_name)

    # ---- state -------------------------------------------------------------------------------
    def _tensors(self, views) -> dict[str, Tensor]:
        little = np.dtype(self.dtype).newbyteorder("<")
        return {name: Tensor(tuple(a.shape), self.tensor_dtype, a.astype(little).tobytes())
                for name, a in views.items()}

    def _load(self, views, tensors) -> None:
        for name, a in views.items():
            t = tensors[name]
            src = np.frombuffer(t.data, dtype={"F64": "<f8", "F32": "<f4"}[t.dtype])
            a[...] = src.reshape(a.shape)

    def weights(self) -> dict[str, Tensor]:
        return self._tensors(self.w.by_name)

    def state(self) -> dict[str, Tensor]:
        m, v = _Weights(self.m, self.cfg), _Weights(self.v, self.cfg)
        return base.adam_state(self._tensors(m.by_name), self._tensors(v.by_name))

    def load_state(self, state: dict[str, Tensor]) -> None:
        names = [name for name, _ in self.shapes]
        self._load(_Weights(self.m, self.cfg).by_name, base.take(state, "adam.m.", names))
        self._load(_Weights(self.v, self.cfg).by_name, base.take(state, "adam.v.", names))

    # ---- sampling ----------------------------------------------------------------------------
    def new_cache(self):
        """Keys and values of every position so far, per layer: (n_layer, block_size, C) each."""
        shape = (self.cfg.n_layer, self.cfg.block_size, self.cfg.n_embd)
        return np.zeros(shape, self.dtype), np.zeros(shape, self.dtype)

    @QUIET_FLOATS
    def logits(self, cache, token_id: int, pos_id: int) -> list[float]:
        """One position of the forward pass, attending over the cache (which it appends to)."""
        keys, values = cache
        C, H, D = self.cfg.n_embd, self.cfg.n_head, self.head_dim
        w, new = self.w, lambda cols: np.empty((1, cols), self.dtype)
        tmp, scale = new(C), np.empty((1, 1), self.dtype)
        x = new(C)
        rmsnorm_forward(x, scale, (w.wte[token_id] + w.wpe[pos_id])[None], tmp)   # (1, C)
        for l, lw in enumerate(w.layers):
            xn, qkv = new(C), new(3 * C)
            rmsnorm_forward(xn, scale, x, tmp)
            matmul_forward(qkv, xn, lw.qkv)
            keys[l, pos_id], values[l, pos_id] = qkv[0, C:2 * C], qkv[0, 2 * C:]
            q = qkv[0, :C].reshape(H, 1, D)
            k = keys[l, :pos_id + 1].reshape(pos_id + 1, H, D).transpose(1, 0, 2)      # (H, T, D)
            v = values[l, :pos_id + 1].reshape(pos_id + 1, H, D).transpose(1, 0, 2)    # (H, T, D)
            att = q @ k.swapaxes(-1, -2) / D ** 0.5                                    # (H, 1, T)
            attention_softmax(att)
            if self._seen is not None:
                self._seen.append(att[:, 0].copy())                                    # (H, T)
            y = (att @ v).reshape(1, C)                                                # heads side by side
            out = new(C)
            matmul_forward(out, y, lw.o)
            x = x + out
            h = new(4 * C)
            rmsnorm_forward(xn, scale, x, tmp)
            matmul_forward(h, xn, lw.fc1)
            relu_forward(h)
            matmul_forward(out, h, lw.fc2)
            x = x + out
        logits = new(self.cfg.vocab_size)
        matmul_forward(logits, x, w.lm_head)
        return logits[0].tolist()

    def attention_weights(self, token_ids: list[int]) -> list[list[list[list[float]]]]:
        """[position][layer][head] -> that head's weights over positions 0..position, as `logits`
        computes them position by position (the report draws them)."""
        self._seen, cache = [], self.new_cache()
        try:
            for pos, token_id in enumerate(token_ids):
                self.logits(cache, token_id, pos)
            seen = self._seen
        finally:
            self._seen = None
        L = self.cfg.n_layer
        return [[seen[p * L + l].tolist() for l in range(L)] for p in range(len(token_ids))]
