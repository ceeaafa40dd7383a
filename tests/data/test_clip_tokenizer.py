import gzip
import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mumo.errors import TokenizerError
from mumo.interop import ClipTokenizer

LONG = "a photo of a very long caption about a dog, a cat and 3 birds; " * 12  # ~190 tokens

# Texts on which OpenCLIP and Hugging Face give the same ids.
AGREE = [
    "a photo of a cat.",
    "A Photo Of A DOG on the BEACH",
    "hello, world! (really?) -- yes... #tag @user $5 100%",
    "3 dogs and 12 cats in 2024, 3.14159",
    "don't stop: it's John's car, we'll see, I'd go, you're here, they've won, I'm ok",
    "🐶🐱 emoji party 🎉👍🏽",
    "naïve café résumé Ångström Øresund ÇA",
    "東京タワーの写真 和 한국어 文本",
    "Привет мир, Ελλάδα",
    "  extra   whitespace\n\nand\ttabs\r\n  ",
    "",
    "é (e + combining acute) vs é",
    LONG,
]
# Texts on which they differ, because HF skips ftfy / HTML unescaping and lowers char by char.
HF_DIFFERS = [
    "fish &amp; chips &lt;3 &amp;amp;",
    "don’t “quote”",
    "ﬁne ｆｕｌｌ width",
    "ΟΔΟΣ ΣΟΦΙΑΣ",
    "a\x1cb",
]


@pytest.fixture(scope="module")
def vocab_gz() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        pytest.skip("open_clip is not installed; its package ships bpe_simple_vocab_16e6.txt.gz")
    return Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture(scope="module")
def tok(vocab_gz: Path) -> ClipTokenizer:
    return ClipTokenizer.from_open_clip_vocab(vocab_gz)


@pytest.fixture(scope="module")
def oc_tokenize():
    return pytest.importorskip("open_clip").tokenize


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vocab.json + merges.txt as in openai/clip-vit-base-patch32, written from OpenCLIP's own tables."""
    ref = pytest.importorskip("open_clip.tokenizer").SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(t, t): i for t, i in ref.encoder.items()}
    merges = sorted(ref.bpe_ranks, key=ref.bpe_ranks.get)
    folder = tmp_path_factory.mktemp("hf_clip")
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(" ".join(m) for m in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def hf_tok(hf_folder: Path):
    return pytest.importorskip("transformers").CLIPTokenizer.from_pretrained(hf_folder)


def hf_ids(hf_tok, text: str) -> torch.Tensor:
    """HF ids (77,) with its <|endoftext|> padding replaced by OpenCLIP's 0."""
    out = hf_tok(text, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    return out.input_ids[0].masked_fill(out.attention_mask[0] == 0, 0)


def test_known_ids(tok):
    batch = tok.encode("a photo of a cat.")
    assert (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eot_id) == (49408, 0, 49406, 49407)
    assert batch.input_ids.shape == (1, 77) and batch.input_ids.dtype == torch.long
    assert batch.input_ids[0, :9].tolist() == [49406, 320, 1125, 539, 320, 2368, 269, 49407, 0]
    assert batch.attention_mask[0].tolist() == [1] * 8 + [0] * 69
    assert batch.truncated.tolist() == [False]


@pytest.mark.parametrize("text", AGREE + HF_DIFFERS)
def test_matches_open_clip(tok, oc_tokenize, text):
    assert torch.equal(tok.encode(text).input_ids, oc_tokenize(text))


def test_batch_matches_open_clip(tok, oc_tokenize):
    texts = AGREE + HF_DIFFERS
    batch = tok.encode(texts)
    assert torch.equal(batch.input_ids, oc_tokenize(texts))
    assert batch.truncated.tolist() == [t is LONG for t in texts]
    assert torch.equal(tok.encode(texts, context_length=20).input_ids, oc_tokenize(texts, context_length=20))


@pytest.mark.parametrize("text", AGREE)
def test_matches_hugging_face(tok, hf_tok, text):
    batch = tok.encode(text)
    assert torch.equal(batch.input_ids[0], hf_ids(hf_tok, text))
    out = hf_tok(text, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    assert torch.equal(batch.attention_mask[0], out.attention_mask[0])


@pytest.mark.parametrize("text", HF_DIFFERS)
def test_hugging_face_differs_before_cleaning_only(tok, hf_tok, text):
    ours = tok.encode(text).input_ids[0]
    assert not torch.equal(ours, hf_ids(hf_tok, text))
    assert torch.equal(ours, hf_ids(hf_tok, tok.clean(text)))


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.one_of(
        st.text(max_size=150),
        st.lists(
            st.sampled_from(["A", "photo", "OF", "don't", "it's", "&amp;", "&", "42", "café", "ΣΑΣ", "東京"])
            | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=4),
            max_size=40,
        ).map(" ".join),
    )
)
def test_property_matches_open_clip(tok, oc_tokenize, text):
    assert torch.equal(tok.encode(text).input_ids, oc_tokenize(text))


def test_truncation_keeps_end_token_and_counts(vocab_gz, caplog):
    tok = ClipTokenizer.from_open_clip_vocab(vocab_gz)  # a fresh one: it warns at its first cut only
    full = tok.encode(LONG, context_length=400, padding="longest")
    n_real = int(full.attention_mask.sum())
    assert n_real > 77 and not full.truncated[0]
    with caplog.at_level(logging.WARNING):
        batch = tok.encode([LONG, "a cat"])
        again = [tok.encode([LONG, LONG]) for _ in range(3)]
    assert batch.truncated.tolist() == [True, False] and all(b.num_truncated == 2 for b in again)
    assert batch.input_ids[0, 76] == tok.eot_id and batch.attention_mask[0].all()
    assert torch.equal(batch.input_ids[0, :76], full.input_ids[0, :76])
    assert tok.total_truncated == 7
    warnings = [r.getMessage() for r in caplog.records if "longer than" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("1 of 2 texts were longer than 77 tokens")


def test_padding_longest(tok):
    batch = tok.encode(["a cat", "a photo of a dog"], padding="longest")
    assert batch.input_ids.shape == (2, 7)
    assert batch.attention_mask.sum(1).tolist() == [4, 7]
    assert tok.encode([], padding="longest").input_ids.shape == (0, 2)


@pytest.mark.parametrize(
    "text", ["A Photo of a DOG", "two   cats\non a  sofa", "naïve Café", "東京 タワー", "3 dogs 😀", ""]
)
def test_decode_gives_cleaned_text(tok, text):
    assert tok.decode(tok.encode(text).input_ids[0]) == " ".join(text.split()).lower()


def test_decode_spaces_pieces_like_open_clip(tok):
    ids = tok.encode("Don't stop.").input_ids[0]
    assert tok.decode(ids) == "don 't stop ."
    assert tok.decode(ids.tolist()) == tok.decode(ids)


@pytest.mark.parametrize("as_folder", [False, True])
def test_save_load_round_trip(tok, tmp_path, as_folder):
    path = tmp_path if as_folder else tmp_path / "clip.json"
    tok.save(path)
    loaded = ClipTokenizer.load(path, context_length=32)
    assert (loaded.vocab_size, loaded.bos_id, loaded.eot_id, loaded.context_length) == (
        49408,
        49406,
        49407,
        32,
    )
    texts = AGREE + HF_DIFFERS + ["x <end_of_text> y"]
    assert torch.equal(loaded.encode(texts).input_ids, tok.encode(texts, context_length=32).input_ids)


def test_saved_file_works_in_plain_tokenizers(tok, tmp_path):
    from tokenizers import Tokenizer

    tok.save(tmp_path / "tokenizer.json")
    plain = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = "A photo of a cat, don't you think? 3 dogs"
    assert plain.encode(text).ids == tok.encode(text, padding="longest").input_ids[0].tolist()


def test_hf_folder_equals_open_clip_vocab(tok, hf_folder, tmp_path):
    hf = ClipTokenizer.from_hf_folder(hf_folder)
    assert (hf.vocab_size, hf.bos_id, hf.eot_id) == (49408, 49406, 49407)
    assert (hf.bos_token, hf.eot_token) == ("<|startoftext|>", "<|endoftext|>")
    texts = AGREE + HF_DIFFERS
    assert torch.equal(hf.encode(texts).input_ids, tok.encode(texts).input_ids)
    hf.save(tmp_path / "tokenizer.json")  # a tokenizer.json folder is read in preference to vocab.json
    assert torch.equal(
        ClipTokenizer.from_hf_folder(tmp_path).encode(texts).input_ids, tok.encode(texts).input_ids
    )


def test_special_token_text_follows_home_library(tok, hf_folder, hf_tok, oc_tokenize):
    # Each library turns its own special-token names in user text into the special ids.
    text = "x <end_of_text> y"
    assert tok.encode(text, padding="longest").input_ids[0].tolist() == [49406, 343, 49407, 344, 49407]
    assert torch.equal(tok.encode(text).input_ids, oc_tokenize(text))
    hf_text = "x <|endoftext|> y"
    assert torch.equal(
        ClipTokenizer.from_hf_folder(hf_folder).encode(hf_text).input_ids[0], hf_ids(hf_tok, hf_text)
    )


def test_errors_say_what_to_do(tok, tmp_path):
    with pytest.raises(TokenizerError, match="ships inside the open_clip package"):
        ClipTokenizer.from_open_clip_vocab(tmp_path / "missing.txt.gz")
    (tmp_path / "plain.txt").write_text("not gzip")
    with pytest.raises(TokenizerError, match="not a gzipped"):
        ClipTokenizer.from_open_clip_vocab(tmp_path / "plain.txt")
    with gzip.open(tmp_path / "short.txt.gz", "wt") as f:
        f.write("header\na b\n")
    with pytest.raises(TokenizerError, match="48894 merges"):
        ClipTokenizer.from_open_clip_vocab(tmp_path / "short.txt.gz")
    with pytest.raises(TokenizerError, match="neither tokenizer.json nor vocab.json"):
        ClipTokenizer.from_hf_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(TokenizerError, match="end_of_word_suffix"):
        ClipTokenizer.load(tmp_path / "tokenizer.json")
    with pytest.raises(TokenizerError, match="no start/end tokens"):
        ClipTokenizer({"a": 0}, [])
    with pytest.raises(TokenizerError, match="do not fit together"):
        ClipTokenizer(tok._vocab, [("zz", "q")])
    with pytest.raises(TokenizerError, match="at least 3"):
        tok.encode("a cat", context_length=2)
    with pytest.raises(TokenizerError, match="'max_length' or 'longest'"):
        tok.encode("a cat", padding="max")
    with pytest.raises(TokenizerError, match="item 1 is a int"):
        tok.encode(["a cat", 3])
    with pytest.raises(TokenizerError, match="one sequence"):
        tok.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([49406, 50000])
