import torch

from mumo.inference import embed_images, embed_texts


def test_embed_images_matches_the_model_and_restores_each_modules_mode(tiny_clip):
    tiny_clip.train()
    tiny_clip.text.eval()  # a submodule the caller froze must stay in eval mode afterwards
    seen = []
    hook = tiny_clip.visual.register_forward_hook(lambda m, i, o: seen.append(m.training))
    images = torch.randn(5, 3, 32, 32)
    try:
        from_tensor = embed_images(tiny_clip, images, batch_size=2)
        from_batches = embed_images(tiny_clip, [images[:3], images[3:]])
    finally:
        hook.remove()
    assert seen and not any(seen)  # every forward ran in eval mode
    assert tiny_clip.training and tiny_clip.visual.training and not tiny_clip.text.training
    assert from_tensor.shape == (5, tiny_clip.config.embed_dim) and not from_tensor.is_inference()
    tiny_clip.eval()
    with torch.no_grad():
        expected = tiny_clip.encode_image(images)
    torch.testing.assert_close(from_tensor, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_batches, expected, atol=1e-5, rtol=1e-5)


def test_embed_texts_batches_agree_and_restore_training_mode(tiny_clip, tokenizer):
    tiny_clip.train()
    texts = ["a red circle", "a dog", "there is a yellow star", "a cat"]
    one = embed_texts(tiny_clip, tokenizer, texts, batch_size=1)
    assert tiny_clip.training
    torch.testing.assert_close(one, embed_texts(tiny_clip, tokenizer, texts), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one.norm(dim=-1), torch.ones(4))


def test_embed_image_files_reports_progress_in_files(tiny_clip, tmp_path):
    from PIL import Image

    from mumo.data.transforms import eval_transform
    from mumo.inference import embed_image_files

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 40), (60 * i, 0, 0)).save(paths[-1])
    paths.append(tmp_path / "broken.png")
    paths[-1].write_bytes(b"not an image")  # skipped after the last batch: still counted as done
    calls = []
    transform, note = eval_transform(tiny_clip.image_size), lambda *a: calls.append(a)
    vectors, kept, skipped = embed_image_files(tiny_clip, paths, transform, batch_size=2, progress=note)
    assert vectors.shape[0] == 4 and len(skipped) == 1
    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_freeze_says_which_layers_int8_could_not_take_and_refuses_unknown_precisions(caplog):
    import pytest
    from torch import nn

    from mumo.errors import ConfigError
    from mumo.inference import freeze
    from mumo.layers.frozen_linear import Int8Linear

    model = nn.Sequential(nn.Linear(32, 40), nn.GELU(), nn.Linear(40, 8))  # the second's width: not / 16
    with caplog.at_level("WARNING", logger="mumo.inference"):
        freeze(model, "int8")
    assert isinstance(model[0], Int8Linear) and model[2].dtype == torch.float32
    assert "1 of 2 linear layers stay fp32: int8 needs in_features divisible by 16" in caplog.text
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, int8"):
        freeze(nn.Sequential(nn.Linear(4, 4)), "int4")
