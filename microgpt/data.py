"""Documents and the character tokenizer, shared by every engine.

Documents are the non-empty, stripped lines of a text file (the embedded SSA baby names by default),
shuffled once with the seeded RNG (DocumentData); or, with `--data-mode stream`, the whole file is
one character stream cut into random windows (StreamData). The tokenizer gives each distinct
character an id in sorted order and one more id, BOS, to frame every document: [BOS] + chars +
[BOS], cut to block_size + 1. `read_data_file` is the one way a data file is read: a regular file
only, at most --max-data-mb, its UTF-8 byte-order mark dropped, its line ends read as Python's text
mode reads them, and its SHA-256 taken from its bytes (the checkpoint keeps that and the file's name).
"""

import hashlib
import itertools
import math
import os
import random
import stat
from array import array
from dataclasses import dataclass

from microgpt.errors import UsageError

EMBEDDED_NAMES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "names.txt")


MAX_DATA_MB = 100  # --max-data-mb's default: a bigger file is refused unless the user raises it


def read_text(path: str | None, max_mb: float = MAX_DATA_MB) -> str:
    """The file's text (None: the embedded names), or a UsageError naming what is wrong with it."""
    return read_data_file(path, max_mb)[0]


def read_data_file(path: str | None, max_mb: float = MAX_DATA_MB) -> tuple[str, str]:
    """(the file's text, the SHA-256 of its bytes); None: the embedded names.

    Only a regular file is read (a FIFO, a device or a directory is refused, and the file is opened
    non-blocking, so nothing waits on a pipe), and only up to max_mb megabytes. A UTF-8 byte-order mark
    is dropped and every line end becomes "\\n", \\r\\n and a lone \\r alike, as atomic.py's text-mode
    open reads them."""
    raw = read_bytes(path, max_mb)
    return decode_text(raw, path or EMBEDDED_NAMES), fingerprint(raw)


def read_bytes(path: str | None, max_mb: float = MAX_DATA_MB) -> bytes:
    """The raw bytes of a regular file of at most max_mb megabytes (None: the embedded names)."""
    if path is None:
        path = EMBEDDED_NAMES
    if path == "":
        raise UsageError("--data is empty; give a text file, or leave --data out to use the embedded names")
    if not 0 < max_mb < math.inf:
        raise UsageError(f"--max-data-mb must be a positive number of megabytes (got {max_mb})")
    limit = int(max_mb * 2**20)

    def too_big(size: int) -> str:
        return (f"--data {path} is {size_words(size)}, over the limit of {size_words(limit)} (--max-data-mb "
                f"{max_mb:g}); raise it with --max-data-mb {math.ceil(size / 2**20)}")
    return read_regular(path, "--data", "data file", "a text file with one document per line", limit, too_big)


def read_regular(path: str, flag: str, what: str, give: str, limit: int, too_big) -> bytes:
    """The bytes of the file at path (given with flag) if it is a regular file of at most limit bytes; else a
    UsageError naming flag, `what` the file is ("data file") and, for a directory, what to `give` instead
    ("a text file ..."); a file over the limit gets the message too_big(its size) returns (one that grows past
    the limit as it is read, a pseudo-file of /proc's for one, gets a message of its own: no size can be advised).

    A FIFO, device or socket is refused, never waited on or read without end (the file is opened
    non-blocking). The read takes the memory the file's size needs, not the limit's: the limit may be far
    larger than the memory (--max-data-mb 30000) or than any read can take (1e300 MB)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {path} (no such file; check the path given to {flag})") from None
    except IsADirectoryError:
        raise UsageError(f"{flag} {path} is a directory; give {give}") from None
    except OSError as e:
        raise UsageError(f"cannot read {flag} {path}: {e.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{flag} {path} is a directory; give {give}")
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{flag} {path} is not a regular file (a pipe, device or socket); save it to a "
                             f"file and give that")
        raise UsageError(too_big(info.st_size))
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(info.st_size + 1)  # the size the stat gave, and one byte to see whether it grew since
            while len(raw) > info.st_size and len(raw) <= limit:  # it grew: read on, a bounded piece at a time
                more = f.read(min(2**20, limit + 1 - len(raw)))
                if not more:
                    break
                raw += more
        except OSError as e:
            raise UsageError(f"cannot read {flag} {path}: {e.strerror}") from None
    if len(raw) > limit:   # it grew past the limit as it was read: its size is not known, so none can be advised
        raise UsageError(f"{flag} {path} grew past the limit of {size_words(limit)} as it was read (its size "
                         f"said {size_words(info.st_size)}: a file still being written, or a pseudo-file such as "
                         f"/proc's); give a finished file")
    return raw


def size_words(size: int) -> str:
    """A file's size as a person reads it: bytes under a megabyte (1,234 bytes), else megabytes (2.5 MB)."""
    return f"{size:,} bytes" if size < 2**20 else f"{size / 2**20:,.1f} MB"


def decode_text(raw: bytes, path: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):   # a UTF-16 byte-order mark (its text is full of NUL bytes)
        raise UsageError(f"{path} is UTF-16 text; re-save it as UTF-8")
    if b"\x00" in raw:
        raise UsageError(f"{path} looks binary (it has NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); re-save it as UTF-8") from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise UsageError(f"{path} is empty or only whitespace; give a file with at least one non-empty line")
    return text


def add_max_data_argument(p) -> None:
    """--max-data-mb, for every command that takes --data."""
    p.add_argument("--max-data-mb", type=float, default=MAX_DATA_MB,
                   help=f"refuse a --data file larger than this many megabytes (default {MAX_DATA_MB})")


def split_docs(text: str) -> list[str]:
    """One document per non-empty line, stripped (as atomic.py reads input.txt)."""
    return [line.strip() for line in text.strip().split("\n") if line.strip()]


def fingerprint(raw: bytes) -> str:
    """The SHA-256 of the data file's bytes, as `sha256sum FILE` prints it."""
    return hashlib.sha256(raw).hexdigest()


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


class Batch(list):
    """A batch of documents: their token lists, as every engine takes them, and the same tokens packed,
    `tokens` (the documents end to end) and `lengths` (array('q') both, sliced from DocumentData's packed
    copy, no loop over the tokens). The compiled engine reads those in place (NumPy's frombuffer) instead
    of packing the lists again each step. Read it only: the packed copy does not follow changes to the lists
    (a slice or a sum of batches is a plain list, which the engine packs itself)."""

    def __init__(self, seqs: list[list[int]], tokens: array, lengths: array):
        super().__init__(seqs)
        self.tokens, self.lengths = tokens, lengths


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
        self._pack = None   # _packed()

    def encode(self, doc: str) -> list[int]:
        bos = self.tokenizer.bos
        return ([bos] + self.tokenizer.encode(doc) + [bos])[: self.block_size + 1]

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
        n = len(self.train)
        first = (step * world + rank) * batch_size % n
        if first + batch_size > n:   # it wraps round the list (or repeats documents)
            return [self.train[(first + j) % n] for j in range(batch_size)]
        tokens, lengths, starts = self._packed()
        last = first + batch_size
        return Batch(self.train[first:last], tokens[starts[first]:starts[last]], lengths[first:last])

    def _packed(self) -> tuple[array, array, array]:
        """The training documents end to end, their lengths and where each starts (built once)."""
        if self._pack is None:
            lengths = array("q", map(len, self.train))
            starts = array("q", itertools.accumulate(lengths, initial=0))
            self._pack = array("q", itertools.chain.from_iterable(self.train)), lengths, starts
        return self._pack

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
