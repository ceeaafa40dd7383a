import os
import socket
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import mumo  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A function that returns a free TCP port on 127.0.0.1 (for test servers and process groups)."""

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick


# A tiny dual encoder and tokenizer, shared by the tests of evaluation and inference.
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


@pytest.fixture(scope="session")
def tiny_run() -> list[str]:
    """Recipe overrides for a two-step run of a tiny CLIP on a little of the built-in data (seconds)."""
    return [
        "model=clip_vit_tiny",
        "batch_size=8",
        "data.image_size=32",
        "data.train_size=64",
        "data.tokenizer_samples=200",
        "data.tokenizer_vocab_size=300",
        "data.test_size=16",
        "max_steps=2",
        "log_every=1",
        "checkpoint_every=2",
        "tensorboard=false",
    ]


@pytest.fixture(scope="module")
def clip_and_tokenizer() -> tuple[mumo.CLIP, mumo.Tokenizer]:
    """A tiny CLIP (eval mode) and a tokenizer that knows the prompts of three classes: 'red circle',
    'blue square', 'green star'."""
    names = ("red circle", "blue square", "green star")
    model = mumo.create_model("clip_vit_tiny", seed=0, **{"text.vocab_size": 300}).eval()
    tokenizer = mumo.Tokenizer.train([f"a photo of a {n}." for n in names] * 10, 300)
    tokenizer.context_length = model.context_length
    return model, tokenizer
