import math

import pytest
import torch
import torch.nn.functional as F

from mumo.errors import ConfigError, DataError
from mumo.eval import build_classifier, class_ranks, confusion_matrix, zero_shot_accuracy

S = 1 / math.sqrt(2)
# Class columns c0 = (1, 0), c1 = (0, 1), c2 = (s, s). Scores of each image, worked out by hand:
#   x0 = (1, 0),    label 0: [1, 0, .71]      -> rank 0, predicted 0
#   x1 = (.6, .8),  label 1: [.6, .8, .99]    -> rank 1, predicted 2
#   x2 = (.8, .6),  label 2: [.8, .6, .99]    -> rank 0, predicted 2
#   x3 = (0, -1),   label 1: [0, -1, -.71]    -> rank 2, predicted 0
CLASSIFIER = torch.tensor([[1.0, 0.0, S], [0.0, 1.0, S]])  # (E=2, C=3)
IMAGES = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, -1.0]])
LABELS = torch.tensor([0, 1, 2, 1])


def test_hand_computed_topk_with_fewer_than_five_classes():
    assert class_ranks(IMAGES, CLASSIFIER, LABELS).tolist() == [0, 1, 0, 2]
    acc = zero_shot_accuracy(IMAGES, CLASSIFIER, LABELS, topk=(1, 2, 5))
    assert acc == {"top1": 0.5, "top2": 0.75, "top5": 1.0}
    assert set(zero_shot_accuracy(IMAGES, CLASSIFIER, LABELS)) == {"top1", "top5"}


def test_confusion_matrix_counts():
    cm = confusion_matrix(IMAGES, CLASSIFIER, LABELS)
    assert cm.tolist() == [[1, 0, 0], [1, 0, 1], [0, 0, 1]]
    assert cm.sum() == 4 and cm.trace() == 2  # the diagonal is the top-1 hits


def test_a_tie_is_an_error_for_accuracy_and_the_lowest_class_for_the_prediction():
    classifier = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # two identical classes
    images, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    assert zero_shot_accuracy(images, classifier, labels, topk=(1, 2)) == {"top1": 0.0, "top2": 1.0}
    assert confusion_matrix(images, classifier, labels).tolist() == [[0, 0], [1, 0]]


def test_bad_labels_and_shapes_raise():
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\)"):
        zero_shot_accuracy(IMAGES, CLASSIFIER, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(DataError, match="classifier"):
        zero_shot_accuracy(IMAGES, CLASSIFIER.T, LABELS)


def test_build_classifier_averages_normalised_templates(tiny_clip, tokenizer):
    names, templates = ["cat", "dog", "red circle"], ["a {}.", "a photo of a {}."]
    weights = build_classifier(tiny_clip, tokenizer, names, templates)
    assert weights.shape == (tiny_clip.config.embed_dim, 3)
    tiny_clip.eval()
    with torch.no_grad():
        expected = []
        for name in names:
            per_template = []
            for t in templates:
                tokens = tokenizer.encode([t.format(name)])
                e = tiny_clip.encode_text(tokens.input_ids, tokens.attention_mask)[0]
                per_template.append(e / e.norm())
            mean = torch.stack(per_template).mean(dim=0)
            expected.append(mean / mean.norm())
    torch.testing.assert_close(weights, torch.stack(expected, dim=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.norm(dim=0), torch.ones(3))
    # A single template reduces to the plain (normalised) text embedding.
    one = build_classifier(tiny_clip, tokenizer, names, ["{}"])
    tokens = tokenizer.encode(names)
    with torch.no_grad():
        plain = F.normalize(tiny_clip.encode_text(tokens.input_ids, tokens.attention_mask), dim=-1)
    torch.testing.assert_close(one, plain.T, atol=1e-5, rtol=1e-5)


def test_templates_need_one_placeholder(tiny_clip, tokenizer):
    with pytest.raises(ConfigError, match="exactly one"):
        build_classifier(tiny_clip, tokenizer, ["cat"], ["a photo"])


def test_zero_shot_probs_use_the_models_own_temperature(tiny_clip, tokenizer):
    import copy

    import mumo
    from mumo.eval import embed_images, zero_shot_probs

    model = copy.deepcopy(tiny_clip)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(14.3))  # not the 100 a server once assumed
    names = ["cat", "dog", "red circle", "there is a yellow star"]
    embeds = embed_images(model, torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    probs = zero_shot_probs(model, tokenizer, 3 * embeds, names)  # any norm: cosine similarity
    as_typed = build_classifier(model, tokenizer, names, ["{}"])  # (E, C)
    torch.testing.assert_close(probs, (14.3 * embeds @ as_typed).softmax(dim=-1), atol=1e-6, rtol=0)
    assert probs.shape == (6, 4)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(6))
    # a prompt ensemble is build_classifier's; the evaluation's prediction is the most probable label
    templates = ["a {}.", "a photo of a {}."]
    ensemble = build_classifier(model, tokenizer, names, templates)
    expected = (14.3 * embeds @ ensemble).softmax(dim=-1)
    torch.testing.assert_close(zero_shot_probs(model, tokenizer, embeds, names, templates), expected)
    assert confusion_matrix(embeds, as_typed, probs.argmax(dim=1)).trace() == 6
    # SigLIP's logit bias shifts every label alike: the same probabilities at the same scale
    siglip = mumo.create_model("siglip_vit_tiny", seed=0)
    siglip.load_state_dict({**model.state_dict(), "logit_bias": torch.tensor(-10.0)})
    torch.testing.assert_close(zero_shot_probs(siglip, tokenizer, embeds, names), probs, atol=1e-6, rtol=0)
