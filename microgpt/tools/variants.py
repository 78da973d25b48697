"""The known variants that ports confuse with the reference (SPEC.md section 15), simulated.

`microgpt conform` names a likely cause for a port's first divergence by computing what each known
variant would have produced at that stage and checking whether the port's numbers are those. Each
variant is the reference with one change, run by the project's own pieces (Run, params.py,
the scalar engine, atomic.py's gpt()); none is a stored fingerprint.

    sim = Simulation(config_spec, data_path, VARIANTS["beta2 0.95"])
    sim.losses(5)          # the first 5 losses that variant prints
"""

import contextlib
import math
import random
from dataclasses import dataclass, field, replace

from microgpt import atomic
from microgpt.atomic import Value, gpt
from microgpt.config import ModelConfig, TrainConfig, lr_at
from microgpt.data import DocumentData, Tokenizer, read_text, split_docs
from microgpt.params import num_params, param_shapes
from microgpt.run import Run
from microgpt.sample import draw, generate
from microgpt.tensor import Tensor


@dataclass
class Variant:
    cause: str                                   # how the report words it
    stages: tuple                                # the stages where it can show first
    model: dict = field(default_factory=dict)    # ModelConfig fields it changes
    train: dict = field(default_factory=dict)    # TrainConfig fields it changes
    shuffle: str = "reference"                   # "none", "scaled": int(random() * (i + 1)) instead of _randbelow
    tied_head: bool = False                      # lm_head is wte (not drawn, not a parameter)
    zero_outputs: bool = False                   # attn_wo and mlp_fc2 drawn as gauss(0, 0)
    squared_relu: bool = False
    no_max_subtract: bool = False
    lr_shift: int = 0                            # the lr of step + lr_shift
    sampler: str = "reference"                   # "skip-bos": a drawn BOS is left out and sampling goes on


VARIANTS = {
    "beta2 0.95": Variant("beta2 = 0.95 (the reference: 0.99)", ("adam", "losses"), train={"beta2": 0.95}),
    "betas 0.9/0.95": Variant("Adam betas 0.9 / 0.95 (the reference: 0.85 / 0.99)", ("adam", "losses"),
                              train={"beta1": 0.9, "beta2": 0.95}),
    "init std 0.02": Variant("init std 0.02 (the reference: gauss(0, 0.08))", ("init", "losses"),
                             model={"init_std": 0.02}),
    "zero outputs": Variant("zero-initialized attn_wo and mlp_fc2 (gauss(0, 0); the reference: 0.08)",
                            ("init", "losses"), zero_outputs=True),
    "tied head": Variant("a tied lm_head: wte reused as the output layer (the reference has its own lm_head)",
                         ("init",), tied_head=True),
    "block 8": Variant("block_size 8 (the reference: 16)", ("init",), model={"block_size": 8}),
    "no shuffle": Variant("no shuffle: the documents in file order (the reference shuffles them once)",
                          ("tokenizer", "losses"), shuffle="none"),
    "scaled shuffle": Variant("a different shuffle: int(random() * (i + 1)) instead of random.shuffle's "
                              "_randbelow(i + 1)", ("tokenizer", "losses"), shuffle="scaled"),
    "squared relu": Variant("squared ReLU, relu(x)**2 (the reference: relu(x))", ("forward", "losses"),
                            squared_relu=True),
    "no max-subtract": Variant("a softmax without the max-subtract: exp overflows on large logits",
                               ("forward",), no_max_subtract=True),
    "lr off by one": Variant("an off-by-one lr decay, lr * (1 - (step + 1) / N) (the reference: 1 - step / N)",
                             ("adam", "losses"), lr_shift=1),
    "cosine": Variant("a cosine lr decay (the reference: linear)", ("losses",), train={"lr_schedule": "cosine"}),
    "skip bos": Variant("a sampler that does not stop at BOS: it leaves BOS out and goes on to block_size tokens",
                        ("samples",), sampler="skip-bos"),
}


def for_stage(stage: str) -> list[Variant]:
    return [v for v in VARIANTS.values() if stage in v.stages]


@contextlib.contextmanager
def squared_relu(on: bool):
    """atomic.py's Value.relu squared, while the block runs (the graph gets relu, then ** 2)."""
    if not on:
        yield
        return
    relu = Value.relu
    Value.relu = lambda self: relu(self) ** 2
    try:
        yield
    finally:
        Value.relu = relu


def ieee_exp(x: float) -> float:
    """exp as C computes it: inf where Python's math.exp raises OverflowError."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def softmax_without_max(logits: list[float]) -> list[float]:
    """The softmax of a port without the max-subtract, in IEEE arithmetic: inf * inf ** -1 = inf * 0 = nan."""
    exps = [ieee_exp(z) for z in logits]
    inv = sum(exps) ** -1
    return [e * inv for e in exps]


def shuffle(docs: list, rng: random.Random, how: str) -> None:
    if how == "reference":
        rng.shuffle(docs)
    elif how == "scaled":  # Fisher-Yates with random()-scaled indices (Python < 3.11's shuffle(x, random))
        for i in reversed(range(1, len(docs))):
            j = int(rng.random() * (i + 1))
            docs[i], docs[j] = docs[j], docs[i]


class Simulation:
    """One config (model fields, seed, steps, data file) with one variant applied."""

    def __init__(self, model_fields: dict, seed: int, steps: int, data_path: str | None, variant: Variant):
        self.variant = variant
        model = ModelConfig(**{**model_fields, **variant.model})
        tcfg = TrainConfig(seed=seed, steps=steps, **variant.train)
        rng = random.Random(seed)
        docs = split_docs(read_text(data_path))
        shuffle(docs, rng, variant.shuffle)
        tokenizer = Tokenizer.from_docs(docs)
        model = replace(model, vocab_size=tokenizer.vocab_size)
        shapes = [(n, s) for n, s in param_shapes(model) if not (variant.tied_head and n == "lm_head")]
        params = {}
        for name, (r, c) in shapes:  # drawn in the reference order, from the one stream
            std = 0.0 if variant.zero_outputs and name.endswith(("attn_wo", "mlp_fc2")) else model.init_std
            params[name] = Tensor.from_floats((r, c), [rng.gauss(0, std) for _ in range(r * c)])
        self.num_params = num_params(model) - (model.vocab_size * model.n_embd if variant.tied_head else 0)
        self.run = Run(model, tcfg, tokenizer, params, rng=rng, docs=docs,
                       data=DocumentData(docs, tokenizer, model.block_size))

    def tokens(self, count: int) -> list[list[int]]:
        bos = self.run.tokenizer.bos
        return [[bos] + self.run.tokenizer.encode(d) + [bos] for d in self.run.docs[:count]]

    def engine(self):
        return self.run.engine("scalar")

    def losses(self, count: int) -> list[float]:
        """The first `count` training losses (and the engine, trained that far)."""
        if self.variant.tied_head:
            return []
        engine, out, tcfg = self.engine(), [], self.run.train
        with squared_relu(self.variant.squared_relu):
            for step in range(min(count, tcfg.steps)):
                lr = lr_at(min(step + self.variant.lr_shift, tcfg.steps), tcfg)
                out.append(engine.train_step(self.run.data.batch(step, 1), step, lr))
        self.trained = engine
        return out

    def adam(self) -> dict[str, list[float]]:
        """m.<name>, v.<name>, param.<name> after step 1, flat."""
        self.losses(1)
        state, weights = self.trained.state(), self.trained.weights()
        out = {f"{k}.{n}": state[f"adam.{k}.{n}"].to_floats() for k in ("m", "v") for n in weights}
        out.update({f"param.{n}": t.to_floats() for n, t in weights.items()})
        return out

    def logits(self, tokens: list[int], lm_head_factor: float = 1.0) -> list[list[float]]:
        """The initial model's logits at each position of `tokens` (atomic.py's gpt())."""
        cfg = self.run.model
        state_dict = {n: [[Value(x * (lm_head_factor if n == "lm_head" else 1.0)) for x in row] for row in t.rows()]
                      for n, t in self.run.params.items()}
        keys, values = [[] for _ in range(cfg.n_layer)], [[] for _ in range(cfg.n_layer)]
        with squared_relu(self.variant.squared_relu):
            rows = [gpt(tokens[p], p, keys, values, state_dict, cfg.n_layer, cfg.n_head) for p in range(len(tokens) - 1)]
        return [[x.data for x in row] for row in rows]

    def probs(self, logits: list[float]) -> list[float]:
        if self.variant.no_max_subtract:
            return softmax_without_max(logits)
        return [p.data for p in atomic.softmax([Value(z) for z in logits])]

    def samples(self, weights: dict[str, Tensor], count: int) -> list[str]:
        """Samples from trained `weights`, drawn from the stream where the init left it."""
        engine = self.run.engine("scalar")
        engine = type(engine)(self.run.model, self.run.train, weights)
        cfg, tok, t = self.run.model, self.run.tokenizer, self.run.train.temperature
        if self.variant.sampler != "skip-bos":
            return [generate(engine, tok, cfg.block_size, self.run.rng, t) for _ in range(count)]
        out = []
        for _ in range(count):
            cache, token, text = engine.new_cache(), tok.bos, []
            for pos in range(cfg.block_size):
                token = draw(engine.logits(cache, token, pos), t, self.run.rng)
                if token != tok.bos:
                    text.append(tok.chars[token])
            out.append("".join(text))
        return out
