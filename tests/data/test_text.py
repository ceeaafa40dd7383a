"""A text file as language-modelling data: packed whole documents, nothing cut, a held-out tail."""

import pytest
import torch

from mumo.data.collate import ImageTextCollate
from mumo.data.shapes import ShapesDataset
from mumo.data.text import TextCorpus, TokenCollate, pack_documents
from mumo.data.tokenizer import Tokenizer
from mumo.errors import DataError


def test_packing_keeps_every_token_in_order_and_starts_windows_at_documents():
    docs = [[1, 10, 11, 2], [1, 12, 2], [1] + list(range(20, 33)) + [2], [1, 13, 2]]  # one longer than 8
    windows = pack_documents(docs, 8, pad_id=0)
    assert windows.shape[1] == 8
    flat = [t for w in windows.tolist() for t in w if t != 0]
    assert flat == [t for d in docs for t in d]  # nothing lost, nothing reordered
    assert windows[0].tolist() == [1, 10, 11, 2, 1, 12, 2, 0]  # two whole documents share a window
    assert windows[1].tolist()[0] == 1 and windows[2].tolist()[0] != 1  # the long one runs on
    assert windows[-1].tolist()[:3] == [1, 13, 2]


@pytest.fixture
def corpus_file(tmp_path):
    lines = [f"line {i} says {'hello ' * (i % 7)}world" for i in range(400)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(lines) + "\n", encoding="utf-8")  # blank lines are skipped
    return path, lines


def test_corpus_binds_splits_and_collates(corpus_file):
    path, lines = corpus_file
    tok = Tokenizer.train(lines, vocab_size=300)
    train = TextCorpus(path, "train", val_windows=5).bind(tok, 32)
    val = TextCorpus(path, "val", val_windows=5).bind(tok, 32)
    assert train.documents == lines and len(val) == 5
    batch = TokenCollate(tok.pad_id)([train[0], train[1]])
    assert batch["input_ids"].shape == (2, 32) and batch["input_ids"][0, 0] == tok.bos_id
    real = batch["input_ids"] != tok.pad_id
    assert torch.equal(batch["attention_mask"].bool(), real)
    text = tok.decode(train[0]["input_ids"])
    assert text.startswith(lines[0])


def test_corpus_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        TextCorpus(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="not UTF-8"):
        TextCorpus(tmp_path / "bin.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match="no non-empty lines"):
        TextCorpus(tmp_path / "empty.txt")
    (tmp_path / "ok.txt").write_text("some text\n")
    with pytest.raises(DataError, match="bind"):
        len(TextCorpus(tmp_path / "ok.txt"))


def test_question_batches_mask_everything_but_the_answer():
    ds = ShapesDataset("train", 8, questions=True)
    items = [ds[i] for i in range(8)]
    tok = Tokenizer.train([it["caption"] for it in items] * 5, vocab_size=300)
    batch = ImageTextCollate(tok)(items)
    for row, item in enumerate(items):
        ids, target = batch["input_ids"][row], batch["loss_mask"][row].bool()
        answer = tok.encode_ids([" " + item["caption"].split()[-1]])[0]
        assert ids[target].tolist() == [*answer, tok.eot_id]  # the answer and the end, nothing else


def test_held_out_view_equals_the_val_split_without_rereading(corpus_file):
    path, lines = corpus_file
    tok = Tokenizer.train(lines, vocab_size=300)
    train = TextCorpus(path, "train", val_windows=5).bind(tok, 32)
    val = TextCorpus(path, "val", val_windows=5).bind(tok, 32)
    held = train.held_out()
    assert len(held) == len(val) == 5 and len(train) > 5  # the training view is untouched
    for i in range(5):
        assert torch.equal(held[i]["input_ids"], val[i]["input_ids"])
