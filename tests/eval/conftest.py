import pytest

import mumo

CAPTIONS = [
    "a photo of a red circle",
    "a blue square on the left of a green triangle",
    "there is a yellow star",
    "an image of a cat",
    "a dog next to a tree",
] * 4


@pytest.fixture(scope="module")
def tiny_clip() -> mumo.CLIP:
    return mumo.create_model("clip_vit_tiny", seed=0)


@pytest.fixture(scope="module")
def tokenizer() -> mumo.Tokenizer:
    return mumo.Tokenizer.train(CAPTIONS, vocab_size=300, context_length=16)
