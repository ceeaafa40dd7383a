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
