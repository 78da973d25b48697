"""Run: the whole state of one training run, built in exactly two ways and used by every command.

    run = Run.fresh(ModelConfig(n_layer=2), TrainConfig(steps=500), data_path=None)  # a new run
    run = Run.load("out")                    # a saved run: configs, tokenizer, weights, state, step, RNG
    run = Run.load("out", data_path=None)    # ... with its data read again (to resume, or to show it)
    run.save("out")                          # checkpoint.py writes it

A fresh run does what atomic.py does, from one seeded random stream: shuffle the documents, build the
tokenizer, draw the initial weights. The data is read the same way by both paths (`_read_data`): a
loaded run re-shuffles its documents with a stream seeded as the original was, so it gets the very
same training and held-out documents, while its own stream continues where the checkpoint left it.
"""

import os
import random
from dataclasses import dataclass, field, replace

from microgpt import checkpoint
from microgpt.config import ENGINE_DTYPES, ModelConfig, TrainConfig, validate
from microgpt.data import DocumentData, StreamData, Tokenizer, fingerprint, read_text, split_docs
from microgpt.errors import UsageError
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
    data_info: dict = field(default_factory=dict)  # {"path", "sha256", "mode", "world"}
    data: DocumentData | StreamData | None = None  # None: the data was not read
    docs: list[str] | None = None               # the shuffled documents (lines mode), when read
    source: str = ""                            # where it came from, in words

    # ---- the two ways to build one ------------------------------------------------------------
    @classmethod
    def fresh(cls, model: ModelConfig, tcfg: TrainConfig, data_path: str | None = None, world: int = 1) -> "Run":
        validate(model, tcfg, world)
        text = read_text(data_path)
        rng = random.Random(tcfg.seed)  # one stream: shuffle, init, sampling (as atomic.py)
        docs, tokenizer = _read_data(text, tcfg, rng)
        model = replace(model, vocab_size=tokenizer.vocab_size)
        run = cls(model, tcfg, tokenizer, init_tensors(model, rng), rng=rng, docs=docs,
                  source=f"a fresh init (seed {tcfg.seed}, {data_path or 'the embedded names'})")
        run.data = _dataset(text, docs, tokenizer, model, tcfg)
        run.data_info = {"path": os.path.abspath(data_path) if data_path else None, "sha256": fingerprint(text),
                         "mode": "stream" if tcfg.data_mode == "stream" else "documents", "world": world}
        return run

    @classmethod
    def load(cls, out_dir: str, data_path: str | None = None, with_data: bool = False) -> "Run":
        """The run saved in out_dir; with_data: read its data too (data_path, else the path it recorded)."""
        saved = checkpoint.load(out_dir)
        rng = random.Random()
        rng.setstate(saved["rng_state"])
        run = cls(saved["model"], saved["train"], Tokenizer(saved["chars"]), saved["params"], saved["state"],
                  saved["step"], rng, saved["data_info"],
                  source=f"the checkpoint in {out_dir} (step {saved['step']}, engine {saved['train'].engine})")
        if with_data:
            run.read_data(data_path or run.data_info.get("path"))
        return run

    def read_data(self, data_path: str | None) -> None:
        """Read the run's data again: the same documents in the same order, checked by fingerprint."""
        text = read_text(data_path)
        if fingerprint(text) != self.data_info["sha256"]:
            raise UsageError(f"{data_path or 'the embedded names'} changed since the checkpoint was written; "
                             f"give the run's own data with --data, or start a new --out")
        self.docs, _ = _read_data(text, self.train, random.Random(self.train.seed))
        self.data = _dataset(text, self.docs, self.tokenizer, self.model, self.train)

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
            lines.append(f"note: {self.data.num_cut} documents are longer than the block ({self.model.block_size} "
                         f"tokens after BOS) and were cut to fit; raise --block-size to keep them whole")
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
