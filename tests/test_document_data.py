"""Document datasets (the default data mode): a training step's batch of documents.

    python -m pytest -q tests/test_document_data.py

Needs only the standard library. A batch is the documents (k B world + rank B + j) % len(train); one
that does not wrap round the list also carries its tokens packed (data.Batch), for the compiled engine.
"""

import pytest

from microgpt.data import Batch, DocumentData, Tokenizer

DOCS = [f"{'abcdefgh'[i % 8]}{'xyz'[:i % 4]}{'q' * (i % 5)}" for i in range(40)]


def documents(block_size=6):
    return DocumentData(DOCS, Tokenizer.from_docs(DOCS), block_size, val_docs=3)


@pytest.mark.parametrize("step,batch_size,rank,world", [
    (0, 1, 0, 1), (3, 5, 0, 1), (2, 4, 1, 3), (6, 5, 0, 1), (7, 5, 0, 1), (0, 37, 0, 1), (1, 37, 0, 1), (0, 50, 0, 1)])
def test_a_batch_is_the_next_documents_round_the_list(step, batch_size, rank, world):
    data = documents()
    n = len(data.train)
    first = (step * world + rank) * batch_size
    expected = [data.train[(first + j) % n] for j in range(batch_size)]
    batch = data.batch(step, batch_size, rank, world)
    assert batch == expected
    if first % n + batch_size <= n:   # no wrap: packed as well
        assert isinstance(batch, Batch)
        assert list(batch.tokens) == [t for seq in expected for t in seq]
        assert list(batch.lengths) == [len(seq) for seq in expected]
    else:
        assert not isinstance(batch, Batch)


def test_packed_tokens_follow_cut_documents():
    """Documents longer than the block are cut; the packed copy holds the cut lists, not the text."""
    data = documents(block_size=3)
    batch = data.batch(0, len(data.train))
    assert max(len(seq) for seq in batch) == 4 and sum(batch.lengths) == len(batch.tokens)
    assert list(batch.tokens) == [t for seq in data.train for t in seq]
