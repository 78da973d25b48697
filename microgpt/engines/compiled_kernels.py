"""The compiled engine's kernels: atomic.py's gpt() and its backward as plain loops, compiled by Numba.

    microgpt train --engine compiled      (engines/compiled.py drives these; pip install -e '.[compiled]')

The loops have atomic.py's shape: layers, then heads, then rows, over the positions of a tile of
whole documents at once (R rows, each one position of one document), so that every weight matrix is
read once a tile and a layer is a few small matrix products; attention runs over each row's own
document. Nothing here is a library call: every sum is a loop that Numba (LLVM) compiles to vector
instructions, so a training step costs its arithmetic, not the ~1 µs per call a NumPy step pays ~95 times.
A tile of many documents is laid out by position instead (see attention_by_position), so that attention,
too, runs as long loops: across documents rather than along each one's few keys; and its activations are
kept transposed, (C, R) (forward_columns), so that every product runs along the tile's rows. A tile of
long documents (a stream preset's sequences) runs in columns too, with its attention as small matrix
products on each document's queries, keys and values (attention_by_document).

Shapes: V = vocab_size, C = n_embd, H heads of D = C / H, L layers, T = block_size, R rows a tile,
P parameters. Every array is in the engine's dtype (float64 or float32); constants come in through
`hyper` (same dtype) so that float32 arithmetic stays float32. Sums are reordered by the compiler
(fastmath 'reassoc', to vectorize them; the products that add eight terms at once are summed as
written, see TREE), so results equal atomic.py's to round-off, not bit for bit.

One training step for a batch is one call of `step_serial` or `step_parallel` (the same loops; the
second runs its chunks of documents on Numba's threads). The documents are split into a fixed number
of chunks, each with its own gradient buffer; the buffers are added in chunk order, so step_parallel's
result depends neither on thread timing nor on the number of threads, bit for bit. The two functions
are compiled apart, and with reordered sums the compiler may round them differently: equal to round-off.
"""

import math

import llvmlite.binding
import numpy as np
from numba import carray, njit, prange, types
from numba.core import codegen as numba_codegen, config
from numba.extending import intrinsic, overload

# LLVM vectorizes a loop 8 floats wide and then, by default, runs four such vectors per iteration; a
# loop shorter than 32 (a row of width 16, a head's 4) then never enters that body and runs one float
# at a time. One vector per iteration: a step 10% faster. (An LLVM option: it holds for every loop Numba
# compiles in this process from here on.)
llvmlite.binding.set_option("", "-force-vector-interleave=1")

# On a core with AVX-512, LLVM's tuning for most models still keeps vectors to 256 bits ('prefer-256-bit',
# against the clock drop that 512-bit instructions cost older Intel cores). Lifted: 8 float64 or 16 float32
# a vector, and a batched step about 10% faster in float64 on this project's Intel (AVX-512) host. Numba reads
# the setting when it first compiles anything in the process, and keys its disk cache on it; a user's own
# NUMBA_CPU_NAME or NUMBA_CPU_FEATURES is left as given.
if config.CPU_NAME is None and config.CPU_FEATURES is None:
    host_features = llvmlite.binding.get_host_cpu_features()
    if host_features.get("avx512f"):
        config.CPU_FEATURES = host_features.flatten() + ",-prefer-256-bit"

# A compiled function's machine code holds copies of the functions it calls, but Numba links them in as
# weak symbols (linkonce_odr), and the process's JIT binds each call to the first copy of that name it
# loaded, wherever it came from: from another function's module, whose optimizer may have rounded the
# copy differently (reordered sums). So the numbers depended on whether the kernels were compiled in the
# process or loaded from the disk cache, and on which entry point ran first (names preset, float32, batch
# 1: 3.8316 against 3.8512 after 50 steps). Made private to the module they were linked into, the copies
# are bound there: each entry point runs its own machine code, the code the cache holds. (Only modules
# that hold this file's functions; tests/test_compiled_engine.py checks the bits, fresh against cached.)
OWN_SYMBOLS = "_ZN" + "".join(f"{len(part)}{part}" for part in __name__.split("."))   # how Numba's mangled
#                                                              names of this file's functions start
_optimize_final_module = numba_codegen.CPUCodeLibrary._optimize_final_module


def _optimize_with_private_copies(library):
    """Numba's optimization of a library's final module, its linked-in copies first made private."""
    functions = list(library._final_module.functions)
    if any(f.name.startswith(OWN_SYMBOLS) for f in functions):
        for f in functions:
            if not f.is_declaration and f.linkage == llvmlite.binding.Linkage.linkonce_odr:
                f.linkage = "internal"
    _optimize_final_module(library)


numba_codegen.CPUCodeLibrary._optimize_final_module = _optimize_with_private_copies

# Let the compiler reorder and fuse floating-point sums (so that they vectorize); keep NaN and inf
# semantics (softmax's max and exp rely on them). error_model="numpy": a division by zero gives inf
# as in NumPy, rather than Python's exception, whose check keeps every division loop scalar.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
JIT = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")

# dims: what the kernels know of the model, an int64 array
V_, C_, T_, L_, H_, K_, R_, BYPOS_, BYDOC_ = range(9)  # vocab, n_embd, block_size, n_layer, n_head, chunks, rows a
DIMS_SIZE = 9   # tile, the fewest lanes (documents x heads) for a tile by position, and the fewest positions a
#                 document (on average) for a tile by document (which comes first)
# hyper: the step's constants, in the engine's dtype
LR, BETA1, BETA2, EPS, C1, C2, RMS_EPS = range(7)
HYPER_SIZE = 7
# mode: what a call computes
EVAL, GRADS, TRAIN = 0, 1, 2


# ---- the building blocks -------------------------------------------------------------------------
# A layer runs over a tile of rows at once (a row: one position of one document), so each weight is
# read once per tile, not once per position. A matrix w (nout, nin) is the stretch flat[at:at + nout * nin]
# of a flat buffer, row-major: w[o, i] is flat[at + o * nin + i].
@intrinsic
def element_address(typingctx, array, at):
    """A pointer to element `at` of a C-contiguous array, counted flat (any other array: a typing error)."""
    if not isinstance(array, types.Array) or array.layout != "C":
        return None

    def codegen(context, builder, signature, args):
        return builder.gep(context.make_array(signature.args[0])(context, builder, args[0]).data, [args[1]])
    return types.CPointer(array.dtype)(array, at), codegen


@njit(inline="always", **JIT)
def uncounted(x):
    """A C-contiguous array x as a view that counts no references. Numba counts references on every view it
    makes of an array that came from Python (an atomic increment and decrement each: 12% of a batch-1 step);
    views of this one, and views of those, skip that. For arrays the caller holds for the whole call."""
    return carray(element_address(x, 0), x.shape)


@njit(inline="always", **JIT)
def view_as(x, at, shape):
    """The floats of a C-contiguous array x from flat index `at` on, as an array of `shape`: a view that
    counts no references (see uncounted), made without a call to Numba's runtime, as a reshape is."""
    return carray(element_address(x, at), shape)


# Inner loops index slices by their own loop counter: Numba wraps a negative index around, and an
# index it cannot prove non-negative (at + i) makes that a per-element test that stops vectorization.
@njit(inline="always", **JIT)
def matrix(flat, at, nout, nin):
    """The (nout, nin) matrix at `at` in flat, a view."""
    return view_as(flat, at, (nout, nin))


@njit(inline="always", **JIT)
def store4(out_r, o, s0, s1, s2, s3, accumulate):
    """out_r[o:o + 4] = (s0, s1, s2, s3), or +=, leaving out what lies past the end of out_r."""
    n = out_r.shape[0]
    for j, s in enumerate((s0, s1, s2, s3)):
        if o + j < n:
            out_r[o + j] = out_r[o + j] + s if accumulate else s


@njit(inline="always", **JIT)
def matmul_nt(out, a, w, accumulate):
    """out (R, O) = a (R, I) @ w (O, I)^T, or += when accumulate: every output is a dot product over I.
    Two rows of a meet four rows of w at a time: eight independent sums keep the adders busy, and each
    load feeds two or four of them."""
    R, I, O = a.shape[0], a.shape[1], w.shape[0]
    zero = out.dtype.type(0)
    r = 0
    while r < R:
        a0, a1 = a[r], a[min(r + 1, R - 1)]            # (I,) rows r and r + 1 (r again when R is odd)
        o = 0
        while o < O:
            w0, w1 = w[o], w[min(o + 1, O - 1)]        # (I,) rows o..o+3 of w (the last again at the edge)
            w2, w3 = w[min(o + 2, O - 1)], w[min(o + 3, O - 1)]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            for i in range(I):
                s00 += a0[i] * w0[i]
                s01 += a0[i] * w1[i]
                s02 += a0[i] * w2[i]
                s03 += a0[i] * w3[i]
                s10 += a1[i] * w0[i]
                s11 += a1[i] * w1[i]
                s12 += a1[i] * w2[i]
                s13 += a1[i] * w3[i]
            store4(out[r], o, s00, s01, s02, s03, accumulate)
            if r + 1 < R:
                store4(out[r + 1], o, s10, s11, s12, s13, accumulate)
            o += 4
        r += 2


# The products below add each output from eight terms written as a tree, ((a + b) + (c + d)) + (...),
# compiled without 'reassoc': under it LLVM rewrites the sum as one chain of eight dependent multiply-adds
# (about 4 cycles each), and the loop waits on that chain. Their loops need no reordering to vectorize.
TREE = dict(JIT, fastmath={"contract", "nsz", "arcp"})


@njit(**TREE)
def matmul_nn(out, d, w, accumulate):
    """out (R, I) = d (R, O) @ w (O, I), or += when accumulate: row r of out is the sum of the rows of
    w weighted by d[r]. Eight rows of w at a time, for every row of out in turn: an eighth of the loads
    and stores of out, and each row of w comes from cache once per eight. (The first eight write out
    rather than zeroing it first: LLVM turns a loop of zeros into a call to memset, one per row.)"""
    R, O, I = d.shape[0], d.shape[1], w.shape[1]
    first = not accumulate
    o = 0
    while o + 8 <= O:
        w0, w1, w2, w3 = w[o], w[o + 1], w[o + 2], w[o + 3]          # (I,) rows o..o+7 of w
        w4, w5, w6, w7 = w[o + 4], w[o + 5], w[o + 6], w[o + 7]
        for r in range(R):
            out_r, d_r = out[r], d[r]                                 # (I,), (O,)
            d0, d1, d2, d3 = d_r[o], d_r[o + 1], d_r[o + 2], d_r[o + 3]
            d4, d5, d6, d7 = d_r[o + 4], d_r[o + 5], d_r[o + 6], d_r[o + 7]
            for i in range(I):
                s = (((d0 * w0[i] + d1 * w1[i]) + (d2 * w2[i] + d3 * w3[i]))
                     + ((d4 * w4[i] + d5 * w5[i]) + (d6 * w6[i] + d7 * w7[i])))
                out_r[i] = s if first else out_r[i] + s
        first = False
        o += 8
    if first:                                                         # O < 8: nothing written yet
        out[:] = 0
    for o in range(o, O):
        w_o = w[o]
        for r in range(R):
            out_r, d_o = out[r], d[r, o]
            for i in range(I):
                out_r[i] += d_o * w_o[i]


@njit(**TREE)
def weight_grad(gw, d, x):
    """For y = x w^T over R rows: dw (O, I) += d (R, O)^T @ x (R, I). Row o of dw gains the rows of x
    weighted by column o of d: eight rows of x at a time (then four, then one), so that dw is loaded
    and stored once per eight rows, and no operand needs transposing."""
    R, O, I = x.shape[0], gw.shape[0], gw.shape[1]
    r = 0
    while r + 8 <= R:
        x0, x1, x2, x3 = x[r], x[r + 1], x[r + 2], x[r + 3]          # (I,) rows r..r+7 of x
        x4, x5, x6, x7 = x[r + 4], x[r + 5], x[r + 6], x[r + 7]
        for o in range(O):
            gw_o = gw[o]                                              # (I,) row o of dw
            d0, d1, d2, d3 = d[r, o], d[r + 1, o], d[r + 2, o], d[r + 3, o]
            d4, d5, d6, d7 = d[r + 4, o], d[r + 5, o], d[r + 6, o], d[r + 7, o]
            for i in range(I):
                gw_o[i] += (((d0 * x0[i] + d1 * x1[i]) + (d2 * x2[i] + d3 * x3[i]))
                            + ((d4 * x4[i] + d5 * x5[i]) + (d6 * x6[i] + d7 * x7[i])))
        r += 8
    while r + 4 <= R:                                                 # what is left, 4 at a time (batch 1: ~7 rows)
        x0, x1, x2, x3 = x[r], x[r + 1], x[r + 2], x[r + 3]
        for o in range(O):
            gw_o = gw[o]
            d0, d1, d2, d3 = d[r, o], d[r + 1, o], d[r + 2, o], d[r + 3, o]
            for i in range(I):
                gw_o[i] += (d0 * x0[i] + d1 * x1[i]) + (d2 * x2[i] + d3 * x3[i])
        r += 4
    for r in range(r, R):
        x_r = x[r]
        for o in range(O):
            gw_o, d_ro = gw[o], d[r, o]
            for i in range(I):
                gw_o[i] += d_ro * x_r[i]


@njit(**TREE)
def matmul_left(out, w, x, residual=None, relu=False, gate=None):
    """out (I, R) = w (I, O) @ x (O, R), for activations in columns (forward_columns): row i of out is the
    sum of the rows of x weighted by w[i], a loop along the tile's R rows. Four rows of out at a time from
    four rows of x at a time: each load of x feeds four sums (at four rows of x and of out, the most that
    LLVM still vectorizes here). w may be a transposed view. When I is not a multiple of 4, the last four are
    rows I - 4..I - 1, and the rows among them already done are written again with the same sums; fewer
    than four rows (a model narrower than 4, or a vocabulary under 4) go one at a time.
    Then, four rows at a time while they are in cache (not as passes of their own over the whole tile): given
    residual (I, R), out = w @ x + residual; with relu, out = max(out, 0); given gate (I, R), out = 0 where
    gate <= 0 (ReLU's backward, gate = its output; gating out by itself would be slower than relu: with
    out and gate one array, LLVM's vector loop, which assumes they do not overlap, is skipped)."""
    I, O, R = w.shape[0], w.shape[1], x.shape[1]
    zero = out.dtype.type(0)
    for quad in range(0, I, 4):
        i = min(quad, I - 4) if I >= 4 else quad
        rows = min(I - i, 4)                                                    # four, or what a narrow I has
        if rows < 4 or O < 4:                                                   # one row at a time
            for j in range(i, i + rows):
                out_j, w_j = out[j], w[j]                                       # (R,), (O,)
                for r in range(R):
                    out_j[r] = zero
                for o in range(O):
                    x_o, w_jo = x[o], w_j[o]
                    for r in range(R):
                        out_j[r] += w_jo * x_o[r]
        else:
            out0, out1, out2, out3 = out[i], out[i + 1], out[i + 2], out[i + 3]    # (R,) rows i..i+3 of out
            w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]                    # (O,) their weights
            o = 0
            while o + 4 <= O:
                first = o == 0
                x0, x1, x2, x3 = x[o], x[o + 1], x[o + 2], x[o + 3]                # (R,) rows o..o+3 of x
                a0, a1, a2, a3 = w0[o], w0[o + 1], w0[o + 2], w0[o + 3]
                b0, b1, b2, b3 = w1[o], w1[o + 1], w1[o + 2], w1[o + 3]
                c0, c1, c2, c3 = w2[o], w2[o + 1], w2[o + 2], w2[o + 3]
                d0, d1, d2, d3 = w3[o], w3[o + 1], w3[o + 2], w3[o + 3]
                # The sum so far enters the last multiply-add: four terms and it in five operations (two
                # multiplies, two multiply-adds, an add), where adding it after the four took six: 2% of a
                # step. (With `first` as two loops of their own, rather than this choice, 30% slower.)
                for r in range(R):
                    y0, y1, y2, y3 = x0[r], x1[r], x2[r], x3[r]
                    o0 = zero if first else out0[r]
                    o1 = zero if first else out1[r]
                    o2 = zero if first else out2[r]
                    o3 = zero if first else out3[r]
                    out0[r] = (a0 * y0 + a1 * y1) + (a2 * y2 + (a3 * y3 + o0))
                    out1[r] = (b0 * y0 + b1 * y1) + (b2 * y2 + (b3 * y3 + o1))
                    out2[r] = (c0 * y0 + c1 * y1) + (c2 * y2 + (c3 * y3 + o2))
                    out3[r] = (d0 * y0 + d1 * y1) + (d2 * y2 + (d3 * y3 + o3))
                o += 4
            for o in range(o, O):
                x_o = x[o]
                for j in range(i, i + 4):
                    out_j, w_jo = out[j], w[j, o]
                    for r in range(R):
                        out_j[r] += w_jo * x_o[r]
        for j in range(i, i + rows):                                            # these rows are in cache now
            out_j = out[j]
            if residual is not None:
                residual_j = residual[j]
                for r in range(R):
                    out_j[r] += residual_j[r]
            if relu:
                for r in range(R):
                    out_j[r] = max(out_j[r], zero)
            if gate is not None:
                gate_j = gate[j]
                for r in range(R):
                    if gate_j[r] <= 0:
                        out_j[r] = zero


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
def column_dots(out, a, b):
    """out (R,) = the dot products of the columns of a and b (C, R), a loop along the rows for each c."""
    for r in range(out.shape[0]):
        out[r] = a[0, r] * b[0, r]
    for c in range(1, a.shape[0]):
        for r in range(out.shape[0]):
            out[r] += a[c, r] * b[c, r]


@njit(**JIT)
def rmsnorm_columns(out, x, scale, eps):
    """rmsnorm of each column of x (C, R) into out (C, R); scale (R,) gets each column's scale."""
    C, R = x.shape[0], x.shape[1]
    column_dots(scale, x, x)
    one, n = out.dtype.type(1), out.dtype.type(C)
    for r in range(R):
        scale[r] = one / np.sqrt(scale[r] / n + eps)
    for c in range(C):
        for r in range(R):
            out[c, r] = x[c, r] * scale[r]


@njit(**JIT)
def rmsnorm_back_columns(dx, x, scale, dy, k):
    """rmsnorm_back for each column of x (C, R): dx (C, R) += s dy - s^3 x (dy . x) / C. k (R,): scratch."""
    C, R = x.shape[0], x.shape[1]
    column_dots(k, dy, x)
    for r in range(R):
        k[r] *= scale[r] * scale[r] * scale[r] / dx.dtype.type(C)
    for c in range(C):
        for r in range(R):
            dx[c, r] += scale[r] * dy[c, r] - k[r] * x[c, r]


def exp_nonpositive_in(float_t, int_t, terms, bias, bits, lowest, ln2_hi, ln2_lo):
    """exp(x) for x <= 0 in float_t. libm's exp is a call per element, which keeps softmax's loop scalar;
    this is arithmetic only, so the loop vectorizes. It is within half the type's epsilon of exp(x), and
    within a few units in the last place for x >= -10; further out its relative error grows (fastmath may
    merge ln 2's two parts), where a softmax, whose sum is at least 1, cannot see it.
    exp(x) = 2^-k exp(r), k = round(-x / ln 2), r = x + k ln 2 in [-ln(2) / 2, ln(2) / 2] (ln 2 = ln2_hi +
    ln2_lo, ln2_hi short enough that k ln2_hi is exact): exp(r)'s Taylor polynomial of degree `terms` by
    Horner's rule, and 2^-k = 2^-(k // 2) 2^-(k - k // 2), each built from its exponent bits (int_t: the
    float's width; bias and bits: its exponent's), both normal numbers, so that their product underflows to
    subnormals and 0 as exp does. Every constant is a float_t: float32 stays float32, twice as many to a
    vector."""
    half_one, inv_ln2 = float_t(0.5), float_t(1.4426950408889634)
    lowest, ln2_hi, ln2_lo = float_t(lowest), float_t(ln2_hi), float_t(ln2_lo)
    top = float_t(1 / math.factorial(terms))                                   # 1/n!, the highest n first
    rest = tuple(float_t(1 / math.factorial(n)) for n in range(terms - 1, -1, -1))

    def exp_nonpositive(x):
        x = max(float_t(x), lowest)
        k = int_t(-x * inv_ln2 + half_one)
        r = (x + float_t(k) * ln2_hi) + float_t(k) * ln2_lo
        e = top
        for coefficient in rest:              # Horner: (((r / n! + 1 / (n - 1)!) r + ...) r + 1), one
            e = e * r + coefficient           # multiply-add a term
        half = k >> 1
        return e * int_t((bias - half) << bits).view(float_t) * int_t((bias - k + half) << bits).view(float_t)
    return exp_nonpositive


EXP_NONPOSITIVE = {   # below `lowest`, exp is 0 (exp(-746) in float64, exp(-104) in float32)
    types.float64: exp_nonpositive_in(np.float64, np.int64, 13, 1023, 52, -1416.0, 0.693145751953125,
                                      1.4286068203094172e-06),
    types.float32: exp_nonpositive_in(np.float32, np.int32, 7, 127, 23, -104.0, 0.693359375, -2.12194440e-4),
}


def per_float_type(name, implementations, doc):
    """A function for compiled code that runs implementations[the type of its float argument], inlined (so
    that float32 arithmetic stays float32); called from Python, it says that it runs in compiled code only."""
    def function(x):
        raise TypeError(f"{name} runs in compiled code only")
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    overload(function, inline="always")(lambda x: implementations[x])
    return function


exp_nonpositive = per_float_type("exp_nonpositive", EXP_NONPOSITIVE, "exp(x) for x <= 0 in x's own float type.")


def reciprocal_in(float_t, int_t, magic, steps):
    """1 / d for 0 < d < 1 / (the smallest normal number) in float_t, by multiplies and adds only. It is for
    Adam's division, which with its square root kept the divider busy for about 30% of a batch-1 step. The
    first guess comes from d's bits (magic minus them: d's exponent negated, within 10.2% of 1 / d); each
    Newton step, z (2 - d z), squares the relative error, and `steps` of them (float64 5, float32 4) reach
    the last bits. d is raised to the smallest normal number first: the guess needs a normal d (below it,
    1 / d overflows anyway)."""
    two, smallest, magic = float_t(2), float_t(np.finfo(float_t).tiny), int_t(magic)

    def reciprocal(x):
        d = float_t(max(x, smallest))
        z = int_t(magic - d.view(int_t)).view(float_t)
        for _ in range(steps):
            z = z * (two - d * z)
        return z
    return reciprocal


RECIPROCAL = {types.float64: reciprocal_in(np.float64, np.int64, 0x7FDE623822FC16E6, 5),
              types.float32: reciprocal_in(np.float32, np.int32, 0x7EF311C7, 4)}


reciprocal = per_float_type("reciprocal", RECIPROCAL,
                            "1 / x for 0 < x < 1 / (the smallest normal number), in x's own float type.")


@njit(inline="always", **JIT)
def softmax(p):
    """In place over p (n,); the max is subtracted so that exp() cannot overflow. (libm's exp: on
    attention's short rows it is quicker than exp_nonpositive.)"""
    top = p[0]
    for i in range(1, p.shape[0]):
        top = max(top, p[i])
    total = p.dtype.type(0)
    for i in range(p.shape[0]):
        p[i] = np.exp(p[i] - top)
        total += p[i]
    for i in range(p.shape[0]):
        p[i] /= total


@njit(**JIT)
def softmax_rows(p):
    """softmax over each row of p (R, n), in place: the exps in one loop over all of p (exp_nonpositive,
    vectorized), not a short loop per row."""
    for r in range(p.shape[0]):
        p_r = p[r]
        top = p_r[0]
        for i in range(1, p_r.shape[0]):
            top = max(top, p_r[i])
        for i in range(p_r.shape[0]):
            p_r[i] -= top
    flat = lead(p, (p.size,))
    for i in range(flat.shape[0]):
        flat[i] = exp_nonpositive(flat[i])
    for r in range(p.shape[0]):
        p_r = p[r]
        total = p.dtype.type(0)
        for i in range(p_r.shape[0]):
            total += p_r[i]
        for i in range(p_r.shape[0]):
            p_r[i] /= total


@njit(**JIT)
def softmax_columns(p, most, total):
    """softmax over each column of p (V, R), in place, as softmax_rows over rows (the sums taken as the exps
    are, and one reciprocal a column); most, total (R,): scratch."""
    V, R = p.shape[0], p.shape[1]
    for r in range(R):
        most[r] = p[0, r]
    for i in range(1, V):
        for r in range(R):
            most[r] = max(most[r], p[i, r])
    for r in range(R):
        total[r] = 0
    for i in range(V):
        for r in range(R):
            e = exp_nonpositive(p[i, r] - most[r])
            p[i, r] = e
            total[r] += e
    for r in range(R):
        total[r] = 1 / total[r]
    for i in range(V):
        for r in range(R):
            p[i, r] *= total[r]


# ---- attention, row by row (atomic.py's order) ----------------------------------------------------------
@njit(**JIT)
def attention_rows(y, q, k, v, att, ints, lo, hi, H, inv_sqrt_d):
    """Rows lo..hi of the heads' outputs y (R, C) from queries, keys and values (R, C): row r, position t of
    its document, scores its t + 1 keys, the rows of its document up to r. Fills the weights att (H, R, T)."""
    D = y.shape[1] // H
    for r in range(lo, hi):
        t, first = ints[POS, r], ints[DOC0, r]         # row r is position t of the document at row `first`
        for h in range(H):
            hs = h * D
            a = att[h, r, :t + 1]                      # (t + 1,) this query over every key so far
            q_h, y_h = q[r, hs:hs + D], y[r, hs:hs + D]                       # (D,)
            for u in range(t + 1):
                k_h = k[first + u, hs:hs + D]
                score = a.dtype.type(0)
                for j in range(D):
                    score += q_h[j] * k_h[j]
                a[u] = score * inv_sqrt_d
            softmax(a)
            v_h = v[first, hs:hs + D]                  # y_h = sum_u a[u] v_h[u], started from u = 0, not
            for j in range(D):                         # from zeros (LLVM makes a loop of zeros a call to memset)
                y_h[j] = a[0] * v_h[j]
            for u in range(1, t + 1):
                v_h = v[first + u, hs:hs + D]
                for j in range(D):
                    y_h[j] += a[u] * v_h[j]


@njit(**JIT)
def attention_rows_back(dq, dk, dv, dy, q, k, v, att, dweights, ints, R, H, inv_sqrt_d):
    """attention_rows' backward over the tile's R rows: from dy (R, C) and the weights att (H, R, T), dq,
    dk and dv (R, C), which it overwrites. dweights (T,): scratch."""
    D = dy.shape[1] // H
    dq[:] = 0
    dk[:] = 0
    dv[:] = 0
    # (indexed in place: a view per key and value, in this innermost loop, would cost more than its sums)
    for r in range(R):
        t, first = ints[POS, r], ints[DOC0, r]
        dy_r, dq_r, q_r = dy[r], dq[r], q[r]           # (C,) head h is [h D, h D + D)
        for h in range(H):
            hs = h * D
            a = att[h, r]                              # (T,) of which :t + 1 are row r's weights
            dot = dy.dtype.type(0)
            for u in range(t + 1):                     # y_h = sum_u a[u] v_h[u]
                au, dw = a[u], dy.dtype.type(0)
                for j in range(hs, hs + D):
                    dw += dy_r[j] * v[first + u, j]
                    dv[first + u, j] += au * dy_r[j]
                dweights[u] = dw
                dot += au * dw
            for u in range(t + 1):                     # softmax: dscore_u = a_u (dw_u - a . dw); score = q.k / sqrt(D)
                ds = a[u] * (dweights[u] - dot) * inv_sqrt_d
                for j in range(hs, hs + D):
                    dq_r[j] += ds * k[first + u, j]
                    dk[first + u, j] += ds * q_r[j]


# ---- attention by position: for a tile of many documents, each loop runs across them ----------------------
# atomic.py's attention is per row: row r (position t of its document) scores its t + 1 keys. For a tile of
# many short documents those are loops of a few elements (keys, a head's D), and a libm exp per weight.
# The same sums, taken the other way round: lay the tile out by position (position 0 of every document,
# then position 1 of those that have one, ..., the documents longest first), and keep q, k and v with a
# lane per row and head, (D, R H) (to_lanes). Then the lanes at position t are one stretch, and their keys
# j positions back are the same documents' lanes at position t - j: the first lanes of that stretch, in
# the same order. Every sum below is a loop along lanes, over contiguous memory, and it vectorizes, exp
# included (exp_nonpositive). The weights of the n lanes at position t, over their keys at lags 0..t, are
# one (t + 1, n) block.
@njit(inline="always", **JIT)
def lead(x, shape):
    """The first floats of x (a C-contiguous array) as an array of `shape`, a view."""
    return view_as(x, 0, shape)


@njit(**JIT)
def by_position(ints, tokens, starts, first, last, H):
    """Documents first..last-1 into the tile's rows by position, the longest documents first (in batch
    order among equals). Returns where each position's lanes (H a row, to_lanes) start: the lanes at
    position t are lanes[t]..lanes[t + 1], and lanes[J] is H x the number of rows."""
    n = np.empty(last - first, np.int64)                       # positions predicted by each document
    J = 0
    for d in range(first, last):
        n[d - first] = starts[d + 1] - starts[d] - 1
        J = max(J, n[d - first])
    order, k = np.empty(last - first, np.int64), 0             # longest first, in batch order among equals: a
    for length in range(J, 0, -1):                             # counting sort (lengths are at most T), not argsort
        for i in range(last - first):
            if n[i] == length:
                order[k] = i
                k += 1
    lanes = np.empty(J + 1, np.int64)
    r = 0
    for t in range(J):
        lanes[t] = r * H
        for i in order:
            if n[i] <= t:
                break
            at = starts[first + i] + t
            ints[TOK, r], ints[TARGET, r], ints[POS, r], ints[DOC, r] = tokens[at], tokens[at + 1], t, first + i
            r += 1
    lanes[J] = r * H
    return lanes


@njit(inline="always", **JIT)
def weight_blocks(lanes):
    """Where the weights at each position start: the (t + 1, n_t) blocks one after another."""
    J = lanes.shape[0] - 1
    at = np.empty(J + 1, np.int64)
    at[0] = 0
    for t in range(J):
        at[t + 1] = at[t] + (t + 1) * (lanes[t + 1] - lanes[t])
    return at


@njit(**JIT)
def transpose_into(out, x):
    """out (A, B) = x (B, A)^T; the inner loop along the longer side (contiguous writes if it is out's
    rows, contiguous reads if it is x's)."""
    A, B = out.shape[0], out.shape[1]
    if A <= B:
        for a in range(A):
            out_a = out[a]
            for b in range(B):
                out_a[b] = x[b, a]
    else:
        for b in range(B):
            x_b = x[b]
            for a in range(A):
                out[a, b] = x_b[a]


@njit(**JIT)
def to_lanes(out, x):
    """out (D, R H) = x (C, R + padding) in columns (forward_columns'), a lane per row and head:
    out[d, r H + h] = x[h D + d, r]. With four heads (every preset's), the four rows that make one d's
    lanes are interleaved in one loop, which LLVM vectorizes with shuffles: in float32 four times as fast
    as transpose_into's strided stores, in float64 about twice."""
    D, H = out.shape[0], x.shape[0] // out.shape[0]
    R = out.shape[1] // H
    if H == 4:
        for d in range(D):
            lanes, x0, x1, x2, x3 = out[d], x[d], x[D + d], x[2 * D + d], x[3 * D + d]   # (R H,), heads' (R,)
            for r in range(R):
                lanes[4 * r] = x0[r]
                lanes[4 * r + 1] = x1[r]
                lanes[4 * r + 2] = x2[r]
                lanes[4 * r + 3] = x3[r]
    else:
        heads = lead(x, (H, D, x.shape[1]))                    # (H, D, R + padding)
        for d in range(D):
            transpose_into(lead(out[d], (R, H)), heads[:, d, :R])


@njit(**JIT)
def from_lanes(out, x):
    """out (C, R + padding) = x (D, R H): to_lanes undone (four heads: interleaved, as there), and the
    padding zeroed."""
    D, H = x.shape[0], out.shape[0] // x.shape[0]
    R = x.shape[1] // H
    if H == 4:
        for d in range(D):
            lanes, y0, y1, y2, y3 = x[d], out[d], out[D + d], out[2 * D + d], out[3 * D + d]
            for r in range(R):
                y0[r] = lanes[4 * r]
                y1[r] = lanes[4 * r + 1]
                y2[r] = lanes[4 * r + 2]
                y3[r] = lanes[4 * r + 3]
    else:
        heads = lead(out, (H, D, out.shape[1]))                # (H, D, R + padding)
        for d in range(D):
            transpose_into(heads[:, d, :R], lead(x[d], (R, H)))
    out[:, R:] = 0


@njit(**JIT)
def attention_by_position(y, q, k, v, att, top, lanes, inv_sqrt_d):
    """The heads' outputs y (D, N) from queries, keys and values q, k, v (D, N), N lanes (to_lanes') of a
    tile laid out by position: the lanes at position t are lanes[t]..lanes[t + 1], and the keys j positions
    back of the first n of those are the first n at t - j. Fills the weights: att (R T H,), the block of
    position t at weight_blocks(lanes)[t]. top (2, N): scratch."""
    D, J = q.shape[0], lanes.shape[0] - 1
    wat = weight_blocks(lanes)
    for t in range(J):
        o, n = lanes[t], lanes[t + 1] - lanes[t]               # the n lanes at position t
        a = att[wat[t]:wat[t + 1]]                             # (t + 1) n: lag j's weights are a[j n:(j + 1) n]
        for j in range(t + 1):                                 # q . k of each lane and its key j back
            s, ko = a[j * n:(j + 1) * n], lanes[t - j]         # (n,); the keys are the first n lanes at t - j
            for d in range(D):
                q_d, k_d = q[d, o:o + n], k[d, ko:ko + n]
                for i in range(n):
                    s[i] = q_d[i] * k_d[i] if d == 0 else s[i] + q_d[i] * k_d[i]
        most, total = top[0, :n], top[1, :n]                   # softmax over the lags, max subtracted
        for i in range(n):
            most[i] = a[i]
        for j in range(1, t + 1):
            s = a[j * n:(j + 1) * n]
            for i in range(n):
                most[i] = max(most[i], s[i])
        for j in range(t + 1):
            s = a[j * n:(j + 1) * n]
            for i in range(n):
                s[i] = (s[i] - most[i]) * inv_sqrt_d           # score - max score, scores = q . k / sqrt(D)
        for i in range(a.shape[0]):                            # one loop over the whole block
            a[i] = exp_nonpositive(a[i])
        for i in range(n):
            total[i] = a[i]
        for j in range(1, t + 1):
            s = a[j * n:(j + 1) * n]
            for i in range(n):
                total[i] += s[i]
        for i in range(n):
            total[i] = 1 / total[i]
        for j in range(t + 1):
            s = a[j * n:(j + 1) * n]
            for i in range(n):
                s[i] *= total[i]
        for d in range(D):                                     # y = sum_j a_j v(key j back)
            y_d, v_d = y[d, o:o + n], v[d, o:o + n]
            for i in range(n):
                y_d[i] = a[i] * v_d[i]
            for j in range(1, t + 1):
                s, v_d = a[j * n:(j + 1) * n], v[d, lanes[t - j]:lanes[t - j] + n]
                for i in range(n):
                    y_d[i] += s[i] * v_d[i]


@njit(**JIT)
def attention_by_position_back(dq, dk, dv, dy, q, k, v, att, dw, lanes, inv_sqrt_d):
    """attention_by_position's backward: from dy (D, N) and the weights att, dq, dk and dv (D, N), which
    it overwrites. dw (N T + N,): scratch."""
    D, N, J = q.shape[0], q.shape[1], lanes.shape[0] - 1
    wat = weight_blocks(lanes)
    zero = att.dtype.type(0)
    for d in range(D):
        for i in range(N):
            dq[d, i] = dk[d, i] = dv[d, i] = zero
    for t in range(J):
        o, n = lanes[t], lanes[t + 1] - lanes[t]
        a, g = att[wat[t]:wat[t + 1]], dw[:wat[t + 1] - wat[t]]   # (t + 1) n: the weights, their gradient
        dot = dw[N * J:N * J + n]                                  # (n,)
        # (one store a loop: with two, LLVM checks more pairs of them for overlap before it vectorizes)
        for j in range(t + 1):                                 # y = sum_j a_j v_j
            s, ko = g[j * n:(j + 1) * n], lanes[t - j]
            for d in range(D):
                dy_d, v_d = dy[d, o:o + n], v[d, ko:ko + n]
                for i in range(n):
                    s[i] = dy_d[i] * v_d[i] if d == 0 else s[i] + dy_d[i] * v_d[i]
        for d in range(D):
            dy_d = dy[d, o:o + n]
            for j in range(t + 1):
                a_j, dv_d = a[j * n:(j + 1) * n], dv[d, lanes[t - j]:lanes[t - j] + n]
                for i in range(n):
                    dv_d[i] += a_j[i] * dy_d[i]
        for i in range(n):                                     # softmax: dscore_j = a_j (g_j - a . g)
            dot[i] = a[i] * g[i]
        for j in range(1, t + 1):
            s, a_j = g[j * n:(j + 1) * n], a[j * n:(j + 1) * n]
            for i in range(n):
                dot[i] += a_j[i] * s[i]
        for j in range(t + 1):                                 # score = q . k_j / sqrt(D)
            s, a_j = g[j * n:(j + 1) * n], a[j * n:(j + 1) * n]
            for i in range(n):
                s[i] = a_j[i] * (s[i] - dot[i]) * inv_sqrt_d
        for d in range(D):
            q_d, dq_d = q[d, o:o + n], dq[d, o:o + n]
            for j in range(t + 1):
                s, ko = g[j * n:(j + 1) * n], lanes[t - j]
                k_d, dk_d = k[d, ko:ko + n], dk[d, ko:ko + n]
                for i in range(n):
                    dq_d[i] += s[i] * k_d[i]
                for i in range(n):
                    dk_d[i] += s[i] * q_d[i]


# ---- attention by document: a tile of a few long documents, in columns --------------------------------------
# A tile of long documents (a stream preset's sequences of block_size positions) has few lanes at each position
# for attention by position, and long ones at the first, few at the last; row by row (attention_rows) its scores
# are short dot products over a head's D, one at a time. Such a tile keeps its documents side by side, each one's positions together
# (fill_tile's order), and its activations in columns, as a tile by position does. Attention then cuts the
# queries, keys and values into a (D, n) block for each document of n positions and each head (to_blocks), and
# runs on each block as three small matrix products: every query against every key at once, the weights
# a (n, n) with a[u, t] query t's weight on key u. That computes the scores of the keys past each query too and
# then zeroes their weights (twice the scores' multiply-adds, a few percent of a step's), so that every loop
# runs along a whole row of the block.
@njit(inline="always", **JIT)
def block_of(flat, C, H, c0, n, h):
    """Head h's (D, n) block of the document at columns c0..c0 + n, in a flat (C R,) array of blocks: the
    document's blocks lie at C c0, one head after another."""
    D = C // H
    return view_as(flat, C * c0 + h * D * n, (D, n))


@njit(**JIT)
def copy_blocks(cols, blocks, bounds, H, into_blocks):
    """Between activations in columns, cols (C, R + padding), and the same cut into blocks, blocks (C R,)
    (block_of), for the documents at columns bounds[b]..bounds[b + 1]: into_blocks, blocks = cols cut up;
    else cols = the blocks put back, and its padding zeroed."""
    C = cols.shape[0]
    D = C // H
    for b in range(bounds.shape[0] - 1):
        c0, n = bounds[b], bounds[b + 1] - bounds[b]
        for h in range(H):
            block = block_of(blocks, C, H, c0, n, h)           # (D, n)
            for d in range(D):
                block_d, cols_d = block[d], cols[h * D + d, c0:c0 + n]
                if into_blocks:
                    for t in range(n):
                        block_d[t] = cols_d[t]
                else:
                    for t in range(n):
                        cols_d[t] = block_d[t]
    if not into_blocks:
        cols[:, bounds[-1]:] = 0


@njit(inline="always", **JIT)
def to_blocks(out, x, bounds, H):
    """out (C R,) = x (C, R + padding) in columns, cut into blocks."""
    copy_blocks(x, out, bounds, H, True)


@njit(inline="always", **JIT)
def from_blocks(out, x, bounds, H):
    """out (C, R + padding) = the blocks x (C R,) back in columns, its padding zeroed."""
    copy_blocks(out, x, bounds, H, False)


@njit(inline="always", **JIT)
def causal_softmax(a, most, total, inv_sqrt_d):
    """a (n, n) of dot products q_t . k_u at [u, t] into attention's weights, in place: column t, query t's,
    is softmax(scores / sqrt(D)) over its keys u <= t (softmax_columns, the keys past it at -inf: exp gives
    them 0). most, total (n,): scratch."""
    n = a.shape[0]
    for u in range(n):
        a_u = a[u]
        for t in range(u):
            a_u[t] = -np.inf                                   # key u comes after query t
        for t in range(u, n):
            a_u[t] *= inv_sqrt_d
    softmax_columns(a, most, total)


@njit(inline="always", **JIT)
def causal_softmax_back(g, a, dot, inv_sqrt_d):
    """causal_softmax's backward, in place: from its weights a (n, n) and g (n, n), the loss's gradient
    with respect to them, g becomes the gradient with respect to the dot products, column by column
    a (g - sum_u a g) / sqrt(D) (0 at the keys past each query, whose weights are 0). dot (n,): scratch."""
    n = a.shape[0]
    for t in range(n):
        dot[t] = a[0, t] * g[0, t]
    for u in range(1, n):
        a_u, g_u = a[u], g[u]
        for t in range(n):
            dot[t] += a_u[t] * g_u[t]
    for u in range(n):
        a_u, g_u = a[u], g[u]
        for t in range(n):
            g_u[t] = a_u[t] * (g_u[t] - dot[t]) * inv_sqrt_d


@njit(**JIT)
def attention_by_document(y, q, k, v, att, top, bounds, C, H, inv_sqrt_d):
    """The heads' outputs y from queries, keys and values q, k, v, all (C R,) in blocks (to_blocks'). Fills
    the weights: att (R T H,), each document's and head's (n, n) one after another. top (2, T): scratch."""
    at = 0
    for b in range(bounds.shape[0] - 1):
        c0, n = bounds[b], bounds[b + 1] - bounds[b]
        for h in range(H):
            q_, k_, v_, y_ = block_of(q, C, H, c0, n, h), block_of(k, C, H, c0, n, h), \
                block_of(v, C, H, c0, n, h), block_of(y, C, H, c0, n, h)           # (D, n) each
            a = view_as(att, at, (n, n))                       # a[u, t]: query t's weight on key u
            at += n * n
            matmul_left(a, k_.T, q_)                           # a[u, t] = k_u . q_t
            causal_softmax(a, top[0, :n], top[1, :n], inv_sqrt_d)
            matmul_left(y_, v_, a)                             # y_t = sum_u a[u, t] v_u


@njit(**JIT)
def attention_by_document_back(dq, dk, dv, dy, q, k, v, att, dw, bounds, C, H, inv_sqrt_d):
    """attention_by_document's backward: from dy and the weights att, dq, dk and dv, all (C R,) in blocks,
    which it overwrites. dw (T T + T,): scratch."""
    at = 0
    for b in range(bounds.shape[0] - 1):
        c0, n = bounds[b], bounds[b + 1] - bounds[b]
        dot = dw[n * n:n * n + n]                              # (n,)
        for h in range(H):
            q_, k_, v_ = block_of(q, C, H, c0, n, h), block_of(k, C, H, c0, n, h), block_of(v, C, H, c0, n, h)
            dq_, dk_, dv_ = block_of(dq, C, H, c0, n, h), block_of(dk, C, H, c0, n, h), block_of(dv, C, H, c0, n, h)
            dy_ = block_of(dy, C, H, c0, n, h)                 # (D, n) each
            a, g = view_as(att, at, (n, n)), view_as(dw, 0, (n, n))   # the weights, their gradient
            at += n * n
            matmul_left(g, v_.T, dy_)                          # y_t = sum_u a[u, t] v_u: g[u, t] = v_u . dy_t
            matmul_nt(dv_, dy_, a, False)                      # dv_u = sum_t a[u, t] dy_t
            causal_softmax_back(g, a, dot, inv_sqrt_d)         # g[u, t] = d(loss)/d(q_t . k_u)
            matmul_left(dq_, k_, g)                            # score[u, t] = q_t . k_u: dq_t = sum_u g[u, t] k_u
            matmul_nt(dk_, q_, g, False)                       # dk_u = sum_t g[u, t] q_t


# ---- the work space, cut into views -----------------------------------------------------------------
# A tile is R rows (R = dims[R_] >= T): whole documents side by side, each row one position. For row r
# the ints hold its token, its position in its document, the row where its document starts, the token
# it should predict, and its document (its number in the batch). (A tile laid out by position, see
# by_position, has no use for DOC0.)
TOK, POS, DOC0, TARGET, DOC = range(5)
INTS = 5


ALIGN = 16   # buffers start on a multiple of 16 floats (64 bytes in float32): vector loads that do not
#             straddle cache lines


@njit(**JIT)
def pieces(dims):
    """Floats of each piece of a work space, in the order carve cuts them."""
    V, C, T, L, H, R = dims[V_], dims[C_], dims[T_], dims[L_], dims[H_], dims[R_]
    return ((8 * L + 8) * R * C, (L + 1) * R * 4 * C, (2 * L + 1) * R, L * H * R * T, R * V, (T + 2) * R * H,
            4 * C * R)


@njit(**JIT)
def work_size(dims):
    """Floats of one work space: carve's pieces, each with room to start on a multiple of ALIGN."""
    total = 0
    for n in pieces(dims):
        total += n + ALIGN
    return total


@njit(**JIT)
def take(ws, at, n):
    """The next n floats of ws from `at`, and where the buffer after them starts."""
    return ws[at:at + n], at + (n + ALIGN - 1) // ALIGN * ALIGN


@njit(**JIT)
def carve(ws, dims):
    """One chunk's work space (a flat row) cut into the buffers a tile's forward and backward use.
    The buffers of one row shape are slices of one block, viewed in that shape once (`lead`; slicing a
    block's first axis makes no call either). The shapes below are the rows'; a tile by
    position or by document uses the same floats as columns, (C, R) (`lead`), and keeps q, k and v as lanes,
    (D, R H), or as blocks, (C R,) (block_of)."""
    V, C, T, L, H, R = dims[V_], dims[C_], dims[T_], dims[L_], dims[H_], dims[R_]
    n_c, n_4c, n_s, n_att, n_probs, n_dweights, n_scratch = pieces(dims)
    block_c, at = take(ws, 0, n_c)
    block_4c, at = take(ws, at, n_4c)
    block_s, at = take(ws, at, n_s)
    att, at = take(ws, at, n_att)
    probs, at = take(ws, at, n_probs)
    dweights, at = take(ws, at, n_dweights)   # attention's scratch: a row's (T,), a tile by position's, or a
    #                                            document's (n, n); the columns' softmax and norms take (R,) pieces
    scratch, at = take(ws, at, n_scratch)      # a tile in columns': q, k, v (3C, R) fresh from their product,
    #                                            then up to four (D, R H) in lanes or (C R,) in blocks
    c = lead(block_c, (8 * L + 8, R, C))
    emb = c[0]                                 # (R, C) wte[tok] + wpe[pos]
    xs = c[1:L + 2]                            # (L + 1, R, C) the residual stream entering each layer; xs[L]: the last
    xn1 = c[L + 2:2 * L + 2]                   # (L, R, C) rmsnorm(xs[l]), attention's input
    q = c[2 * L + 2:3 * L + 2]                 # (L, R, C) queries
    k = c[3 * L + 2:4 * L + 2]                 # (L, R, C) keys: the KV cache
    v = c[4 * L + 2:5 * L + 2]                 # (L, R, C) values
    y = c[5 * L + 2:6 * L + 2]                 # (L, R, C) the heads' outputs side by side
    xmid = c[6 * L + 2:7 * L + 2]              # (L, R, C) the residual stream after attention
    xn2 = c[7 * L + 2:8 * L + 2]               # (L, R, C) rmsnorm(xmid), the MLP's input
    dx, dn, dy = c[8 * L + 2], c[8 * L + 3], c[8 * L + 4]   # backward: (R, C) each; dx the residual stream's
    dqkv = c[8 * L + 5:8 * L + 8]              # gradient; (3, R, C) dq, dk, dv: dk and dv the cached keys' and
    #                                            values', filled by every later position that read them
    wide = lead(block_4c, (L + 1, R, 4 * C))    # (L, R, 4C) hid = relu(fc1 xn2) in [:L]; then dh (R, 4C)
    s = lead(block_s, (2 * L + 1, R))          # rmsnorm scales: (R,) of the embedding, (L, R) of xs, (L, R) of xmid
    return (emb, s[0], xs, xn1, s[1:L + 1], q, k, v, lead(att, (L, H, R, T)), y, xmid, xn2, s[L + 1:],
            wide[:L], lead(probs, (R, V)), dx, wide[L], dn, dy, dqkv, dweights, scratch)


# ---- the embeddings, for either layout: e (R, C) in rows, or a tile's columns seen transposed ----------
@njit(inline="always", **JIT)
def embed(e, p, offsets, ints, lo, hi):
    """Rows lo..hi of e (R, C): wte[token] + wpe[position], each row's."""
    C = e.shape[1]
    for r in range(lo, hi):
        tok_at, pos_at = offsets[0] + ints[TOK, r] * C, offsets[1] + ints[POS, r] * C
        tok_emb, pos_emb = p[tok_at:tok_at + C], p[pos_at:pos_at + C]  # (C,) wte[token], wpe[position]
        for i in range(C):
            e[r, i] = tok_emb[i] + pos_emb[i]


@njit(inline="always", **JIT)
def embedding_grads(g, offsets, ints, rows, d):
    """embed's backward: row r of d (R, C), the gradient of its sum, goes to the token's row of wte and to
    the position's row of wpe in g."""
    C = d.shape[1]
    for r in range(rows):
        tok_at, pos_at = offsets[0] + ints[TOK, r] * C, offsets[1] + ints[POS, r] * C
        dtok_emb, dpos_emb = g[tok_at:tok_at + C], g[pos_at:pos_at + C]
        for i in range(C):
            dtok_emb[i] += d[r, i]
            dpos_emb[i] += d[r, i]


# ---- forward: atomic.py's gpt(), a layer at a time over rows lo..hi of a tile ---------------------------
@njit(**JIT)
def forward_rows(p, offsets, dims, hyper, bufs, ints, lo, hi):
    """Rows lo..hi of the tile: fills their part of every buffer (the KV cache included) and leaves
    their logits in probs. The rows of their documents before lo must already be in the buffers."""
    (emb, s_emb, xs, xn1, s1, q, k, v, att, y, xmid, xn2, s2, hid, probs) = bufs[:15]
    V, C, L, H = dims[V_], dims[C_], dims[L_], dims[H_]
    eps = hyper[RMS_EPS]
    inv_sqrt_d = hyper.dtype.type(1) / np.sqrt(hyper.dtype.type(C // H))
    embed(emb, p, offsets, ints, lo, hi)
    for r in range(lo, hi):
        s_emb[r] = rmsnorm(xs[0, r], emb[r], eps)   # not redundant: the residual stream carries this normalized x
    for l in range(L):
        w = 3 + 6 * l
        # Attention: each head mixes the values of all positions so far, weighted by q.k
        for r in range(lo, hi):
            s1[l, r] = rmsnorm(xn1[l, r], xs[l, r], eps)
        wq, wk, wv = matrix(p, offsets[w], C, C), matrix(p, offsets[w + 1], C, C), matrix(p, offsets[w + 2], C, C)
        matmul_nt(q[l, lo:hi], xn1[l, lo:hi], wq, False)
        matmul_nt(k[l, lo:hi], xn1[l, lo:hi], wk, False)
        matmul_nt(v[l, lo:hi], xn1[l, lo:hi], wv, False)
        attention_rows(y[l], q[l], k[l], v[l], att[l], ints, lo, hi, H, inv_sqrt_d)
        matmul_nt(xmid[l, lo:hi], y[l, lo:hi], matrix(p, offsets[w + 3], C, C), False)
        for r in range(lo, hi):
            for i in range(C):
                xmid[l, r, i] += xs[l, r, i]           # residual
        # MLP: widen 4x, ReLU, narrow back
        for r in range(lo, hi):
            s2[l, r] = rmsnorm(xn2[l, r], xmid[l, r], eps)
        matmul_nt(hid[l, lo:hi], xn2[l, lo:hi], matrix(p, offsets[w + 4], 4 * C, C), False)
        for r in range(lo, hi):
            for i in range(4 * C):
                hid[l, r, i] = max(hid[l, r, i], hid.dtype.type(0))
        matmul_nt(xs[l + 1, lo:hi], hid[l, lo:hi], matrix(p, offsets[w + 5], C, 4 * C), False)
        for r in range(lo, hi):
            for i in range(C):
                xs[l + 1, r, i] += xmid[l, r, i]       # residual
    matmul_nt(probs[lo:hi], xs[L, lo:hi], matrix(p, offsets[2], V, C), False)


# ---- backward: the chain rule by hand, a layer at a time from the last ----------------------------------
@njit(**JIT)
def backward_rows(p, g, offsets, dims, bufs, ints, R, inv_n):
    """Adds d(loss)/d(param) of the tile's R rows into g (the flat gradient), for a loss that is the
    mean over inv_n^-1 tokens of the batch. Uses what forward_rows left in the buffers (probs: softmax)."""
    (emb, s_emb, xs, xn1, s1, q, k, v, att, y, xmid, xn2, s2, hid, probs,
     dx, dh, dn, dy, dqkv, dweights) = bufs[:21]
    V, C, L, H = dims[V_], dims[C_], dims[L_], dims[H_]
    inv_sqrt_d = p.dtype.type(1) / np.sqrt(p.dtype.type(C // H))
    dx, dh, dn, dy, dq, dk, dv = dx[:R], dh[:R], dn[:R], dy[:R], dqkv[0, :R], dqkv[1, :R], dqkv[2, :R]
    # loss = mean of -log softmax(logits)[target]: dlogits = (probs - onehot(target)) / n, in place
    dlogits = probs[:R]
    for r in range(R):
        for i in range(V):
            dlogits[r, i] *= inv_n
        dlogits[r, ints[TARGET, r]] -= inv_n
    matmul_nn(dx, dlogits, matrix(p, offsets[2], V, C), False)
    weight_grad(matrix(g, offsets[2], V, C), dlogits, xs[L, :R])
    for l in range(L - 1, -1, -1):
        w = 3 + 6 * l
        # MLP block: xs[l + 1] = fc2(relu(fc1(rmsnorm(xmid)))) + xmid; dx flows on through the residual
        matmul_nn(dh, dx, matrix(p, offsets[w + 5], C, 4 * C), False)
        weight_grad(matrix(g, offsets[w + 5], C, 4 * C), dx, hid[l, :R])
        for r in range(R):
            for i in range(4 * C):
                if hid[l, r, i] <= 0:
                    dh[r, i] = 0                       # ReLU's gate
        matmul_nn(dn, dh, matrix(p, offsets[w + 4], 4 * C, C), False)
        weight_grad(matrix(g, offsets[w + 4], 4 * C, C), dh, xn2[l, :R])
        for r in range(R):
            rmsnorm_back(dx[r], xmid[l, r], s2[l, r], dn[r])
        # Attention block: xmid = wo(y) + xs[l]
        matmul_nn(dy, dx, matrix(p, offsets[w + 3], C, C), False)
        weight_grad(matrix(g, offsets[w + 3], C, C), dx, y[l, :R])
        attention_rows_back(dq, dk, dv, dy, q[l], k[l], v[l], att[l], dweights, ints, R, H, inv_sqrt_d)
        matmul_nn(dn, dq, matrix(p, offsets[w], C, C), False)
        matmul_nn(dn, dk, matrix(p, offsets[w + 1], C, C), True)
        matmul_nn(dn, dv, matrix(p, offsets[w + 2], C, C), True)
        weight_grad(matrix(g, offsets[w], C, C), dq, xn1[l, :R])
        weight_grad(matrix(g, offsets[w + 1], C, C), dk, xn1[l, :R])
        weight_grad(matrix(g, offsets[w + 2], C, C), dv, xn1[l, :R])
        for r in range(R):
            rmsnorm_back(dx[r], xs[l, r], s1[l, r], dn[r])
    # xs[0] = rmsnorm(wte[token] + wpe[t]): the same gradient goes to the token's row and the position's
    for r in range(R):
        dn[r, :] = 0
        rmsnorm_back(dn[r], emb[r], s_emb[r], dx[r])
    embedding_grads(g, offsets, ints, R, dn)


# ---- a tile by position, in columns --------------------------------------------------------------------
# A tile laid out by position (by_position: many short documents, about 256 rows) runs the same layers with
# every activation transposed, (C, R): a row per feature, along the tile's rows. Kept as (R, C), each product
# would be a loop over a row of a few floats (C = 16: two vectors) whose set-up (row pointers, the
# compiler's checks that rows do not overlap) costs as much as its arithmetic. In columns, every product,
# norm and residual is a loop along all R rows. Attention still runs in lanes (to_lanes, from_lanes).
@njit(inline="always", **JIT)
def padded(rows, dims, x):
    """A tile by position's rows, padded to whole 64-byte cache lines (8 floats in float64, 16 in float32: a
    vector each; x is any array of the engine's dtype): a loop along them has no scalar tail, and each row of
    a (C, R) array starts on a cache line. The padding holds zeros (its embeddings are zero, and from_lanes
    zeroes its part of attention's outputs), never NaNs, so that it adds exact zeros to the weights'
    gradients."""
    line = 64 // x.itemsize
    return min((rows + line - 1) // line * line, dims[R_])


@njit(**JIT)
def forward_columns(p, offsets, dims, hyper, bufs, ints, rows, spans, by_document):
    """forward_rows for the rows of a tile by position (spans: by_position's lanes) or by document (spans:
    document_bounds'), activations in columns: leaves the logits (V, R) in probs, R = padded(rows)."""
    (emb, s_emb, xs, xn1, s1, q, k, v, att, y, xmid, xn2, s2, hid, probs) = bufs[:15]
    dweights, scratch = bufs[20], bufs[21]
    V, C, L, H = dims[V_], dims[C_], dims[L_], dims[H_]
    D, N, n, R = C // H, rows * H, rows * C, padded(rows, dims, p)
    eps = hyper[RMS_EPS]
    inv_sqrt_d = hyper.dtype.type(1) / np.sqrt(hyper.dtype.type(D))
    e = lead(emb, (C, R))
    e[:, rows:] = 0
    embed(e.T, p, offsets, ints, 0, rows)
    rmsnorm_columns(lead(xs[0], (C, R)), e, s_emb[:R], eps)
    for l in range(L):
        w = 3 + 6 * l
        x, xn, xm, xn_ = lead(xs[l], (C, R)), lead(xn1[l], (C, R)), lead(xmid[l], (C, R)), lead(xn2[l], (C, R))
        # Attention
        rmsnorm_columns(xn, x, s1[l, :R], eps)
        qkv = lead(scratch, (3 * C, R))
        matmul_left(qkv, matrix(p, offsets[w], 3 * C, C), xn)     # wq, wk, wv lie one after another in p
        y_c, att_l, top = lead(y[l], (C, R)), lead(att[l], (att[l].size,)), lead(dweights, (2, N))
        if by_document:                                        # q, k and v in blocks
            q_b, k_b, v_b, y_b = lead(q[l], (n,)), lead(k[l], (n,)), lead(v[l], (n,)), lead(scratch, (n,))
            to_blocks(q_b, qkv[:C], spans, H)
            to_blocks(k_b, qkv[C:2 * C], spans, H)
            to_blocks(v_b, qkv[2 * C:], spans, H)
            attention_by_document(y_b, q_b, k_b, v_b, att_l, top, spans, C, H, inv_sqrt_d)
            from_blocks(y_c, y_b, spans, H)
        else:                                                  # ... or in lanes
            q_, k_, v_ = lead(q[l], (D, N)), lead(k[l], (D, N)), lead(v[l], (D, N))
            to_lanes(q_, qkv[:C])
            to_lanes(k_, qkv[C:2 * C])
            to_lanes(v_, qkv[2 * C:])
            y_ = lead(scratch, (D, N))
            attention_by_position(y_, q_, k_, v_, att_l, top, spans, inv_sqrt_d)
            from_lanes(y_c, y_)
        matmul_left(xm, matrix(p, offsets[w + 3], C, C), y_c, x)   # + x: the residual
        # MLP
        rmsnorm_columns(xn_, xm, s2[l, :R], eps)
        h, x_next = lead(hid[l], (4 * C, R)), lead(xs[l + 1], (C, R))
        matmul_left(h, matrix(p, offsets[w + 4], 4 * C, C), xn_, None, True)   # and ReLU
        matmul_left(x_next, matrix(p, offsets[w + 5], C, 4 * C), h, xm)     # + xm: the residual
    matmul_left(lead(probs, (V, R)), matrix(p, offsets[2], V, C), lead(xs[L], (C, R)))


@njit(**JIT)
def backward_columns(p, g, offsets, dims, bufs, ints, rows, inv_n, spans, by_document):
    """backward_rows for a tile in columns, after forward_columns (probs: its softmax, (V, R)). A weight's
    gradient, dW (O, I) += dY (O, R) @ X (I, R)^T, is a matmul_nt whose sums run along the rows."""
    (emb, s_emb, xs, xn1, s1, q, k, v, att, y, xmid, xn2, s2, hid, probs,
     dx, dh, dn, dy, dqkv, dweights, scratch) = bufs
    V, C, L, H = dims[V_], dims[C_], dims[L_], dims[H_]
    D, N, n, R = C // H, rows * H, rows * C, padded(rows, dims, p)
    inv_sqrt_d = p.dtype.type(1) / np.sqrt(p.dtype.type(D))
    dx, dh, dn, dy, dqkv = lead(dx, (C, R)), lead(dh, (4 * C, R)), lead(dn, (C, R)), lead(dy, (C, R)), \
        lead(dqkv, (3 * C, R))
    k_scratch = dweights[:R]                           # rmsnorm_back_columns' (attention's dweights: later)
    dlogits = lead(probs, (V, R))                      # (probs - onehot(target)) / n, in place
    for i in range(V):
        for r in range(rows):
            dlogits[i, r] *= inv_n
    dlogits[:, rows:] = 0                              # the padding: no loss
    for r in range(rows):
        dlogits[ints[TARGET, r], r] -= inv_n
    matmul_left(dx, matrix(p, offsets[2], V, C).T, dlogits)
    matmul_nt(matrix(g, offsets[2], V, C), dlogits, lead(xs[L], (C, R)), True)
    for l in range(L - 1, -1, -1):
        w = 3 + 6 * l
        h = lead(hid[l], (4 * C, R))
        # MLP block
        matmul_left(dh, matrix(p, offsets[w + 5], C, 4 * C).T, dx, None, False, h)   # and ReLU's gate
        matmul_nt(matrix(g, offsets[w + 5], C, 4 * C), dx, h, True)
        matmul_left(dn, matrix(p, offsets[w + 4], 4 * C, C).T, dh)
        matmul_nt(matrix(g, offsets[w + 4], 4 * C, C), dh, lead(xn2[l], (C, R)), True)
        rmsnorm_back_columns(dx, lead(xmid[l], (C, R)), s2[l, :R], dn, k_scratch)
        # Attention block, in blocks or lanes as the forward left q, k and v
        matmul_left(dy, matrix(p, offsets[w + 3], C, C).T, dx)
        matmul_nt(matrix(g, offsets[w + 3], C, C), dx, lead(y[l], (C, R)), True)
        att_l = lead(att[l], (att[l].size,))
        if by_document:
            dy_b, dq_b, dk_b, dv_b = scratch[:n], scratch[n:2 * n], scratch[2 * n:3 * n], scratch[3 * n:4 * n]
            to_blocks(dy_b, dy, spans, H)
            attention_by_document_back(dq_b, dk_b, dv_b, dy_b, lead(q[l], (n,)), lead(k[l], (n,)), lead(v[l], (n,)),
                                       att_l, dweights, spans, C, H, inv_sqrt_d)
            from_blocks(dqkv[:C], dq_b, spans, H)
            from_blocks(dqkv[C:2 * C], dk_b, spans, H)
            from_blocks(dqkv[2 * C:], dv_b, spans, H)
        else:
            dy_, dq_, dk_, dv_ = lead(scratch, (D, N)), lead(scratch[n:], (D, N)), lead(scratch[2 * n:], (D, N)), \
                lead(scratch[3 * n:], (D, N))
            to_lanes(dy_, dy)
            attention_by_position_back(dq_, dk_, dv_, dy_, lead(q[l], (D, N)), lead(k[l], (D, N)),
                                       lead(v[l], (D, N)), att_l, dweights, spans, inv_sqrt_d)
            from_lanes(dqkv[:C], dq_)
            from_lanes(dqkv[C:2 * C], dk_)
            from_lanes(dqkv[2 * C:], dv_)
        matmul_left(dn, matrix(p, offsets[w], 3 * C, C).T, dqkv)
        matmul_nt(matrix(g, offsets[w], 3 * C, C), dqkv, lead(xn1[l], (C, R)), True)
        rmsnorm_back_columns(dx, lead(xs[l], (C, R)), s1[l, :R], dn, k_scratch)
    # the embeddings: the same gradient to the token's row and the position's
    dn[:] = 0
    rmsnorm_back_columns(dn, lead(emb, (C, R)), s_emb[:R], dx, k_scratch)
    embedding_grads(g, offsets, ints, rows, dn.T)


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
def fill_tile(ints, tokens, starts, b, hi, R):
    """Documents b, b + 1, ... (before hi) into the tile's rows, as many whole ones as fit in R rows;
    returns (rows used, the first document not taken)."""
    rows = 0
    while b < hi and rows + starts[b + 1] - starts[b] - 1 <= R:
        seq = tokens[starts[b]:starts[b + 1]]                 # BOS, chars, BOS: it predicts len - 1 tokens
        for t in range(seq.shape[0] - 1):
            ints[TOK, rows + t], ints[TARGET, rows + t] = seq[t], seq[t + 1]
            ints[POS, rows + t], ints[DOC0, rows + t], ints[DOC, rows + t] = t, rows, b
        rows += seq.shape[0] - 1
        b += 1
    return rows, b


@njit(**JIT)
def document_bounds(ints, rows):
    """Where each document of a tile in fill_tile's order starts (its position 0), then `rows`."""
    count = 0
    for r in range(rows):
        count += ints[POS, r] == 0
    bounds, b = np.empty(count + 1, np.int64), 0
    for r in range(rows):
        if ints[POS, r] == 0:
            bounds[b] = r
            b += 1
    bounds[count] = rows
    return bounds


@njit(**JIT)
def chunk_work(p, g, ws, ints, offsets, dims, hyper, tokens, starts, doc_loss, mode, inv_n, chunk, chunks):
    """Chunk `chunk` of `chunks`: its documents' forward with parameters p, a tile of them at a time,
    and (mode GRADS or TRAIN) their backward into the gradient g; ws and ints are the chunk's work space."""
    B = starts.shape[0] - 1
    if mode != EVAL:
        g[:] = 0
    bufs = carve(ws, dims)
    probs, dweights = bufs[14], bufs[20]
    b, hi = chunk_docs(B, chunk, chunks)
    while b < hi:
        first = b
        rows, b = fill_tile(ints, tokens, starts, b, hi, dims[R_])
        by_doc = rows >= (b - first) * dims[BYDOC_]
        by_pos = not by_doc and (b - first) * dims[H_] >= dims[BYPOS_]
        in_columns = by_pos or by_doc
        cols = padded(rows, dims, p)
        columns = lead(probs, (dims[V_], cols))        # a tile in columns: its probabilities, (V, R)
        if in_columns:
            spans = by_position(ints, tokens, starts, first, b, dims[H_]) if by_pos else document_bounds(ints, rows)
            forward_columns(p, offsets, dims, hyper, bufs, ints, rows, spans, by_doc)
            softmax_columns(columns, dweights[:cols], dweights[cols:2 * cols])
        else:
            forward_rows(p, offsets, dims, hyper, bufs, ints, np.int64(0), rows)   # (a literal 0: another compile)
            softmax_rows(probs[:rows])
        for d in range(first, b):              # each document's loss: the sum over its positions, in order
            doc_loss[d] = 0.0
        for r in range(rows):
            target = ints[TARGET, r]
            doc_loss[ints[DOC, r]] -= np.log(columns[target, r] if in_columns else probs[r, target])
        if mode != EVAL and in_columns:
            backward_columns(p, g, offsets, dims, bufs, ints, rows, inv_n, spans, by_doc)
        elif mode != EVAL:
            backward_rows(p, g, offsets, dims, bufs, ints, rows, inv_n)


@njit(**TREE)
def adam(p, m, v, g, hyper):
    """atomic.py's Adam with bias correction, p -= lr m_hat / (sqrt(v_hat) + eps), m_hat = m / c1 and
    v_hat = v / c2, written as (lr sqrt(c2) / c1) m / (sqrt(v) + eps sqrt(c2)): the same number with
    one square root, and its division by Newton's steps (reciprocal): square roots and divisions are what
    this loop costs. (TREE: the steps are computed as written, not reordered.)"""
    one, b1, b2 = hyper.dtype.type(1), hyper[BETA1], hyper[BETA2]
    root_c2 = np.sqrt(hyper[C2])
    step_size, eps = hyper[LR] * root_c2 / hyper[C1], hyper[EPS] * root_c2
    for i in range(p.shape[0]):
        m[i] = b1 * m[i] + (one - b1) * g[i]
        v[i] = b2 * v[i] + (one - b2) * g[i] * g[i]
        p[i] -= step_size * m[i] * reciprocal(np.sqrt(v[i]) + eps)


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


@njit(inline="always", **JIT)
def uncounted_step(state, offsets, dims, hyper, tokens, starts, ws, ints):
    """A step's arrays as uncounted views (the engine holds them through the call)."""
    return (uncounted(state), uncounted(offsets), uncounted(dims), uncounted(hyper), uncounted(tokens),
            uncounted(starts), uncounted(ws), uncounted(ints))


@njit(**JIT)
def step_serial(state, offsets, dims, hyper, tokens, starts, ws, ints, mode, chunks):
    """One call for a whole batch: forward, and for GRADS the gradient in state[3], and for TRAIN
    Adam too. Returns the mean loss over the batch's predicted tokens, or -1 for a malformed batch.
    ws (chunks, work_size) and ints (chunks, 4, R): a work space per chunk."""
    if not check_batch(tokens, starts, dims):
        return -1.0
    B = starts.shape[0] - 1
    inv_n = 1.0 / (tokens.shape[0] - B)
    doc_loss = np.empty(B)
    state, offsets, dims, hyper, tokens, starts, ws, ints = uncounted_step(state, offsets, dims, hyper, tokens, starts,
                                                                         ws, ints)
    for c in range(chunks):
        chunk_work(state[0], state[3 + c], ws[c], ints[c], offsets, dims, hyper, tokens, starts, doc_loss, mode,
                   hyper.dtype.type(inv_n), c, chunks)
    if mode != EVAL:
        finish(state, hyper, mode, chunks, 0, state.shape[1])
    return mean_loss(doc_loss, inv_n)


@njit(parallel=True, **JIT)
def step_parallel(state, offsets, dims, hyper, tokens, starts, ws, ints, mode, chunks, threads):
    """step_serial with the chunks, and then slices of the parameters, on Numba's threads. `threads` must be
    numba.get_num_threads(), the number prange runs on: with one, the chunks share ws[0] and ints[0], one after
    another. (Called in here, get_num_threads would keep this function out of Numba's disk cache.)"""
    if not check_batch(tokens, starts, dims):
        return -1.0
    B = starts.shape[0] - 1
    inv_n = 1.0 / (tokens.shape[0] - B)
    doc_loss = np.empty(B)
    # Every thread reads the parameters and the documents in place, and writes its chunk's gradient row and
    # its documents' losses: as uncounted views (a shared reference count would be a cache line that every
    # thread's views fight over). (Not doc_loss, which this function owns: its uncounted view would outlive it.)
    state, offsets, dims, hyper, tokens, starts, ws, ints = uncounted_step(state, offsets, dims, hyper, tokens, starts,
                                                                         ws, ints)
    alone = threads == 1   # one thread: the chunks share one work space, one after another
    for chunk in prange(chunks):
        c = np.int64(chunk)   # prange's index is unsigned: as int64, chunk_work is the one step_serial compiled
        # With several threads, each chunk gets a fresh work space of its own (scratch: every buffer is written
        # before it is read); with one, the chunks share ws[0] and ints[0].
        w, i = (ws[0], ints[0]) if alone else (np.empty_like(ws[0]), np.empty_like(ints[0]))
        chunk_work(state[0], state[3 + c], w, i, offsets, dims, hyper, tokens, starts, doc_loss, mode,
                   hyper.dtype.type(inv_n), c, chunks)
    if mode != EVAL:
        P = state.shape[1]
        line = 64 // state.itemsize   # slices of whole cache lines: every element then goes through the same
        lines = P // line             # vector code as in step_serial (P is a whole number of lines), bit for bit
        for piece in prange(chunks):
            s = np.int64(piece)
            hi = P if s == chunks - 1 else (s + 1) * lines // chunks * line
            finish(state, hyper, mode, chunks, s * lines // chunks * line, hi)
    return mean_loss(doc_loss, inv_n)


@njit(**JIT)
def position_logits(p, offsets, dims, hyper, ws, ints, token_id, t):
    """Sampling: the logits (V,) at position t of one sequence, whose positions 0..t-1 are already in
    the work space (ws, ints: one chunk's, the KV cache of one sample): row t of a one-document tile."""
    p, offsets, dims, hyper = uncounted(p), uncounted(offsets), uncounted(dims), uncounted(hyper)
    ws, ints = uncounted(ws), uncounted(ints)
    ints[TOK, t], ints[POS, t], ints[DOC0, t] = token_id, t, 0
    bufs = carve(ws, dims)
    forward_rows(p, offsets, dims, hyper, bufs, ints, t, t + 1)
    return bufs[14][t].copy()
