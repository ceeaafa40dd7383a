"""Hugging Face CLIPModel <-> mumo: parity of outputs and an exact round trip (random init, offline)."""

import pytest
import torch

import mumo
from mumo.data.clip_tokenizer import ClipTokenizer
from mumo.errors import ConfigError
from mumo.interop.hf_clip import (
    clip_config_from_hf,
    hf_state_dict_to_mumo,
    load_hf_clip,
    mumo_state_dict_to_hf,
    save_hf_clip,
)

transformers = pytest.importorskip("transformers")


def hf_model(act="quick_gelu", depth=12):
    """A CLIPModel of ViT-B-32's shape (OpenAI's config when depth=12 and act='quick_gelu')."""
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=dict(
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=depth,
            num_attention_heads=8,
            vocab_size=49408,
            max_position_embeddings=77,
            hidden_act=act,
        ),
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=depth,
            num_attention_heads=12,
            image_size=224,
            patch_size=32,
            hidden_act=act,
        ),
        projection_dim=512,
    )
    return transformers.CLIPModel(config).eval()


def batch():
    ids = torch.randint(1, 49406, (3, 12))
    ids[:, 0] = 49406
    mask = torch.ones_like(ids)
    for row, length in enumerate((12, 7, 3)):
        ids[row, length - 1] = 49407
        ids[row, length:] = 0
        mask[row, length:] = 0
    return torch.randn(3, 3, 224, 224), ids, mask


@pytest.mark.parametrize("act, depth", [("quick_gelu", 12), ("gelu", 2)])
def test_import_matches_transformers(tmp_path, act, depth):
    ref = hf_model(act, depth)
    ref.save_pretrained(tmp_path)
    model = load_hf_clip(tmp_path)
    images, ids, mask = batch()
    with torch.no_grad():
        theirs = ref(pixel_values=images, input_ids=ids, attention_mask=mask)
        ours = model(images, ids, mask)
    torch.testing.assert_close(ours.image_embeds, theirs.image_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.text_embeds, theirs.text_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.logits_per_image, theirs.logits_per_image, atol=1e-5, rtol=0)


def test_round_trip_mumo_hf_mumo_is_exact(tmp_path):
    model = mumo.create_model("clip_vit_tiny", seed=0)
    state = model.state_dict()
    again = hf_state_dict_to_mumo(mumo_state_dict_to_hf(state))
    assert again.keys() == state.keys()
    assert all(torch.equal(again[k], state[k]) for k in state)
    save_hf_clip(model, tmp_path, tokenizer=mumo.Tokenizer.train(["a red circle"] * 5, vocab_size=300))
    loaded = load_hf_clip(tmp_path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_a_mumo_trained_vit_exports_and_runs_in_transformers(tmp_path):
    from mumo.run.train import train
    from mumo.train import load_recipe

    overrides = [
        "model=clip_vit_tiny",
        "batch_size=8",
        "data.image_size=32",
        "data.train_size=64",
        "data.tokenizer_samples=100",
        "data.tokenizer_vocab_size=300",
        "max_steps=3",
        "evaluate=false",
        "tensorboard=false",
        f"out_dir={tmp_path / 'run'}",
    ]
    results = train(load_recipe(None, overrides), progress=False)
    model = mumo.load_pretrained(results["final"]).eval()
    tokenizer = mumo.Tokenizer.load(results["final"], context_length=model.config.text.context_length)
    save_hf_clip(model, tmp_path / "hf", tokenizer=tokenizer)
    ref = transformers.CLIPModel.from_pretrained(tmp_path / "hf").eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    texts = ["a red circle", "a blue star"]
    tokens = tokenizer.encode(texts)
    assert not tokens.truncated.any()
    for row, ids in enumerate(hf_tok(texts, add_special_tokens=False)["input_ids"]):
        n = int(tokens.attention_mask[row].sum())
        assert ids == tokens.input_ids[row, 1 : n - 1].tolist()  # the same ids between <bos> and <eot>
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        theirs = ref(pixel_values=images, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        ours = model(images, tokens.input_ids, tokens.attention_mask)
    torch.testing.assert_close(ours.logits_per_image, theirs.logits_per_image, atol=1e-5, rtol=0)


def test_models_hf_cannot_hold_are_refused():
    with pytest.raises(ConfigError, match="only ViT image towers"):
        save_hf_clip(mumo.create_model("clip_conv_tiny"), "unused")
    with pytest.raises(ConfigError, match="no logit bias"):
        save_hf_clip(mumo.create_model("siglip_vit_tiny"), "unused")


def test_a_mumo_config_is_not_read_with_hf_defaults(tmp_path):
    # A mumo folder's config.json also says model_type "clip"; read as HF it silently became QuickGELU.
    model = mumo.create_model("clip_vit_tiny", seed=0)
    mumo.save_pretrained(model, tmp_path)
    cfg = __import__("json").loads((tmp_path / "config.json").read_text())
    with pytest.raises(ConfigError, match="mumo model config.*--from mumo"):
        clip_config_from_hf(cfg)
    with pytest.raises(ConfigError, match="mumo model config.*--from mumo"):
        load_hf_clip(tmp_path)


@pytest.mark.parametrize("missing", ["vision_config", "text_config"])
def test_an_hf_config_without_a_tower_config_is_refused(missing):
    cfg = {"model_type": "clip", "vision_config": {"hidden_act": "gelu"}, "text_config": {}}
    del cfg[missing]
    with pytest.raises(ConfigError, match=f"has no {missing}"):
        clip_config_from_hf(cfg)


def test_a_damaged_hf_folder_is_a_one_line_error(tmp_path):
    save_hf_clip(mumo.create_model("clip_vit_tiny", seed=0), tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(
        mumo.CheckpointError, match="model.safetensors is not a readable safetensors file"
    ) as e:
        load_hf_clip(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "config.json").write_text('{"model_type": "clip",')
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        load_hf_clip(tmp_path)


def _clip_vocab():
    spec = __import__("importlib.util").util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open_clip is not installed; its package ships bpe_simple_vocab_16e6.txt.gz")
    return __import__("pathlib").Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


@pytest.mark.parametrize("kind", ["mumo_bpe", "clip_bpe"])
def test_auto_tokenizer_gives_mumo_ids_and_embeddings(tmp_path, kind):
    # Without a post-processor AutoTokenizer added no <bos>/<eot>: HF's text embeddings were 0.47 off
    # (mumo's BPE), and names the CLIP vocabulary lacks became new ids past the embedding table.
    if kind == "mumo_bpe":
        model = mumo.create_model("clip_vit_tiny", seed=0)
        tok = mumo.Tokenizer.train(["a red circle", "a blue star", "a green square next to it"] * 20, 300)
    else:
        model = mumo.create_model("clip_vit_tiny", seed=0, **{"text.vocab_size": 49408})
        tok = ClipTokenizer.from_open_clip_vocab(_clip_vocab(), context_length=model.context_length)
    save_hf_clip(model, tmp_path, tokenizer=tok)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ref = transformers.CLIPModel.from_pretrained(tmp_path).eval()
    texts = ["a red circle", "a blue star next to a green square", "red"]
    ours = tok.encode(texts, padding="longest")
    theirs = hf_tok(texts, padding=True, return_tensors="pt")
    assert torch.equal(theirs["attention_mask"], ours.attention_mask)
    real = ours.attention_mask.bool()  # padding ids differ for CLIP (HF pads with the end token, OpenCLIP 0)
    assert torch.equal(theirs["input_ids"][real], ours.input_ids[real])
    with torch.no_grad():
        hf_embeds = ref.get_text_features(**theirs)
        hf_embeds = torch.nn.functional.normalize(getattr(hf_embeds, "pooler_output", hf_embeds), dim=-1)
        torch.testing.assert_close(
            hf_embeds, model.eval().encode_text(ours.input_ids, ours.attention_mask), atol=1e-5, rtol=0
        )
