"""The one checkpoint format, Run's serializer: a single safetensors file, `DIR/checkpoint.safetensors`.

It holds the model's weights under params.py's names, the engine's own state under the names the
engine gives it (`adam.m.<name>`, `adam.v.<name>`, `muon.momentum.<name>`, `ema.trained.<name>`: see
engines/base.py), and in the header's `__metadata__` one JSON string (key "microgpt") with the model
and training config, the tokenizer's characters, the step, the RNG state and the data's fingerprint.
One file means one atomic rename: a checkpoint is never half old, half new.

Safetensors is 8 bytes of little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the raw little-endian bytes. It is simple enough to write with `struct`,
so the core needs no dependency, and loading it never runs code (unlike pickle). Files written here
open with the `safetensors` library too (`safetensors.numpy.load_file`).

    checkpoint.save(out_dir, run)      # any object with Run's fields (run.py)
    fields = checkpoint.load(out_dir)  # a dict of those fields; Run.load(out_dir) builds the Run
"""

import json
import os
import struct

from microgpt.config import ModelConfig, TrainConfig, from_dict, to_dict
from microgpt.errors import UsageError
from microgpt.params import param_shapes
from microgpt.tensor import ITEMSIZE, TYPECODES, Tensor

FILENAME = "checkpoint.safetensors"
FORMAT_VERSION = 2  # 1: the engine's state under fixed names (see _upgrade_v1)


def path_in(out_dir: str) -> str:
    return os.path.join(out_dir, FILENAME)


def exists(out_dir: str) -> bool:
    return os.path.exists(path_in(out_dir))


def save(out_dir: str, run) -> str:
    """Write DIR/checkpoint.safetensors atomically (temp file, fsync, rename). Returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "model": to_dict(run.model), "train": to_dict(run.train),
            "chars": run.tokenizer.chars, "step": run.step, "rng_state": rng_to_json(run.rng.getstate()),
            "data": run.data_info}
    path = path_in(out_dir)
    tmp = path + ".tmp"
    write_safetensors(tmp, {**run.params, **run.state}, {"microgpt": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def load(out_dir: str) -> dict:
    """The saved fields: model, train, chars, step, rng_state, data_info, params, state."""
    path = path_in(out_dir)
    if not os.path.exists(path):
        raise UsageError(f"no checkpoint at {path}; train one first with: microgpt train --out {out_dir}")
    tensors, metadata = read_safetensors(path)
    try:
        meta = json.loads(metadata["microgpt"])
        model, tcfg = from_dict(ModelConfig, meta["model"]), from_dict(TrainConfig, meta["train"])
        if meta.get("format_version", 1) == 1:
            tensors = _upgrade_v1(tensors, tcfg)
        names = [name for name, _ in param_shapes(model)]
        fields = {"model": model, "train": tcfg, "chars": list(meta["chars"]), "step": int(meta["step"]),
                  "rng_state": rng_from_json(meta["rng_state"]), "data_info": dict(meta["data"]),
                  "params": {n: tensors[n] for n in names if n in tensors},
                  "state": {n: t for n, t in tensors.items() if n not in names}}
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"checkpoint {path} is corrupt (its metadata lacks {e}); retrain or restore it") from None
    for name, shape in param_shapes(model):  # every weight is there with the right shape
        if name not in fields["params"] or tuple(fields["params"][name].shape) != shape:
            raise UsageError(f"checkpoint {path} is corrupt (tensor {name} missing or misshapen); retrain or restore it")
    return fields


def _upgrade_v1(tensors: dict, tcfg: TrainConfig) -> dict:
    """Format 1 kept every engine's state under Adam's names: the torch engine's --ema weights as
    train.<name>, and a matrix trained by --optimizer muon (a transformer block's, layer*) had its
    momentum as adam.m.<name> beside zeros as adam.v.<name>. Rename them as format 2 has them."""
    out = {}
    for name, t in tensors.items():
        if name.startswith("train."):
            out["ema.trained." + name[len("train."):]] = t
        elif tcfg.optimizer == "muon" and name.startswith("adam.m.layer"):
            out["muon.momentum." + name[len("adam.m."):]] = t
        elif not (tcfg.optimizer == "muon" and name.startswith("adam.v.layer")):
            out[name] = t
    return out


def rng_to_json(state) -> list:
    """random.Random.getstate() as JSON lists."""
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def rng_from_json(state) -> tuple:
    version, internal, gauss_next = state
    return (version, tuple(internal), gauss_next)


def write_safetensors(path: str, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    header, offset = {"__metadata__": metadata}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(t.data)]}
        offset += len(t.data)
    head = json.dumps(header).encode("utf-8")
    head += b" " * (-len(head) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for t in tensors.values():
            f.write(t.data)
        f.flush()
        os.fsync(f.fileno())


def read_safetensors(path: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    corrupt = f"checkpoint {path} is corrupt or not a safetensors file; retrain or restore it"
    with open(path, "rb") as f:
        raw = f.read()
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n].decode("utf-8"))
        data = memoryview(raw)[8 + n:]
        metadata = header.pop("__metadata__", {})
        tensors = {}
        for name, h in header.items():
            begin, end = h["data_offsets"]
            count = 1
            for d in h["shape"]:
                count *= d
            if h["dtype"] not in TYPECODES or end - begin != count * ITEMSIZE[h["dtype"]] or end > len(data):
                raise ValueError(name)
            tensors[name] = Tensor(tuple(h["shape"]), h["dtype"], bytes(data[begin:end]))
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        raise UsageError(corrupt) from None
    return tensors, metadata


def move_aside(out_dir: str, also=("metrics.jsonl", "report.html")) -> str:
    """Move the run in out_dir (its checkpoint, and the files named in `also` when present) into a new
    folder out_dir/previous-<time>, so that a fresh run can start there with nothing lost. Returns it."""
    import time
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup, n = os.path.join(out_dir, f"previous-{stamp}"), 1
    while os.path.exists(backup):  # two in one second: previous-<time>-2, ...
        n += 1
        backup = os.path.join(out_dir, f"previous-{stamp}-{n}")
    os.makedirs(backup)
    for name in (FILENAME, *also):
        if os.path.exists(os.path.join(out_dir, name)):
            os.replace(os.path.join(out_dir, name), os.path.join(backup, name))
    return backup
