"""Each Value operation's gradient, and the model's building blocks, against central finite differences."""

import math
import random

import pytest

from microgpt.atomic import Value, gpt, linear, rmsnorm, softmax

H = 1e-6


def numeric_grads(f, xs):
    """Central differences of the float function f at the point xs."""
    grads = []
    for i in range(len(xs)):
        up, down = list(xs), list(xs)
        up[i] += H
        down[i] -= H
        grads.append((f(up) - f(down)) / (2 * H))
    return grads


def autograd_grads(f_value, xs):
    vals = [Value(x) for x in xs]
    f_value(vals).backward()
    return [v.grad for v in vals]


OPS = {
    "add": (lambda a, b: a + b, [0.7, -1.3]),
    "radd": (lambda a, b: 2.5 + a, [0.7, -1.3]),
    "mul": (lambda a, b: a * b, [0.7, -1.3]),
    "rmul": (lambda a, b: 3.0 * b, [0.7, -1.3]),
    "pow": (lambda a, b: a ** 3, [0.7, -1.3]),
    "pow_neg_half": (lambda a, b: a ** -0.5, [0.7, -1.3]),
    "log": (lambda a, b: a.log() if isinstance(a, Value) else math.log(a), [0.7, -1.3]),
    "exp": (lambda a, b: b.exp() if isinstance(b, Value) else math.exp(b), [0.7, -1.3]),
    "relu_pos": (lambda a, b: a.relu() if isinstance(a, Value) else max(0.0, a), [0.7, -1.3]),
    "relu_neg": (lambda a, b: b.relu() if isinstance(b, Value) else max(0.0, b), [0.7, -1.3]),
    "neg": (lambda a, b: -a, [0.7, -1.3]),
    "sub": (lambda a, b: a - b, [0.7, -1.3]),
    "rsub": (lambda a, b: 1.0 - b, [0.7, -1.3]),
    "truediv": (lambda a, b: a / b, [0.7, -1.3]),
    "rtruediv": (lambda a, b: 2.0 / b, [0.7, -1.3]),
    "reuse": (lambda a, b: a * a + a * b, [0.7, -1.3]),  # a node used twice accumulates its grad
}


@pytest.mark.parametrize("name", OPS)
def test_op_gradient_matches_finite_differences(name):
    op, xs = OPS[name]
    got = autograd_grads(lambda v: op(*v) + 0.0, xs)
    want = numeric_grads(lambda x: op(*x), xs)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-6, abs=1e-8)


def test_forward_values_are_plain_arithmetic():
    a, b = Value(1.5), Value(-2.0)
    assert (a * b + a / b - b ** 2).data == 1.5 * -2.0 + 1.5 * (-2.0) ** -1 - 4.0
    assert softmax([Value(1000.0), Value(1000.0)])[0].data == 0.5  # max-subtract: no overflow


def floats(vs):
    return [v.data for v in vs]


def test_blocks_match_finite_differences():
    rng = random.Random(0)
    xs = [rng.gauss(0, 1) for _ in range(6)]
    w = [[rng.gauss(0, 1) for _ in range(6)] for _ in range(3)]
    coeffs = [0.3, -1.1, 0.7, 0.2, 0.5, -0.4]

    def block(x, lift):
        h = rmsnorm(x)
        y = linear(h, [[lift(c) for c in row] for row in w])
        p = softmax(y)
        return sum(c * pi for c, pi in zip(coeffs, p))

    def block_floats(x):  # the same function on plain floats, written independently
        ms = sum(v * v for v in x) / len(x)
        h = [v / math.sqrt(ms + 1e-5) for v in x]
        y = [sum(a * b for a, b in zip(row, h)) for row in w]
        e = [math.exp(v - max(y)) for v in y]
        return sum(c * ei / sum(e) for c, ei in zip(coeffs, e))

    vals = [Value(x) for x in xs]
    out = block(vals, lambda c: c)
    assert out.data == pytest.approx(block_floats(xs), rel=1e-12)
    out.backward()
    for g, want in zip([v.grad for v in vals], numeric_grads(block_floats, xs)):
        assert g == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_gpt_loss_gradient_matches_finite_differences():
    """d(loss)/d(weight) through the whole GPT, for a sample of weights in every tensor."""
    rng = random.Random(1)
    V, C, T, n_head = 5, 8, 4, 2
    shapes = {"wte": (V, C), "wpe": (T, C), "lm_head": (V, C), "layer0.attn_wq": (C, C),
              "layer0.attn_wk": (C, C), "layer0.attn_wv": (C, C), "layer0.attn_wo": (C, C),
              "layer0.mlp_fc1": (4 * C, C), "layer0.mlp_fc2": (C, 4 * C)}
    base = {k: [[rng.gauss(0, 0.3) for _ in range(c)] for _ in range(r)] for k, (r, c) in shapes.items()}
    tokens = [4, 0, 2, 1, 4]

    def loss_of(weights):
        sd = {k: [[w if isinstance(w, Value) else Value(w) for w in row] for row in m] for k, m in weights.items()}
        keys, values = [[]], [[]]
        losses = [-softmax(gpt(tokens[p], p, keys, values, sd, len(keys), n_head))[tokens[p + 1]].log() for p in range(T)]
        return (1 / T) * sum(losses), sd

    loss, sd = loss_of(base)
    loss.backward()
    for name, (r, c) in shapes.items():
        for _ in range(3):
            i, j = rng.randrange(r), rng.randrange(c)
            up = {k: [row[:] for row in m] for k, m in base.items()}
            down = {k: [row[:] for row in m] for k, m in base.items()}
            up[name][i][j] += H
            down[name][i][j] -= H
            want = (loss_of(up)[0].data - loss_of(down)[0].data) / (2 * H)
            assert sd[name][i][j].grad == pytest.approx(want, rel=1e-5, abs=1e-8), (name, i, j)
