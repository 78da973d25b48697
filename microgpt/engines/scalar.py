"""The scalar engine: atomic.py's own Value autograd and gpt(), driven by the package's loops.

It imports Value, gpt and softmax from microgpt/atomic.py rather than restating them, so the package
and the single file cannot drift apart: with batch size 1 this engine performs the very same float
operations, in the same order, as `python microgpt/atomic.py`.
"""

from microgpt.atomic import Value, gpt, softmax
from microgpt.engines import base
from microgpt.params import param_shapes
from microgpt.tensor import Tensor


class Engine(base.Engine):
    name = "scalar"

    def __init__(self, model_cfg, train_cfg, params: dict[str, Tensor]):
        self.cfg, self.tcfg = model_cfg, train_cfg
        self.shapes = param_shapes(model_cfg)
        self.state_dict = {}  # name -> rows of Values, as in atomic.py
        for name, (rows, cols) in self.shapes:
            flat = params[name].to_floats()
            self.state_dict[name] = [[Value(x) for x in flat[r * cols:(r + 1) * cols]] for r in range(rows)]
        self.params = [p for mat in self.state_dict.values() for row in mat for p in row]
        self.m = [0.0] * len(self.params)
        self.v = [0.0] * len(self.params)

    # ---- forward and backward ----------------------------------------------------------------
    def _loss(self, seqs) -> Value:
        """Mean of -log p(next token) over every position of every sequence, as one Value graph."""
        losses = []
        for tokens in seqs:
            keys, values = self.new_cache()
            for pos_id in range(len(tokens) - 1):
                logits = gpt(tokens[pos_id], pos_id, keys, values, self.state_dict, self.cfg.n_layer, self.cfg.n_head)
                probs = softmax(logits)
                losses.append(-probs[tokens[pos_id + 1]].log())
        return (1 / len(losses)) * sum(losses)

    def train_step(self, seqs, step: int, lr: float) -> float:
        loss = self._loss(seqs)
        loss.backward()
        t = self.tcfg
        for i, p in enumerate(self.params):  # Adam, exactly as in atomic.py
            self.m[i] = t.beta1 * self.m[i] + (1 - t.beta1) * p.grad
            self.v[i] = t.beta2 * self.v[i] + (1 - t.beta2) * p.grad ** 2
            m_hat = self.m[i] / (1 - t.beta1 ** (step + 1))
            v_hat = self.v[i] / (1 - t.beta2 ** (step + 1))
            p.data -= lr * m_hat / (v_hat ** 0.5 + t.eps)
            p.grad = 0
        return loss.data

    def eval_loss(self, seqs) -> float:
        return self._loss(seqs).data

    def loss_and_grads(self, seqs):
        loss = self._loss(seqs)
        loss.backward()
        grads = self._tensors(lambda p: float(p.grad))
        for p in self.params:
            p.grad = 0
        return loss.data, grads

    # ---- state -------------------------------------------------------------------------------
    def _tensors(self, value_of, flat=None) -> dict[str, Tensor]:
        out, i = {}, 0
        for name, (rows, cols) in self.shapes:
            n = rows * cols
            chunk = self.params[i:i + n] if flat is None else flat[i:i + n]
            out[name] = Tensor.from_floats((rows, cols), [value_of(x) for x in chunk])
            i += n
        return out

    def weights(self) -> dict[str, Tensor]:
        return self._tensors(lambda p: p.data)

    def state(self) -> dict[str, Tensor]:
        same = lambda x: x
        return base.adam_state(self._tensors(same, self.m), self._tensors(same, self.v))

    def load_state(self, state: dict[str, Tensor]) -> None:
        names = [name for name, _ in self.shapes]
        m, v = base.take(state, "adam.m.", names), base.take(state, "adam.v.", names)
        self.m = [x for name in names for x in m[name].to_floats()]
        self.v = [x for name in names for x in v[name].to_floats()]

    # ---- sampling ----------------------------------------------------------------------------
    def new_cache(self):
        return [[] for _ in range(self.cfg.n_layer)], [[] for _ in range(self.cfg.n_layer)]

    def logits(self, cache, token_id: int, pos_id: int) -> list[float]:
        keys, values = cache
        return [l.data for l in gpt(token_id, pos_id, keys, values, self.state_dict, self.cfg.n_layer, self.cfg.n_head)]
