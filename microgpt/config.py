"""Model and training configuration: the defaults are the reference algorithm (atomic.py).

Every engine, the checkpoint and the command line read these dataclasses; nothing else defines a
hyperparameter's default. Presets (named bundles of overrides) live in PRESETS.
"""

from dataclasses import asdict, dataclass, fields


@dataclass
class ModelConfig:
    vocab_size: int = 27
    n_layer: int = 1
    n_embd: int = 16
    n_head: int = 4
    block_size: int = 16  # longest context; documents longer than this are cut

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class TrainConfig:
    seed: int = 42
    steps: int = 1000
    lr: float = 0.01
    beta1: float = 0.85
    beta2: float = 0.99
    eps: float = 1e-8
    batch_size: int = 1        # documents per step
    val_docs: int = 0          # held-out documents, taken from the end of the shuffled list
    eval_every: int = 100      # steps between validation evaluations (and one at the end)
    save_every: int = 500      # steps between checkpoints (and one at the end)
    samples: int = 20
    temperature: float = 0.5
    engine: str = "scalar"
    dtype: str = "float64"
    # Beyond the reference, all off by default (engines.OPTIONS says which engines have each).
    data_mode: str = "lines"     # "lines": one document per line; "stream": the file as one character stream
    lr_schedule: str = "linear"  # "linear" (the reference) or "cosine", from lr down to min_lr
    warmup_steps: int = 0        # steps of linear warmup before the decay
    min_lr: float = 0.0          # the lr at the end of the decay
    weight_decay: float = 0.0    # AdamW's decoupled weight decay
    dropout: float = 0.0
    attn_dropout: float | None = None  # dropout on attention probabilities; None: --dropout's (nanoGPT's)
    grad_clip: float = 0.0       # clip the gradient's global norm to this; 0: no clipping
    grad_accum: int = 1          # micro-batches of batch_size per step (and per process)
    optimizer: str = "adam"      # "adam" (AdamW); "muon": Muon for the blocks' matrices, AdamW for the rest
    ema: float = 0.0             # > 0: the model is this exponential moving average of the trained weights
    device: str = "auto"         # auto: cuda, else mps, else cpu
    compile: bool = False        # torch.compile the model


def from_dict(cls, d: dict):
    """Build a config dataclass from a dict, ignoring keys it does not know (older checkpoints)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def to_dict(cfg) -> dict:
    return asdict(cfg)


# name -> {config field: value}; explicit command-line flags override a preset's values. The figures
# each reaches on the machines we have, beside its anchor, are in README.md ("Presets").
_NANOGPT_CHAR = dict(  # nanoGPT's shakespeare_char training recipe, on the stream of the file
    engine="torch", data_mode="stream", lr=1e-3, min_lr=1e-4, lr_schedule="cosine", warmup_steps=100,
    beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0, eval_every=250, samples=3)
PRESETS: dict[str, dict] = {
    # the names model: the best held-out loss we found for at most 5 minutes of 2 CPU cores (makemore's
    # 200K-parameter transformer: ~1.92; the target: <= 1.90). Muon trains the blocks' matrices; past
    # about 12 epochs of the names the held-out loss rises again, hence the few steps and light dropout
    "names": dict(engine="torch", dtype="float32", n_layer=4, n_embd=96, n_head=4, block_size=16,
                  batch_size=64, steps=6000, lr=2.5e-3, min_lr=2.5e-4, lr_schedule="cosine", warmup_steps=200,
                  optimizer="muon", weight_decay=0.1, dropout=0.05, attn_dropout=0.0, ema=0.999,
                  val_docs=1000, eval_every=2000),
    # nanoGPT's CPU settings for tiny shakespeare (use with --data shakespeare.txt): val ~1.88
    "shakespeare-cpu": dict(_NANOGPT_CHAR, dtype="float32", n_layer=4, n_head=4, n_embd=128, block_size=64,
                            batch_size=12, steps=2000, dropout=0.0),
    # nanoGPT's baby GPT for one GPU (use with --data shakespeare.txt): val ~1.47 in ~3 minutes on an A100
    "shakespeare": dict(_NANOGPT_CHAR, dtype="bfloat16", compile=True, n_layer=6, n_head=6, n_embd=384,
                        block_size=256, batch_size=64, steps=5000, dropout=0.2),
}
