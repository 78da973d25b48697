"""
microgpt, atomic: the whole algorithm of a GPT in one file of plain Python.

It trains a tiny GPT (GPT-2 shape with RMSNorm, no biases, ReLU) character by character on a list
of documents, then samples new ones. Nothing is imported beyond the standard library: every number
is a scalar `Value` that remembers how it was made, so the chain rule can walk back through it.
Everything else in the microgpt package is efficiency and tooling around this file.

Run it:  python microgpt/atomic.py
It reads `input.txt` from the working directory when that file exists (one document per line),
else the baby names embedded beside it in microgpt/data/names.txt.

The sections tell the story in order: dataset, tokenizer, autograd, parameters, model, optimizer,
training, inference. The steps that do work run only when the file is executed (the blocks under
`if __name__ == '__main__':`), so that the package can import Value and gpt() from it.
"""

import os      # os.path, to find the data
import math    # math.log, math.exp
import random  # random.seed, random.shuffle, random.gauss, random.choices


# ---------------------------------------------------------------------------------------------
# 1. Dataset: one document per non-empty line, shuffled. One seeded stream drives the shuffle, the
#    initialization and the sampling.
if __name__ == '__main__':
    random.seed(42)
    path = 'input.txt'
    if not os.path.exists(path):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'names.txt')
    with open(path, encoding='utf-8') as f:
        docs = [line.strip() for line in f.read().strip().split('\n') if line.strip()]
    random.shuffle(docs)
    print(f"num docs: {len(docs)}")


# ---------------------------------------------------------------------------------------------
# 2. Tokenizer: each distinct character gets an id; one extra id, BOS, marks a boundary.
if __name__ == '__main__':
    uchars = sorted(set(''.join(docs)))
    BOS = len(uchars)
    vocab_size = len(uchars) + 1
    print(f"vocab size: {vocab_size}")


# ---------------------------------------------------------------------------------------------
# 3. Autograd. A Value holds one number (`data`) and, after backward(), the derivative of the
#    loss with respect to it (`grad`). Each operation records its inputs (`_children`) and the
#    local derivative of its output with respect to each input (`_local_grads`).
class Value:
    __slots__ = ('data', 'grad', '_children', '_local_grads')  # less memory per node

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0
        self._children = children
        self._local_grads = local_grads

    def __add__(self, other):  # d(a+b)/da = 1, d(a+b)/db = 1
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other):  # d(ab)/da = b, d(ab)/db = a
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, k):  # k is a plain number: d(a^k)/da = k a^(k-1)
        return Value(self.data ** k, (self,), (k * self.data ** (k - 1),))

    def log(self):  # d(log a)/da = 1/a
        return Value(math.log(self.data), (self,), (1 / self.data,))

    def exp(self):  # d(e^a)/da = e^a
        return Value(math.exp(self.data), (self,), (math.exp(self.data),))

    def relu(self):  # passes the gradient where the input was positive, blocks it elsewhere
        return Value(max(0, self.data), (self,), (float(self.data > 0),))

    # Everything else is made of the operations above.
    def __neg__(self): return self * -1
    def __radd__(self, other): return self + other
    def __sub__(self, other): return self + (-other)
    def __rsub__(self, other): return other + (-self)
    def __rmul__(self, other): return self * other
    def __truediv__(self, other): return self * other ** -1
    def __rtruediv__(self, other): return other * self ** -1

    def backward(self):
        # Order the graph so that every node comes after all the nodes it was computed from,
        # then walk it backwards: by the time we reach a node, its grad is complete.
        topo, visited = [], set()
        def build_topo(v):
            if v not in visited:
                visited.add(v)
                for child in v._children:
                    build_topo(child)
                topo.append(v)
        build_topo(self)
        self.grad = 1
        for v in reversed(topo):
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * v.grad  # the chain rule, one edge at a time


# ---------------------------------------------------------------------------------------------
# 4. Parameters, drawn from N(0, 0.08^2) in a fixed order (every engine uses this order).
#    Vectors are lists of Values, matrices are lists of rows.
if __name__ == '__main__':
    n_layer, n_embd, block_size, n_head = 1, 16, 16, 4
    matrix = lambda nout, nin: [[Value(random.gauss(0, 0.08)) for _ in range(nin)] for _ in range(nout)]
    state_dict = {'wte': matrix(vocab_size, n_embd), 'wpe': matrix(block_size, n_embd),
                  'lm_head': matrix(vocab_size, n_embd)}
    for i in range(n_layer):
        state_dict[f'layer{i}.attn_wq'] = matrix(n_embd, n_embd)
        state_dict[f'layer{i}.attn_wk'] = matrix(n_embd, n_embd)
        state_dict[f'layer{i}.attn_wv'] = matrix(n_embd, n_embd)
        state_dict[f'layer{i}.attn_wo'] = matrix(n_embd, n_embd)
        state_dict[f'layer{i}.mlp_fc1'] = matrix(4 * n_embd, n_embd)
        state_dict[f'layer{i}.mlp_fc2'] = matrix(n_embd, 4 * n_embd)
    params = [p for mat in state_dict.values() for row in mat for p in row]
    print(f"num params: {len(params)}")


# ---------------------------------------------------------------------------------------------
# 5. The model: GPT-2 with RMSNorm instead of LayerNorm, no biases, ReLU instead of GeLU.
def linear(x, w):  # y = W x, with W of shape (nout, nin)
    return [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]

def softmax(logits):
    # Subtracting the max changes nothing mathematically but keeps exp() from overflowing.
    max_val = max(val.data for val in logits)
    exps = [(val - max_val).exp() for val in logits]
    total = sum(exps)
    return [e / total for e in exps]

def rmsnorm(x):  # x / sqrt(mean(x^2) + eps): unit scale, no learned gain
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]

def gpt(token_id, pos_id, keys, values, state_dict, n_layer, n_head):
    """Logits for the token after `token_id` at position `pos_id`. keys/values: the KV cache,
    one list per layer, holding the k and v of every earlier position; this call appends to it."""
    n_embd = len(state_dict['wte'][0])
    head_dim = n_embd // n_head
    tok_emb = state_dict['wte'][token_id]
    pos_emb = state_dict['wpe'][pos_id]
    x = [t + p for t, p in zip(tok_emb, pos_emb)]
    x = rmsnorm(x)  # not redundant: the residual stream below carries this normalized x

    for li in range(n_layer):
        # Attention: each head mixes the values of all positions so far, weighted by q.k.
        x_residual = x
        x = rmsnorm(x)
        q = linear(x, state_dict[f'layer{li}.attn_wq'])
        k = linear(x, state_dict[f'layer{li}.attn_wk'])
        v = linear(x, state_dict[f'layer{li}.attn_wv'])
        keys[li].append(k)
        values[li].append(v)
        x_attn = []
        for h in range(n_head):
            hs = h * head_dim
            q_h = q[hs:hs + head_dim]
            k_h = [ki[hs:hs + head_dim] for ki in keys[li]]
            v_h = [vi[hs:hs + head_dim] for vi in values[li]]
            attn_logits = [sum(q_h[j] * k_h[t][j] for j in range(head_dim)) / head_dim ** 0.5
                           for t in range(len(k_h))]
            attn_weights = softmax(attn_logits)
            head_out = [sum(attn_weights[t] * v_h[t][j] for t in range(len(v_h)))
                        for j in range(head_dim)]
            x_attn.extend(head_out)
        x = linear(x_attn, state_dict[f'layer{li}.attn_wo'])
        x = [a + b for a, b in zip(x, x_residual)]
        # MLP: widen 4x, ReLU, narrow back.
        x_residual = x
        x = rmsnorm(x)
        x = linear(x, state_dict[f'layer{li}.mlp_fc1'])
        x = [xi.relu() for xi in x]
        x = linear(x, state_dict[f'layer{li}.mlp_fc2'])
        x = [a + b for a, b in zip(x, x_residual)]

    return linear(x, state_dict['lm_head'])


# ---------------------------------------------------------------------------------------------
# 6. Optimizer: Adam keeps a running mean of each gradient (m) and of its square (v).
if __name__ == '__main__':
    learning_rate, beta1, beta2, eps_adam = 0.01, 0.85, 0.99, 1e-8
    m = [0.0] * len(params)
    v = [0.0] * len(params)


# ---------------------------------------------------------------------------------------------
# 7. Training.
if __name__ == '__main__':
    num_steps = 1000
    for step in range(num_steps):
        # One document per step, framed by BOS on both sides, cut to the context window.
        doc = docs[step % len(docs)]
        tokens = [BOS] + [uchars.index(ch) for ch in doc] + [BOS]
        n = min(block_size, len(tokens) - 1)

        # Forward: predict each next token, building the graph all the way to the loss.
        keys, values = [[] for _ in range(n_layer)], [[] for _ in range(n_layer)]
        losses = []
        for pos_id in range(n):
            token_id, target_id = tokens[pos_id], tokens[pos_id + 1]
            logits = gpt(token_id, pos_id, keys, values, state_dict, n_layer, n_head)
            probs = softmax(logits)
            losses.append(-probs[target_id].log())
        loss = (1 / n) * sum(losses)  # mean negative log-likelihood over the document

        # Backward: every parameter's grad becomes d(loss)/d(parameter).
        loss.backward()

        # Adam with bias correction, the learning rate decaying linearly to zero.
        lr_t = learning_rate * (1 - step / num_steps)
        for i, p in enumerate(params):
            m[i] = beta1 * m[i] + (1 - beta1) * p.grad
            v[i] = beta2 * v[i] + (1 - beta2) * p.grad ** 2
            m_hat = m[i] / (1 - beta1 ** (step + 1))
            v_hat = v[i] / (1 - beta2 ** (step + 1))
            p.data -= lr_t * m_hat / (v_hat ** 0.5 + eps_adam)
            p.grad = 0

        print(f"step {step + 1:4d} / {num_steps:4d} | loss {loss.data:.4f}")
        # Let go of this step's graph before the next one is built: with two graphs alive at once,
        # Python's garbage collector spends about as long scanning them as the step spends computing.
        del loss, losses, logits, probs


# ---------------------------------------------------------------------------------------------
# 8. Inference: start at BOS, draw each next character from softmax(logits / temperature), stop at
#    the next BOS. The KV cache means each position is computed once.
if __name__ == '__main__':
    temperature = 0.5
    print("--- samples ---")
    for sample_idx in range(20):
        keys, values = [[] for _ in range(n_layer)], [[] for _ in range(n_layer)]
        token_id, sample = BOS, []
        for pos_id in range(block_size):
            logits = gpt(token_id, pos_id, keys, values, state_dict, n_layer, n_head)
            probs = softmax([l / temperature for l in logits])
            token_id = random.choices(range(vocab_size), weights=[p.data for p in probs])[0]
            if token_id == BOS:
                break
            sample.append(uchars[token_id])
        print(f"sample {sample_idx + 1:2d}: {''.join(sample)}")
