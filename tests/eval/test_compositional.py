import math

import pytest
import torch

from mumo.errors import DataError
from mumo.eval import compositional_probe, compositional_probe_from_texts, embed_texts

S = 1 / math.sqrt(2)
IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [S, S]])
POSITIVES = torch.tensor([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0]])  # sims to their image: 1, .8, s
# attribute negatives, one per image: sims .8 (win), 1 (loss), s (an exact tie: a loss)
ATTRIBUTE = torch.tensor([[0.8, 0.6], [0.0, 1.0], [0.0, 1.0]])
# relation negatives, two for image 1 and none for the others: sims 0 (win), .8 (a tie: a loss)
RELATION = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def test_hand_computed_fractions_counts_and_overall():
    out = compositional_probe(
        IMAGES,
        POSITIVES,
        {"attribute": ATTRIBUTE, "relation": RELATION, "object": torch.zeros(0, 2)},
        {"attribute": torch.tensor([0, 1, 2]), "relation": torch.tensor([1, 1]), "object": torch.zeros(0)},
    )
    assert out["attribute"] == pytest.approx(1 / 3) and out["n_attribute"] == 3
    assert out["relation"] == 0.5 and out["n_relation"] == 2
    assert math.isnan(out["object"]) and out["n_object"] == 0
    assert out["overall"] == pytest.approx(2 / 5) and out["n_overall"] == 5


def test_inconsistent_inputs_raise():
    with pytest.raises(DataError, match="different types"):
        compositional_probe(IMAGES, POSITIVES, {"a": ATTRIBUTE}, {"b": torch.tensor([0, 1, 2])})
    with pytest.raises(DataError, match=r"must lie in \[0, 3\)"):
        compositional_probe(IMAGES, POSITIVES, {"a": ATTRIBUTE}, {"a": torch.tensor([0, 1, 3])})
    with pytest.raises(DataError, match="clash"):
        compositional_probe(IMAGES, POSITIVES, {"overall": ATTRIBUTE}, {"overall": torch.tensor([0, 1, 2])})


def test_from_texts_equals_embedding_then_probing(tiny_clip, tokenizer):
    g = torch.Generator().manual_seed(0)
    image_embeds = torch.nn.functional.normalize(
        torch.randn(3, tiny_clip.config.embed_dim, generator=g), dim=-1
    )
    positives = ["a red circle", "a blue square on the left of a green triangle", "a dog next to a tree"]
    negatives = [
        {"attribute": "a blue circle"},
        {
            "attribute": "a green square on the left of a blue triangle",
            "relation": "a blue square on the right",
        },
        {"relation": "a tree next to a dog"},
    ]
    out = compositional_probe_from_texts(
        tiny_clip, tokenizer, image_embeds, positives, negatives, batch_size=2
    )
    expected = compositional_probe(
        image_embeds,
        embed_texts(tiny_clip, tokenizer, positives),
        {
            "attribute": embed_texts(
                tiny_clip, tokenizer, [negatives[0]["attribute"], negatives[1]["attribute"]]
            ),
            "relation": embed_texts(
                tiny_clip, tokenizer, [negatives[1]["relation"], negatives[2]["relation"]]
            ),
        },
        {"attribute": torch.tensor([0, 1]), "relation": torch.tensor([1, 2])},
    )
    assert out == expected and out["n_overall"] == 4
    with pytest.raises(DataError, match="one per image"):
        compositional_probe_from_texts(tiny_clip, tokenizer, image_embeds, positives[:2], negatives)
