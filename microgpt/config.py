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


def from_dict(cls, d: dict):
    """Build a config dataclass from a dict, ignoring keys it does not know (older checkpoints)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def to_dict(cfg) -> dict:
    return asdict(cfg)


# name -> {config field: value}; explicit command-line flags override a preset's values.
PRESETS: dict[str, dict] = {}
