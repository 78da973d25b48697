"""The one checkpoint format, shared by every engine: a single safetensors file.

`DIR/checkpoint.safetensors` holds the weights under their model.py names, Adam's moments as
`adam.m.<name>` and `adam.v.<name>`, with `--ema` the weights being trained as `train.<name>` (the
model, under the plain names, is then their moving average), and in the header's `__metadata__`
one JSON string (key "microgpt") with the model and training config, the tokenizer, the step, the
RNG state and the data fingerprint. One file means one atomic rename: a checkpoint is never half old, half new.

Safetensors is 8 bytes of little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the raw little-endian bytes. It is simple enough to write with `struct`,
so the core needs no dependency, and loading it never runs code (unlike pickle). Files written here
open with the `safetensors` library too (`safetensors.numpy.load_file`).
"""

import json
import os
import struct
import sys
from array import array
from dataclasses import dataclass, field

from microgpt.config import ModelConfig, TrainConfig, from_dict, to_dict
from microgpt.errors import UsageError

FILENAME = "checkpoint.safetensors"
FORMAT_VERSION = 1
_TYPECODES = {"F64": "d", "F32": "f"}


@dataclass
class Tensor:
    """Engine-neutral tensor: a shape, a safetensors dtype and raw little-endian bytes."""
    shape: tuple
    dtype: str
    data: bytes

    @classmethod
    def from_floats(cls, shape, floats, dtype: str = "F64") -> "Tensor":
        buf = array(_TYPECODES[dtype], floats)
        if sys.byteorder != "little":
            buf.byteswap()
        return cls(tuple(shape), dtype, buf.tobytes())

    def to_floats(self) -> list[float]:
        buf = array(_TYPECODES[self.dtype])
        buf.frombytes(self.data)
        if sys.byteorder != "little":
            buf.byteswap()
        return buf.tolist()


@dataclass
class Checkpoint:
    model: ModelConfig
    train: TrainConfig
    chars: list[str]                 # the tokenizer
    step: int                        # training steps completed
    rng_state: list                  # random.Random.getstate(), as JSON lists
    data: dict                       # {"path", "sha256", "mode"}
    params: dict[str, Tensor]
    adam_m: dict[str, Tensor] = field(default_factory=dict)
    adam_v: dict[str, Tensor] = field(default_factory=dict)
    train_params: dict[str, Tensor] = field(default_factory=dict)  # with --ema: the weights Adam updates
    extra: dict = field(default_factory=dict)  # engine- or option-specific state, JSON


def path_in(out_dir: str) -> str:
    return os.path.join(out_dir, FILENAME)


def exists(out_dir: str) -> bool:
    return os.path.exists(path_in(out_dir))


def save(out_dir: str, ck: Checkpoint) -> str:
    """Write DIR/checkpoint.safetensors atomically (temp file, fsync, rename). Returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "model": to_dict(ck.model), "train": to_dict(ck.train),
            "chars": ck.chars, "step": ck.step, "rng_state": ck.rng_state, "data": ck.data, "extra": ck.extra}
    tensors = dict(ck.params)
    tensors.update({f"adam.m.{k}": t for k, t in ck.adam_m.items()})
    tensors.update({f"adam.v.{k}": t for k, t in ck.adam_v.items()})
    tensors.update({f"train.{k}": t for k, t in ck.train_params.items()})
    path = path_in(out_dir)
    tmp = path + ".tmp"
    write_safetensors(tmp, tensors, {"microgpt": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def load(out_dir: str) -> Checkpoint:
    path = path_in(out_dir)
    if not os.path.exists(path):
        raise UsageError(f"no checkpoint at {path}; train one first with: microgpt train --out {out_dir}")
    tensors, metadata = read_safetensors(path)
    try:
        meta = json.loads(metadata["microgpt"])
        params = {k: t for k, t in tensors.items() if not k.startswith(("adam.", "train."))}
        ck = Checkpoint(
            model=from_dict(ModelConfig, meta["model"]), train=from_dict(TrainConfig, meta["train"]),
            chars=list(meta["chars"]), step=int(meta["step"]), rng_state=meta["rng_state"],
            data=meta["data"], params=params,
            adam_m={k[7:]: t for k, t in tensors.items() if k.startswith("adam.m.")},
            adam_v={k[7:]: t for k, t in tensors.items() if k.startswith("adam.v.")},
            train_params={k[6:]: t for k, t in tensors.items() if k.startswith("train.")},
            extra=meta.get("extra", {}))
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"checkpoint {path} is corrupt (its metadata lacks {e}); retrain or restore it") from None
    from microgpt.model import param_shapes  # check every weight is there with the right shape
    for name, shape in param_shapes(ck.model):
        if name not in params or tuple(params[name].shape) != shape:
            raise UsageError(f"checkpoint {path} is corrupt (tensor {name} missing or misshapen); retrain or restore it")
    return ck


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
            size = 8 if h["dtype"] == "F64" else 4
            count = 1
            for d in h["shape"]:
                count *= d
            if h["dtype"] not in _TYPECODES or end - begin != count * size or end > len(data):
                raise ValueError(name)
            tensors[name] = Tensor(tuple(h["shape"]), h["dtype"], bytes(data[begin:end]))
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        raise UsageError(corrupt) from None
    return tensors, metadata
