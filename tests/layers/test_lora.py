"""LoRA: exact at start, exact merge and unmerge, only adapters train, adapters save and load alone."""

import pytest
import torch

import mumo
from mumo.layers.lora import (
    LoRALinear,
    apply_lora,
    load_lora_state_dict,
    lora_layers,
    lora_state_dict,
    merge_lora,
    unmerge_lora,
)

TARGETS = ("attn.qkv", "attn.proj", "mlp")


def _model():
    return mumo.create_model("clip_vit_tiny", seed=0).double().eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    ids = torch.randint(3, 100, (2, 7), generator=g)
    return images, ids


def _outputs(model):
    images, ids = _inputs()
    return model.encode_image(images), model.encode_text(ids)


def _randomize_adapters(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_b.copy_(torch.randn(layer.lora_b.shape, generator=g, dtype=layer.lora_b.dtype) * 0.1)


def test_a_fresh_adapter_changes_nothing():
    model = _model()
    before = _outputs(model)
    names = apply_lora(model, TARGETS, rank=4, alpha=8)
    assert names and all(any(t in n for t in TARGETS) for n in names)
    for a, b in zip(before, _outputs(model), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_merge_and_unmerge_are_exact():
    model = _model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, TARGETS, rank=4, alpha=8)
    _randomize_adapters(model)
    adapted = _outputs(model)
    assert not torch.allclose(adapted[0], _outputs(_model())[0])  # the update does change the output
    merge_lora(model)
    assert all(layer.merged for layer in lora_layers(model).values())
    for a, b in zip(adapted, _outputs(model), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    unmerge_lora(model)
    for a, b in zip(adapted, _outputs(model), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    base = {k.replace(".base.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}
    for k, v in original.items():  # the frozen weights are back to the bit, or within float64 rounding
        torch.testing.assert_close(base[k], v, atol=1e-15, rtol=0)


def test_only_adapter_parameters_receive_gradients():
    model = _model().train()
    apply_lora(model, TARGETS, rank=2, alpha=4, dropout=0.1)
    images, ids = _inputs()
    (model.encode_image(images).sum() + model.encode_text(ids).sum()).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora_a", ".lora_b")) for n in trainable)
    for name, p in model.named_parameters():
        if name.endswith(".lora_b"):
            assert p.grad is not None and p.grad.abs().sum() > 0  # B is zero, but its gradient is not
        elif not p.requires_grad:
            assert p.grad is None
    n_adapter = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_adapter == sum(2 * (m.in_features + m.out_features) for m in lora_layers(model).values())


def test_adapter_saves_and_loads_alone_and_into_a_merged_model():
    model = _model()
    apply_lora(model, TARGETS, rank=4, alpha=8)
    _randomize_adapters(model)
    expected = _outputs(model)
    state = lora_state_dict(model)
    assert state and all(k.endswith((".lora_a", ".lora_b")) for k in state)
    fresh = _model()
    apply_lora(fresh, TARGETS, rank=4, alpha=8)
    merge_lora(fresh)  # loading into merged layers must re-merge with the new update
    load_lora_state_dict(fresh, state)
    for a, b in zip(expected, _outputs(fresh), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    other = _model()
    apply_lora(other, TARGETS, rank=2, alpha=8)
    with pytest.raises(ValueError, match="wrong shape"):
        load_lora_state_dict(other, state)


def test_unknown_targets_are_an_error_that_lists_real_names():
    with pytest.raises(ValueError, match="no linear or conv layer matches"):
        apply_lora(_model(), ["atn.qkv"])
    with pytest.raises(ValueError, match="rank must be"):
        LoRALinear(torch.nn.Linear(4, 4), rank=0, alpha=1)


def _conv_model():
    return mumo.create_model("clip_conv_tiny", seed=0).double().eval()


def test_conv_lora_starts_exact_merges_exactly_and_saves_as_the_plain_model():
    from mumo.layers.lora import LoRAConv2d, merged_state_dict

    model = _conv_model()
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    before = model.encode_image(images)
    names = apply_lora(model, [r"visual\.stages"], rank=2, alpha=4)
    assert names == ["visual.stages.0", "visual.stages.4"]
    assert all(isinstance(m, LoRAConv2d) for m in lora_layers(model).values())
    torch.testing.assert_close(model.encode_image(images), before, atol=0, rtol=0)
    _randomize_adapters(model)
    adapted = model.encode_image(images)
    assert not torch.allclose(adapted, before)
    state = merged_state_dict(model)  # unmerged model: the update is folded in on the way out
    merge_lora(model)
    torch.testing.assert_close(model.encode_image(images), adapted, atol=1e-12, rtol=0)
    unmerge_lora(model)
    torch.testing.assert_close(model.encode_image(images), adapted, atol=1e-12, rtol=0)
    plain = _conv_model()
    plain.load_state_dict(state)  # strict: the plain model's own keys
    torch.testing.assert_close(plain.encode_image(images), adapted, atol=1e-12, rtol=0)
    merge_lora(model)
    torch.testing.assert_close(
        merged_state_dict(model)["visual.stages.0.weight"], state["visual.stages.0.weight"]
    )


def test_grouped_convolutions_are_refused():
    from mumo.layers.lora import LoRAConv2d

    with pytest.raises(ValueError, match="groups=1"):
        LoRAConv2d(torch.nn.Conv2d(4, 4, 3, groups=2), rank=2, alpha=2)
