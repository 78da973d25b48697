"""The Python API: load a trained model and generate text with it, as `microgpt sample` does.

    from microgpt import load
    model = load("runs/names")                   # a run's directory (its checkpoint) ...
    model = load("names.safetensors")            # ... or an export, with config.json beside it
    model.generate(num=5, temperature=0.8)       # ['emma', ...]: a list of samples
    model.generate(prompt="em", seed=1, top_k=5, max_new_tokens=10)
    model.module                                 # the torch nn.Module (needs torch): state_dict() keys
                                                 # are the checkpoint's names

Sampling runs on the run's own engine when it is installed, else NumPy, else the pure engine; with
the same seed it prints what `microgpt sample --seed S` prints.
"""

import json
import os
import random
from dataclasses import replace

from microgpt import checkpoint, engines
from microgpt.config import ModelConfig, TrainConfig, validate_sampling
from microgpt.data import Tokenizer
from microgpt.errors import UsageError
from microgpt.run import Run
from microgpt.sample import generate


class Model:
    """A trained model ready to sample: `generate`, and `module` for PyTorch users."""

    def __init__(self, run: Run):
        self.run = run
        self.stream = run.train.data_mode == "stream"
        self.engine = run.engine(engines.best_available(run.train.engine), device="auto")

    def generate(self, prompt: str = "", num: int = 1, max_new_tokens: int | None = None,
                 temperature: float | None = None, top_k: int | None = None, seed: int | None = None) -> list[str]:
        """`num` samples, each the prompt and its continuation (default temperature: the run's; seed
        None: go on with the run's own random stream, as `microgpt sample` without --seed)."""
        run = self.run
        temperature = run.train.temperature if temperature is None else temperature
        validate_sampling(temperature, top_k, "" if self.stream else prompt, run.model.block_size)
        rng = run.rng if seed is None else random.Random(seed)
        return [generate(self.engine, run.tokenizer, run.model.block_size, rng, temperature, top_k, prompt,
                         max_new_tokens, self.stream) for _ in range(num)]

    @property
    def module(self):
        """The model as our torch nn.Module (microgpt/engines/torch.py's GPT), in eval mode, float32."""
        if self.engine.name == "torch":
            return self.engine.eval_model
        from microgpt.engines.torch import GPT, to_torch  # needs torch: engines.get says how to install it
        import torch
        module = GPT(self.run.model)
        module.load_state_dict({n: to_torch(t, torch.float32, "cpu") for n, t in self.run.params.items()})
        return module.eval()


def load(path: str) -> Model:
    """A run's directory (its checkpoint.safetensors), or a file written by `microgpt export`."""
    if os.path.isdir(path):
        return Model(Run.load(path))
    if not os.path.isfile(path):
        raise UsageError(f"{path} is neither a run's directory nor an exported .safetensors file")
    from microgpt.tools.export import MODEL_KEYS, config_path
    cfg_path = config_path(path)
    if not os.path.exists(cfg_path):
        raise UsageError(f"{cfg_path} is missing: an export needs the config.json written beside it; "
                         f"export again with microgpt export --out DIR --to {path}")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    tensors, _ = checkpoint.read_safetensors(path)
    model = ModelConfig(**{k: cfg[k] for k in MODEL_KEYS})
    dtype = "float32" if cfg["torch_dtype"] == "float32" else "float64"
    tcfg = replace(TrainConfig(), data_mode=cfg["data_mode"], temperature=cfg["temperature"], dtype=dtype,
                   engine="torch" if engines.is_available("torch") else "numpy" if dtype == "float32" else "pure")
    return Model(Run(model, tcfg, Tokenizer(cfg["chars"]), tensors, rng=random.Random(tcfg.seed),
                     source=f"the export {path}"))
