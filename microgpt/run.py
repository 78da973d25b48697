"""Run: the whole state of one training run, built in exactly two ways and used by every command.

    run = Run.fresh(ModelConfig(n_layer=2), TrainConfig(steps=500), data_path=None)  # a new run
    run = Run.load("out")                    # a saved run: configs, tokenizer, weights, state, step, RNG
    run = Run.load("out", "names.txt", with_data=True)  # ... with its data read again (from the user's path)
    run.save("out")                          # checkpoint.py writes it

A fresh run does what atomic.py does, from one seeded random stream: shuffle the documents, build the
tokenizer, draw the initial weights. The data is read the same way by both paths (`_read_data`): a
loaded run re-shuffles its documents with a stream seeded as the original was, so it gets the very
same training and held-out documents, while its own stream continues where the checkpoint left it.
"""

import os
import random
import shlex
import tempfile
from dataclasses import dataclass, field, replace

from microgpt import checkpoint, durable
from microgpt.config import ENGINE_DTYPES, ModelConfig, TrainConfig, memory_limit, validate
from microgpt.data import MAX_DATA_MB, DocumentData, StreamData, Tokenizer, read_data_file, split_docs
from microgpt.errors import UsageError
from microgpt.lock import missing_folders
from microgpt.params import init_tensors, num_params
from microgpt.tensor import Tensor


@dataclass
class Run:
    model: ModelConfig
    train: TrainConfig
    tokenizer: Tokenizer
    params: dict[str, Tensor]                   # the model's weights, params.py's names
    state: dict[str, Tensor] = field(default_factory=dict)   # the engine's own state (engines/base.py)
    step: int = 0                               # training steps done
    rng: random.Random = field(default_factory=random.Random)  # the run's one stream, where it stands
    data_info: dict = field(default_factory=dict)  # {"name", "sha256", "mode", "world"}
    data: DocumentData | StreamData | None = None  # None: the data was not read
    docs: list[str] | None = None               # the shuffled documents (lines mode), when read
    source: str = ""                            # where it came from, in words
    data_path: str | None = None                # the --data this process read (never saved: see data_info)

    # ---- the two ways to build one ------------------------------------------------------------
    @classmethod
    def fresh(cls, model: ModelConfig, tcfg: TrainConfig, data_path: str | None = None, world: int = 1,
              max_data_mb: float = MAX_DATA_MB) -> "Run":
        validate(model, tcfg, world)
        text, sha256 = read_data_file(data_path, max_data_mb)
        rng = random.Random(tcfg.seed)  # one stream: shuffle, init, sampling (as atomic.py)
        docs, tokenizer = _read_data(text, tcfg, rng)
        model = replace(model, vocab_size=tokenizer.vocab_size)
        check_fits_in_memory(model)
        run = cls(model, tcfg, tokenizer, init_tensors(model, rng), rng=rng, docs=docs,
                  source=f"a fresh init (seed {tcfg.seed}, {data_path or 'the embedded names'})")
        run.data = _dataset(text, docs, tokenizer, model, tcfg)
        run.data_path = data_path
        # the file's name and hash, never its path: a shared checkpoint tells no one where files live
        run.data_info = {"name": os.path.basename(data_path) if data_path else None, "sha256": sha256,
                         "mode": "stream" if tcfg.data_mode == "stream" else "documents", "world": world}
        return run

    @classmethod
    def load(cls, out_dir: str, data_path: str | None = None, with_data: bool = False, with_state: bool = True,
             max_data_mb: float = MAX_DATA_MB) -> "Run":
        """The run saved in out_dir; with_data: read its data too (from data_path: see read_data);
        with_state: the optimizer's state too (to resume), else only the weights are read."""
        saved = checkpoint.load(out_dir, with_state)
        rng = random.Random()
        rng.setstate(saved["rng_state"])
        run = cls(saved["model"], saved["train"], Tokenizer(saved["chars"]), saved["params"], saved["state"],
                  saved["step"], rng, saved["data_info"],
                  source=f"the checkpoint in {out_dir} (step {saved['step']}, engine {saved['train'].engine})")
        if with_data:
            run.read_data(data_path, max_data_mb)
        return run

    def data_name(self) -> str | None:
        """The file name the run trained on (None: the embedded names); older checkpoints kept a path."""
        name = self.data_info.get("name", self.data_info.get("path"))
        return os.path.basename(name) if name else None

    def resume_command(self, out_dir: str) -> str:
        """The command that continues this run, from any folder: absolute paths, its data file the one this
        process read (else its saved name, when it had one)."""
        data = os.path.abspath(self.data_path) if self.data_path else self.data_name()
        return (f"microgpt train --out {shlex.quote(os.path.abspath(out_dir))} --resume"
                + (f" --data {shlex.quote(data)}" if data else ""))

    def read_data(self, data_path: str | None, max_data_mb: float = MAX_DATA_MB) -> None:
        """Read the run's data again: the same documents in the same order, checked by SHA-256.

        The data comes from data_path, the user's --data, never from a path in the checkpoint (a shared
        checkpoint must not make us open files): without it, only a run on the embedded names finds its data."""
        if data_path is None and self.data_name():
            raise UsageError(f"this run trained on {self.data_name()} (sha256 {self.data_info['sha256'][:12]}...); "
                             f"give that file with --data")
        text, sha256 = read_data_file(data_path, max_data_mb)
        if sha256 != self.data_info["sha256"] and data_path and not self.data_name():
            raise UsageError(f"this run trained on the embedded names, not {data_path}; drop --data to resume it")
        if sha256 != self.data_info["sha256"]:
            raise UsageError(f"{data_path or 'the embedded names'} is not the data this run trained on (its "
                             f"SHA-256 differs from the checkpoint's); give the run's own data with --data, "
                             f"or start a new --out")
        self.docs, _ = _read_data(text, self.train, random.Random(self.train.seed))
        self.data = _dataset(text, self.docs, self.tokenizer, self.model, self.train)
        self.data_path = data_path

    def save(self, out_dir: str) -> str:
        return checkpoint.save(out_dir, self)

    # ---- what the commands ask of it ----------------------------------------------------------
    def header(self) -> list[str]:
        """The lines a training run prints first, as atomic.py does (and a note on cut documents)."""
        lines = []
        if self.docs is not None:
            lines.append(f"num docs: {len(self.docs)}")
        elif self.data is not None:
            lines.append(f"num chars: {self.data.num_chars}")
        lines.append(f"vocab size: {self.tokenizer.vocab_size}")
        if self.data is not None and self.data.num_cut:
            cut = self.data.num_cut
            lines.append(f"note: {cut} document{' is' if cut == 1 else 's are'} longer than the block "
                         f"({self.model.block_size} tokens after BOS) and {'was' if cut == 1 else 'were'} cut to fit; "
                         f"raise --block-size to keep {'it' if cut == 1 else 'them'} whole")
        lines.append(f"num params: {num_params(self.model)}")
        return lines

    def engine(self, engine_name: str | None = None, with_state: bool = False, **train_overrides):
        """This run's model in an engine (its own by default); with_state: also its optimizer state,
        to go on training (an error if the checkpoint lacks any of it)."""
        from microgpt import engines  # engines import lazily: the core runs without their libraries
        tcfg = replace(self.train, **train_overrides)
        if engine_name and engine_name != tcfg.engine:  # another engine: only what it can compute
            dtype = tcfg.dtype if tcfg.dtype in ENGINE_DTYPES[engine_name] else ENGINE_DTYPES[engine_name][0]
            tcfg = replace(tcfg, engine=engine_name, dtype=dtype)
        engine = engines.get(tcfg.engine)(self.model, tcfg, self.params)
        if with_state:
            engine.load_state(self.state)
        return engine

    def encode(self, doc: str) -> list[int]:
        """[BOS] + chars + [BOS], cut to block_size + 1 tokens, as training sees the document."""
        if not doc:
            raise UsageError("the document is empty; give at least one character, e.g. \"emma\"")
        return DocumentData([doc], self.tokenizer, self.model.block_size).train[0]


def check_out_dir(out_dir: str, fix: str = "choose a directory you can write") -> None:
    """--out must be a directory this process can write, or one it can make: probed with a file there, or in
    the nearest folder above it that exists; `fix` says what to do when it cannot. Nothing is made here:
    RunLock makes the directory once the run's set-up is valid, so a start refused before then leaves no trace."""
    if not out_dir:
        raise UsageError("--out is empty; give a directory for the checkpoint, e.g. --out runs/names")
    durable.refuse_broken_link(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--out {out_dir} is a file, not a directory; give a directory (it is made if missing)")
    missing = missing_folders(out_dir)
    nearest = os.path.dirname(missing[-1]) if missing else out_dir   # the folder that exists, where it is made
    if not os.path.isdir(nearest):
        raise UsageError(f"cannot make --out {out_dir}: {nearest} is a file, not a directory; choose another --out")
    try:
        fd, probe = tempfile.mkstemp(dir=nearest, prefix=".microgpt-write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"cannot write to --out {out_dir} ({e.strerror}); {fix}") from None


def check_fits_in_memory(model: ModelConfig) -> None:
    """Refuse, before any tensor exists, a model whose float64 weights, gradients and Adam's two moments
    alone exceed the memory (a lower bound: the engines need more)."""
    count = num_params(model)
    need, limit = 4 * 8 * count, memory_limit()
    if limit is not None and need > limit:
        raise UsageError(f"the model has {count:,} parameters and needs at least {need / 1e9:.1f} GB (float64 "
                         f"weights, gradients and Adam's two moments), more than the {limit / 1e9:.1f} GB of "
                         f"memory here; lower --n-layer, --n-embd or --block-size")


def _read_data(text: str, tcfg: TrainConfig, rng: random.Random) -> tuple[list[str] | None, Tokenizer]:
    """(the shuffled documents, or None for a stream; the tokenizer), drawing the shuffle from rng."""
    if tcfg.data_mode == "stream":
        return None, Tokenizer(sorted(set(text)))
    docs = split_docs(text)
    rng.shuffle(docs)
    return docs, Tokenizer.from_docs(docs)


def _dataset(text, docs, tokenizer, model, tcfg):
    if docs is None:
        return StreamData(text, tokenizer, model.block_size, tcfg.seed)
    return DocumentData(docs, tokenizer, model.block_size, tcfg.val_docs)
