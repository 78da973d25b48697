"""The model a run starts from, for the tools that look inside one (check, trace, report).

`fresh` rebuilds the state `microgpt train` starts with (the seeded shuffle, the tokenizer, the
initial weights, all from one random stream, as atomic.py does); `saved` reads a checkpoint. Both
give a `RunState` with engine-neutral tensors, so the tools work for checkpoints of every engine.
"""

import random
from dataclasses import dataclass, field

from microgpt import checkpoint
from microgpt.config import ModelConfig, TrainConfig
from microgpt.data import DocumentData, Tokenizer, read_text, split_docs
from microgpt.errors import UsageError
from microgpt.model import init_tensors
from microgpt.train import MODEL_FIELDS, validate


@dataclass
class RunState:
    model: ModelConfig
    train: TrainConfig
    tokenizer: Tokenizer
    params: dict                    # name -> Tensor
    step: int = 0                   # training steps already done
    adam_m: dict = field(default_factory=dict)
    adam_v: dict = field(default_factory=dict)
    docs: list | None = None        # the shuffled documents, when known
    source: str = ""                # where it came from, in words
    data_path: str | None = None    # the data file (None: the embedded names)

    def encode(self, doc: str) -> list[int]:
        """[BOS] + chars + [BOS], cut to block_size + 1 tokens, as training sees the document."""
        if not doc:
            raise UsageError("the document is empty; give at least one character, e.g. \"emma\"")
        return DocumentData([doc], self.tokenizer, self.model.block_size).train[0]


def fresh(data_path: str | None, seed: int, model_overrides: dict | None = None,
          tcfg: TrainConfig | None = None) -> RunState:
    docs = split_docs(read_text(data_path))
    rng = random.Random(seed)
    rng.shuffle(docs)
    tokenizer = Tokenizer.from_docs(docs)
    model_cfg = ModelConfig(vocab_size=tokenizer.vocab_size, **(model_overrides or {}))
    tcfg = tcfg or TrainConfig(seed=seed)
    validate({k: getattr(model_cfg, k) for k in MODEL_FIELDS}, tcfg)
    params = init_tensors(model_cfg, rng)
    return RunState(model_cfg, tcfg, tokenizer, params, docs=docs,
                    source=f"a fresh init (seed {seed}, {data_path or 'the embedded names'})", data_path=data_path)


def saved(out_dir: str) -> RunState:
    ck = checkpoint.load(out_dir)
    return RunState(ck.model, ck.train, Tokenizer(ck.chars), ck.params, ck.step, ck.adam_m, ck.adam_v,
                    source=f"the checkpoint in {out_dir} (step {ck.step}, engine {ck.train.engine})",
                    data_path=ck.data.get("path"))


def saved_docs(state: RunState, data_path: str | None) -> list[str] | None:
    """The run's shuffled documents if its data file is still readable, else None."""
    try:
        docs = split_docs(read_text(data_path))
    except UsageError:
        return None
    random.Random(state.train.seed).shuffle(docs)
    return docs
