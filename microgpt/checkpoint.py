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
import math
import os
import stat
import struct

from microgpt import durable
from microgpt.config import ModelConfig, TrainConfig, from_dict, memory_limit, to_dict, validate
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
    """Write DIR/checkpoint.safetensors atomically and durably (durable.py: a temp file of its own,
    fsync, rename, fsync of the directory). Returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "model": to_dict(run.model), "train": to_dict(run.train),
            "chars": run.tokenizer.chars, "step": run.step, "rng_state": rng_to_json(run.rng.getstate()),
            "data": run.data_info}
    path = path_in(out_dir)
    write_safetensors(path, {**run.params, **run.state}, {"microgpt": json.dumps(meta)})
    return path


MAX_BYTES = 8 * 2**30          # a checkpoint larger than this is refused (the largest preset's is ~0.4 GB)
MAX_HEADER_BYTES = 16 * 2**20  # the JSON header: names, shapes, offsets, config, characters, RNG state
STATE_PREFIXES = ("adam.m.", "adam.v.", "muon.momentum.", "ema.trained.")  # engines' state: <prefix><param>


def check_output_name(path: str, flag: str, writer: str, kind: str, ours, example: str) -> None:
    """Refuse an output file (export's --to, trace's --json) whose writing would lose something: one named as a
    run's checkpoint, or an existing file that ours(path) does not know as an earlier output of this `kind`
    (that one is replaced: writing again after more training)."""
    durable.refuse_broken_link(path, flag)
    if os.path.basename(path) == FILENAME:
        raise UsageError(f"{flag} {path}: {FILENAME} is the name of a run's checkpoint, which {writer} would replace; "
                         f"choose another name, e.g. {flag} {example}")
    if os.path.lexists(path) and not ours(path):
        raise UsageError(f"{flag} {path} exists and is not {kind}; choose another file (nothing was written)")


def load(out_dir: str, with_state: bool = True) -> dict:
    """The saved fields: model, train, chars, step, rng_state, data_info, params, state.

    A checkpoint is passive data, perhaps crafted by someone else: the header is read alone and every
    part of it is checked (sizes, offsets, names, dtypes, the configs, the characters, the step, the RNG
    state, and with_state the optimizer's tensors) before a tensor is read; then only the bytes of the
    tensors needed are read. with_state=False (sample, report, trace): the weights alone."""
    path = path_in(out_dir)
    if not out_dir:
        raise UsageError("--out is empty; give the run's directory")
    if os.path.isfile(out_dir):   # e.g. the checkpoint itself, or an export
        raise UsageError(f"--out {out_dir} is a file; give the run's directory (the folder holding {FILENAME}), "
                         f"e.g. --out {os.path.dirname(out_dir) or '.'}")
    durable.refuse_broken_link(out_dir)
    if not os.path.lexists(path):
        raise UsageError(f"no checkpoint at {path}; train one first with: microgpt train --out {out_dir}")
    with open_regular(path) as f:
        entries, metadata, data_start = read_header(f, path)
        fields, entries = _parse_metadata(metadata, entries, path)
        shapes = dict(param_shapes(fields["model"]))
        for name, shape in shapes.items():  # every weight is there with the right shape
            if name not in entries or entries[name][1] != shape:
                raise UsageError(f"checkpoint {path} is corrupt (tensor {name} missing or misshapen, "
                                 f"expected {shape}); retrain or restore it")
        state_names = [n for n in entries if n.startswith(STATE_PREFIXES)] if with_state else []
        for name in state_names:  # the optimizer's tensors: one per weight, of the weight's shape
            param = name.split(".", 2)[2]  # adam.m.<param>, muon.momentum.<param>, ...
            if param not in shapes or entries[name][1] != shapes[param]:
                raise UsageError(f"checkpoint {path} is corrupt (optimizer tensor {name} does not match a weight's "
                                 f"shape); restore it or start a new --out")
        needed, limit = sum(entries[n][3] - entries[n][2] for n in [*shapes, *state_names]), memory_limit()
        if limit is not None and needed > limit:
            raise UsageError(f"checkpoint {path} holds {needed:,} bytes of tensors, more than the {limit:,} bytes of "
                             f"memory here; load it on a machine with more memory")
        tensors = read_tensors(f, entries, [*shapes, *state_names], data_start)
    for name in shapes:
        if not tensors[name].is_finite():
            raise UsageError(f"checkpoint {path} is corrupt (weight {name} holds nan or inf); retrain or restore it")
    fields["params"] = {n: tensors[n] for n in shapes}
    fields["state"] = {n: tensors[n] for n in state_names}
    return fields


def _parse_metadata(metadata: dict, entries: dict, path: str) -> tuple[dict, dict]:
    """The checked fields of the "microgpt" metadata, and the entries under format 2's names."""
    try:
        meta = json.loads(metadata["microgpt"])
        model, tcfg = from_dict(ModelConfig, meta["model"]), from_dict(TrainConfig, meta["train"])
        chars, step, rng_state, data = meta["chars"], meta["step"], meta["rng_state"], meta["data"]
        version = meta.get("format_version", 1)
    except KeyError as e:
        raise UsageError(f"checkpoint {path} is corrupt (its metadata lacks {e}); retrain or restore it") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise UsageError(f"checkpoint {path} is corrupt (its metadata is malformed: {str(e)[:80]}); "
                         f"retrain or restore it") from None
    try:
        validate(model, tcfg)
    except UsageError as e:
        raise UsageError(f"checkpoint {path} holds an invalid config ({e}); retrain or restore it") from None
    problem = _metadata_problem(model, tcfg, chars, step, rng_state, data, version)
    if problem:
        raise UsageError(f"checkpoint {path} is corrupt ({problem}); retrain or restore it")
    if version == 1:
        entries = _upgrade_v1(entries, tcfg)
    return {"model": model, "train": tcfg, "chars": list(chars), "step": step,
            "rng_state": rng_from_json(rng_state), "data_info": dict(data)}, entries


def _metadata_problem(model, tcfg, chars, step, rng_state, data, version) -> str | None:
    """What is wrong with the metadata beyond the configs (validate checks those), or None."""
    if version not in (1, FORMAT_VERSION):
        return f"format_version {version!r}: this microgpt reads 1 and {FORMAT_VERSION}"
    if not (isinstance(chars, list) and all(isinstance(c, str) and len(c) == 1 for c in chars)
            and len(set(chars)) == len(chars)):
        return "its characters are not a list of distinct single characters"
    if len(chars) + 1 != model.vocab_size:
        return f"{len(chars)} characters + BOS but vocab_size {model.vocab_size}"
    if type(step) is not int or not 0 <= step <= tcfg.steps:
        return f"step {step!r} is not from 0 to steps {tcfg.steps}"
    if not (isinstance(rng_state, list) and len(rng_state) == 3 and rng_state[0] == 3
            and isinstance(rng_state[1], list) and len(rng_state[1]) == 625
            and all(type(x) is int and 0 <= x < 2**32 for x in rng_state[1]) and rng_state[1][-1] <= 624
            and (rng_state[2] is None or (type(rng_state[2]) is float and math.isfinite(rng_state[2])))):
        return "its RNG state is not random.Random's (version 3, 625 words, gauss_next)"
    # the Mersenne Twister's one dead state, which draws only 0: its 624 words zero (of the first, only the top bit
    # counts). Seeding never makes it, nor does drawing; a damaged file can.
    if not (rng_state[1][0] >> 31 or any(rng_state[1][1:624])):
        return "its RNG state is all zeros, which draws nothing but 0"
    if not (isinstance(data, dict) and isinstance(data.get("sha256"), str) and len(data["sha256"]) == 64
            and type(data.get("world", 1)) is int and data.get("world", 1) >= 1):
        return "its data record lacks the data's sha256 or a process count"
    return None


def open_regular(path: str):
    """path opened for reading if it is a regular file (a FIFO or device would block or never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise UsageError(f"cannot read checkpoint {path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"checkpoint {path} is not a regular file; restore the checkpoint file")
    return os.fdopen(fd, "rb")


def read_header(f, path: str) -> tuple[dict, dict, int]:
    """({name: (dtype, shape, begin, end)}, the metadata, where the data starts), every entry checked
    against the file's size before any tensor is read."""
    size = os.fstat(f.fileno()).st_size
    corrupt = f"checkpoint {path} is corrupt or not a safetensors file"
    if size > MAX_BYTES:
        raise UsageError(f"checkpoint {path} has {size:,} bytes, over the {MAX_BYTES:,}-byte ({MAX_BYTES // 2**30} GB) "
                         f"limit on a checkpoint; it is not one this tool wrote")
    if size < 8:
        raise UsageError(f"{corrupt} (only {size} bytes); retrain or restore it")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > min(size - 8, MAX_HEADER_BYTES):
        raise UsageError(f"{corrupt} (its header claims {n:,} bytes, but {size - 8:,} follow the length and a header "
                         f"may have at most {MAX_HEADER_BYTES:,}); retrain or restore it")
    try:
        header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
        if not isinstance(header, dict) or not all(isinstance(h, dict) for h in header.values()):
            raise ValueError("the header is not a JSON object of tensor entries")
        metadata = header.pop("__metadata__", {})
        if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
            raise ValueError("metadata is not a map of strings")
        entries = {name: _entry(h) for name, h in header.items()}
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError, RecursionError) as e:
        raise UsageError(f"{corrupt} ({str(e)[:80]}); retrain or restore it") from None
    data_len, end_before = size - 8 - n, 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin < end_before or end > data_len:
            raise UsageError(f"{corrupt} (tensor {name[:60]}'s bytes {begin}..{end} overlap another tensor or pass "
                             f"the end of the file's {data_len} data bytes); retrain or restore it")
        end_before = end
    return entries, metadata, 8 + n


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate name {next(k for k in keys if keys.count(k) > 1)[:60]!r}")
    return dict(pairs)


def _entry(h: dict) -> tuple[str, tuple, int, int]:
    """(dtype, shape, begin, end) of one header entry, or a ValueError."""
    dtype, shape, offsets = h["dtype"], h["shape"], h["data_offsets"]
    if not isinstance(dtype, str) or dtype not in TYPECODES:
        raise ValueError(f"dtype {str(dtype)[:20]!r} is not one of {', '.join(TYPECODES)}")
    if not (isinstance(shape, list) and len(shape) <= 8 and all(type(d) is int and d >= 0 for d in shape)):
        raise ValueError("a shape is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise ValueError("data_offsets are not two non-negative integers in order")
    count = 1
    for d in shape:
        count *= d
    if offsets[1] - offsets[0] != count * ITEMSIZE[dtype]:
        raise ValueError(f"a tensor's byte range does not fit its shape {shape} and dtype {dtype}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def read_tensors(f, entries: dict, names, data_start: int) -> dict[str, Tensor]:
    """The named tensors' bytes, each read from its own range (entries checked by read_header)."""
    tensors = {}
    for name in names:
        dtype, shape, begin, end = entries[name]
        f.seek(data_start + begin)
        tensors[name] = Tensor(shape, dtype, f.read(end - begin))
    return tensors


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
    """Write a safetensors file at path, replacing any file there atomically and durably."""
    header, offset = {"__metadata__": metadata}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(t.data)]}
        offset += len(t.data)
    head = json.dumps(header).encode("utf-8")
    head += b" " * (-len(head) % 8)  # pad so the data starts 8-byte aligned

    def write(f) -> None:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for t in tensors.values():
            f.write(t.data)
    durable.replace_file(path, write)


def read_safetensors(path: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Every tensor and the metadata of a safetensors file, checked as load() checks them."""
    with open_regular(path) as f:
        entries, metadata, data_start = read_header(f, path)
        return read_tensors(f, entries, list(entries), data_start), metadata


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
        if os.path.lexists(os.path.join(out_dir, name)):
            os.replace(os.path.join(out_dir, name), os.path.join(backup, name))
    return backup
