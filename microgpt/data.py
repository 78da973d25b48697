"""Documents and the character tokenizer, shared by every engine.

Documents are the non-empty, stripped lines of a text file (the embedded SSA baby names by default),
shuffled once with the seeded RNG (DocumentData); or, with `--data-mode stream`, the whole file is
one character stream cut into random windows (StreamData). The tokenizer gives each distinct
character an id in sorted order and one more id, BOS, to frame every document: [BOS] + chars +
[BOS], cut to block_size + 1.
"""

import hashlib
import os
import random
from dataclasses import dataclass

from microgpt.errors import UsageError

EMBEDDED_NAMES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "names.txt")


def read_text(path: str | None) -> str:
    """The file's text, or a UsageError naming what is wrong with it."""
    path = path or EMBEDDED_NAMES
    if not os.path.exists(path):
        raise UsageError(f"data file not found: {path} (check the path given to --data)")
    if os.path.isdir(path):
        raise UsageError(f"--data {path} is a directory; give a text file with one document per line")
    with open(path, "rb") as f:
        raw = f.read()
    if b"\x00" in raw:
        raise UsageError(f"{path} looks binary (it has NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); re-save it as UTF-8") from None
    if not text.strip():
        raise UsageError(f"{path} is empty or only whitespace; give a file with at least one non-empty line")
    return text


def split_docs(text: str) -> list[str]:
    """One document per non-empty line, stripped (as atomic.py reads input.txt)."""
    return [line.strip() for line in text.strip().split("\n") if line.strip()]


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Tokenizer:
    chars: list[str]  # id i <-> chars[i]; BOS = len(chars)

    @classmethod
    def from_docs(cls, docs: list[str]) -> "Tokenizer":
        return cls(sorted(set("".join(docs))))

    @property
    def bos(self) -> int:
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, s: str) -> list[int]:
        index = {ch: i for i, ch in enumerate(self.chars)}
        missing = sorted({ch for ch in s if ch not in index})
        if missing:
            raise UsageError(f"characters not in the model's vocabulary: {''.join(missing)!r}; "
                             f"use only these: {''.join(self.chars)!r}")
        return [index[ch] for ch in s]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids if i != self.bos)


class DocumentData:
    """Training and held-out sequences from shuffled documents.

    Training step k with batch size B (and `world` processes, this one being `rank`) takes the
    documents (k*B*world + rank*B + j) % len(train) for j < B: with B = 1 and one process, document
    k % len(train), as the reference does. Held-out documents are the last `val_docs` of the
    shuffled list, so the training order and the random stream do not depend on how many there are.
    """

    def __init__(self, docs: list[str], tokenizer: Tokenizer, block_size: int, val_docs: int = 0):
        if val_docs < 0 or val_docs >= len(docs):
            raise UsageError(f"--val-docs {val_docs} leaves no training documents out of {len(docs)}; "
                             f"use a number from 0 to {len(docs) - 1}")
        self.tokenizer = tokenizer
        self.block_size = block_size
        cut = len(docs) - val_docs
        self.train = [self.encode(d) for d in docs[:cut]]
        self.val = [self.encode(d) for d in docs[cut:]]
        self.num_cut = sum(len(d) + 2 > block_size + 1 for d in docs)  # documents that lose tokens

    def encode(self, doc: str) -> list[int]:
        bos = self.tokenizer.bos
        return ([bos] + self.tokenizer.encode(doc) + [bos])[: self.block_size + 1]

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
        start = (step * world + rank) * batch_size
        return [self.train[(start + j) % len(self.train)] for j in range(batch_size)]

    def val_batches(self, batch_size: int):
        for i in range(0, len(self.val), batch_size):
            yield self.val[i:i + batch_size]


class StreamData:
    """The whole file as one character stream (nanoGPT's shakespeare_char regime).

    The first 90% of the characters train, the last 10% are held out. A training sequence is a
    window of block_size + 1 consecutive characters at a random offset. Step k draws its
    batch_size * world offsets from a generator seeded with (seed, k) alone, and process `rank` takes
    its own batch_size of them: no random state to save, so resuming is exact and N processes see
    the same windows as one process with N times the batch. The held-out loss is measured on the
    consecutive, non-overlapping windows of the last 10%, every held-out character once.
    """

    TRAIN_FRACTION = 0.9

    def __init__(self, text: str, tokenizer: Tokenizer, block_size: int, seed: int):
        ids = tokenizer.encode(text)
        cut = int(len(ids) * self.TRAIN_FRACTION)
        self.train, held_out = ids[:cut], ids[cut:]
        if len(self.train) <= block_size + 1 or len(held_out) <= block_size + 1:
            raise UsageError(f"the text has {len(ids)} characters, too few for windows of --block-size "
                             f"{block_size} in both its first 90% and its last 10%; lower --block-size")
        self.block_size, self.seed, self.num_chars = block_size, seed, len(ids)
        self.val = [held_out[i:i + block_size + 1] for i in range(0, len(held_out) - block_size, block_size)]
        self.num_cut = 0  # no documents, nothing cut

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
        rng = random.Random(f"stream {self.seed} {step}")  # a str seed is hashed the same in every process
        starts = [rng.randrange(len(self.train) - self.block_size) for _ in range(batch_size * world)]
        return [self.train[i:i + self.block_size + 1] for i in starts[rank * batch_size:(rank + 1) * batch_size]]

    def val_batches(self, batch_size: int):
        for i in range(0, len(self.val), batch_size):
            yield self.val[i:i + batch_size]
