"""`microgpt export --out DIR --to FILE.safetensors`: the model's weights alone, for other tools.

    microgpt export --out runs/names --to names.safetensors [--dtype float32|float64]

FILE holds the weights only (no optimizer state, so it is a third of the checkpoint's size or less)
under params.py's names, which are also the keys of our torch module's state_dict
(microgpt/engines/torch.py), with `format: pt` in its metadata as Hugging Face's tools expect.
`config.json` beside it gives what the weights alone do not: the model's shape, the tokenizer's
characters and BOS id, the data mode. Load both with `microgpt.load(FILE)`, or by hand:

    cfg = json.load(open("config.json"))
    model = GPT(ModelConfig(**{k: cfg[k] for k in MODEL_KEYS}))
    model.load_state_dict(safetensors.torch.load_file("names.safetensors"))
"""

import json
import os
from dataclasses import asdict

from microgpt import __version__, checkpoint
from microgpt.errors import UsageError
from microgpt.run import Run
from microgpt.tensor import Tensor

DTYPES = {"float32": "F32", "float64": "F64"}
CONFIG_NAME = "config.json"
MODEL_KEYS = ("vocab_size", "n_layer", "n_embd", "n_head", "block_size", "init_std")  # ModelConfig's fields


def config_path(weights_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(weights_path)), CONFIG_NAME)


def export(out_dir: str, to: str, dtype: str = "float32") -> tuple[str, str]:
    """Write the weights of the run in out_dir to `to`, and config.json beside it; returns both paths."""
    if not to.endswith(".safetensors"):
        raise UsageError(f"--to {to} should name a .safetensors file, e.g. --to model.safetensors")
    run = Run.load(out_dir)
    weights = {name: t if t.dtype == DTYPES[dtype] else Tensor.from_floats(t.shape, t.to_floats(), DTYPES[dtype])
               for name, t in run.params.items()}
    config = {"architecture": "microgpt", **{k: v for k, v in asdict(run.model).items() if k in MODEL_KEYS},
              "chars": run.tokenizer.chars, "bos_token_id": run.tokenizer.bos, "data_mode": run.train.data_mode,
              "temperature": run.train.temperature, "torch_dtype": dtype, "weights": os.path.basename(to),
              "trained_steps": run.step, "microgpt_version": __version__}
    os.makedirs(os.path.dirname(os.path.abspath(to)), exist_ok=True)
    checkpoint.write_safetensors(to + ".tmp", weights, {"format": "pt", "microgpt": json.dumps(config)})
    os.replace(to + ".tmp", to)
    cfg_path = config_path(to)
    with open(cfg_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(cfg_path + ".tmp", cfg_path)
    return to, cfg_path


# ---- the command line -----------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--out", default="out", help="the run's directory, holding its checkpoint (default out)")
    p.add_argument("--to", required=True, help="the weights file to write, e.g. model.safetensors; "
                   "config.json is written beside it")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="the weights' dtype (default float32)")


def run(args) -> int:
    weights, config = export(args.out, args.to, args.dtype)
    print(f"wrote {weights} ({os.path.getsize(weights):,} bytes, weights only, {args.dtype}) and {config}")
    return 0
