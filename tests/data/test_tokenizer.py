import logging
import unicodedata

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mumo.data import Tokenizer
from mumo.errors import TokenizerError

CAPTIONS = [
    f"a {size} {colour} {shape} {rel} a {colour2} {shape2}"
    for size in ("small", "large")
    for colour in ("red", "green", "blue")
    for shape in ("circle", "square", "star")
    for rel in ("left of", "above")
    for colour2 in ("yellow", "purple")
    for shape2 in ("cross", "diamond")
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(CAPTIONS, vocab_size=400, min_frequency=2, context_length=12)


@pytest.fixture(scope="module")
def cased() -> Tokenizer:
    return Tokenizer.train(CAPTIONS, vocab_size=320, lowercase=False, context_length=64)


def test_special_ids_and_vocab(tok):
    assert (tok.pad_id, tok.eot_id, tok.bos_id, tok.mask_id) == (0, 1, 2, 3)
    assert 260 < tok.vocab_size <= 400
    assert len(tok.encode("a red circle").input_ids[0]) == 12


def test_learned_merges_make_words_single_tokens(tok):
    batch = tok.encode("a red circle", padding="longest")
    assert batch.input_ids.shape == (1, 5)  # <bos> a red circle <eot>: each word learned as one token
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1]]


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(max_size=80), min_size=1, max_size=5), n=st.integers(3, 40))
def test_every_row_fits_ends_with_eot_and_counts_cuts(tok, texts, n):
    batch = tok.encode(texts, context_length=n)
    assert batch.input_ids.shape == (len(texts), n)
    lengths = batch.attention_mask.sum(1)
    for i, length in enumerate(lengths.tolist()):
        assert 2 <= length <= n
        assert batch.input_ids[i, 0] == tok.bos_id and batch.input_ids[i, length - 1] == tok.eot_id
        assert (batch.input_ids[i, length:] == tok.pad_id).all()
        assert (batch.attention_mask[i, :length] == 1).all() and (batch.attention_mask[i, length:] == 0).all()
    full = tok.encode(texts, context_length=1000, padding="longest").attention_mask.sum(1)
    assert batch.truncated.tolist() == (full > n).tolist()
    assert batch.num_truncated == int((full > n).sum())


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=40).filter(lambda s: unicodedata.normalize("NFC", s) == s))
def test_short_strings_round_trip(cased, text):
    batch = cased.encode(text, context_length=200, padding="longest")
    assert not batch.truncated.any()
    assert cased.decode(batch.input_ids[0]) == text


def test_special_token_text_stays_text(tok):
    ids = tok.encode("<eot> <pad>", padding="longest").input_ids[0].tolist()
    assert ids.count(tok.eot_id) == 1 and tok.pad_id not in ids


def test_lowercasing_is_the_default(tok):
    assert tok.decode(tok.encode("A Red CIRCLE").input_ids[0]) == "a red circle"


@pytest.fixture
def fresh(tok, tmp_path) -> Tokenizer:
    """A copy of ``tok`` that has cut nothing yet (the module's ``tok`` keeps count across tests)."""
    tok.save(tmp_path / "tokenizer.json")
    return Tokenizer.load(tmp_path, context_length=12)


def test_truncation_is_counted_and_logged(fresh, caplog):
    with caplog.at_level(logging.WARNING, logger="mumo.data.tokenizer"):
        batch = fresh.encode(["a red circle", " ".join(["star"] * 30)], context_length=8)
    assert batch.truncated.tolist() == [False, True]
    assert batch.input_ids[1, -1] == fresh.eot_id
    assert fresh.total_truncated == 1
    assert "1 of 2 texts were longer than 8 tokens" in caplog.text


def test_long_captions_are_logged_once_per_tokenizer_and_counted_every_batch(fresh, caplog):
    from mumo.data.collate import ImageTextCollate

    long = " ".join(["star"] * 30)
    collate = ImageTextCollate(fresh)
    samples = [{"image": torch.zeros(3, 4, 4), "caption": c} for c in ("a red circle", long, long)]
    with caplog.at_level(logging.WARNING, logger="mumo.data.tokenizer"):
        batches = [collate(samples) for _ in range(5)]  # five training batches, two long captions in each
        fresh.encode(long)  # and an evaluation with the same tokenizer
    warnings = [r.getMessage() for r in caplog.records if "longer than" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("2 of 3 texts were longer than 12 tokens and were cut (end token kept)")
    assert "not logged again" in warnings[0]
    assert [b["num_truncated"] for b in batches] == [2] * 5 and fresh.total_truncated == 11


def test_save_and_load_round_trip(tok, tmp_path):
    tok.save(tmp_path / "tokenizer.json")
    again = Tokenizer.load(tmp_path, context_length=12)
    assert torch.equal(again.encode(CAPTIONS[:5]).input_ids, tok.encode(CAPTIONS[:5]).input_ids)


def test_errors_say_what_to_do(tok, tmp_path):
    with pytest.raises(TokenizerError, match="below the"):
        Tokenizer.train(CAPTIONS, vocab_size=100)
    with pytest.raises(TokenizerError, match="at least 3"):
        tok.encode("a", context_length=2)
    with pytest.raises(TokenizerError, match="no tokenizer file"):
        Tokenizer.load(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="padding"):
        tok.encode("a", padding="left")
