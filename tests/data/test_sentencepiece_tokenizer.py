"""SigLIP's SentencePiece tokenizer against transformers' SiglipTokenizer on the same spiece.model (trained in
tests/conftest.py; nothing downloaded)."""

import json

import pytest
import torch

from mumo.data.sentencepiece_tokenizer import SentencePieceTokenizer
from mumo.data.tokenizer import load_tokenizer
from mumo.errors import TokenizerError

transformers = pytest.importorskip("transformers")

TEXTS = [
    "a photo of a cat",
    "A Big RED ball, in the park!",
    "  the   dog\tsitting on   a blue ball  ",
    "zebra quokka",  # words the model never saw: pieces and <unk>
    "",
    "the_small dog",
    "a " * 40,  # longer than the context: cut, </s> kept
]


@pytest.fixture(scope="module")
def folder(spiece_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("siglip_tok")
    (out / "spiece.model").write_bytes(spiece_model.read_bytes())
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 16, "do_lower_case": True}))
    return out


def test_ids_and_mask_match_transformers_siglip_tokenizer(folder):
    ref = transformers.SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=16)
    expected = ref(TEXTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    tok = SentencePieceTokenizer.from_folder(folder)
    got = tok.encode(TEXTS)
    assert tok.context_length == 16 and tok.pad_id == tok.eot_id == 1
    assert torch.equal(got.input_ids, expected["input_ids"])
    assert torch.equal(got.attention_mask, expected["attention_mask"])
    assert got.truncated.tolist() == [False] * 6 + [True]


def test_open_clip_cleaning_turns_underscores_into_spaces(folder):
    tok = SentencePieceTokenizer.from_folder(folder, clean="open_clip")
    assert tok.clean("the_small &amp; dog") == "the small dog"
    assert SentencePieceTokenizer.from_folder(folder).clean("the_small dog") == "thesmall dog"


def test_save_load_round_trip_through_load_tokenizer(folder, tmp_path):
    tok = SentencePieceTokenizer.from_folder(folder, clean="open_clip")
    tok.save(tmp_path / "tokenizer.json")
    back = load_tokenizer(tmp_path, context_length=16)
    assert isinstance(back, SentencePieceTokenizer) and back.clean_mode == "open_clip"
    a, b = tok.encode(TEXTS), back.encode(TEXTS)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)
    assert back.decode(b.input_ids[0]) == "a photo of a cat"


def test_longest_padding_and_errors(folder, tmp_path):
    tok = SentencePieceTokenizer.from_folder(folder)
    batch = tok.encode(["a cat", "a photo of a dog"], padding="longest")
    assert batch.input_ids.shape[1] == int(batch.attention_mask.sum(1).max())
    with pytest.raises(TokenizerError, match="spiece.model"):
        SentencePieceTokenizer.from_folder(tmp_path)
    with pytest.raises(TokenizerError, match="SentencePiece"):
        SentencePieceTokenizer(b"not a model")


def test_without_sentencepiece_installed_the_error_names_the_extra(folder, monkeypatch):
    import sys

    from mumo.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'mumo\[siglip\]'"):
        SentencePieceTokenizer.from_folder(folder)
