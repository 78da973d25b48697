"""The compiled engine: atomic.py's loops, compiled with Numba, at the CPU's limit.

    pip install -e '.[compiled]'          (Numba)
    microgpt train --engine compiled [--dtype float32] [--batch-size 256]
    microgpt train --engine compiled --batch-size 256 --threads 2        (documents across 2 cores)

The model is written as atomic.py writes it, plain loops over positions, layers, heads and rows, and
its backward by hand (compiled_kernels.py); Numba compiles them to machine code. A whole training step
for a batch (forward, backward, Adam) is one compiled call, with no Python in between.

Memory. Parameters, Adam's moments and the gradients are rows of one flat (3 + chunks, P) buffer in
params.py's order: row 0 the parameters, 1 and 2 Adam's m and v, 3 onwards one gradient per chunk of
documents (row 3 ends up holding the batch's gradient). `views(row)` gives each parameter by name.
Each row starts on a 64-byte line and P is padded to whole lines (the padding stays 0 throughout).
One work space holds a tile of documents (TILE_ROWS positions at most, twice that in float32): step_serial's;
step_parallel on several threads gives each a fresh one of the same size (on one, it uses this one, chunk
after chunk). A sample's KV cache is a work space of its own, sized for block_size positions.

Threads. A batch is cut into chunks of consecutive documents, CHUNK_DOCS or more each in float64 and twice
that in float32 (whose tiles hold twice the positions), but two chunks at least and CHUNKS at most: a batch
of 256 makes 8 chunks in float64 and 4 in float32, and one under 96 (float64) or 192 (float32) makes two,
each as full a tile as it can be (more chunks would mean more threads but smaller tiles). The chunks run on
Numba's threads, as many as choose_threads says (--threads N; else NUMBA_NUM_THREADS if set; else the cores
the machine's load leaves idle, as for the torch engine; training prints the choice), and their gradients
are added in chunk order, so the numbers depend neither on thread timing nor on the thread count (a batch
of several documents takes step_parallel even on one thread: step_serial, for one document, is the same
loops compiled apart, and the compiler may round those differently).

The first call compiles the kernels (about a minute; a line on stderr says so after COMPILE_NOTE_AFTER seconds),
and Numba caches the machine code on disk (__pycache__ beside the kernels), so later processes start in a
second or two.
"""

import itertools
import os
import sys
import threading

# the numpy engine's dtypes; importing it first also keeps numpy's BLAS to one thread (see there)
from microgpt.engines import base, numpy as numpy_engine
from microgpt.errors import UsageError

DTYPES = numpy_engine.DTYPES
base.check_thread_count("NUMBA_NUM_THREADS")  # before Numba reads it

import numba  # noqa: E402
import numpy as np  # noqa: E402

from microgpt.data import Batch  # noqa: E402
from microgpt.engines import compiled_kernels as k  # noqa: E402
from microgpt.params import param_shapes  # noqa: E402
from microgpt.tensor import Tensor  # noqa: E402

CHUNKS = 8   # the most chunks a batch is cut into: the most threads a step can use
CHUNK_DOCS = 32   # ... and a chunk takes this many float64 documents or more (float32: twice as many), where
#                   the batch still makes two chunks
TILE_ROWS = 256   # the most positions a layer runs over at once in float64 (whole documents; at least block_size),
# and as many bytes in float32, 512. On the default model (batches of 256, one thread), chunks of 64 names
# (about 450 positions) in tiles of 512 made a float32 step 9% faster than chunks of 32 in tiles of 256; in
# float64, tiles of 512 were 1% slower and chunks of 64 no faster (the kernels side by side in one process), so
# float64 keeps chunks of 32: a batch of 256 still runs on up to 8 threads.
TILE_BYTES = 2 ** 24   # ... and fewer where a tile's work space would pass this. On the names preset's shape
# (4 layers of width 96, float32, batch 256, one thread) tiles of 80 rows (2 MB) took 408 µs a document row by
# row and 490 by position (whose loops run along the rows); tiles of 256 rows (8 MB), 336 and 323; and (another
# host) tiles of 320 rows (8 MB), 289 by position, against 243-262 in tiles of 512 (13 MB, this limit). On
# shakespeare-cpu's (float32, batch 12), three sequences a tile (8 MB) took 57-59 ms a step, six (16 MB) 54.
BY_DOCUMENT_POSITIONS = 48   # a tile whose documents average this many positions or more runs in columns by
#                              document (a stream preset's sequences: attention's loops along each one's keys)
BY_POSITION_LANES = 16   # ... and a tile of shorter ones, documents x heads >= this, is laid out by position (its
#                          loops across documents), in columns too; a tile of fewer lanes runs row by row


COMPILE_NOTE_AFTER = 3.0   # seconds: a kernel's first call still running then is compiling it (loading it from the
#                            disk cache takes a second or two), and says so on stderr rather than look hung
COMPILE_NOTE = "compiled engine: compiling the kernels for this CPU (a minute or so, once: Numba caches them on disk)"


def call_noting_compile(kernel, args):
    """kernel(*args), and COMPILE_NOTE on stderr if the call is still running COMPILE_NOTE_AFTER seconds later."""
    timer = threading.Timer(COMPILE_NOTE_AFTER, lambda: print(COMPILE_NOTE, file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        return kernel(*args)
    finally:
        timer.cancel()


def choose_threads(requested: int) -> tuple[int, str]:
    """The threads a batch's chunks run on, and why, in words: --threads if given, else NUMBA_NUM_THREADS
    if set, else the cores that the machine's load leaves idle (base.idle_cores). Numba starts its threads
    once, NUMBA_NUM_THREADS of them or one per core, and runs on no more than that: a larger --threads (asked
    for, or saved in a checkpoint trained on a larger machine) gets that many, and the words say so."""
    started = numba.config.NUMBA_NUM_THREADS
    if requested > started:
        return started, f"--threads {requested}, but Numba runs {started} here: NUMBA_NUM_THREADS, or one per core"
    if requested:
        return requested, "--threads"
    if (os.environ.get("NUMBA_NUM_THREADS") or "").strip():
        return started, "NUMBA_NUM_THREADS"
    idle, why = base.idle_cores()
    return min(idle, started), why


def chunk_count(docs: int, chunk_docs: int) -> int:
    """How many chunks a batch of `docs` documents is cut into, chunk_docs or more each (the engine's: see
    the module's docstring, Threads)."""
    return min(docs, CHUNKS, max(2, docs // chunk_docs))


def aligned_zeros(shape, dtype):
    """Zeros of `shape` whose last axis is padded to whole 64-byte lines and whose rows each start on
    one: the kernels' vector loads then never straddle two cache lines. NumPy aligns to 16 bytes only,
    and a step took 20% longer when the parameters happened to start 16 bytes past a line."""
    per_line = 64 // np.dtype(dtype).itemsize
    shape = (*shape[:-1], -(-shape[-1] // per_line) * per_line)
    size = int(np.prod(shape))
    raw = np.zeros(size + per_line, dtype)
    skip = (-raw.ctypes.data % 64) // np.dtype(dtype).itemsize
    return raw[skip:skip + size].reshape(shape)


class Engine(base.Engine):
    name = "compiled"

    def __init__(self, model_cfg, train_cfg, params: dict[str, Tensor]):
        self.cfg, self.tcfg = model_cfg, train_cfg
        self.dtype, self.tensor_dtype = DTYPES[train_cfg.dtype]
        self.shapes = param_shapes(model_cfg)
        sizes = [r * c for _, (r, c) in self.shapes]
        self.offsets = np.cumsum([0] + sizes[:-1]).astype(np.int64)   # where each parameter starts
        self.flat = aligned_zeros((3 + CHUNKS, sum(sizes)), self.dtype)   # params; m; v; a gradient per chunk
        self.dims = np.zeros(k.DIMS_SIZE, np.int64)
        self.dims[[k.V_, k.C_, k.T_, k.L_, k.H_, k.K_, k.R_, k.BYPOS_, k.BYDOC_]] = (
            model_cfg.vocab_size, model_cfg.n_embd, model_cfg.block_size, model_cfg.n_layer, model_cfg.n_head, CHUNKS, 1,
            BY_POSITION_LANES, BY_DOCUMENT_POSITIONS)
        per_row = k.work_size(self.dims + np.eye(k.DIMS_SIZE, dtype=np.int64)[k.R_]) - k.work_size(self.dims)   # floats
        itemsize = np.dtype(self.dtype).itemsize
        widen = 8 // itemsize   # float32: twice the positions a tile and the documents a chunk (the same bytes)
        rows = max(model_cfg.block_size, min(TILE_ROWS * widen, TILE_BYTES // (per_row * itemsize)))
        self.chunk_docs = CHUNK_DOCS * widen
        self.dims[k.R_] = rows
        self.work = aligned_zeros((1, k.work_size(self.dims)), self.dtype)   # a tile's activations
        self.ints = np.zeros((1, k.INTS, rows), np.int64)   # the tile's rows: token, position, ... of each
        self.hyper = np.zeros(k.HYPER_SIZE, self.dtype)
        self.hyper[[k.BETA1, k.BETA2, k.EPS, k.RMS_EPS]] = train_cfg.beta1, train_cfg.beta2, train_cfg.eps, 1e-5
        self._one_doc = np.zeros(2, np.int64)   # starts of a batch of one: [0, its length]
        self.threads, why = choose_threads(train_cfg.threads)
        plural = "s" if self.threads > 1 else ""
        self.note = f"compiled: {self.threads} thread{plural} for a batch's documents ({why})"
        self._load(self.views(0), params)
        for name in ("step_serial", "step_parallel", "position_logits"):   # self.step_serial(...): k.step_serial
            setattr(self, name, self._first_call(name))                  # from the second call on

    def _first_call(self, name: str):
        """A stand-in for kernel `name` that calls it noting a compile (call_noting_compile), then puts the
        kernel itself in its place, so that later calls pay nothing for the note."""
        def first(*args):
            kernel = getattr(k, name)
            setattr(self, name, kernel)
            return call_noting_compile(kernel, args)
        return first

    def views(self, row: int) -> dict[str, np.ndarray]:
        """Row `row` of the flat buffer as name -> (rows, cols) view, in params.py's order."""
        return {name: self.flat[row, o:o + r * c].reshape(r, c)
                for (name, (r, c)), o in zip(self.shapes, self.offsets)}

    # ---- one compiled call per batch ---------------------------------------------------------
    def _call(self, seqs, mode: int) -> float:
        packed = isinstance(seqs, Batch)   # DocumentData's batches come packed: read in place
        if len(seqs) == 1:   # the common case, kept short: this Python runs once per step
            tokens = np.frombuffer(seqs.tokens, np.int64) if packed else np.array(seqs[0], np.int64)
            starts = self._one_doc
            starts[1] = len(seqs[0])
            chunks = 1
        else:
            if packed:
                tokens, lengths = np.frombuffer(seqs.tokens, np.int64), np.frombuffer(seqs.lengths, np.int64)
            else:
                lengths = [len(s) for s in seqs]
                tokens = np.fromiter(itertools.chain.from_iterable(seqs), np.int64, sum(lengths))
            starts = np.zeros(len(seqs) + 1, np.int64)
            np.cumsum(lengths, out=starts[1:])
            chunks = chunk_count(len(seqs), self.chunk_docs)
        # several documents: step_parallel even on one thread, so that the numbers, bit for bit, do not
        # depend on the thread count (step_serial is the same loops compiled apart: equal to round-off)
        args = (self.flat, self.offsets, self.dims, self.hyper, tokens, starts, self.work, self.ints, mode, chunks)
        if chunks > 1 and numba.get_num_threads() != self.threads:   # Numba's count is the calling thread's
            numba.set_num_threads(self.threads)
        loss = self.step_parallel(*args, self.threads) if chunks > 1 else self.step_serial(*args)
        if loss < 0:
            raise UsageError(f"every sequence needs 2 to {self.cfg.block_size + 1} tokens, each below the vocab "
                             f"size {self.cfg.vocab_size}: encode documents with the run's tokenizer")
        return loss

    def train_step(self, seqs, step: int, lr: float) -> float:
        t, hyper = self.tcfg, self.hyper
        hyper[k.LR], hyper[k.C1], hyper[k.C2] = lr, 1 - t.beta1 ** (step + 1), 1 - t.beta2 ** (step + 1)
        return self._call(seqs, k.TRAIN)

    def eval_loss(self, seqs) -> float:
        return self._call(seqs, k.EVAL)

    def loss_and_grads(self, seqs):
        loss = self._call(seqs, k.GRADS)
        return loss, self._tensors(self.views(3))

    # ---- state -------------------------------------------------------------------------------
    # the numpy engine's: views of self.dtype <-> the checkpoint's little-endian tensors
    _tensors = numpy_engine.Engine._tensors
    _load = numpy_engine.Engine._load

    def weights(self) -> dict[str, Tensor]:
        return self._tensors(self.views(0))

    def state(self) -> dict[str, Tensor]:
        return base.adam_state(self._tensors(self.views(1)), self._tensors(self.views(2)))

    def load_state(self, state: dict[str, Tensor]) -> None:
        names = [name for name, _ in self.shapes]
        self._load(self.views(1), base.take(state, "adam.m.", names))
        self._load(self.views(2), base.take(state, "adam.v.", names))

    # ---- sampling ----------------------------------------------------------------------------
    def new_cache(self):
        """A work space for one sequence (a tile of block_size rows, not a training tile's): its keys and
        values are the KV cache. Returns (dims, work space, ints), dims with that tile's size."""
        dims = self.dims.copy()
        dims[k.R_] = self.cfg.block_size
        return dims, aligned_zeros((k.work_size(dims),), self.dtype), np.zeros((k.INTS, dims[k.R_]), np.int64)

    def logits(self, cache, token_id: int, pos_id: int) -> list[float]:
        dims, ws, ints = cache
        return self.position_logits(self.flat[0], self.offsets, dims, self.hyper, ws, ints, token_id, pos_id).tolist()
