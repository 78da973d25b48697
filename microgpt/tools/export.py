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
import math
import os
from dataclasses import asdict

from microgpt import __version__, checkpoint, durable
from microgpt.errors import UsageError
from microgpt.run import Run
from microgpt.tensor import Tensor

DTYPES = {"float32": "F32", "float64": "F64"}
CONFIG_NAME = "config.json"
MODEL_KEYS = ("vocab_size", "n_layer", "n_embd", "n_head", "block_size", "init_std")  # ModelConfig's fields


def config_path(weights_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(weights_path)), CONFIG_NAME)


def export_weights_name(path: str) -> str | None:
    """The weights file that an export's config.json at `path` names, or None for a file that is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    ours = isinstance(config, dict) and config.get("architecture") == "microgpt"
    return config.get("weights") if ours and isinstance(config.get("weights"), str) else None


def is_export(path: str) -> bool:
    """Whether the file at `path` is weights that `microgpt export` wrote (metadata `format: pt` and our config)."""
    try:
        with checkpoint.open_regular(path) as f:
            _, metadata, _ = checkpoint.read_header(f, path)
        config = json.loads(metadata.get("microgpt", ""))
        return metadata.get("format") == "pt" and config.get("architecture") == "microgpt"
    except (UsageError, ValueError, AttributeError):
        return False


def check_target(to: str) -> None:
    """Refuse a --to whose writing would lose something: a run's checkpoint, a file that export did not
    write, or a config.json beside it that describes other weights. An earlier export of the same name is
    replaced (exporting again after more training)."""
    if not to.endswith(".safetensors"):
        raise UsageError(f"--to {to} should name a .safetensors file, e.g. --to model.safetensors")
    checkpoint.check_output_name(to, "--to", "an export", "an export", is_export, "model.safetensors")
    cfg_path = config_path(to)
    if os.path.lexists(cfg_path) and export_weights_name(cfg_path) != os.path.basename(to):
        other = export_weights_name(cfg_path)
        what = f"describes other weights ({other})" if other else "is not an export's config"
        raise UsageError(f"{cfg_path} {what}, and the export writes config.json beside --to; "
                         f"export into a folder of its own (nothing was written)")


def export(out_dir: str, to: str, dtype: str = "float32") -> tuple[str, str]:
    """Write the weights of the run in out_dir to `to`, and config.json beside it; returns both paths."""
    check_target(to)
    run = Run.load(out_dir)
    weights = {name: t if t.dtype == DTYPES[dtype] else Tensor.from_floats(t.shape, t.to_floats(), DTYPES[dtype])
               for name, t in run.params.items()}
    for name, t in weights.items():   # float64 weights past float32's range would become inf
        if not all(map(math.isfinite, t.to_floats())):
            raise UsageError(f"{name} holds values beyond {dtype}'s range, which the export would write as inf; "
                             f"export with --dtype float64 (nothing was written)")
    config = {"architecture": "microgpt", **{k: v for k, v in asdict(run.model).items() if k in MODEL_KEYS},
              "chars": run.tokenizer.chars, "bos_token_id": run.tokenizer.bos, "data_mode": run.train.data_mode,
              "temperature": run.train.temperature, "torch_dtype": dtype, "weights": os.path.basename(to),
              "trained_steps": run.step, "microgpt_version": __version__}
    cfg_path = config_path(to)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(to)), exist_ok=True)
        checkpoint.write_safetensors(to, weights, {"format": "pt", "microgpt": json.dumps(config)})   # atomically
        durable.replace_file(cfg_path, lambda f: f.write((json.dumps(config, indent=2) + "\n").encode("utf-8")))
    except OSError as e:
        raise durable.cannot_write("--to", to, e) from None
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
