"""The compiled engine's kernels: atomic.py's gpt() and its backward as plain loops, compiled by Numba.

    microgpt train --engine compiled      (engines/compiled.py drives these; pip install -e '.[compiled]')

The loops have atomic.py's shape: positions, then layers, then heads, then rows. Nothing here is a
library call: every sum is a loop that Numba (LLVM) compiles to vector instructions, so a training
step costs its arithmetic, not the ~1 µs per call a NumPy step pays ~95 times.

Shapes: V = vocab_size, C = n_embd, H heads of D = C / H, L layers, T = block_size, P parameters.
Every array is in the engine's dtype (float64 or float32); constants come in through `hyper` (same
dtype) so that float32 arithmetic stays float32. Sums are reordered by the compiler (fastmath
'reassoc', to vectorize them), so results equal atomic.py's to round-off, not bit for bit.

One training step for a batch is one call of `step_serial` or `step_parallel` (the same loops; the
second runs its chunks of documents on several threads). The documents are split into a fixed number
of chunks, each with its own gradient buffer; the buffers are added in chunk order, so a result depends
neither on thread timing nor on the number of threads.
"""

import numpy as np
from numba import njit, prange

# Let the compiler reorder and fuse floating-point sums (so that they vectorize); keep NaN and inf
# semantics (softmax's max and exp rely on them). error_model="numpy": a division by zero gives inf
# as in NumPy, rather than Python's exception, whose check keeps every division loop scalar.
FASTMATH = {"reassoc", "contract", "nsz"}
JIT = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")

# dims: what the kernels know of the model, an int64 array
V_, C_, T_, L_, H_, K_ = range(6)      # vocab, n_embd, block_size, n_layer, n_head, chunks
# hyper: the step's constants, in the engine's dtype
LR, BETA1, BETA2, EPS, C1, C2, RMS_EPS = range(7)
HYPER_SIZE = 7
# mode: what a call computes
EVAL, GRADS, TRAIN = 0, 1, 2


# ---- the building blocks -------------------------------------------------------------------------
# A matrix w (nout, nin) is the stretch flat[at:at + nout * nin] of a flat buffer, row-major: w[o, i] is
# flat[at + o * nin + i]. Its shape is that of the vectors it maps, so it is not passed.
# Inner loops index slices by their own loop counter: Numba wraps a negative index around, and an
# index it cannot prove non-negative (at + i) makes that a per-element test that stops vectorization.
@njit(inline="always", **JIT)
def linear(out, flat, at, x):
    """out (nout,) = w (nout, nin) @ x (nin,), w at `at` in flat."""
    nin, nout = x.shape[0], out.shape[0]
    o = 0
    while o + 4 <= nout:   # four rows at a time: four independent sums keep the adder busy
        w0 = flat[at + o * nin:at + (o + 1) * nin]     # (nin,) rows o..o+3 of w
        w1 = flat[at + (o + 1) * nin:at + (o + 2) * nin]
        w2 = flat[at + (o + 2) * nin:at + (o + 3) * nin]
        w3 = flat[at + (o + 3) * nin:at + (o + 4) * nin]
        a0 = a1 = a2 = a3 = out.dtype.type(0)
        for i in range(nin):
            a0 += w0[i] * x[i]
            a1 += w1[i] * x[i]
            a2 += w2[i] * x[i]
            a3 += w3[i] * x[i]
        out[o], out[o + 1], out[o + 2], out[o + 3] = a0, a1, a2, a3
        o += 4
    for o in range(o, nout):
        w_o = flat[at + o * nin:at + (o + 1) * nin]    # (nin,) row o of w
        acc = out.dtype.type(0)
        for i in range(nin):
            acc += w_o[i] * x[i]
        out[o] = acc


@njit(inline="always", **JIT)
def linear_back(dx, grad, flat, at, x, dy):
    """For y = w x, w at `at` in flat: dx (nin,) += w^T dy, and dw (nout, nin) += dy x^T into grad
    (the same place in the flat gradient)."""
    nin, nout = x.shape[0], dy.shape[0]
    for o in range(nout):
        row = at + o * nin
        dw_o, d = grad[row:row + nin], dy[o]            # (nin,) row o of dw
        for i in range(nin):
            dw_o[i] += d * x[i]
    o = 0
    while o + 4 <= nout:   # dx from four rows at a time: a quarter of the loads and stores of dx
        w0 = flat[at + o * nin:at + (o + 1) * nin]     # (nin,) rows o..o+3 of w
        w1 = flat[at + (o + 1) * nin:at + (o + 2) * nin]
        w2 = flat[at + (o + 2) * nin:at + (o + 3) * nin]
        w3 = flat[at + (o + 3) * nin:at + (o + 4) * nin]
        d0, d1, d2, d3 = dy[o], dy[o + 1], dy[o + 2], dy[o + 3]
        for i in range(nin):
            dx[i] += d0 * w0[i] + d1 * w1[i] + d2 * w2[i] + d3 * w3[i]
        o += 4
    for o in range(o, nout):
        w_o, d = flat[at + o * nin:at + (o + 1) * nin], dy[o]
        for i in range(nin):
            dx[i] += d * w_o[i]


@njit(inline="always", **JIT)
def rmsnorm(out, x, eps):
    """out (C,) = x * scale; returns scale = (mean(x^2) + eps)^-1/2."""
    ms = out.dtype.type(0)
    for i in range(x.shape[0]):
        ms += x[i] * x[i]
    one, n = out.dtype.type(1), out.dtype.type(x.shape[0])
    scale = one / np.sqrt(ms / n + eps)
    for i in range(x.shape[0]):
        out[i] = x[i] * scale
    return scale


@njit(inline="always", **JIT)
def rmsnorm_back(dx, x, scale, dy):
    """For y = x s, s = (mean(x^2) + eps)^-1/2: dx (C,) += s dy - s^3 x (dy . x) / C."""
    dot = dx.dtype.type(0)
    for i in range(x.shape[0]):
        dot += dy[i] * x[i]
    k = scale * scale * scale * dot / dx.dtype.type(x.shape[0])
    for i in range(x.shape[0]):
        dx[i] += scale * dy[i] - k * x[i]


@njit(inline="always", **JIT)
def softmax(p):
    """In place over p (n,); the max is subtracted so that exp() cannot overflow."""
    top = p[0]
    for i in range(1, p.shape[0]):
        top = max(top, p[i])
    total = p.dtype.type(0)
    for i in range(p.shape[0]):
        p[i] = np.exp(p[i] - top)
        total += p[i]
    for i in range(p.shape[0]):
        p[i] /= total


# ---- the work space, cut into views -----------------------------------
@njit(**JIT)
def work_size(dims):
    """Floats of one chunk's work space (see carve)."""
    V, C, T, L, H = dims[V_], dims[C_], dims[T_], dims[L_], dims[H_]
    forward = T * C + T + (L + 1) * T * C + L * T * (11 * C + 2) + L * H * T * T + T * V
    backward = 8 * C + 2 * L * T * C + V + T
    return forward + backward


@njit(**JIT)
def take(ws, at, n):
    return ws[at:at + n], at + n


@njit(**JIT)
def carve(ws, dims):
    """One chunk's work space (a flat row) cut into the buffers a document's forward and backward use."""
    V, C, T, L, H = dims[V_], dims[C_], dims[T_], dims[L_], dims[H_]
    at = 0
    emb, at = take(ws, at, T * C)              # (T, C) wte[tok] + wpe[pos]
    s_emb, at = take(ws, at, T)                # (T,) its rmsnorm scale
    xs, at = take(ws, at, (L + 1) * T * C)     # (L + 1, T, C) the residual stream entering each layer; xs[L]: the last
    xn1, at = take(ws, at, L * T * C)          # (L, T, C) rmsnorm(xs[l]), attention's input
    s1, at = take(ws, at, L * T)
    q, at = take(ws, at, L * T * C)            # (L, T, C) queries
    k, at = take(ws, at, L * T * C)            # (L, T, C) keys: the KV cache
    v, at = take(ws, at, L * T * C)            # (L, T, C) values
    att, at = take(ws, at, L * H * T * T)      # (L, H, T, T) attention weights of position t over u <= t
    y, at = take(ws, at, L * T * C)            # (L, T, C) the heads' outputs side by side
    xmid, at = take(ws, at, L * T * C)         # (L, T, C) the residual stream after attention
    xn2, at = take(ws, at, L * T * C)          # (L, T, C) rmsnorm(xmid), the MLP's input
    s2, at = take(ws, at, L * T)
    hid, at = take(ws, at, L * T * 4 * C)      # (L, T, 4C) relu(fc1 xn2)
    probs, at = take(ws, at, T * V)            # (T, V) logits, then softmax(logits)
    dx, at = take(ws, at, C)                   # backward: the residual stream's gradient at one position
    dh, at = take(ws, at, 4 * C)
    dn, at = take(ws, at, C)
    dy, at = take(ws, at, C)
    dq, at = take(ws, at, C)
    dk, at = take(ws, at, L * T * C)           # (L, T, C) gradients of the cached keys and values,
    dv, at = take(ws, at, L * T * C)           #   filled by the later positions that read them
    dlogits, at = take(ws, at, V)
    dweights, at = take(ws, at, T)
    return (emb.reshape((T, C)), s_emb, xs.reshape((L + 1, T, C)), xn1.reshape((L, T, C)), s1.reshape((L, T)),
            q.reshape((L, T, C)), k.reshape((L, T, C)), v.reshape((L, T, C)), att.reshape((L, H, T, T)),
            y.reshape((L, T, C)), xmid.reshape((L, T, C)), xn2.reshape((L, T, C)), s2.reshape((L, T)),
            hid.reshape((L, T, 4 * C)), probs.reshape((T, V)),
            dx, dh, dn, dy, dq, dk.reshape((L, T, C)), dv.reshape((L, T, C)), dlogits, dweights)


# ---- forward: atomic.py's gpt(), one position ------------------------------------------------------
@njit(**JIT)
def forward_position(p, offsets, dims, hyper, bufs, token_id, t):
    """Position t of one sequence: fills its row of every buffer (the KV cache included) and leaves
    its logits in probs[t]. Positions 0..t-1 must already be in the buffers."""
    (emb, s_emb, xs, xn1, s1, q, k, v, att, y, xmid, xn2, s2, hid, probs) = bufs[:15]
    C, L, H = dims[C_], dims[L_], dims[H_]
    D = C // H
    eps = hyper[RMS_EPS]
    inv_sqrt_d = hyper.dtype.type(1) / np.sqrt(hyper.dtype.type(D))
    tok_at, pos_at = offsets[0] + token_id * C, offsets[1] + t * C
    tok_emb, pos_emb = p[tok_at:tok_at + C], p[pos_at:pos_at + C]      # (C,) wte[token_id], wpe[t]
    for i in range(C):
        emb[t, i] = tok_emb[i] + pos_emb[i]
    s_emb[t] = rmsnorm(xs[0, t], emb[t], eps)   # not redundant: the residual stream carries this normalized x
    for l in range(L):
        w = 3 + 6 * l
        # Attention: each head mixes the values of all positions so far, weighted by q.k
        s1[l, t] = rmsnorm(xn1[l, t], xs[l, t], eps)
        linear(q[l, t], p, offsets[w], xn1[l, t])
        linear(k[l, t], p, offsets[w + 1], xn1[l, t])
        linear(v[l, t], p, offsets[w + 2], xn1[l, t])
        for h in range(H):
            hs = h * D
            a = att[l, h, t, :t + 1]                   # (t + 1,) this query over every key so far
            q_h, y_h = q[l, t, hs:hs + D], y[l, t, hs:hs + D]                 # (D,)
            for u in range(t + 1):
                k_h = k[l, u, hs:hs + D]
                score = a.dtype.type(0)
                for j in range(D):
                    score += q_h[j] * k_h[j]
                a[u] = score * inv_sqrt_d
            softmax(a)
            y_h[:] = 0
            for u in range(t + 1):
                v_h = v[l, u, hs:hs + D]
                for j in range(D):
                    y_h[j] += a[u] * v_h[j]
        linear(xmid[l, t], p, offsets[w + 3], y[l, t])
        for i in range(C):
            xmid[l, t, i] += xs[l, t, i]               # residual
        # MLP: widen 4x, ReLU, narrow back
        s2[l, t] = rmsnorm(xn2[l, t], xmid[l, t], eps)
        linear(hid[l, t], p, offsets[w + 4], xn2[l, t])
        for i in range(4 * C):
            hid[l, t, i] = max(hid[l, t, i], hid.dtype.type(0))
        linear(xs[l + 1, t], p, offsets[w + 5], hid[l, t])
        for i in range(C):
            xs[l + 1, t, i] += xmid[l, t, i]           # residual
    linear(probs[t], p, offsets[2], xs[L, t])


@njit(**JIT)
def forward_doc(p, offsets, dims, hyper, bufs, seq):
    """Every position of one sequence (BOS, chars, BOS, cut to T + 1 tokens); returns the sum of its
    per-position losses -log softmax(logits)[target] and leaves the probabilities in probs."""
    probs = bufs[14]
    loss = 0.0
    for t in range(seq.shape[0] - 1):
        forward_position(p, offsets, dims, hyper, bufs, seq[t], t)
        softmax(probs[t])
        loss -= np.log(probs[t, seq[t + 1]])
    return loss


# ---- backward: the chain rule by hand, last position first ------------------------------------------
@njit(**JIT)
def backward_doc(p, g, offsets, dims, bufs, seq, inv_n):
    """Adds d(loss)/d(param) of one sequence into g (the flat gradient), for a loss that is the mean
    over inv_n^-1 tokens of the batch. Uses what forward_doc left in the buffers."""
    (emb, s_emb, xs, xn1, s1, q, k, v, att, y, xmid, xn2, s2, hid, probs,
     dx, dh, dn, dy, dq, dk, dv, dlogits, dweights) = bufs
    V, C, L, H = dims[V_], dims[C_], dims[L_], dims[H_]
    D = C // H
    T = seq.shape[0] - 1
    inv_sqrt_d = p.dtype.type(1) / np.sqrt(p.dtype.type(D))
    dk[:, :T] = 0
    dv[:, :T] = 0
    for t in range(T - 1, -1, -1):
        # loss = mean of -log softmax(logits)[target]: dlogits = (probs - onehot(target)) / n
        for i in range(V):
            dlogits[i] = probs[t, i] * inv_n
        dlogits[seq[t + 1]] -= inv_n
        dx[:] = 0
        linear_back(dx, g, p, offsets[2], xs[L, t], dlogits)
        for l in range(L - 1, -1, -1):
            w = 3 + 6 * l
            # MLP block: xs[l + 1] = fc2(relu(fc1(rmsnorm(xmid)))) + xmid; dx flows on through the residual
            dh[:] = 0
            linear_back(dh, g, p, offsets[w + 5], hid[l, t], dx)
            for i in range(4 * C):
                if hid[l, t, i] <= 0:
                    dh[i] = 0                          # ReLU's gate
            dn[:] = 0
            linear_back(dn, g, p, offsets[w + 4], xn2[l, t], dh)
            rmsnorm_back(dx, xmid[l, t], s2[l, t], dn)
            # Attention block: xmid = wo(y) + xs[l]
            dy[:] = 0
            linear_back(dy, g, p, offsets[w + 3], y[l, t], dx)
            dq[:] = 0
            for h in range(H):
                hs = h * D
                a = att[l, h, t, :t + 1]               # (t + 1,)
                dy_h, dq_h, q_h = dy[hs:hs + D], dq[hs:hs + D], q[l, t, hs:hs + D]   # (D,)
                dot = dy.dtype.type(0)
                for u in range(t + 1):                 # y_h = sum_u a[u] v_h[u]
                    v_h, dv_h = v[l, u, hs:hs + D], dv[l, u, hs:hs + D]
                    dw = dy.dtype.type(0)
                    for j in range(D):
                        dw += dy_h[j] * v_h[j]
                        dv_h[j] += a[u] * dy_h[j]
                    dweights[u] = dw
                    dot += a[u] * dw
                for u in range(t + 1):                 # softmax: dscore_u = a_u (dw_u - a . dw); score = q.k / sqrt(D)
                    ds = a[u] * (dweights[u] - dot) * inv_sqrt_d
                    k_h, dk_h = k[l, u, hs:hs + D], dk[l, u, hs:hs + D]
                    for j in range(D):
                        dq_h[j] += ds * k_h[j]
                        dk_h[j] += ds * q_h[j]
            # every later position has already added its share to this position's key and value
            dn[:] = 0
            linear_back(dn, g, p, offsets[w], xn1[l, t], dq)
            linear_back(dn, g, p, offsets[w + 1], xn1[l, t], dk[l, t])
            linear_back(dn, g, p, offsets[w + 2], xn1[l, t], dv[l, t])
            rmsnorm_back(dx, xs[l, t], s1[l, t], dn)
        # xs[0] = rmsnorm(wte[token] + wpe[t]): the same gradient goes to the token's row and the position's
        dn[:] = 0
        rmsnorm_back(dn, emb[t], s_emb[t], dx)
        tok_at, pos_at = offsets[0] + seq[t] * C, offsets[1] + t * C
        dtok_emb, dpos_emb = g[tok_at:tok_at + C], g[pos_at:pos_at + C]
        for i in range(C):
            dtok_emb[i] += dn[i]
            dpos_emb[i] += dn[i]


# ---- a batch: chunks of documents, then the gradient's sum and Adam ---------------------------------
@njit(**JIT)
def check_batch(tokens, starts, dims):
    """True when every sequence has 2 to T + 1 tokens, each below V (the kernels do not bounds-check)."""
    for b in range(starts.shape[0] - 1):
        n = starts[b + 1] - starts[b]
        if n < 2 or n > dims[T_] + 1:
            return False
    for i in range(tokens.shape[0]):
        if tokens[i] < 0 or tokens[i] >= dims[V_]:
            return False
    return True


@njit(inline="always", **JIT)
def chunk_docs(B, chunk, chunks):
    """The documents [lo, hi) of chunk `chunk` of `chunks`, in a batch of B."""
    return chunk * B // chunks, (chunk + 1) * B // chunks


@njit(**JIT)
def chunk_work(p, g, ws, offsets, dims, hyper, tokens, starts, doc_loss, mode, inv_n, chunk, chunks):
    """Chunk `chunk` of `chunks`: its documents' forward with parameters p, and (mode GRADS or TRAIN)
    their backward into the gradient g; ws is the chunk's work space."""
    B = starts.shape[0] - 1
    if mode != EVAL:
        g[:] = 0
    bufs = carve(ws, dims)
    lo, hi = chunk_docs(B, chunk, chunks)
    for b in range(lo, hi):
        seq = tokens[starts[b]:starts[b + 1]]
        doc_loss[b] = forward_doc(p, offsets, dims, hyper, bufs, seq)
        if mode != EVAL:
            backward_doc(p, g, offsets, dims, bufs, seq, inv_n)


@njit(**JIT)
def adam(p, m, v, g, hyper):
    """atomic.py's Adam with bias correction, p -= lr m_hat / (sqrt(v_hat) + eps), m_hat = m / c1 and
    v_hat = v / c2, written as (lr sqrt(c2) / c1) m / (sqrt(v) + eps sqrt(c2)): the same number with
    one division, not three (divisions and square roots are what this loop costs)."""
    one, b1, b2 = hyper.dtype.type(1), hyper[BETA1], hyper[BETA2]
    root_c2 = np.sqrt(hyper[C2])
    step_size, eps = hyper[LR] * root_c2 / hyper[C1], hyper[EPS] * root_c2
    for i in range(p.shape[0]):
        m[i] = b1 * m[i] + (one - b1) * g[i]
        v[i] = b2 * v[i] + (one - b2) * g[i] * g[i]
        p[i] -= step_size * m[i] / (np.sqrt(v[i]) + eps)


@njit(**JIT)
def finish(state, hyper, mode, chunks, lo, hi):
    """Elements lo..hi: the chunks' gradients summed in chunk order into row 3, then (mode TRAIN)
    Adam on rows 0 (params), 1 (m) and 2 (v)."""
    g = state[3, lo:hi]
    for c in range(1, chunks):
        gc = state[3 + c, lo:hi]
        for i in range(g.shape[0]):
            g[i] += gc[i]
    if mode == TRAIN:
        adam(state[0, lo:hi], state[1, lo:hi], state[2, lo:hi], g, hyper)


@njit(**JIT)
def mean_loss(doc_loss, inv_n):
    total = 0.0
    for b in range(doc_loss.shape[0]):   # in document order, whatever chunk computed it
        total += doc_loss[b]
    return total * inv_n


@njit(**JIT)
def step_serial(state, offsets, dims, hyper, tokens, starts, ws, mode, chunks):
    """One call for a whole batch: forward, and for GRADS the gradient in state[3], and for TRAIN
    Adam too. Returns the mean loss over the batch's predicted tokens, or -1 for a malformed batch."""
    if not check_batch(tokens, starts, dims):
        return -1.0
    B = starts.shape[0] - 1
    inv_n = 1.0 / (tokens.shape[0] - B)
    doc_loss = np.empty(B)
    for c in range(chunks):
        chunk_work(state[0], state[3 + c], ws[c], offsets, dims, hyper, tokens, starts, doc_loss, mode,
                   hyper.dtype.type(inv_n), c, chunks)
    if mode != EVAL:
        finish(state, hyper, mode, chunks, 0, state.shape[1])
    return mean_loss(doc_loss, inv_n)


@njit(parallel=True, **JIT)
def step_parallel(state, offsets, dims, hyper, tokens, starts, ws, mode, chunks):
    """step_serial with the chunks, and then slices of the parameters, on Numba's threads."""
    if not check_batch(tokens, starts, dims):
        return -1.0
    B = starts.shape[0] - 1
    inv_n = 1.0 / (tokens.shape[0] - B)
    doc_loss = np.empty(B)
    for c in prange(chunks):
        # Each thread works on arrays of its own: every view of an array (and these loops make millions)
        # counts references on its parent, atomically, so threads viewing one shared array would fight
        # over that counter's cache line. Copies cost O(P) a chunk; the chunk's documents cost far more.
        p, g, w = state[0].copy(), np.empty_like(state[0]), ws[c].copy()
        losses = np.zeros(B)
        chunk_work(p, g, w, offsets.copy(), dims.copy(), hyper.copy(), tokens.copy(), starts.copy(), losses, mode,
                   hyper.dtype.type(inv_n), c, chunks)
        state[3 + c, :] = g
        lo, hi = chunk_docs(B, c, chunks)
        doc_loss[lo:hi] = losses[lo:hi]
    if mode != EVAL:
        P = state.shape[1]
        for s in prange(chunks):
            finish(state, hyper, mode, chunks, s * P // chunks, (s + 1) * P // chunks)
    return mean_loss(doc_loss, inv_n)


@njit(**JIT)
def position_logits(p, offsets, dims, hyper, ws, token_id, t):
    """Sampling: the logits (V,) at position t, with positions 0..t-1 already in the work space ws
    (one chunk's row, the KV cache of one sample)."""
    bufs = carve(ws, dims)
    forward_position(p, offsets, dims, hyper, bufs, token_id, t)
    return bufs[14][t].copy()
